"""Resync: a pure plan from a snapshot and what was last delivered, then apply."""

from __future__ import annotations

import copy
from typing import Any

from bitmusa_plugin._core import resync
from bitmusa_plugin._core.mapping import Mapped, Mapper
from bitmusa_plugin.testing import order_frame, position_frame, wallet_frame

T = 1_700_000_000_000


def order_record(order_id: str, *, filled: float = 0.0, qty: float = 10.0) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "ticker": "XRPUSDT",
        "direction": 0,
        "position": 0,
        "order_type": 1,
        "status": 4 if filled else 0,
        "tif_mode": 0,
        "order_price": 0.5,
        "order_qty": qty,
        "traded_qty": filled,
        "traded_value": filled * 0.5,
        "order_time": "2023-11-23T01:39:08",
    }


def position_record(ticker: str = "XRPUSDT", qty: float = 10.0) -> dict[str, Any]:
    return {
        "ticker": ticker,
        "position": 0,
        "margin_mode": 0,
        "position_mode": 0,
        "leverage": 10,
        "entry_price": 0.5,
        "qty": qty,
        "value": qty * 0.5,
        "liquid_price": 0.46,
        "unpnl": 0,
        "entry_time": "2023-11-23T01:39:08",
    }


def wallet_record(available: float = 1000.0, wallet: float = 1000.0) -> dict[str, Any]:
    return {
        "symbol": "USDT",
        "total_wallet_balance": wallet,
        "total_available_balance": available,
    }


def delivered(frames: list[str]) -> tuple[Mapper, resync.Ledger]:
    """A mapper and ledger after these live frames, as the pipeline keeps them."""
    mapper, ledger = Mapper("acct"), resync.Ledger()
    for frame in frames:
        result = mapper.feed(frame, T)
        assert isinstance(result, Mapped), result
        ledger.record(result.hook, result.obj)
    return mapper, ledger


def test_planning_changes_nothing_applying_records_what_was_delivered() -> None:
    mapper, ledger = delivered([wallet_frame(free="900", locked="100"), order_frame("A")])
    before = (copy.deepcopy(ledger), dict(mapper.assets))
    plan = resync.plan(
        ledger,
        mapper.assets,
        mapper.symbols,
        wallet=[wallet_record(available=950.0, wallet=1000.0)],
        positions=[position_record()],
        orders=[order_record("A", filled=4.0)],
        held=set(),
    )
    assert (ledger, dict(mapper.assets)) == before  # a plan, nothing more
    hooks = [d.hook for d in plan.deliveries]
    assert hooks == ["on_wallet", "on_position", "on_order"]
    resync.apply(plan, ledger, mapper)
    assert mapper.assets["USDT"].free == 950.0
    assert ledger.order("A")["filled"] == 4.0
    assert ledger.positions  # the position now open
    # the same snapshot again changes nothing: no delivery
    again = resync.plan(
        ledger,
        mapper.assets,
        mapper.symbols,
        wallet=[wallet_record(available=950.0, wallet=1000.0)],
        positions=[position_record()],
        orders=[order_record("A", filled=4.0)],
        held=set(),
    )
    assert again.deliveries == []


def test_objects_with_a_held_frame_are_left_to_it() -> None:
    mapper, ledger = delivered([order_frame("A"), position_frame("XRPUSDT")])
    held = resync.held_keys(
        [
            order_frame("A", status="FILLED", filled="10"),
            position_frame("XRPUSDT", amount="3"),
            wallet_frame(free="1", locked="0"),
            "not json",
        ]
    )
    assert held == {("order", "A"), ("symbol", "XRPUSDT"), ("wallet", "USDT")}
    plan = resync.plan(
        ledger,
        mapper.assets,
        mapper.symbols,
        wallet=[wallet_record(available=5.0, wallet=5.0)],
        positions=[],  # the position's snapshot says flat, but a newer frame is held
        orders=[],  # the order's too
        held=held,
    )
    assert plan.deliveries == []  # the held frames are newer than the snapshot
    assert plan.vanished_orders == []


def test_a_vanished_order_and_a_vanished_position_are_delivered_for_what_they_are() -> None:
    mapper, ledger = delivered([order_frame("A"), order_frame("B"), position_frame("XRPUSDT")])
    plan = resync.plan(
        ledger,
        mapper.assets,
        mapper.symbols,
        wallet=[],
        positions=[],
        orders=[order_record("B")],
        held=set(),
    )
    assert plan.vanished_orders == ["A"]
    by_hook = {d.hook: d.obj for d in plan.deliveries}
    assert by_hook["on_order"]["id"] == "A"
    assert by_hook["on_order"]["status"] is None  # filled or cancelled: cannot say which
    assert by_hook["on_position"]["contracts"] == 0.0  # flat
    resync.apply(plan, ledger, mapper)
    assert set(ledger.orders) == {"B"}
    assert not ledger.positions


def test_a_full_page_of_open_orders_proves_nothing_about_the_rest() -> None:
    mapper, ledger = delivered([order_frame("A")])
    plan = resync.plan(
        ledger,
        mapper.assets,
        mapper.symbols,
        wallet=[],
        positions=[],
        orders=[order_record("B")],
        held=set(),
        orders_complete=False,
    )
    assert plan.vanished_orders == []  # A may be on the next page
    assert [d.obj["id"] for d in plan.deliveries] == ["B"]


def test_a_record_that_cannot_be_mapped_is_reported_not_raised() -> None:
    mapper, ledger = delivered([])
    bad = order_record("A")
    bad["order_qty"] = "lots"
    plan = resync.plan(
        ledger, mapper.assets, mapper.symbols, wallet=[], positions=[], orders=[bad], held=set()
    )
    assert plan.deliveries == []
    assert len(plan.rejected) == 1
    assert plan.rejected[0].startswith("order: amount")
