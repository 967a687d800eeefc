"""``--output pretty``: one colourised, human-readable line per hook call (rich)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

from rich.console import Console
from rich.markup import escape

from bitmusa_hookspecs import (
    Balance,
    Context,
    ErrorInfo,
    Event,
    Order,
    Position,
    StreamState,
    Trade,
    hookimpl,
)

_STATUS_STYLE = {"open": "cyan", "closed": "green", "canceled": "yellow"}
_STATE_STYLE = {
    "connected": "green",
    "rotated": "green",
    "gap": "bold yellow",
    "disconnected": "yellow",
    "failed": "bold red",
    "closed": "dim",
}


def _n(value: float | None) -> str:
    """A number as a trader reads it: no float noise, no trailing zeros."""
    if value is None:
        return "-"
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _styled(style: str, text: str) -> str:
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def _clock(ms: int | None) -> str:
    if ms is None:
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


def _when(event: Event) -> tuple[int | None, str]:
    """The time a line shows: the exchange's event time, or for a REST snapshot (which has
    none) the time it was received, marked as such."""
    if event["stream"] == "resync" or event["eventTime"] is None:
        return event["receivedAt"], "[dim]snapshot[/] "
    return event["eventTime"], ""


class PrettyOutput:
    """Prints a line per event to ``stream`` (stdout by default). Times are UTC; a line
    built from a REST snapshot (after a start or a gap) says ``snapshot`` and shows when it
    was received. A closed output ends it quietly (``on_closed`` is called once)."""

    def __init__(
        self, stream: IO[str] | None = None, *, on_closed: Callable[[], None] | None = None
    ) -> None:
        self.console = Console(file=stream, highlight=False, soft_wrap=True)
        self._on_closed = on_closed
        self.closed = False

    def _print(self, text: str) -> None:
        if self.closed:
            return
        try:
            self.console.print(text)
        except (BrokenPipeError, ValueError):  # EPIPE, or the stream was closed under us
            self.closed = True
            if self._on_closed is not None:
                self._on_closed()

    def _line(self, ms: int | None, account: str | None, kind: str, text: str) -> None:
        who = f"[dim]{escape(account)}[/] " if account else ""
        self._print(f"[dim]{_clock(ms)}[/] {who}{kind} {text}")

    @hookimpl
    def on_wallet(self, balance: Balance, event: Event) -> None:
        data = event["data"] if isinstance(event["data"], dict) else {}
        # a live frame names its asset "asset", a REST snapshot record "symbol"
        asset = data.get("asset") or data.get("symbol")
        assets = [str(asset)] if asset else sorted(balance.get("total", {}))
        ms, tag = _when(event)
        for code in assets:
            text = (
                f"{tag}[bold]{escape(code)}[/] free {_n(balance['free'].get(code))} "
                f"used {_n(balance['used'].get(code))} "
                f"total {_n(balance.get('total', {}).get(code))}"
            )
            self._line(ms, event["account"], "[magenta]WALLET  [/]", text)

    @hookimpl
    def on_order(self, order: Order, event: Event) -> None:
        status = order["status"] or "?"
        style = _STATUS_STYLE.get(status, "red")
        side = order["side"] or ""
        side_style = "green" if side == "buy" else "red" if side == "sell" else ""
        ms, tag = _when(event)
        text = tag + (
            f"[bold]{escape(order['symbol'] or '?')}[/] "
            f"{_styled(side_style, side)} {escape(order['type'] or '')} "
            f"[{style}]{escape(status)}[/] {_n(order['filled'])}/{_n(order['amount'])} "
            f"@ {_n(order['price'])} avg {_n(order['average'])} "
            f"[dim]{escape(order['id'] or '')}[/]"
        )
        if order["reduceOnly"]:
            text += " [dim]reduce-only[/]"
        self._line(ms, event["account"], "[blue]ORDER   [/]", text)

    @hookimpl
    def on_trade(self, trade: Trade, event: Event) -> None:
        side = trade["side"] or ""
        side_style = "green" if side == "buy" else "red" if side == "sell" else ""
        ms, tag = _when(event)
        fee = trade["fee"]
        fee_text = (
            f" fee {_n(fee['cost'])} {escape(str(fee['currency'] or ''))}"
            if fee is not None
            else ""
        )
        role = f" {trade['takerOrMaker']}" if trade["takerOrMaker"] else ""
        text = tag + (
            f"[bold]{escape(trade['symbol'] or '?')}[/] {_styled(side_style, side)} "
            f"{_n(trade['amount'])} @ {_n(trade['price'])} cost {_n(trade['cost'])}"
            f"{fee_text}[dim]{role} {escape(trade['id'] or '')}[/]"
        )
        info = trade["info"] if isinstance(trade["info"], dict) else {}
        if info.get("estimated"):
            text += " [yellow]estimated[/]"
        self._line(ms, event["account"], "[green]TRADE   [/]", text)

    @hookimpl
    def on_position(self, position: Position, event: Event) -> None:
        side = position["side"] or ""
        style = "green" if side == "long" else "red" if side == "short" else ""
        flat = position["contracts"] == 0
        ms, tag = _when(event)
        text = tag + (
            f"[bold]{escape(position['symbol'] or '?')}[/] {_styled(style, side)} "
            f"{_n(position['contracts'])} @ {_n(position['entryPrice'])} "
            f"liq {_n(position['liquidationPrice'])} uPnL {_n(position['unrealizedPnl'])} "
            f"[dim]{escape(position['marginMode'] or '')} x{_n(position['leverage'])}[/]"
        )
        if flat:
            info = position["info"] if isinstance(position["info"], dict) else {}
            why = info.get("status") or info.get("resync") or "closed"
            text += f" [yellow]flat ({escape(str(why))})[/]"
        self._line(ms, event["account"], "[cyan]POSITION[/]", text)

    @hookimpl
    def on_stream_state(self, state: StreamState) -> None:
        status = state["status"]
        text = f"[{_STATE_STYLE.get(status, 'white')}]{status}[/]"
        if status == "gap":
            text += f" since {_clock(state['since'])} until {_clock(state['until'])}"
        if state.get("reason"):
            text += f" [dim]({escape(str(state['reason']))})[/]"
        stats = state.get("stats")
        if stats:
            events = sum(stats.get("events", {}).values())
            rejected = sum(stats.get("rejected", {}).values())
            text += (
                f" [dim]events={events} rejected={rejected} reconnects="
                f"{stats.get('reconnects', 0)} gaps={stats.get('gaps', 0)} handler_errors="
                f"{stats.get('handler_errors', 0)} queue={stats.get('queue_depth', 0)}[/]"
            )
        self._line(int(time.time() * 1000), state["account"], "[white]STREAM  [/]", text)

    @hookimpl
    def on_error(self, error: ErrorInfo, event: Event | None) -> None:
        text = f"[red]{escape(error['kind'])}[/] {escape(error['message'])}"
        if error.get("raw"):
            text += f" [dim]{escape((error['raw'] or '')[:120])}[/]"
        self._line(int(time.time() * 1000), error.get("account"), "[bold red]ERROR   [/]", text)

    @hookimpl
    def on_startup(self, context: Context) -> None:
        accounts = ", ".join(context["accounts"]) or "-"
        self._print(
            f"[bold]bitmusa-plugin {escape(context['version'])}[/] "
            f"{escape(context['command'])} [dim]accounts: {escape(accounts)}[/]"
        )

    @hookimpl
    def on_shutdown(self, context: Context) -> None:
        self._print("[dim]stopped[/]")
