"""``--output dashboard``: a live terminal view, built on the same hooks as any plugin.

Per account: connection state, uptime, last event age, reconnects and gaps; balances;
open positions (side, size, entry, liquidation price and its distance, unrealised PnL);
open orders (recent fills highlighted); an event-rate sparkline. It adapts to the terminal's
width, and when standard output is not a terminal it degrades to the pretty output.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._outputs.pretty import PrettyOutput, _clock, _n

SPARK = "▁▂▃▄▅▆▇█"
RATE_WINDOW = 60  # seconds shown in the sparkline
FILL_HIGHLIGHT = 10.0  # seconds a fill stays highlighted
RECENT_TRADES = 10  # the last trades shown per account


@dataclass
class _Account:
    status: str = "connecting"
    connected_at: float | None = None
    last_event: float | None = None
    reconnects: int = 0
    gaps: int = 0
    errors: int = 0
    balance: dict[str, Any] = field(default_factory=dict)
    positions: dict[tuple[str, Any], dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    fills: dict[str, float] = field(default_factory=dict)  # order id -> when it last filled
    trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_TRADES))
    rate: deque[int] = field(default_factory=lambda: deque([0] * RATE_WINDOW, RATE_WINDOW))
    rate_second: int = 0


class DashboardOutput:
    """The dashboard plugin. ``render()`` builds the current view (tests call it)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        force: bool = False,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.console = Console(file=stream, highlight=False)
        self.live_mode = force or self.console.is_terminal
        self._fallback = None if self.live_mode else PrettyOutput(stream, on_closed=on_closed)
        self._accounts: dict[str, _Account] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._started = time.time()

    # -- state ----------------------------------------------------------------------------

    def _account(self, name: str) -> _Account:
        account = self._accounts.get(name)
        if account is None:
            account = self._accounts[name] = _Account()
        return account

    def _tick(self, account: _Account, now: float) -> None:
        second = int(now)
        if account.rate_second == 0:
            account.rate_second = second
        while account.rate_second < second:  # roll the per-second counters forward
            account.rate.append(0)
            account.rate_second += 1
        account.rate[-1] += 1
        account.last_event = now

    # -- hooks ----------------------------------------------------------------------------

    @hookimpl
    def on_startup(self, context: Any) -> None:
        if self._fallback is not None:
            self._fallback.on_startup(context)
            return
        for name in context["accounts"]:
            self._account(name)
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self._live.start()

    @hookimpl
    def on_shutdown(self, context: Any) -> None:
        if self._fallback is not None:
            self._fallback.on_shutdown(context)
        if self._live is not None:
            self._live.refresh()
            self._live.stop()

    @hookimpl
    def on_stream_state(self, state: Any) -> None:
        if self._fallback is not None:
            self._fallback.on_stream_state(state)
            return
        with self._lock:
            account = self._account(state["account"])
            account.status = state["status"]
            if state["status"] == "connected":
                account.connected_at = time.time()
            stats = state.get("stats") or {}
            account.reconnects = stats.get("reconnects", account.reconnects)
            account.gaps = stats.get("gaps", account.gaps + (state["status"] == "gap"))

    @hookimpl
    def on_wallet(self, balance: Any, event: Any) -> None:
        if self._fallback is not None:
            self._fallback.on_wallet(balance, event)
            return
        with self._lock:
            account = self._account(event["account"])
            account.balance = balance
            self._tick(account, time.time())

    @hookimpl
    def on_order(self, order: Any, event: Any) -> None:
        if self._fallback is not None:
            self._fallback.on_order(order, event)
            return
        with self._lock:
            account = self._account(event["account"])
            now = time.time()
            previous = account.orders.get(order["id"])
            if (order["filled"] or 0) > ((previous or {}).get("filled") or 0):
                account.fills[order["id"]] = now
            if order["status"] == "open":
                account.orders[order["id"]] = order
            else:
                account.orders.pop(order["id"], None)
            self._tick(account, now)

    @hookimpl
    def on_trade(self, trade: Any, event: Any) -> None:
        if self._fallback is not None:
            self._fallback.on_trade(trade, event)
            return
        with self._lock:
            account = self._account(event["account"])
            account.trades.append(trade)
            self._tick(account, time.time())

    @hookimpl
    def on_position(self, position: Any, event: Any) -> None:
        if self._fallback is not None:
            self._fallback.on_position(position, event)
            return
        with self._lock:
            account = self._account(event["account"])
            key = (position["symbol"], position["side"] if position["hedged"] else None)
            if position["contracts"]:
                account.positions[key] = position
            else:
                account.positions.pop(key, None)
            self._tick(account, time.time())

    @hookimpl
    def on_error(self, error: Any, event: Any) -> None:
        if self._fallback is not None:
            self._fallback.on_error(error, event)
            return
        with self._lock:
            self._account(error.get("account") or "-").errors += 1

    # -- rendering ------------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        return self.render()

    def render(self, now: float | None = None) -> RenderableType:
        now = time.time() if now is None else now
        wide = self.console.width >= 100
        with self._lock:
            parts: list[RenderableType] = [self._accounts_table(now, wide)]
            for name, account in self._accounts.items():
                parts += self._account_tables(name, account, now, wide)
        return Group(*parts)

    def _accounts_table(self, now: float, wide: bool) -> Table:
        table = Table(title="bitmusa-plugin", title_justify="left", expand=True)
        for column in ("account", "state", "uptime", "last event", "reconnects", "gaps", "errors"):
            table.add_column(column)
        if wide:
            table.add_column(f"events/s, last {RATE_WINDOW} s")
        for name, a in self._accounts.items():
            style = {
                "connected": "green",
                "rotated": "green",
                "gap": "yellow",
                "failed": "bold red",
            }.get(a.status, "yellow")
            uptime = _duration(now - a.connected_at) if a.connected_at else "-"
            age = _duration(now - a.last_event) if a.last_event else "-"
            row: list[str | Text] = [
                name,
                Text(a.status, style=style),
                uptime,
                age,
                str(a.reconnects),
                str(a.gaps),
                str(a.errors),
            ]
            if wide:
                row.append(_sparkline(a.rate))
            table.add_row(*row)
        return table

    def _account_tables(self, name: str, a: _Account, now: float, wide: bool) -> list[Table]:
        tables: list[Table] = []
        if a.balance.get("total"):
            balances = Table(title=f"{name}: balances", title_justify="left", expand=True)
            for column in ("asset", "free", "used", "total"):
                balances.add_column(column, justify="right" if column != "asset" else "left")
            for asset, total in a.balance["total"].items():
                balances.add_row(
                    asset,
                    _n(a.balance["free"].get(asset)),
                    _n(a.balance["used"].get(asset)),
                    _n(total),
                )
            tables.append(balances)
        if a.positions:
            positions = Table(title=f"{name}: positions", title_justify="left", expand=True)
            columns = ["symbol", "side", "size", "entry", "liq.", "distance", "uPnL"]
            if not wide:
                columns.remove("distance")
            for column in columns:
                positions.add_column(column)
            for p in a.positions.values():
                side_style = "green" if p["side"] == "long" else "red"
                row: list[str | Text] = [
                    p["symbol"],
                    Text(str(p["side"]), style=side_style),
                    _n(p["contracts"]),
                    _n(p["entryPrice"]),
                    _n(p["liquidationPrice"]),
                ]
                if wide:
                    row.append(_distance(p))
                pnl = p["unrealizedPnl"]
                row.append(Text(_n(pnl), style="green" if (pnl or 0) >= 0 else "red"))
                positions.add_row(*row)
            tables.append(positions)
        if a.orders:
            orders = Table(title=f"{name}: open orders", title_justify="left", expand=True)
            for column in ("symbol", "side", "type", "price", "filled", "amount", "id"):
                orders.add_column(column)
            for o in list(a.orders.values())[-20:]:
                recent = now - a.fills.get(o["id"], 0) < FILL_HIGHLIGHT
                orders.add_row(
                    o["symbol"],
                    str(o["side"] or "-"),
                    str(o["type"] or "-"),
                    _n(o["price"]),
                    Text(_n(o["filled"]), style="bold yellow" if recent else ""),
                    _n(o["amount"]),
                    str(o["id"]),
                    style="on grey23" if recent else "",
                )
            tables.append(orders)
        if a.trades:
            trades = Table(title=f"{name}: recent trades", title_justify="left", expand=True)
            for column in ("time", "symbol", "side", "amount", "price", "fee", "role", "id"):
                trades.add_column(column)
            for t in reversed(a.trades):
                fee = t["fee"]
                trades.add_row(
                    _clock(t["timestamp"]),
                    str(t["symbol"]),
                    str(t["side"] or "-"),
                    _n(t["amount"]),
                    _n(t["price"]),
                    "-" if fee is None else f"{_n(fee['cost'])} {fee['currency'] or ''}",
                    str(t["takerOrMaker"] or "-"),
                    str(t["id"]),
                )
            tables.append(trades)
        return tables


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _sparkline(rates: deque[int]) -> str:
    top = max(rates) or 1
    return "".join(SPARK[min(len(SPARK) - 1, r * (len(SPARK) - 1) // top)] for r in rates)


def _distance(position: dict[str, Any]) -> str:
    """How far the entry is from liquidation, as a percentage of the entry price."""
    entry, liq = position["entryPrice"], position["liquidationPrice"]
    if not entry or not liq:
        return "-"
    return f"{abs(entry - liq) / entry * 100:.1f}%"
