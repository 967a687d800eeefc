"""A side for every order and trade: an order the engine does not know is held until its
side is learnt over REST, for at most ``side_wait`` seconds, per account.

Bitmusa's order stream carries no side (no ``position``). :class:`~bitmusa_plugin._core.
fills.Fills` knows the side of the orders the resync's snapshot or trade history listed
and of those this process placed; an order another client of the account placed (the web
page, another bot, a previous run) is new to it. The rule (docs/hooks.md, on_order):

1. the open orders of its ticker (GET /future/order), which carry the side; else, for an
   order already done when its first frame came (a market order), the newest page of its
   ticker's trade history, whose records carry it too;
2. while that is asked, the order's own later frames wait behind it, in order; nothing
   else waits (the account's other orders, wallet and positions flow on, and so does
   every other account: each has its own gate); the order and its trades go out with the
   side on the loop turn a read lists it (whichever order's lookup sent that read; the
   orders one read lists, in the order they were held), and it is remembered for the
   order's later frames;
3. when neither says within ``side_wait`` (or the REST calls fail), the order and its
   trades go out with ``side`` None, reported once (``side_unknown``, with why), and the
   order's later frames do not wait again.

Pairing with the position update of the same execution was not used: a one-way account's
position frame does not tell an opening buy from a closing buy of the other side's
position reliably enough to prove it in both modes.

A resync waits for the orders the gate holds when it plans (:meth:`SideGate.idle`):
their frames are older than the snapshot. So does a stream that stops. An order this
process placed, held because its frame beat its POST's answer, goes out as soon as the
answer comes (:meth:`SideGate.settle`), with the side it was sent with.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bitmusa_hookspecs import Event, Trade, error_info
from bitmusa_plugin._core import resync, wire
from bitmusa_plugin._core.errors import BitmusaError
from bitmusa_plugin._core.fills import side_of
from bitmusa_plugin._engine.aio import within

if TYPE_CHECKING:
    from bitmusa_plugin._engine.pipeline import Pipeline
    from bitmusa_plugin._engine.rest import AccountClient

#: how long an account's events may wait for an unknown order's side, seconds, by
#: default: 0, off. A wait delivers the account's other objects past the held order (each
#: object's own updates stay in order, the wire order across objects does not) and spends
#: REST reads; a plugin host turns it on when its plugins need the side (``listen
#: --side-wait``, ``Session(side_wait=...)``); the ccxt drop-in, whose structures require
#: it, runs with :data:`SIDE_WAIT` (option ``sideWait``)
DEFAULT_SIDE_WAIT = 0.0
#: the wait where it is on: well under a second, a loopback lookup is a few ms
SIDE_WAIT = 0.25
#: orders whose side could not be learnt, remembered (they do not wait again), at most
GIVEN_UP = 10_000


Lookup = Callable[[dict[str, Any]], Awaitable[tuple[str | None, str]]]


def rest_lookup(client: AccountClient, pipeline: Pipeline, account: str) -> Lookup:
    """Learn an order's side from its ticker's open orders, else its trade history. Every
    open order listed is learnt too (the open book, forgotten as each ends), and the reads
    are shared: the orders of a burst (another client's market maker) that wait on one
    ticker join the read in flight, and those it cannot list join the next one, so a
    ticker has at most two reads of each kind at a time, whatever the burst. One read an
    order each would spend the REST allowance the keep-alive needs."""
    stamps = itertools.count()
    inflight: dict[tuple[str, str], tuple[int, asyncio.Future[Any]]] = {}

    def release(listed: list[dict[str, Any]]) -> None:
        """The held orders ``listed`` names go out now, in the order they were held."""
        gate = pipeline.held.get(account)
        if gate is None:
            return
        sides: dict[str, str] = {}
        close_side = pipeline.close_side
        for record in listed:
            order_id = str(record.get("order_id"))
            if order_id in gate.pending and order_id not in sides:
                try:
                    side = side_of(record.get("position"), record.get("direction"), close_side)
                except Exception:
                    continue  # its own lookup reads it again, and reports it
                if side is not None:
                    sides[order_id] = side
        gate.learnt(sides)

    async def listing(call: Awaitable[list[dict[str, Any]] | None]) -> list[dict[str, Any]] | None:
        listed = await call
        # On the loop turn the answer comes, not after the lookups that wait for it resume
        # (the read, its shield, the lookup's task, ``within``'s waiter, ``_learn``: five
        # turns): an order of this process settled by its POST's answer meanwhile went out
        # ahead of an older order whose side was already known, and ccxt's watchOrders
        # test saw the two out of time order (issue 21, docs/benchmarks.md §9c).
        if listed:
            release(listed)
        return listed

    def start(key: tuple[str, str]) -> tuple[int, asyncio.Future[Any]]:
        kind, ticker = key
        call: Awaitable[list[dict[str, Any]] | None]
        if kind == "open":
            call = client.open_orders(ticker=ticker, size=resync.OPEN_ORDERS_PAGE)
        else:
            call = client.trade_history_page(1, {"size": 100, "ticker": ticker})
        read = (next(stamps), asyncio.ensure_future(listing(call)))
        inflight[key] = read

        def done(future: asyncio.Future[Any]) -> None:
            if inflight.get(key) is read:
                del inflight[key]
            if not future.cancelled():
                future.exception()  # every joiner sees it; none has to be left to

        read[1].add_done_callback(done)
        return read

    async def records(key: tuple[str, str], begun_after: int | None) -> list[dict[str, Any]]:
        """The records of a read of ``key``: the one in flight (``begun_after`` None), or
        one begun after the stamp ``begun_after`` (joined if it is in flight)."""
        read = inflight.get(key)
        if read is None or (begun_after is not None and read[0] <= begun_after):
            read = start(key)
        return await asyncio.shield(read[1]) or []

    async def lookup(order: dict[str, Any]) -> tuple[str | None, str]:
        ticker = pipeline.symbols.ticker(order["symbol"])
        close_side = pipeline.close_side
        fills = pipeline.fills[account]
        mark = next(stamps)  # reads begun after this may list the order; earlier ones might

        def learn(listed: list[dict[str, Any]]) -> str | None:
            found = None
            for record in listed:
                side = side_of(record.get("position"), record.get("direction"), close_side)
                order_id = str(record.get("order_id"))
                if order_id == order["id"]:
                    found = side
                elif fills.side(order_id) is None:
                    fills.learn(order_id, side)
            return found

        if ("open", ticker) in inflight:  # begun before its frame: it may list it already
            found = learn(await records(("open", ticker), None))
            if found is not None:
                return found, ""
        found = learn(await records(("open", ticker), mark))
        if found is not None:
            return found, ""
        for record in await records(("history", ticker), mark):
            if str(record.get("order_id")) == order["id"]:
                return side_of(record.get("position"), record.get("direction"), close_side), ""
        return None, "neither its ticker's open orders nor its trade history list it"

    return lookup


@dataclass
class _Pending:
    """An order held for its side: its update, its trades, and its own later frames."""

    order: dict[str, Any]
    event: Event
    trades: list[Trade]
    #: its later frames, raw (mapped when it is released), or already mapped when the
    #: pipeline held a second update of it (a frame :func:`wire.object_key` could not key)
    queued: list[tuple[str | bytes, int | None] | tuple[dict[str, Any], Event, list[Trade]]] = (
        field(default_factory=list)
    )


class SideGate:
    """One account's waits for unknown sides: the orders held, each with its own later
    frames queued behind it. Nothing else waits: the account's other orders, its wallet
    and positions, and every other account flow on."""

    def __init__(
        self, pipeline: Pipeline, account: str, lookup: Lookup, wait: float = DEFAULT_SIDE_WAIT
    ) -> None:
        self.pipeline = pipeline
        self.account = account
        self.lookup = lookup
        self.wait = wait
        self.pending: dict[str, _Pending] = {}
        self._given_up: OrderedDict[str, None] = OrderedDict()
        self._learning: dict[str, asyncio.Task[None]] = {}  # order id -> its lookup
        self.waits = 0  # orders held for their side
        self.unknown = 0  # of those, delivered with side None

    def hold(self, order: dict[str, Any], event: Event, trades: list[Trade]) -> bool:
        """Hold ``order`` (side None) and its trades while its side is asked for; False
        when it is not to wait (no wait configured, or it was given up on before)."""
        if self.wait <= 0 or order["id"] in self._given_up:
            return False
        held = self.pending.get(order["id"])
        if held is not None:  # a second update of an order already held: behind the first
            held.queued.append((order, event, trades))
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False  # replay without a loop: nothing to ask
        self.waits += 1
        order_id = order["id"]
        self.pending[order_id] = _Pending(order, event, trades)
        self.pipeline.held[self.account] = self
        task = loop.create_task(self._learn(order_id))
        self._learning[order_id] = task

        def done(task: asyncio.Task[None]) -> None:
            if self._learning.get(order_id) is task:
                del self._learning[order_id]

        task.add_done_callback(done)
        return True

    def settle(self, order_id: str, side: str) -> None:
        """An order this process placed, whose frame beat its POST's answer: if it is held,
        it goes out now with ``side`` (its lookup is not waited for)."""
        if order_id not in self.pending:
            return
        self._release(order_id, side, "")
        task = self._learning.pop(order_id, None)
        if task is not None:
            task.cancel()

    def learnt(self, sides: dict[str, str]) -> None:
        """A REST read listed these orders, with their sides: those held go out now, in
        the order they were held (their lookups, which may wait for that same read, are
        not waited for)."""
        for order_id in [held for held in self.pending if held in sides]:
            self.settle(order_id, sides[order_id])

    def queue(self, raw: str | bytes, received_at: int | None) -> bool:
        """Queue ``raw`` behind its order if that order is held (True), else leave it."""
        try:
            text = raw if isinstance(raw, str) else raw.decode()
        except UnicodeDecodeError:
            return False
        key = wire.object_key(text)
        if key is None or key[0] != "order":
            return False
        pending = self.pending.get(str(key[1]))
        if pending is None:
            return False
        pending.queued.append((raw, received_at))
        return True

    def idle(self) -> Coroutine[Any, Any, None]:
        """Wait until the orders held at this call have gone out (each within ``wait``).
        Holds that begin meanwhile are not waited for: another client's orders coming one
        after another would otherwise keep a resync or a stop waiting for ever."""
        holds = set(self._learning.values())  # now, not when the waiting starts

        async def gone() -> None:
            if holds:
                await asyncio.wait(holds)

        return gone()

    def close(self) -> None:
        for task in list(self._learning.values()):
            task.cancel()

    async def _learn(self, order_id: str) -> None:
        side: str | None = None
        why = ""
        try:
            side, why = await within(self.lookup(self.pending[order_id].order), self.wait)
        except asyncio.TimeoutError:
            why = f"not learnt within side_wait ({self.wait:g} s)"
        except BitmusaError as exc:
            why = f"the REST call failed: {exc.message}"
        except asyncio.CancelledError:
            if order_id in self.pending:  # not settled: the stream stops
                self._release(order_id, None, "the stream stopped")
            raise
        except Exception as exc:  # a record it could not read: the order still goes out
            why = f"its REST records could not be read ({type(exc).__name__}: {exc})"
        if order_id in self.pending:
            self._release(order_id, side, why)

    def _release(self, order_id: str, side: str | None, why: str) -> None:
        pipeline, account = self.pipeline, self.account
        pending = self.pending.pop(order_id)
        order = pending.order
        if side is None:  # learnt meanwhile: the order this process placed, whose POST
            side = pipeline.fills[account].side(order_id)  # returned after its frame
        if side is not None:
            pipeline.fills[account].learn(order_id, side)
            order["side"] = side
            for trade in pending.trades:
                trade["side"] = side
        else:
            self.unknown += 1
            self._given_up[order_id] = None
            if len(self._given_up) > GIVEN_UP:
                self._given_up.popitem(last=False)
            pipeline.report(
                error_info(
                    "side_unknown",
                    f"order {order_id} (placed by another client?) is delivered with side "
                    f"None, and so are its trades: {why}",
                    account,
                )
            )
        pipeline.publish_order(account, order, pending.event, pending.trades)
        if not self.pending:
            pipeline.held.pop(account, None)
        for item in pending.queued:  # its later frames, with its side now
            if isinstance(item[0], dict):
                later, later_event, later_trades = item
                later["side"] = order["side"]
                for trade in later_trades:
                    trade["side"] = order["side"]
                pipeline.publish_order(account, later, later_event, later_trades)
            else:
                pipeline.ingest(account, item[0], item[1])
