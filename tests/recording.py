"""What the stream tests share: a plugin that records what it is given, a bounded wait
on a condition, and an order placed over REST as another client of the account."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from bitmusa_hookspecs import hookimpl


class Recorder:
    """Every trade; every order update (``updates``) and each order's latest
    (``orders``); the stream's states; the errors reported."""

    bitmusa_delivery = "all"

    def __init__(self) -> None:
        self.trades: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.states: list[str] = []
        self.errors: list[dict[str, Any]] = []

    @hookimpl
    def on_trade(self, trade: dict[str, Any]) -> None:
        self.trades.append(trade)

    @hookimpl
    def on_order(self, order: dict[str, Any]) -> None:
        self.updates.append(dict(order))
        self.orders[order["id"]] = order

    @hookimpl
    def on_stream_state(self, state: dict[str, Any]) -> None:
        self.states.append(state["status"])

    @hookimpl
    def on_error(self, error: dict[str, Any]) -> None:
        self.errors.append(error)

    def kinds(self, kind: str) -> list[str]:
        """The messages of the errors of ``kind``."""
        return [e["message"] for e in self.errors if e["kind"] == kind]


async def until(predicate: Any, timeout: float = 15.0, seen: Recorder | None = None) -> None:
    """Wait (bounded) for ``predicate``: a state the design guarantees, not a sleep."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = (
                ""
                if seen is None
                else (f": states {seen.states}, {len(seen.trades)} trades, {seen.errors[-4:]}")
            )
            raise AssertionError(f"condition not reached in {timeout:g} s{detail}")
        await asyncio.sleep(0.01)


async def place(client: httpx.AsyncClient, **fields: Any) -> str:
    """An order of another client of the account (the web page, another bot): BTCUSDT,
    opening, isolated, a buy unless ``position`` says otherwise."""
    body = {"ticker": "BTCUSDT", "direction": 0, "margin_mode": 0, "position": 0, **fields}
    data = orjson.loads((await client.post("/future/order", json=body)).content)
    assert data["code"] == 0, data
    return str(data["data"])
