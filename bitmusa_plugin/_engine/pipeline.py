"""The pipeline: frames in, hook calls out. Shared by ``replay`` and the live stream.

Data flows one way: raw frame -> :class:`~bitmusa_plugin._core.mapping.Mapper` (per account)
-> :class:`~bitmusa_plugin._engine.dispatch.Dispatcher` -> plugins. An order update that
shows a new fill is followed by its trade (``on_trade``), from the account's
:class:`~bitmusa_plugin._core.fills.Fills`. Everything that goes wrong on
the way is reported three ways: an ``on_error`` hook call, a log record and a counter.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bitmusa_hookspecs import Context, DeliveryPolicy, ErrorInfo, Event, StreamState, Trade
from bitmusa_plugin._core.fills import CloseSide, Fills
from bitmusa_plugin._core.mapping import DEFAULT_MAX_FRAME_BYTES, Mapped, Mapper
from bitmusa_plugin._core.resync import Ledger
from bitmusa_plugin._core.symbols import SymbolMap
from bitmusa_plugin._engine.dispatch import (
    DEFAULT_CONFLATE_AFTER,
    DEFAULT_ERROR_BURST,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_SLOW_AFTER,
    DEFAULT_STALL_AFTER,
    Dispatcher,
)
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.secrets import redact
from bitmusa_plugin._version import __version__

if TYPE_CHECKING:
    from bitmusa_plugin._engine.sides import SideGate

log = logging.getLogger(__name__)


@dataclass
class AccountStats:
    """Counters for one account."""

    #: a plain dict, not a ``Counter``: ``Counter`` defines ``__delitem__`` in Python, so
    #: each ``+=`` on one stores through a Python-level slot (2.5x a dict's, once a frame)
    events: dict[str, int] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    last_event_at: float | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        age = None if self.last_event_at is None else round(now - self.last_event_at, 3)
        return {
            "events": dict(self.events),
            "rejected": dict(self.rejected),
            "last_event_age": age,
        }


class Pipeline:
    """Maps frames per account and delivers the results to every plugin."""

    def __init__(
        self,
        plugins: PluginRegistry,
        *,
        command: str,
        markets: Mapping[str, str] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        conflate_after: int = DEFAULT_CONFLATE_AFTER,
        error_burst: int = DEFAULT_ERROR_BURST,
        slow_after: float = DEFAULT_SLOW_AFTER,
        stall_after: float = DEFAULT_STALL_AFTER,
        policy_override: DeliveryPolicy | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        close_side: CloseSide = "trade",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plugins = plugins
        self.command = command
        self.symbols = SymbolMap(markets)
        self.max_frame_bytes = max_frame_bytes
        self.close_side: CloseSide = close_side
        self.dispatcher = Dispatcher(
            plugins.hookimpls(),
            policies=plugins.policies(),
            override=policy_override,
            queue_size=queue_size,
            conflate_after=conflate_after,
            error_burst=error_burst,
            slow_after=slow_after,
            stall_after=stall_after,
            reporter=self.report,
            clock=monotonic,
        )
        # the subscribers are fixed with the dispatcher: an update nobody takes is never
        # packed (the look-up and the call cost as much as the counters)
        self._orders_taken = self.dispatcher.has_subscribers("on_order")
        self._trades_taken = self.dispatcher.has_subscribers("on_trade")
        self._clock = clock
        self._mappers: dict[str, Mapper] = {}
        #: per account, what ``ingest`` needs of it, found with one look-up (not four)
        self._lanes: dict[str, tuple[Mapper, AccountStats, Fills, Ledger]] = {}
        self.ledgers: dict[str, Ledger] = {}
        self.fills: dict[str, Fills] = {}
        #: per account, the wait for an unknown order's side (``_engine/sides.py``; a live
        #: stream's, none in replay), and the accounts with an order held for one now
        self.side_gates: dict[str, SideGate] = {}
        self.held: dict[str, SideGate] = {}
        self.accounts: dict[str, AccountStats] = {}
        self.errors: Counter[str] = Counter()
        self._context: Context = {"version": __version__, "command": command, "accounts": []}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, accounts: list[str]) -> None:
        """Start delivery and send ``on_startup`` (call from the running loop)."""
        for account in accounts:
            self.mapper(account)
        self._context = {"version": __version__, "command": self.command, "accounts": accounts}
        self.dispatcher.start()
        self.dispatcher.publish("on_startup", {"context": dict(self._context)})

    async def stop(self, timeout: float = 1.5) -> None:
        """Send ``on_shutdown`` after everything queued, then stop delivery."""
        self.dispatcher.publish("on_shutdown", {"context": dict(self._context)})
        await self.dispatcher.close(timeout)

    def mapper(self, account: str) -> Mapper:
        mapper = self._mappers.get(account)
        if mapper is None:
            mapper = self._mappers[account] = Mapper(
                account,
                symbols=self.symbols,
                max_frame_bytes=self.max_frame_bytes,
            )
            if account not in self.accounts:  # kept through a reset
                self.accounts[account] = AccountStats()
            ledger = self.ledgers[account] = Ledger()
            fills = self.fills[account] = Fills(self.symbols, self.close_side)
            self._lanes[account] = (mapper, self.accounts[account], fills, ledger)
        return mapper

    def reset(self, account: str) -> None:
        """Forget what was delivered of ``account`` (its wallet entries, ledger and fills;
        not its counters): a worker taking an account back after another streamed it
        knows none of what that one delivered, and starts from what it is told of it."""
        self._mappers.pop(account, None)
        self._lanes.pop(account, None)
        self.ledgers.pop(account, None)
        self.fills.pop(account, None)

    # -- the data path ----------------------------------------------------------------------

    def ingest(self, account: str, raw: str | bytes, received_at: int | None = None) -> bool:
        """Decode, map and dispatch one frame. Returns False if it was rejected."""
        now = self._clock()
        if received_at is None:
            received_at = int(now * 1000)
        if self.held and account in self.held and self.held[account].queue(raw, received_at):
            return True  # behind its order, whose side is asked for
        lane = self._lanes.get(account)
        if lane is None:
            self.mapper(account)
            lane = self._lanes[account]
        mapper, stats, fills, ledger = lane
        result = mapper.feed(raw, received_at)
        if isinstance(result, Mapped):
            hook, key, obj, event = result  # a tuple: unpacked at once, not by attribute
            events = stats.events
            stream = event["stream"]
            try:
                events[stream] += 1
            except KeyError:
                events[stream] = 1
            stats.last_event_at = now
            if hook == "on_order":
                trades = fills.on_order(obj, event["eventTime"])
                ledger.record("on_order", obj)
                if (
                    obj["side"] is None
                    and account in self.side_gates
                    and self.side_gates[account].hold(obj, event, trades)
                ):
                    return True  # published with its side (or None) by the gate
                if self._orders_taken or self._trades_taken:
                    self.publish_order(account, obj, event, trades)
                elif trades:  # nobody to tell: only publish_order's count
                    events["trade"] = events.get("trade", 0) + len(trades)
                return True
            ledger.record(hook, obj)
            self.dispatcher.publish(hook, {key: obj, "event": event})
            return True
        error = result.error
        stats.rejected[error["kind"]] += 1
        self.report(error)
        return False

    def publish_order(self, account: str, order: Any, event: Event, trades: list[Trade]) -> None:
        """An order update and the trades of its fill, to every plugin."""
        if self._orders_taken:
            self.dispatcher.publish("on_order", {"order": order, "event": event})
        if trades:
            events = self.accounts[account].events
            events["trade"] = events.get("trade", 0) + len(trades)
            if self._trades_taken:
                for trade in trades:
                    self.dispatcher.publish("on_trade", {"trade": trade, "event": event})

    def deliver(
        self, account: str, hook: str, key: str, obj: Any, data: Any, *, stream: str
    ) -> None:
        """Deliver an object that did not come from a frame (a resync snapshot)."""
        events = self.accounts[account].events
        events[stream] = events.get(stream, 0) + 1
        event: Event = {
            "account": account,
            "stream": stream,
            "eventTime": None,
            "receivedAt": int(self._clock() * 1000),
            "data": data,
        }
        self.dispatcher.publish(hook, {key: obj, "event": event})

    def report(self, error: ErrorInfo, event: Event | None = None) -> None:
        """Report a contained failure: counter, log, ``on_error``. The message is redacted
        here, the one place every report passes (a plugin's exception text included)."""
        error["message"] = redact(error["message"])
        self.errors[error["kind"]] += 1
        log.warning("%s: %s", error["kind"], error["message"])
        self.dispatcher.publish("on_error", {"error": error, "event": event})

    def stream_state(self, state: StreamState) -> None:
        self.dispatcher.publish("on_stream_state", {"state": state})

    def stats(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "accounts": {name: s.as_dict(now) for name, s in self.accounts.items()},
            "errors": dict(self.errors),
            "plugins": self.dispatcher.stats(),
        }
