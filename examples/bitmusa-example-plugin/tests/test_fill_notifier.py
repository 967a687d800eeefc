from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import bitmusa_example_plugin as plugin


def trade(**kw: Any) -> Any:
    base = {
        "id": "o1:0.5",
        "order": "o1",
        "symbol": "XRP/USDT:USDT",
        "side": "buy",
        "price": 0.5,
        "amount": 0.5,
        "cost": 0.25,
        "fee": None,
        "info": {},
    }
    return {**base, **kw}


def event(**data: Any) -> Any:
    return {
        "account": "main",
        "stream": "future_order",
        "eventTime": 1,
        "receivedAt": 1,
        "data": data,
    }


def test_announces_each_fill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "fills.log"
    monkeypatch.setenv("BITMUSA_FILL_LOG", str(log))
    plugin.on_trade(trade(), event())
    plugin.on_trade(trade(amount=1.5, price=0.51, fee={"cost": 0.01, "currency": "USDT"}), event())
    plugin.on_trade(trade(amount=0.2, info={"estimated": True}), event())
    assert log.read_text().splitlines() == [
        "[main] XRP/USDT:USDT buy 0.5 @ 0.5",
        "[main] XRP/USDT:USDT buy 1.5 @ 0.51 (fee 0.01 USDT)",
        "[main] XRP/USDT:USDT buy 0.2 @ 0.5 (estimated: the trade history did not show this fill)",
    ]


def test_announces_flat_positions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "fills.log"
    monkeypatch.setenv("BITMUSA_FILL_LOG", str(log))
    position: Any = {"symbol": "BTC/USDT:USDT", "contracts": 0.0}
    plugin.on_position(position, event(status="FORCE_CLOSE"))
    still_open: Any = {**position, "contracts": 1.0}
    plugin.on_position(still_open, event(status="OPEN"))
    assert log.read_text().splitlines() == ["[main] BTC/USDT:USDT is flat (FORCE_CLOSE)"]


def test_through_the_real_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same plugin fed raw frames by bitmusa_plugin.testing, as the stream would: each
    fill once, however many times the order's cumulative state is repeated."""
    from bitmusa_plugin.testing import order_frame, position_frame, replay

    log = tmp_path / "fills.log"
    monkeypatch.setenv("BITMUSA_FILL_LOG", str(log))
    result = replay(
        plugin,
        [
            order_frame("F7", status="PARTIAL", side="SELL", filled="4", value="2"),
            order_frame("F7", status="PARTIAL", side="SELL", filled="4", value="2"),  # again
            order_frame("F7", status="FILLED", side="SELL", filled="10", value="5.3"),
            position_frame("XRPUSDT", status="USER_CLOSE"),
        ],
        account="main",
    )
    assert result.errors == []
    assert log.read_text().splitlines() == [
        "[main] XRP/USDT:USDT sell 4 @ 0.5",
        "[main] XRP/USDT:USDT sell 6 @ 0.55",
        "[main] XRP/USDT:USDT is flat (USER_CLOSE)",
    ]
