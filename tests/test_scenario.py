"""The simulator's trading session stays realistic however long it runs."""

from __future__ import annotations

from decimal import Decimal

from bitmusa_plugin.simulator.scenario import MARKETS, MAX_OPEN_ORDERS, START_BALANCE, Scenario


def test_a_long_session_stays_stationary() -> None:
    # 50,000 events: a week of the soak's pace. Before the fix the book grew to hundreds of
    # orders, the balance ran dry then exploded, and a Decimal overflow ended the session.
    scenario = Scenario(1)
    for i in range(50_000):
        frames = scenario.step(1_700_000_000_000 + i)
        assert frames
        assert len(scenario.orders) <= MAX_OPEN_ORDERS
        assert Decimal(0) <= scenario.free <= START_BALANCE * 10
        assert scenario.locked >= 0
    for ticker, (start, *_) in MARKETS.items():
        assert start / 2 < scenario.prices[ticker] < start * 2
