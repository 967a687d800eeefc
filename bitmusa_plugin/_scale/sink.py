"""The Redis sink: every delivered hook event, ``XADD``-ed as the JSON line ``--output jsonl``
writes, with an idempotency id.

Entries have two fields: ``id`` (the idempotency id) and ``json`` (the jsonl record). The
id is ``account:stream:eventTime:digest``, the digest a BLAKE2b of the record's payload
(the unified object without ``event.receivedAt``, which differs between two workers that
received the same frame): two deliveries of one exchange event get the same id, so a
consumer can drop the second. A trade's id is its fill's (``account:trade:<trade id>``):
one fill learnt live by one worker and from the trade history by the next is one trade.
States and errors carry ids too (their digest covers what
they say).

Writes are batched: the hooks append to a bounded buffer and one writer task sends it in
pipelines of up to ``batch`` entries. The sink is lossless (delivery policy ``all``): while
Redis is slow or unreachable the buffer holds events, and once it holds ``max_buffer`` the
hooks wait for room, so the sink's queue fills and the stream itself waits (TCP
backpressure) instead of anything being dropped. The outage is reported once through
``on_error`` (kind ``sink_unavailable``) and the log, and the buffer is written in order once
Redis is back. An outage longer than the dispatcher's stall bound (30 s) makes the sink
``plugin_stalled``, as any plugin that stops making progress (docs/plugins.md).
``stats()`` counts written, buffered and retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from bitmusa_hookspecs import (
    Balance,
    DeliveryPolicy,
    ErrorInfo,
    ErrorKind,
    Event,
    Order,
    Position,
    StreamState,
    Trade,
    error_info,
    hookimpl,
)
from bitmusa_plugin._core.redis_url import is_sentinel

log = logging.getLogger(__name__)

DEFAULT_STREAM = "bitmusa:events"
DEFAULT_MAXLEN = 1_000_000
#: worker mode: how long an order's last state stays in its account's orders hash once it
#: is done, in ms of receipt behind the account's resume point (``last``): a takeover
#: reads the trade history from a margin (5 s) before that point, and needs the state of
#: every order whose fills it may read again there (``resync.inherit``)
ORDER_KEEP_MS = 60_000

#: a buffered order record: (its id, done (no longer open), its receipt in ms)
_OrderRef = tuple[str, bool, int]


def idempotency_id(record: dict[str, Any]) -> str:
    """``account:stream:eventTime:digest`` for a jsonl record (see the module doc); for a
    trade ``account:trade:<trade id>``."""
    event = record.get("event") or {}
    trade = record.get("trade") if record["hook"] == "on_trade" else None
    if trade is not None and trade.get("id") is not None:
        # A trade's id is its fill (order id and cumulative filled, _core/fills.py),
        # however it was learnt; the record is not: after a SIGKILL the next owner's resync
        # reads the trade history from a margin before the last event written, and
        # re-delivers, as history records, fills the dead owner had written from the
        # order stream (tests/test_fills_handover.py). One fill, one id.
        return f"{event.get('account') or '-'}:trade:{trade['id']}"
    # not the fence either: two owners delivering one event must give it one id
    payload = {k: v for k, v in record.items() if k not in ("event", "fence")}
    if event:
        payload["event"] = {k: v for k, v in event.items() if k != "receivedAt"}
    digest = hashlib.blake2b(
        orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), digest_size=12
    ).hexdigest()
    state = record.get("state") or {}
    error = record.get("error") or {}
    account = event.get("account") or state.get("account") or error.get("account") or "-"
    stream = event.get("stream") or record["hook"]
    return f"{account}:{stream}:{event.get('eventTime', 0)}:{digest}"


class RedisSink:
    """A built-in plugin. ``report`` (the host's) carries outages to ``on_error``."""

    bitmusa_delivery: DeliveryPolicy = "all"

    def __init__(
        self,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        maxlen: int | None = DEFAULT_MAXLEN,
        batch: int = 500,
        max_buffer: int = 100_000,
        retry: float = 0.5,
        report: Callable[[ErrorInfo], None] | None = None,
        fence: Callable[[str], int | None] | None = None,
        wait_replicas: int | None = None,
        wait_timeout: float = 1.0,
    ) -> None:
        self.url = url
        #: replicas that must have a batch before it leaves the buffer (``WAIT``): by
        #: default 1 behind Sentinel, where a failover promotes a replica and would lose
        #: what only the old primary had; 0 (no WAIT) for a single Redis
        self.wait_replicas = (
            (1 if is_sentinel(url) else 0) if wait_replicas is None else wait_replicas
        )
        self.wait_timeout = wait_timeout
        self.unreplicated = 0  # entries written without the replicas' acknowledgement in time
        self._lagging = False
        self.stream = stream  # may hold "{account}"
        self.maxlen = maxlen
        self.batch = batch
        self.max_buffer = max_buffer
        self.retry = retry
        self._report = report
        self._fence = fence  # worker mode: the account's lease fencing token
        #: (stream key, idempotency id, record, account, how far it may move ``last``:
        #: its receipt in ms, held below the account's ceiling when the sink took it;
        #: for an order record in worker mode, what the orders hash needs of it)
        self._buffer: deque[tuple[str, bytes, bytes, str | None, int | None, _OrderRef | None]]
        self._buffer = deque()
        self._last_key: str | None = None
        self._ceiling: Callable[[str], int | None] | None = None
        self._orders_key: str | None = None  # holds "{account}"
        #: per account, the done orders written to its hash, oldest first: (receipt, id)
        self._done: dict[str, deque[tuple[int, str]]] = {}
        self._points: dict[str, int] = {}  # each account's resume point, as last written
        #: the batch being written: done when it landed or failed, and the resume points
        #: it writes (``in_flight``)
        self._in_flight: tuple[asyncio.Future[None], dict[str, int]] | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # set while the buffer has room
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._down_since: float | None = None
        self._closing = False
        self._closed = False
        self.written = 0
        self.retries = 0
        self.outages = 0

    def __repr__(self) -> str:
        return f"RedisSink(stream={self.stream!r})"  # the URL may hold a password

    def bind(
        self,
        report: Callable[[ErrorInfo], None],
        fence: Callable[[str], int | None] | None = None,
        last_key: str | None = None,
        ceiling: Callable[[str], int | None] | None = None,
        orders_key: str | None = None,
    ) -> None:
        """Where outages are reported (the host's ``report``), and, in worker mode, the
        fencing token of each account's lease, written into its entries, and the hash
        where each account's last written event time goes (``HSET``, in the same
        pipeline: what a takeover resumes from is exactly what reached Redis).

        That time never passes a gap whose fills are not all in the sink's hands:
        ``ceiling`` says how far an account's time may move (None: as far as its
        records; a wall ms: the start of a gap not delivered yet, an outage, a resync
        under way or one whose records are still queued for the sink; -1: not at all,
        its stream is not here any more). It is asked when the sink takes a record (in
        delivery order: the record's own bound) and again when a batch is written. A
        takeover after a death in the middle of a gap then reads that gap's history
        again.

        ``orders_key`` (holding ``{account}``): the hash where each order's last record
        goes, in the same pipeline as the record, kept until the order is done and
        ``ORDER_KEEP_MS`` behind the resume point: the next owner starts from those
        states (``resync.inherit``), so that the fills it reads again are not counted
        twice."""
        self._report = report
        self._fence = fence
        self._last_key = last_key
        self._ceiling = ceiling
        self._orders_key = orders_key

    # -- hooks ----------------------------------------------------------------------------

    async def _add(self, record: dict[str, Any], account: str | None) -> None:
        if self._task is None:
            self._start()
        while len(self._buffer) >= self.max_buffer and not self._closing:
            # full (Redis slow or away): wait for room; our queue, then the stream, waits
            self._room.clear()
            await self._room.wait()
        if account is not None and self._fence is not None:
            record["fence"] = self._fence(account)
        key = self.stream.replace("{account}", account or "-")
        event = record.get("event")
        received = point = event.get("receivedAt") if isinstance(event, dict) else None
        if point is not None and account is not None and self._ceiling is not None:
            cap = self._ceiling(account)
            if cap is not None and cap < point:
                point = None if cap < 0 else cap
        order: _OrderRef | None = None
        if self._orders_key is not None and record["hook"] == "on_order" and received:
            state = record["order"]
            order = (str(state["id"]), state["status"] != "open", received)
        body = orjson.dumps(record)
        self._buffer.append((key, idempotency_id(record).encode(), body, account, point, order))
        self._wake.set()

    @hookimpl
    async def on_wallet(self, balance: Balance, event: Event) -> None:
        await self._add({"hook": "on_wallet", "balance": balance, "event": event}, event["account"])

    @hookimpl
    async def on_order(self, order: Order, event: Event) -> None:
        await self._add({"hook": "on_order", "order": order, "event": event}, event["account"])

    @hookimpl
    async def on_trade(self, trade: Trade, event: Event) -> None:
        await self._add({"hook": "on_trade", "trade": trade, "event": event}, event["account"])

    @hookimpl
    async def on_position(self, position: Position, event: Event) -> None:
        await self._add(
            {"hook": "on_position", "position": position, "event": event}, event["account"]
        )

    @hookimpl
    async def on_stream_state(self, state: StreamState) -> None:
        clean = {k: v for k, v in state.items() if k != "stats"}  # counters: not an event
        await self._add({"hook": "on_stream_state", "state": clean}, state["account"])

    @hookimpl
    async def on_error(self, error: ErrorInfo, event: Event | None) -> None:
        if error["kind"] == "sink_unavailable":
            return  # our own report: not written into the sink it is about
        await self._add({"hook": "on_error", "error": error, "event": event}, error["account"])

    @hookimpl
    async def on_shutdown(self) -> None:
        await self.close()

    # -- the writer -----------------------------------------------------------------------

    def _start(self) -> None:
        from bitmusa_plugin._scale import connect  # redis only when the sink is used

        self._client = connect.client(self.url, socket_timeout=5.0, socket_connect_timeout=2.0)
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="bitmusa:sink")

    async def _writer(self) -> None:
        from redis.exceptions import RedisError

        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            chunk = [self._buffer[i] for i in range(min(self.batch, len(self._buffer)))]
            try:
                pipe = self._client.pipeline(transaction=False)
                latest: dict[str, int] = {}
                states: dict[str, dict[str, bytes]] = {}
                done: list[tuple[str, int, str]] = []
                for key, ident, body, account, point, order in chunk:
                    fields = {b"id": ident, b"json": body}
                    pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)
                    if account is not None and point is not None:
                        latest[account] = max(point, latest.get(account, 0))
                    if order is not None and account is not None:
                        states.setdefault(account, {})[order[0]] = body
                        if order[1]:
                            done.append((account, order[2], order[0]))
                # after the records they stand for: a new owner never takes a state for
                # delivered whose record is not in the stream. Written also while the
                # account's stream restarts or has left: an older state a late batch
                # leaves is still true (a fill's id is its cumulative amount, so what a
                # new owner re-reads from it gets the ids it had), a dropped one is not
                # there at all
                for account, orders in states.items():
                    assert self._orders_key is not None
                    pipe.hset(self._orders_key.replace("{account}", account), mapping=orders)
                points = self._resume_points(latest) if self._last_key is not None else {}
                pruned = self._prune(pipe, points)
                if points:
                    pipe.hset(self._last_key, mapping=points)
                if self.wait_replicas:
                    pipe.wait(self.wait_replicas, int(self.wait_timeout * 1000))
                landed = asyncio.get_running_loop().create_future()
                self._in_flight = (landed, points)
                try:
                    replies = await pipe.execute()
                finally:
                    self._in_flight = None
                    landed.set_result(None)
            except (RedisError, OSError) as exc:
                self.retries += 1
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    self.outages += 1
                    self._error(
                        "sink_unavailable",
                        f"Redis sink: {type(exc).__name__}; buffering "
                        f"{len(self._buffer)} events until Redis is back",
                    )
                if self._closing:
                    return
                await asyncio.sleep(self.retry)
                continue
            if self.wait_replicas:
                self._replicated(int(replies[-1]), len(chunk))
            for _ in chunk:  # written: only now do they leave the buffer
                self._buffer.popleft()
            for account, n in pruned.items():
                queue = self._done[account]
                for _ in range(n):
                    queue.popleft()
            for account, received, order_id in done:
                self._done.setdefault(account, deque()).append((received, order_id))
            self._points.update(points)
            self.written += len(chunk)
            self._room.set()
            if self._down_since is not None:
                log.warning(
                    "Redis sink: back after %.1f s; %d events caught up",
                    time.monotonic() - self._down_since,
                    len(chunk),
                )
                self._down_since = None

    def in_flight(self, account: str, above: int = -1) -> asyncio.Future[None] | None:
        """The batch being written now, if it moves ``account``'s resume point above
        ``above``: done once it has landed or failed (a failed batch is built again, under
        the ceilings of then). Worker mode lowers that point only after it: landing later,
        it would raise the point again."""
        flight = self._in_flight
        if flight is not None and flight[1].get(account, -1) > above:
            return flight[0]
        return None

    def lower(self, account: str, ms: int) -> None:
        """Hold the resume points of ``account``'s records not written yet at ``ms`` at
        most. Worker mode calls it when a stream starts to read a gap from the past (a
        restart, a takeover): records taken before, ahead of the gap's in the buffer,
        would otherwise move ``last`` past the gap in a batch written once its cap has
        lifted, with the gap's records still in a later one."""
        if any(e[3] == account and e[4] is not None and e[4] > ms for e in self._buffer):
            # in one pass (a deque's middle is slow to index); the writer holds no
            # reference to it across an await, only its length
            self._buffer = deque(
                (key, ident, body, owner, ms, order)
                if owner == account and point is not None and point > ms
                else (key, ident, body, owner, point, order)
                for key, ident, body, owner, point, order in self._buffer
            )

    def _resume_points(self, latest: dict[str, int]) -> dict[str, int]:
        """Each account's last written time (each record's held below the ceiling when
        the sink took it), held below its ceiling now (see ``bind``)."""
        if self._ceiling is None:
            return latest
        points = {}
        for account, at in latest.items():
            cap = self._ceiling(account)
            if cap is None or cap >= at:
                points[account] = at
            elif cap >= 0:
                points[account] = cap
        return points

    def _prune(self, pipe: Any, points: dict[str, int]) -> dict[str, int]:
        """``HDEL`` from each account's orders hash the done orders received
        ``ORDER_KEEP_MS`` before the resume point this batch writes for it (``points``);
        how many per account, from the head of its ``_done`` (taken off once the batch is
        written). What an account holds past that waits for its point to move again: a
        minute of its orders at most."""
        pruned: dict[str, int] = {}
        if self._orders_key is None:
            return pruned
        for account, point in points.items():
            queue = self._done.get(account)
            if not queue:
                continue
            ids = []
            for received, order_id in queue:
                if received >= point - ORDER_KEEP_MS:
                    break  # in receipt order: the rest is newer
                ids.append(order_id)
            if ids:
                pipe.hdel(self._orders_key.replace("{account}", account), *ids)
                pruned[account] = len(ids)
        return pruned

    def _replicated(self, acked: int, entries: int) -> None:
        """What ``WAIT`` said. Fewer replicas than asked within ``wait_timeout``: the
        primary has the batch, a failover now could lose it. Writing it again would not
        help (the replica is behind or down, and the primary is fine), so it is counted
        and said once per spell, and the sink goes on."""
        if acked >= self.wait_replicas:
            if self._lagging:
                log.warning("Redis sink: the replicas acknowledge writes again")
            self._lagging = False
            return
        self.unreplicated += entries
        if not self._lagging:
            self._lagging = True
            log.warning(
                "Redis sink: %d of %d replica(s) acknowledged within %.1f s; what is "
                "written until they catch up could be lost in a failover",
                acked,
                self.wait_replicas,
                self.wait_timeout,
            )

    def _error(self, kind: ErrorKind, message: str) -> None:
        log.warning("%s", message)
        if self._report is not None:
            self._report(error_info(kind, message))

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the buffer is written; False if it is not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._buffer:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is buffered (for up to ``timeout`` s), then close the connection. The
        commands call it after the host stopped (whose own shutdown budget is short, for
        the sake of hung plugins); calling it again is harmless."""
        if self._task is None or self._closed:
            return
        await self.flush(timeout)
        self._closing = True
        self._wake.set()
        self._room.set()
        await asyncio.wait({self._task}, timeout=1.0)
        if self._closed:
            return  # closed meanwhile by another caller
        self._closed = True
        if self._buffer:
            log.warning("Redis sink: %d events not written before shutdown", len(self._buffer))
        await self._client.aclose()

    def stats(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "buffered": len(self._buffer),
            "retries": self.retries,
            "outages": self.outages,
            "unreplicated": self.unreplicated,
            "down": self._down_since is not None,
        }
