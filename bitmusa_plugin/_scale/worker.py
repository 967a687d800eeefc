"""Worker mode: accounts from the Redis registry, spread over worker processes by leases.

This module is the I/O shell around the pure lease planner (``_core/lease.py``, which has
the protocol and the reasons for it; docs/scale.md has the failure analysis). Each tick
(1 s by default) it:

1. reads Redis in two round trips: its heartbeat written into ``workers`` (whether Redis
   still had the previous one says whether Redis lost its data), the heartbeats, the
   registry, the ``live`` hash, then the leases of the registry's accounts and its own;
2. calls :meth:`LeasePlanner.tick` and carries out the actions with one ``match``: the
   Lua scripts below (each one atomic), starting and stopping streams, reports;
3. tells the planner how each action went, which may give more actions.

A Redis call never outlives the planner's self-fencing deadline (it is cancelled, and the
tick fails), and between ticks the shell wakes for that deadline too: a hanging Redis
cannot keep a stream running past the moment its lease may be someone else's. A failure
is never swallowed: the planner says what it means for each account, and the shell
reports it (``on_error``) or logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from typing_extensions import assert_never

from bitmusa_hookspecs import error_info
from bitmusa_plugin._core import lease as ls
from bitmusa_plugin._core import resync
from bitmusa_plugin._core.redis_url import is_sentinel
from bitmusa_plugin._engine.aio import within
from bitmusa_plugin._engine.rest import DEFAULT_REST_URL
from bitmusa_plugin._engine.secrets import CredentialsError, InsecureURLError, redact
from bitmusa_plugin._engine.session import Session
from bitmusa_plugin._engine.stream import PING_SEND
from bitmusa_plugin._scale import registry
from bitmusa_plugin._scale.registry import key
from bitmusa_plugin._scale.sink import ORDER_KEEP_MS, RedisSink

log = logging.getLogger(__name__)
T = TypeVar("T")

# Take a free lease and its fencing token in one step, so that no other worker ever sees a
# lease without its fence (or a fence without its lease). The fence is above every fence
# this account is known to have had (the counter, the marker, the live hash, the caller's
# floor): it only grows, even where Redis forgot the counter. A fresh takeover consumes the
# handover marker: fresh enough (ARGV[5] ms of its promise left) and nothing unconfirmed
# before it, it is taken on trust, and the gap it would be is recorded in ``unconfirmed``
# until the new owner confirms; otherwise the gap starts at the last event written (or an
# unconfirmed record, or the gap the previous owner handed over unfinished, whichever is
# earliest). A handover with an unfinished gap (``pinned``) is never taken on trust: the
# previous owner may stop before its resync delivers, so the new owner reads that gap.
# KEYS: lease, fence, handover marker, live, last, unconfirmed, pinned
# ARGV: worker id, lease ttl ms, fence floor, label, min promise ms (-1: taken again by the
#       worker that streams it), the pin that worker wrote handing it back (-1: none)
# -> nil if taken, else {fence, trusted marker or nil, its ms left, gap since ms or nil}
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local function fence_of(holder)
  if not holder then return 0 end
  return tonumber(string.match(holder, ':(%d+)$')) or 0
end
local marker = redis.call('GET', KEYS[3])
local left = 0
if marker then left = redis.call('PTTL', KEYS[3]) end
local floor = math.max(tonumber(ARGV[3]), fence_of(marker),
                       fence_of(redis.call('HGET', KEYS[4], ARGV[4])))
local fence = redis.call('INCR', KEYS[2])
if fence <= floor then
  fence = floor + 1
  redis.call('SET', KEYS[2], fence)
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'NX', 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
local min_promise = tonumber(ARGV[5])
if min_promise < 0 then
  -- a pin stays (the planner restarts the stream with it), unless it is the one we wrote
  -- handing this very stream back: its own gap, which it reads already
  local own = tonumber(ARGV[6])
  if own and own >= 0 and tonumber(redis.call('HGET', KEYS[7], ARGV[4])) == own then
    redis.call('HDEL', KEYS[7], ARGV[4])
  end
  return {fence, false, 0, false}
end
local pinned = tonumber(redis.call('HGET', KEYS[7], ARGV[4]))
redis.call('HDEL', KEYS[7], ARGV[4])
local last = tonumber(redis.call('HGET', KEYS[5], ARGV[4]))
local pending = tonumber(redis.call('HGET', KEYS[6], ARGV[4]))
redis.call('HDEL', KEYS[6], ARGV[4])
if marker and not pending and not pinned and left >= min_promise then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local record = now_ms - (2 * tonumber(ARGV[2]) - left)
  if last and last > record then record = last end
  redis.call('HSET', KEYS[6], ARGV[4], record)
  return {fence, marker, left, record}
end
local since = last
if pending and (not since or pending < since) then since = pending end
if pinned and (not since or pinned < since) then since = pinned end
if since and (not last or since < last) then
  redis.call('HSET', KEYS[5], ARGV[4], since)  -- a death before we write is read from here
end
return {fence, false, 0, since or false}
"""
# Compare-and-extend. KEYS: lease; ARGV: holder, ttl ms -> 1, or what the lease holds
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return current
"""
# Make-before-break: the marker (our promise to stream until the successor delivers) and
# the lease given up, together or not at all; with them, the start of a gap our stream has
# not delivered yet (-1: none), which the successor then reads (see _ACQUIRE). A pin there
# already (a gap the previous owner left, not read here yet) stays where it is earlier.
# KEYS: lease, handover marker, unconfirmed, pinned;
# ARGV: holder, marker life ms, label, unfinished gap ms or -1 -> 1, or what the lease holds
_HAND_BACK = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return current
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[3], ARGV[3])
local gap = tonumber(ARGV[4])
if gap >= 0 then
  local pinned = tonumber(redis.call('HGET', KEYS[4], ARGV[3]))
  if not pinned or gap < pinned then
    redis.call('HSET', KEYS[4], ARGV[3], gap)
  end
end
return 1
"""
# Bring ``last`` down to each gap's start where it is above (the lowerings restarts owe).
# KEYS: last; ARGV: label, ms, label, ms, ...
_LOWER = """
for i = 1, #ARGV, 2 do
  local last = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if not last or tonumber(ARGV[i + 1]) < last then  -- none yet: the gap is all there is
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""
# Pin the gaps of accounts being handed over, each kept where it is earliest.
# KEYS: pinned; ARGV: label, gap ms, label, gap ms, ... -> the number written
_PIN = """
local written = 0
for i = 1, #ARGV, 2 do
  local gap = tonumber(ARGV[i + 1])
  local pinned = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if not pinned or gap < pinned then
    redis.call('HSET', KEYS[1], ARGV[i], gap)
    written = written + 1
  end
end
return written
"""
# Compare-and-delete the lease and the marker. KEYS: lease, handover marker; ARGV: holder
# -> what the lease holds afterwards
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return redis.call('GET', KEYS[1])
"""
# Compare-and-delete a hash field (``unconfirmed`` once a trust is settled, ``pinned`` once
# a gap is being read); with ARGV[3] a wall ms (the stream restarted to read that gap, and
# has not delivered since then), ``last`` is lowered to it first, so that a death before
# the restarted stream writes is read from there.
# KEYS: the hash, last; ARGV: label, since ms, the ms to lower last to or -1
_FORGET = """
local lower = tonumber(ARGV[3])
if lower >= 0 then
  local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
  if not last or lower < last then  -- none yet: the gap is all there is
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  end
end
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

#: after a tick that failed on Redis, the next one starts this soon (seconds)
RETRY_AFTER_OUTAGE = 0.25
#: how long a hand-back waits for its stream's connection to answer a ping (seconds)
HANDBACK_PROBE = 1.0

#: stream states in which a connection is up and delivering
_DELIVERING = ("connected", "gap", "rotating", "rotated")


@dataclass
class WorkerOptions:
    group: str = registry.DEFAULT_GROUP
    lease_ttl: float = 10.0
    tick: float = 1.0
    handovers_per_tick: int = 5
    #: after an outage, how long Redis must answer before any worker is judged dead
    #: (None: two ticks; see ``_core/lease.py``)
    outage_grace: float | None = None
    rest_url: str = DEFAULT_REST_URL
    insecure: bool = False
    #: the API's readings for records that set none (``ws_path``, ``keepalive_prefix``,
    #: ``fallback``: ``_cli/common.readings``)
    readings: dict[str, Any] = field(default_factory=dict)
    #: replicas that must have a new lease and its fence (``WAIT``) before its stream
    #: starts: a failover then never promotes a replica that lacks it, and a fence never
    #: goes backwards (None: 1 behind Sentinel, else 0)
    wait_replicas: int | None = None


class _TickFailed(Exception):
    """Redis failed while actions were carried out (the planner has been told)."""


class _Deferred(Exception):
    """An action put off to a later tick (its planner sends it again), without waiting:
    a batch the sink sent before the account's gap was known, which could raise ``last``
    above it, has not landed yet (Redis is slow for the sink; nothing says it is gone)."""


@dataclass(eq=False)
class _Debt:
    """``last`` must come down to ``ms`` (a restart reads a gap from the past), once the
    sink's batch that was in flight then (``flight``, moving the account above ``ms``) has
    landed or failed; till then the sink's ceiling holds at ``ms`` too."""

    ms: int
    flight: asyncio.Future[None] | None

    def payable(self) -> bool:
        return self.flight is None or self.flight.done()


@dataclass
class _Stats:
    ticks: int = 0
    failed_ticks: int = 0
    outages: int = 0
    actions: dict[str, int] = field(default_factory=dict)


class Worker:
    """Runs until :meth:`stop`. ``session`` carries the plugins (the Redis sink among them)
    and streams the accounts this worker holds (``session.add`` / ``session.remove``)."""

    def __init__(
        self,
        client: Any,
        session: Session,
        options: WorkerOptions,
        ident: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        from redis.exceptions import RedisError  # worker mode needs the redis extra

        self.client = client
        self.session = session
        self.options = options
        self.id = ident
        self.planner = ls.LeasePlanner(
            ident,
            lease_ttl=options.lease_ttl,
            tick_interval=options.tick,
            handovers_per_tick=options.handovers_per_tick,
            grace=options.outage_grace,
        )
        self.redis_ok = True
        self.stats = _Stats()
        # Only what a Redis call raises when Redis is gone or slow: anything else is a bug
        # and ends the worker (its leases then lapse and the others take over).
        self._errors: tuple[type[BaseException], ...] = (
            RedisError,
            OSError,
            asyncio.TimeoutError,
        )
        self._clock = clock
        self._wall = wall
        self._stop = asyncio.Event()
        self._stopping: dict[str, asyncio.Task[Any]] = {}  # label -> its session.remove
        self._registry: dict[str, bytes] = {}  # label -> its record, as last read
        #: label -> (status, reason) as last written to the ``state`` hash
        self._shown: dict[str, tuple[str, str | None]] = {}
        #: accounts that could not start or whose stream failed here: label -> reason
        self._failed: dict[str, str] = {}
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._hand_back = client.register_script(_HAND_BACK)
        self._release = client.register_script(_RELEASE)
        self._forget = client.register_script(_FORGET)
        self._lower = client.register_script(_LOWER)
        self._pin = client.register_script(_PIN)
        #: label -> the unfinished gap last written to ``pinned`` while handing it over
        self._pins: dict[str, int] = {}
        #: the tick's hand-backs' probes, started together: label -> what to pin
        self._probes: dict[str, asyncio.Task[int | None]] = {}
        #: the sink's plugin name (``run_worker``), for the marks that lift a gap's cap
        self.sink_name: str | None = None
        #: the Redis sink (``run_worker``): a gap from the past caps the points of what
        #: it holds (``RedisSink.lower``), and ``last`` is lowered only once its batch
        #: in flight then has landed (``RedisSink.in_flight``)
        self.sink: RedisSink | None = None
        #: label -> the lowering of ``last`` a restart owes Redis (see ``_Debt``): paid by
        #: the next reading that can (``_read``), or by the restart's Confirmed or Unpin
        self._owed: dict[str, _Debt] = {}
        #: label -> the starts (wall ms) of gaps whose records are all published but not
        #: yet all in the sink's hands: its queue has not reached their mark
        self._closing: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"Worker({self.id!r}, accounts={len(self.planner.owned)})"

    def fence(self, label: str) -> int | None:
        """The fencing token of the lease under which ``label``'s events are delivered
        (while handing over, the one it held)."""
        return self.planner.fence(label)

    def unfinished_gap(self, label: str) -> int | None:
        """The wall ms since which ``label``'s stream here has not delivered every fill
        (an outage, a resync under way), or None."""
        stream = self.session.streams.get(label)
        return None if stream is None else stream.unfinished_gap_ms()

    def _probe(self, label: str) -> asyncio.Task[int | None] | None:
        """Start finding what ``label``'s hand-back pins: the gap its stream here has not
        delivered, or the last moment its connection was known alive if it does not
        answer a ping in time (it died silently, unnoticed yet: the successor reads from
        there instead of trusting it). The wait is HANDBACK_PROBE, less what the
        self-fencing deadline leaves (none: the last sign of life is pinned), and the
        ping's send takes PING_SEND at most on top."""
        stream = self.session.streams.get(label)
        if stream is None:
            return None
        wait = HANDBACK_PROBE
        deadline = self.planner.fence_deadline()
        if deadline is not None:
            left = deadline - self._clock() - PING_SEND - RETRY_AFTER_OUTAGE
            wait = max(0.0, min(wait, left))
        return asyncio.get_running_loop().create_task(stream.unproven_since_ms(wait))

    async def _releasing_gaps(self) -> dict[str, int | None]:
        """What each account being handed over would pin now (see :meth:`_pin_for`),
        its probes run together."""
        probes = {label: self._probe(label) for label in self.planner.releasing}
        gaps: dict[str, int | None] = {}
        try:
            for label, task in probes.items():  # they never raise
                gaps[label] = self._bounded(label, None if task is None else await task)
        finally:
            for task in probes.values():  # the tick was cancelled: theirs too
                if task is not None:
                    task.cancel()
        return gaps

    async def _pin_for(self, label: str) -> int | None:
        """What ``label``'s hand-back pins now: its probe's answer (started with the
        tick's, so that a tick's hand-backs wait one probe at most), or the sink's ceiling
        if that is earlier (a gap opened since, one whose records are not all in the
        sink's hands, a lowering of ``last`` still owed)."""
        task = self._probes.pop(label, None) or self._probe(label)
        return self._bounded(label, None if task is None else await task)

    def _bounded(self, label: str, pin: int | None) -> int | None:
        ceiling = self.last_ceiling(label)
        if ceiling is not None and ceiling >= 0 and (pin is None or ceiling < pin):
            return ceiling
        return pin

    def last_ceiling(self, label: str) -> int | None:
        """How far the sink may move ``label``'s time in ``last`` (where a takeover after
        our death starts its gap), for the record the sink takes now: None, as far as
        what it writes; the start of the earliest gap whose fills are not all in the
        sink's hands yet (the stream's unfinished gap, or one whose resync published
        its records, still queued for the sink); -1, not at all (no stream here any
        more: the account is someone else's, with whatever gap it had)."""
        stream = self.session.streams.get(label)
        if stream is None:
            return -1
        bounds = [*self._closing.get(label, ())]
        if (owed := self._owed.get(label)) is not None:
            bounds.append(owed.ms)
        if (gap := stream.unfinished_gap_ms()) is not None:
            bounds.append(gap)
        return min(bounds) if bounds else None

    def _gap_delivered(self, label: str, since_ms: int) -> None:
        """``label``'s stream published every record of the gap since ``since_ms``: its
        cap holds until the sink's queue reaches this point (a mark), so that a record
        the sink takes before those records never moves ``last`` past the gap."""
        closing = self._closing.setdefault(label, [])
        closing.append(since_ms)

        def reached() -> None:
            closing.remove(since_ms)
            if not closing and self._closing.get(label) is closing:
                del self._closing[label]

        if self.sink_name is None:
            reached()
        else:
            self.session.pipeline.dispatcher.mark(self.sink_name, reached)

    def stop(self) -> None:
        self._stop.set()

    def _key(self, *parts: str) -> str:
        return key(self.options.group, *parts)

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                started = self._clock()
                await self._carry_out(self.planner.expire(started))
                if await self._tick():
                    await self._show()
                    await self._sleep_until(started + self.options.tick)
                else:
                    # Redis failed: try again soon, not a tick later. The renewals that
                    # follow the outage come RETRY_AFTER_OUTAGE after Redis answers at
                    # most, and that is what the outage tolerance docs/scale.md states
                    # (lease_ttl - 2 ticks - this) counts on.
                    retry = min(self.options.tick, RETRY_AFTER_OUTAGE)
                    await self._sleep_until(started + retry)
        finally:
            await self._shutdown()

    async def _tick(self) -> bool:
        """One tick; False if Redis failed (the planner knows what that means)."""
        self.stats.ticks += 1
        try:
            ended = self._ended_streams()
            view = await self._read()
            now = self._clock()
            actions: list[ls.Action] = []
            for label, reason in ended.items():
                actions += self.planner.start_failed(now, label, reason)
            await self._carry_out(actions + self.planner.tick(now, view))
        except _TickFailed as exc:
            self._down(exc.__cause__ or exc)
            return False
        except self._errors as exc:
            self._down(exc)
            await self._carry_out(self.planner.unreachable(self._clock(), _describe(exc)))
            return False
        if not self.redis_ok:
            log.warning("worker %s: Redis answers again", self.id)
        self.redis_ok = True
        return True

    def _down(self, exc: BaseException) -> None:
        self.stats.failed_ticks += 1
        if self.redis_ok:  # once per outage; what it means per account, the planner says
            self.stats.outages += 1
            log.warning("worker %s: Redis unreachable: %s", self.id, _describe(exc))
        self.redis_ok = False

    async def _sleep_until(self, at: float) -> None:
        """Wait for the next tick, waking for the planner's deadlines (self-fencing)."""
        while not self._stop.is_set():
            now = self._clock()
            if now >= at:
                return
            deadline = self.planner.next_deadline()
            wake = at if deadline is None else min(at, deadline)
            with contextlib.suppress(asyncio.TimeoutError):
                await within(self._stop.wait(), max(wake - now, 0.001))
            await self._carry_out(self.planner.expire(self._clock()))

    async def _redis(self, call: Awaitable[T]) -> T:
        """A Redis call that never outlives the self-fencing deadline (a hanging Redis
        raises ``TimeoutError`` here, in time for the planner to fence)."""
        deadline = self.planner.fence_deadline()
        if deadline is None:
            return await call
        return await within(call, max(0.0, deadline - self._clock()))

    async def _read(self) -> ls.View:
        workers, draining = self._key("workers"), self._key("draining")
        written_ms = int(self._wall() * 1000)
        prune = written_ms - int(6 * self.options.lease_ttl * 1000)
        pipe = self.client.pipeline(transaction=False)
        # What we hand over with a gap our stream has not delivered (its connection dropped
        # after the hand-back), or whose link no longer answers a ping (it died silently,
        # not noticed yet: it delivers nothing since it was last heard): said before the
        # heartbeat that lets the successor confirm the handover, so that it reads that
        # gap (``View.pinned``). Each heartbeat while handing over thus vouches for a
        # stream that delivered until then.
        pins = {
            label: gap
            for label, gap in (await self._releasing_gaps()).items()
            if gap is not None and self._pins.get(label) != gap
        }
        if pins:
            args = [x for label, gap in pins.items() for x in (label, gap)]
            await self._pin(keys=[self._key("pinned")], args=args, client=pipe)  # queued
        # The lowerings of last that restarts owe, once nothing in flight can undo them;
        # those of streams that have left (the account is another's now, with whatever
        # gap its takeover read) are let go.
        for label in [label for label in self._owed if label not in self.planner.owned]:
            del self._owed[label]
        debts = {label: debt for label, debt in self._owed.items() if debt.payable()}
        if debts:
            args = [x for label, debt in debts.items() for x in (label, debt.ms)]
            await self._lower(keys=[self._key("last")], args=args, client=pipe)  # queued
        if self.planner.stopping:  # no share any more, but alive while handing over
            pipe.zrem(workers, self.id)
            pipe.zadd(draining, {self.id: written_ms})
        else:
            pipe.zadd(workers, {self.id: written_ms})
            pipe.zrem(draining, self.id)
        pipe.zremrangebyscore(workers, 0, prune)
        pipe.zremrangebyscore(draining, 0, prune)
        pipe.zrange(workers, 0, -1, withscores=True)
        pipe.zrange(draining, 0, -1, withscores=True)
        pipe.hgetall(self._key("accounts"))
        pipe.hgetall(self._key("live"))
        pipe.hgetall(self._key("pinned"))
        replies = await self._redis(pipe.execute())
        added, _, _, _, beats, drains, accounts, live, pinned = replies[-9:]
        for label, gap in pins.items():  # _PIN keeps the earliest: so does what we know
            self._pins[label] = min(gap, self._pins.get(label, gap))
        for label, debt in debts.items():  # paid (unless a later restart owes again)
            if self._owed.get(label) is debt:
                del self._owed[label]
        for label in [la for la in self._pins if la not in self.planner.releasing]:
            del self._pins[label]
        self._registry = {k.decode(): v for k, v in accounts.items()}
        labels = sorted(set(self._registry) | self.planner.labels())
        leases = [self._key("lease", la) for la in labels]
        holders = await self._redis(self.client.mget(leases)) if leases else []
        wall_ms = int(self._wall() * 1000)
        streams = self.session.streams
        return ls.View(
            accounts=frozenset(self._registry),
            heartbeats={w.decode(): (wall_ms - score) / 1000 for w, score in beats},
            leases={la: h.decode() for la, h in zip(labels, holders, strict=True) if h},
            live={k.decode(): v.decode() for k, v in live.items()},
            delivering=frozenset(la for la, st in streams.items() if st.status in _DELIVERING),
            # Redis did not have our heartbeat: it lost its data (a first tick adds it too)
            rejoined=not self.planner.stopping and added == 1,
            wall_ms=wall_ms,
            draining={w.decode(): (wall_ms - score) / 1000 for w, score in drains},
            pinned={k.decode(): int(v) for k, v in pinned.items()},
        )

    # -- carrying actions out -------------------------------------------------------------

    async def _carry_out(self, actions: list[ls.Action]) -> None:
        """Every action, and what the planner answers to each. If Redis fails, the rest
        of the Redis work is dropped (the planner says what that means) and the tick
        fails once the local work is done."""
        queue = deque(actions)
        for action in actions:  # pinged together, not one after another
            if isinstance(action, ls.HandBack) and (task := self._probe(action.label)):
                self._probes[action.label] = task
        try:
            await self._carry_out_queue(queue)
        finally:
            for task in self._probes.values():  # hand-backs the tick did not reach
                task.cancel()
            self._probes.clear()

    async def _carry_out_queue(self, queue: deque[ls.Action]) -> None:
        failed: BaseException | None = None
        while queue:
            action = queue.popleft()
            name = type(action).__name__
            self.stats.actions[name] = self.stats.actions.get(name, 0) + 1
            try:
                follow = await self._do(action)
            except _Deferred as exc:  # sent again on a later tick (see _Debt)
                log.info("worker %s: %s put off: %s", self.id, name, exc)
                follow = []
            except self._errors as exc:
                failed = exc
                dropped = [a for a in queue if isinstance(a, ls.REDIS_ACTIONS)]
                queue = deque(a for a in queue if not isinstance(a, ls.REDIS_ACTIONS))
                follow = self.planner.unreachable(self._clock(), _describe(exc), action, dropped)
            queue.extendleft(reversed(follow))
        if failed is not None:
            raise _TickFailed from failed

    async def _do(self, action: ls.Action) -> list[ls.Action]:
        p = self.planner
        ttl_ms = int(self.options.lease_ttl * 1000)
        match action:
            case ls.Renew(label, holder):
                result = await self._redis(
                    self._renew(keys=[self._key("lease", label)], args=[holder, ttl_ms])
                )
                if result == 1:
                    return p.renewed(self._clock(), label)
                return p.renew_refused(self._clock(), label, _text(result))
            case ls.Acquire(label, floor, min_promise):
                keys = [
                    self._key("lease", label),
                    self._key("fence", label),
                    self._key("handover", label),
                    self._key("live"),
                    self._key("last"),
                    self._key("unconfirmed"),
                    self._key("pinned"),
                ]
                promise_ms = -1 if min_promise is None else int(min_promise * 1000)
                own_pin = self._pins.get(label, -1) if min_promise is None else -1
                args = [self.id, ttl_ms, floor, label, promise_ms, own_pin]
                if min_promise is not None and self._in_flight(label) is not None:
                    # a takeover's script may lower last, and a batch of ours from when we
                    # streamed it before, still in flight, could raise it again after
                    raise _Deferred(f"a batch of {label}'s is still in flight")
                got = await self._redis(self._acquire(keys=keys, args=args))
                if got is None:
                    return p.acquire_refused(self._clock(), label)
                fence, previous, left_ms, since = got
                log.info("worker %s: took %s (fence %d)", self.id, label, int(fence))
                await self._replicated(label)
                return p.acquired(
                    self._clock(),
                    label,
                    int(fence),
                    previous=_text(previous),
                    promised=int(left_ms) / 1000,
                    since_ms=None if since is None else int(since),
                )
            case ls.Start(label, _fence, resume_since_ms):
                return await self._start(label, resume_since_ms)
            case ls.MarkLive(label, holder):
                await self._redis(self.client.hset(self._key("live"), label, holder))
                return []
            case ls.Confirmed(label, since_ms, restarted):
                await self._forget_record("unconfirmed", label, since_ms, lower=restarted)
                return p.settled(self._clock(), action)
            case ls.Unpin(label, since_ms):
                await self._forget_record("pinned", label, since_ms, lower=True)
                return p.settled(self._clock(), action)
            case ls.HandBack(label, holder):
                keys = [
                    self._key("lease", label),
                    self._key("handover", label),
                    self._key("unconfirmed"),
                    self._key("pinned"),
                ]
                gap = await self._pin_for(label)
                args = [holder, 2 * ttl_ms, label, -1 if gap is None else gap]
                result = await self._redis(self._hand_back(keys=keys, args=args))
                if result == 1:
                    log.info("worker %s: handing %s over", self.id, label)
                    if gap is not None:  # written with the hand-back: not again
                        self._pins[label] = gap
                    return p.handed_back(self._clock(), label)
                return p.handback_refused(self._clock(), label, _text(result))
            case ls.Release(label, holder):
                pending = self._stopping.get(label)
                if pending is not None:
                    # its stream delivers what reached its socket before the lease goes
                    # (the close handshake, bounded: stream.CLOSE_DRAIN_TIMEOUT)
                    await asyncio.wait({pending}, timeout=2.0)
                keys = [self._key("lease", label), self._key("handover", label)]
                result = await self._redis(self._release(keys=keys, args=[holder]))
                return p.released(self._clock(), label, _text(result))
            case ls.Stop(label, reason):
                self._stop_stream(label, reason)
                return []
            case ls.Report(account, message, kind):
                if kind is None:
                    log.warning("%s", redact(message))
                else:  # the pipeline's one reporting path: redacted, logged, on_error
                    self.session.pipeline.report(error_info(kind, message, account))
                return []
            case _:
                assert_never(action)

    async def _forget_record(self, name: str, label: str, since_ms: int, *, lower: bool) -> None:
        """Delete ``label``'s field of the ``name`` hash if it still holds ``since_ms``
        (a record, once gone, no longer makes a takeover read from there); ``lower``: the
        restart's lowering of ``last``, if still owed, in the same script and first. The
        restart failed to start: ``last`` comes down to ``since_ms`` too, for whoever
        takes the account next. The account another's now: nothing (its takeover
        consumed the record, or reads from it). Put off while the lowering must wait for
        the sink (see ``_Debt``)."""
        failed = label in self._failed  # (its stream may still be stopping)
        if label not in self.planner.owned and not failed:
            return
        target, debt = -1, self._owed.get(label) if lower else None
        if debt is not None:
            if not debt.payable():
                raise _Deferred(f"a batch of {label}'s sent before its restart is in flight")
            target = debt.ms
        if lower and failed:
            target = since_ms if target < 0 else min(target, since_ms)
        keys = [self._key(name), self._key("last")]
        await self._redis(self._forget(keys=keys, args=[label, since_ms, target]))
        if debt is not None and self._owed.get(label) is debt:
            del self._owed[label]

    def _in_flight(self, label: str, above: int = -1) -> asyncio.Future[None] | None:
        return None if self.sink is None else self.sink.in_flight(label, above)

    async def _replicated(self, label: str) -> None:
        """Wait (up to half a tick) until the replicas have the lease just taken. Not in
        time: said, and the stream starts anyway (the primary has it; only a failover in
        the next instants could forget it, and then the planner takes it again with a
        fence above its own, see docs/scale.md)."""
        wanted = self.options.wait_replicas or 0
        if not wanted:
            return
        timeout_ms = max(1, int(self.options.tick * 500))
        try:
            acked = int(await self._redis(self.client.wait(wanted, timeout_ms)))
        except self._errors as exc:  # the lease is ours: the next tick's reading tells
            log.info("worker %s: WAIT after taking %s: %s", self.id, label, _describe(exc))
            return
        if acked < wanted:
            log.warning(
                "worker %s: the lease of %s reached %d of %d replica(s) within %d ms",
                self.id,
                label,
                acked,
                wanted,
                timeout_ms,
            )

    async def _start(self, label: str, resume_since_ms: int | None) -> list[ls.Action]:
        """Stream ``label`` through the session; the listenKey is never DELETEd (the
        account's stream outlives any one worker)."""
        raw = self._registry.get(label)
        try:
            if raw is None:
                raise ValueError("it is not in the registry any more")
            record = registry.AccountRecord.from_json(raw)
            config = record.resolve(
                self.options.rest_url, insecure=self.options.insecure, **self.options.readings
            )
        except (CredentialsError, InsecureURLError, ValueError, TypeError) as exc:
            reason = redact(str(exc))
            self._failed[label] = reason
            return self.planner.start_failed(self._clock(), label, reason)
        restart = label in self.session.streams
        if restart:  # the old stream goes first
            # what it had not delivered of a gap is the new one's to read, whatever time
            # the restart was asked from
            unfinished = self.unfinished_gap(label)
            if unfinished is not None:
                resume_since_ms = (
                    unfinished if resume_since_ms is None else min(resume_since_ms, unfinished)
                )
            self._stop_stream(label, "restarted")
        pending = self._stopping.pop(label, None)
        if pending is not None:  # the session takes one stream per account
            await pending
        self._failed.pop(label, None)
        if not restart:  # taken over: what it knew of the account here may be stale
            self.session.pipeline.reset(label)
            self._owed.pop(label, None)  # a takeover's script lowered last itself
        elif resume_since_ms is not None:  # a gap from the past: last must come down
            owed = self._owed.get(label)
            ms = resume_since_ms if owed is None else min(owed.ms, resume_since_ms)
            self._owed[label] = _Debt(ms, self._in_flight(label, above=ms))
        if resume_since_ms is not None and self.sink is not None:
            # what the sink holds of the account, taken before this gap was known, must
            # not move last past it once the gap's cap lifts: its records come after
            self.sink.lower(label, resume_since_ms)
        if resume_since_ms is not None:  # a gap to read: from what was delivered
            await self._inherit(label, resume_since_ms)
        stream = self.session.add(config, resume_since_ms=resume_since_ms, keep_listen_key=True)
        stream.gap_delivered = functools.partial(self._gap_delivered, label)
        if resume_since_ms is not None:
            log.info("worker %s: streams %s, gap since %d", self.id, label, resume_since_ms)
        return []

    async def _inherit(self, label: str, since_ms: int) -> None:
        """Start ``label``'s fills and open orders from the last state of each order the
        previous owners delivered (the sink's orders hash): the takeover's gap reads the
        trade history from before their last written event, and without those states
        the fills of an order they delivered would be counted again, under other ids.
        If Redis cannot say, the stream starts anyway, and says what that risks."""
        key = self._key("orders", label)
        try:
            raw = await self._redis(self.client.hgetall(key))
        except self._errors as exc:
            log.warning(
                "worker %s: %s: the order states the previous owner delivered could not be "
                "read (%s); a fill it delivered that the gap's trade history shows again "
                "may be delivered twice, under another id",
                self.id,
                label,
                _describe(exc),
            )
            return
        records, stale = [], []
        for order_id, value in raw.items():
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                stale.append(order_id)
                continue
            if _stale(record, since_ms - ORDER_KEEP_MS):
                stale.append(order_id)  # done before the history can reach: let go
            else:
                records.append(record)
        pipeline = self.session.pipeline
        pipeline.mapper(label)
        taken = resync.inherit(pipeline.ledgers[label], pipeline.fills[label], records)
        log.info("worker %s: %s: took over %d order states", self.id, label, taken)
        if stale:
            with contextlib.suppress(*self._errors):
                await self._redis(self.client.hdel(key, *stale))

    def _stop_stream(self, label: str, reason: str) -> None:
        """Stop at once (``stream.stop()`` is synchronous: self-fencing takes effect here);
        the session's removal, which waits for the stream to end, runs on its own."""
        stream = self.session.streams.get(label)
        if stream is None or label in self._stopping:
            return
        log.info("worker %s: stops %s (%s)", self.id, label, reason)
        stream.stop()
        self._shown.pop(label, None)
        task = asyncio.get_running_loop().create_task(self.session.remove(label))
        self._stopping[label] = task
        task.add_done_callback(lambda _: self._removed(label, task))

    def _removed(self, label: str, task: asyncio.Task[Any]) -> None:
        if self._stopping.get(label) is task:
            del self._stopping[label]

    def _ended_streams(self) -> dict[str, str]:
        """Streams that ended on their own (failed for good: a misconfiguration, a key
        refused): label -> the reason. The planner then frees the lease for another
        worker, and this one tries again after a lease TTL."""
        ended = {}
        for label in list(self.session.streams):
            if label in self._stopping:
                continue
            task = self.session.finished(label)
            if not task.done():
                continue
            if task.cancelled() or task.exception() is not None:
                reason = "the stream crashed (a bug: see the log)"
            else:
                reason = task.result().reason
            reason = redact(reason)
            self._failed[label] = reason
            ended[label] = reason
            self._stop_stream(label, "failed")
        return ended

    # -- what ``worker status`` shows ----------------------------------------------------

    async def _show(self) -> None:
        """Write each account's state (and, when failed or retrying, the reason) to the
        ``state`` hash when it changed. The reasons name URLs and Bitmusa's codes, never a
        key: the stream redacts them, and so does this."""
        states: dict[str, tuple[str, str | None]] = {}
        for label, stream in self.session.streams.items():
            if label not in self._stopping:
                reason = None if stream.status in _DELIVERING else stream.reason
                states[label] = (stream.status, reason)
        for label, reason in self._failed.items():
            states.setdefault(label, ("failed", reason))
        changed = {la: st for la, st in states.items() if self._shown.get(la) != st}
        if not changed:
            return
        wall_ms = int(self._wall() * 1000)
        mapping = {
            label: orjson.dumps(
                {
                    "worker": self.id,
                    "status": status,
                    "reason": None if reason is None else redact(reason),
                    "at": wall_ms,
                }
            )
            for label, (status, reason) in changed.items()
        }
        try:
            await self._redis(self.client.hset(self._key("state"), mapping=mapping))
        except self._errors as exc:  # only what status shows is late; the next tick retries
            log.info("worker %s: account states not written: %s", self.id, _describe(exc))
            return
        self._shown.update(changed)

    # -- shutdown -------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Hand everything over make-before-break while another worker is alive to take
        it (for up to two lease TTLs, the life of a handover's promise), else release it;
        then whatever is left stops, each with what it means for the account."""
        self.planner.stop()
        deadline = self._clock() + 2 * self.options.lease_ttl
        while not self.planner.idle and self._clock() < deadline:
            if not await self._tick():
                break  # Redis is gone: nobody can take over
            if not self.planner.idle:
                await asyncio.sleep(0.2)
        with contextlib.suppress(_TickFailed):  # each failure is reported by the planner
            await self._carry_out(self.planner.abandon(self._clock()))
        try:
            await self._redis(self.client.zrem(self._key("draining"), self.id))
        except self._errors as exc:
            log.warning("worker %s: its heartbeat stays in Redis: %s", self.id, _describe(exc))
        for label in list(self.session.streams):  # the planner stopped them all; be sure
            self._stop_stream(label, "shutting down")
        if self._stopping:
            await asyncio.wait(set(self._stopping.values()), timeout=6)


def _stale(record: Any, before_ms: int) -> bool:
    """Is this orders-hash record of an order done (no longer open) and received before
    ``before_ms``?"""
    if not isinstance(record, dict):
        return True
    order, event = record.get("order"), record.get("event")
    if not isinstance(order, dict) or not isinstance(event, dict):
        return True
    received = event.get("receivedAt")
    return order.get("status") != "open" and isinstance(received, int) and received < before_ms


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


async def status(client: Any, group: str) -> dict[str, Any]:
    """Workers, the accounts each holds, each account's state (with the reason when it
    failed or is retrying) and the age of its last event."""
    now_ms = int(time.time() * 1000)
    workers = {
        w.decode(): (now_ms - int(score)) / 1000
        for w, score in await client.zrange(key(group, "workers"), 0, -1, withscores=True)
    }
    records = await registry.load(client, group)
    last = {k.decode(): int(v) for k, v in (await client.hgetall(key(group, "last"))).items()}
    states = {k.decode(): v for k, v in (await client.hgetall(key(group, "state"))).items()}
    labels = sorted(records)
    holders = await client.mget([key(group, "lease", la) for la in labels]) if labels else []
    accounts = {}
    for label, holder in zip(labels, holders, strict=True):
        owner = ls.worker_of(holder.decode()) if holder else None
        age = (now_ms - last[label]) / 1000 if label in last else None
        state: dict[str, Any] = orjson.loads(states[label]) if label in states else {}
        if state.get("worker") != owner and state.get("status") != "failed":
            state = {}  # written by a previous owner: not what streams it now
        accounts[label] = {
            "worker": owner,
            "last_event_age": age,
            "state": state.get("status"),
            "reason": state.get("reason"),
            "state_by": state.get("worker"),
        }
    return {"workers": workers, "accounts": accounts}


async def run_worker(
    redis_url: str,
    session: Session,
    options: WorkerOptions,
    *,
    ident: str | None = None,
    handle_signals: bool = True,
    sink: RedisSink,
) -> None:
    """Run one worker until SIGINT/SIGTERM. ``sink`` (registered with ``session``'s
    plugins) gets the session's reporter, each account's fencing token, and the hash of
    last event times a takeover resumes its gap report from."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from bitmusa_plugin._scale import connect

    sink_name = session.registry.pm.get_name(sink)
    if sink_name is None or not session.pipeline.dispatcher.subscribed(sink_name):
        # without it a gap's bound on ``last`` would lift before its records are written
        raise ValueError("the worker's Redis sink must be one of the session's plugins")
    # One immediate retry (a pooled connection Redis dropped), no backoff: the tick is the
    # retry loop, and a worker that heartbeats on time after an outage is what the
    # planner's grace counts on (redis-py's default retries for seconds).
    client = connect.client(
        redis_url, socket_timeout=5.0, socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 1)
    )
    if options.wait_replicas is None:
        options = dataclasses.replace(options, wait_replicas=1 if is_sentinel(redis_url) else 0)
    worker = Worker(client, session, options, ident or registry.worker_id())
    worker.sink_name = sink_name
    worker.sink = sink
    sink.bind(
        session.pipeline.report,
        worker.fence,
        key(options.group, "last"),
        worker.last_ceiling,
        key(options.group, "orders", "{account}"),
    )
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, worker.stop)
    session.start()
    try:
        await worker.run()
    finally:
        await session.aclose()
        await client.aclose()
