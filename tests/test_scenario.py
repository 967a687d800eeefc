"""The simulator's trading session stays realistic however long it runs."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from bitmusa_plugin.simulator._scenario import MARKETS, MAX_OPEN_ORDERS, START_BALANCE, Scenario


def test_a_long_session_stays_stationary() -> None:
    # 50,000 events: a week of the soak's pace. Before the fix the book grew to hundreds of
    # orders, the balance ran dry then exploded, and a Decimal overflow ended the session.
    scenario = Scenario(1)
    engine = scenario.engine
    seen: Counter[tuple[str, str]] = Counter()
    for i in range(50_000):
        frames = scenario.step(1_700_000_000_000 + i * 200)
        assert frames
        for frame in frames:
            data = frame["data"]
            seen[frame["stream"], data.get("type") or data.get("status") or ""] += 1
        assert len(scenario.orders) <= MAX_OPEN_ORDERS
        assert Decimal(0) <= scenario.free <= START_BALANCE * 10
        assert scenario.locked >= 0
        if i % 500 == 0:  # the books balance: nothing is created or lost but by the rules
            assert engine.balance == (
                engine.deposits + engine.realized - engine.fees_paid + engine.absorbed
            )
    for ticker, (start, *_) in MARKETS.items():
        assert start / 2 < scenario.prices[ticker] < start * 2
    # every kind of event happened, through the engine's own rules
    for kind in ("LIMIT", "MARKET", "TAKE_PROFIT", "STOP_LOSS", "LIQUIDATION"):
        assert seen["future_order", kind] > 20, seen
    for status in ("OPEN", "USER_CLOSE", "TAKE_PROFIT", "STOP_LOSS", "FORCE_CLOSE"):
        assert seen["future_position", status] > 20, seen
    statuses = Counter(f.status for f in engine.orders.values())
    assert statuses["PARTIAL"] + statuses["TRADING"] == len(scenario.orders)
    assert statuses["CANCELLED"] > 100
    assert any(f.role == "MAKER" for f in engine.fills)
    assert any(f.role == "TAKER" for f in engine.fills)


def test_the_same_seed_gives_the_same_session() -> None:
    def run(seed: int) -> list[object]:
        scenario = Scenario(seed)
        return [scenario.step(1_700_000_000_000 + i * 200) for i in range(2_000)]

    assert run(7) == run(7)
    assert run(7) != run(8)
