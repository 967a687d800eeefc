"""Worker mode: accounts from the Redis registry, spread over worker processes by leases.

Ownership is a lease per account (``SET lease NX PX ttl``) renewed by its holder every tick
through a compare-and-extend script, with a fencing token (``INCR fence``) taken on every
acquisition and written into every event the owner delivers. docs/scale.md has the
protocol and its failure analysis. Each tick (1 s by default), a worker:

1. heartbeats into ``workers`` and renews its leases; a lease it could not renew for
   ``lease_ttl`` (Redis gone, network cut) is given up *before* it expires: the stream
   stops at once, so no two workers stream an account beyond one tick of overlap;
2. computes its fair share (the registry's size over the live workers, rounded up);
3. above it, hands accounts back: stops their streams (the listenKey is never deleted, the
   account's stream goes on elsewhere), then deletes the lease if it is still its own;
4. below it, takes free accounts (``SET NX``), each resuming with a gap report that starts
   at the last event the previous owner's sink wrote to Redis, and a resync.

A dead worker's leases expire after ``lease_ttl`` (10 s) and the survivors take its
accounts on their next tick: resumed within ``lease_ttl`` plus a tick plus a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from bitmusa_hookspecs import error_info
from bitmusa_plugin._core.machine import Timing
from bitmusa_plugin._engine.limiter import RateLimiter
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.rest import DEFAULT_REST_URL, http_client
from bitmusa_plugin._engine.secrets import CredentialsError, InsecureURLError
from bitmusa_plugin._engine.stream import AccountStream, Heartbeat
from bitmusa_plugin._scale import registry
from bitmusa_plugin._scale.registry import key
from bitmusa_plugin._scale.sink import RedisSink

log = logging.getLogger(__name__)

# KEYS[1] lease; ARGV[1] holder value, ARGV[2] ttl ms
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
#: stream states in which a connection is up and delivering
_DELIVERING = ("connected", "gap", "rotating", "rotated")
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass
class Owned:
    label: str
    holder: str  # the lease's value: "<worker id>:<fence>"
    fence: int
    stream: AccountStream
    task: asyncio.Task[Any]
    renewed_at: float = field(default_factory=time.monotonic)
    live: bool = False  # its stream delivers; told to Redis for a handing-over worker


@dataclass
class WorkerOptions:
    group: str = registry.DEFAULT_GROUP
    lease_ttl: float = 10.0
    tick: float = 1.0
    handovers_per_tick: int = 5
    rest_url: str = DEFAULT_REST_URL
    insecure: bool = False
    timing: Timing | None = None
    heartbeat: Heartbeat | None = None
    limiter: RateLimiter | None = None


class Worker:
    """Runs until :meth:`stop`. ``host`` carries the plugins (the Redis sink among them)."""

    def __init__(self, client: Any, host: Pipeline, options: WorkerOptions, ident: str) -> None:
        self.client = client
        self.host = host
        self.options = options
        self.id = ident
        self.owned: dict[str, Owned] = {}
        #: leases given up, streams still running until the next owner delivers
        self.releasing: dict[str, tuple[Owned, float]] = {}
        self._stop = asyncio.Event()
        self._limiter = options.limiter or RateLimiter()
        self._http = http_client(connections=16)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._rng = random.Random()
        self.redis_ok = True

    def __repr__(self) -> str:
        return f"Worker({self.id!r}, accounts={len(self.owned)})"

    def fence(self, label: str) -> int | None:
        """The fencing token of the lease under which ``label``'s events are delivered
        (while handing over, the one it held)."""
        owned = self.owned.get(label)
        if owned is None and label in self.releasing:
            owned = self.releasing[label][0]
        return owned.fence if owned is not None else None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        from redis.exceptions import RedisError

        try:
            while not self._stop.is_set():
                try:
                    await self._tick()
                    self.redis_ok = True
                except (RedisError, OSError) as exc:
                    if self.redis_ok:
                        log.warning("worker %s: Redis unreachable: %s", self.id, type(exc).__name__)
                    self.redis_ok = False
                self._fence_expired()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.options.tick)
        finally:
            await self._shutdown()

    # -- one tick -------------------------------------------------------------------------

    async def _tick(self) -> None:
        g = self.options.group
        now_ms = int(time.time() * 1000)
        ttl_ms = int(self.options.lease_ttl * 1000)
        await self.client.zadd(key(g, "workers"), {self.id: now_ms})
        await self.client.zremrangebyscore(key(g, "workers"), 0, now_ms - 6 * ttl_ms)
        # 1. renew, and say which of ours deliver (a handing-over worker waits for that)
        for owned in list(self.owned.values()):
            lease = key(g, "lease", owned.label)
            if await self._renew(keys=[lease], args=[owned.holder, ttl_ms]):
                owned.renewed_at = time.monotonic()
            else:
                self._lost(owned, "the lease is held by another worker now")
                continue
            if not owned.live and owned.stream.status in _DELIVERING:
                owned.live = True
                await self.client.hset(key(g, "live"), owned.label, owned.holder)
        await self._finish_handovers(ttl_ms)
        # 2. fair share
        records = await registry.load(self.client, g)
        for label in [label for label in self.owned if label not in records]:
            owned = self.owned[label]  # removed from the registry: nobody takes it over
            await self._stop_stream(owned)
            await self._release_lease(owned)
            log.info("worker %s: stopped %s (removed from the registry)", self.id, label)
        for label in [label for label in self.releasing if label not in records]:
            await self._stop_stream(self.releasing.pop(label)[0])
        live = await self.client.zcount(key(g, "workers"), now_ms - ttl_ms, "+inf")
        share = math.ceil(len(records) / max(1, live))
        # 3. above it: hand accounts back, a few per tick
        extra = max(0, min(len(self.owned) - share, self.options.handovers_per_tick))
        for owned in list(self.owned.values())[:extra]:
            await self._hand_back(owned, "rebalancing")
        # 4. below it: take free accounts
        free = [label for label in records if label not in self.owned]
        self._rng.shuffle(free)  # workers starting together do not all race for the same
        for label in free:
            if len(self.owned) >= share:
                break
            if label not in self.releasing:
                await self._acquire(records[label], ttl_ms)

    async def _acquire(self, record: registry.AccountRecord, ttl_ms: int) -> None:
        g = self.options.group
        lease = key(g, "lease", record.label)
        placeholder = f"{self.id}:?"
        if not await self.client.set(lease, placeholder, nx=True, px=ttl_ms):
            return
        fence = int(await self.client.incr(key(g, "fence", record.label)))
        holder = f"{self.id}:{fence}"
        await self.client.set(lease, holder, xx=True, px=ttl_ms)
        try:
            config = record.resolve(self.options.rest_url, insecure=self.options.insecure)
        except (CredentialsError, InsecureURLError, ValueError) as exc:
            self.host.report(error_info("rest_error", f"{record.label}: {exc}", record.label))
            await self._release(keys=[lease], args=[holder])
            return
        # Handed over by a live owner that streams until we deliver: nothing is missed,
        # so no gap. Otherwise (the owner died, or lost Redis) the gap starts at the last
        # event its sink wrote.
        handed_over = await self.client.getdel(key(g, "handover", record.label))
        last = None if handed_over else await self.client.hget(key(g, "last"), record.label)
        stream = AccountStream(
            config,
            self.host,
            timing=self.options.timing,
            heartbeat=self.options.heartbeat,
            keep_listen_key=True,  # the account's stream outlives any one worker
            limiter=self._limiter,
            http=self._http,
            resume_since_ms=int(last) if last is not None else None,
        )
        self.host.mapper(record.label)
        task = asyncio.get_running_loop().create_task(stream.run(), name=f"bitmusa:{record.label}")
        self.owned[record.label] = Owned(record.label, holder, fence, stream, task)
        log.info("worker %s: took %s (fence %d)", self.id, record.label, fence)

    async def _hand_back(self, owned: Owned, why: str) -> None:
        """Make-before-break: give the lease up but keep streaming until the next owner
        says it delivers (``live``), so that the account never goes dark; the overlap's
        duplicates carry the same idempotency ids."""
        self.owned.pop(owned.label, None)
        ttl_ms = int(self.options.lease_ttl * 2000)
        await self.client.set(
            key(self.options.group, "handover", owned.label), owned.holder, px=ttl_ms
        )
        await self._release_lease(owned)
        self.releasing[owned.label] = (owned, time.monotonic())
        log.info("worker %s: handing %s over (%s)", self.id, owned.label, why)

    async def _finish_handovers(self, ttl_ms: int) -> None:
        g = self.options.group
        for label, (owned, since) in list(self.releasing.items()):
            live = await self.client.hget(key(g, "live"), label)
            # a later owner (a higher fence: INCR only grows) says it delivers
            taken_over = live is not None and int(live.decode().rsplit(":", 1)[1]) > owned.fence
            waited = time.monotonic() - since
            if taken_over or waited > 2 * self.options.lease_ttl:
                del self.releasing[label]
                await self._stop_stream(owned)
            elif waited > self.options.lease_ttl:
                # nobody took it: keep it (a fresh lease, fence and all) rather than drop it
                lease = key(g, "lease", label)
                if await self.client.set(lease, owned.holder, nx=True, px=ttl_ms):
                    del self.releasing[label]
                    owned.renewed_at = time.monotonic()
                    self.owned[label] = owned

    async def _release_lease(self, owned: Owned) -> None:
        """Delete the lease if it is still ours (compare-and-delete)."""
        lease = key(self.options.group, "lease", owned.label)
        await self._release(keys=[lease], args=[owned.holder])

    def _lost(self, owned: Owned, why: str) -> None:
        self.owned.pop(owned.label, None)
        owned.stream.stop()
        message = f"worker {self.id} stops streaming {owned.label}: {why}"
        self.host.report(error_info("lease_lost", message, owned.label))

    def _fence_expired(self) -> None:
        """Self-fencing: a lease not renewed for its whole TTL may be someone else's now;
        an account being handed over is not ours to stream once Redis cannot say."""
        limit = self.options.lease_ttl - self.options.tick
        for owned in list(self.owned.values()):
            if time.monotonic() - owned.renewed_at > limit:
                self._lost(owned, "its lease could not be renewed (Redis unreachable)")
        if not self.redis_ok:
            for label, (owned, _) in list(self.releasing.items()):
                del self.releasing[label]
                owned.stream.stop()

    async def _stop_stream(self, owned: Owned) -> None:
        self.owned.pop(owned.label, None)
        owned.stream.stop()
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(owned.task), 5)

    async def _shutdown(self) -> None:
        """Hand everything over (make-before-break when other workers are alive, for up to
        a lease TTL), then stop."""
        with contextlib.suppress(Exception):
            g = self.options.group
            await self.client.zrem(key(g, "workers"), self.id)
            now_ms = int(time.time() * 1000)
            others = await self.client.zcount(
                key(g, "workers"), now_ms - int(self.options.lease_ttl * 1000), "+inf"
            )
            for owned in list(self.owned.values()):
                await self._hand_back(owned, "shutting down")
            deadline = time.monotonic() + (self.options.lease_ttl if others else 0)
            while self.releasing and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                await self._finish_handovers(int(self.options.lease_ttl * 1000))
        rest = list(self.owned.values()) + [o for o, _ in self.releasing.values()]
        for item in rest:
            item.stream.stop()
        if rest:
            await asyncio.wait([o.task for o in rest], timeout=5)
        with contextlib.suppress(Exception):
            for item in rest:
                await self._release_lease(item)
        self.owned.clear()
        self.releasing.clear()
        await self._http.aclose()


async def status(client: Any, group: str) -> dict[str, Any]:
    """Workers, the accounts each holds, and the age of each account's last event."""
    now_ms = int(time.time() * 1000)
    workers = {
        w.decode(): (now_ms - int(score)) / 1000
        for w, score in await client.zrange(key(group, "workers"), 0, -1, withscores=True)
    }
    records = await registry.load(client, group)
    last = {k.decode(): int(v) for k, v in (await client.hgetall(key(group, "last"))).items()}
    accounts = {}
    for label in sorted(records):
        holder = await client.get(key(group, "lease", label))
        owner = holder.decode().rsplit(":", 1)[0] if holder else None
        age = (now_ms - last[label]) / 1000 if label in last else None
        accounts[label] = {"worker": owner, "last_event_age": age}
    return {"workers": workers, "accounts": accounts}


async def run_worker(
    redis_url: str,
    host: Pipeline,
    options: WorkerOptions,
    *,
    ident: str | None = None,
    handle_signals: bool = True,
    sink: RedisSink,
) -> None:
    """Run one worker until SIGINT/SIGTERM. ``sink`` (registered with ``host``'s plugins)
    gets the host's reporter, each account's fencing token, and the hash of last event
    times a takeover resumes its gap report from."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    worker = Worker(client, host, options, ident or registry.worker_id())
    sink.bind(host.report, worker.fence, key(options.group, "last"))
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, worker.stop)
    host.start([])
    try:
        await worker.run()
    finally:
        await host.dispatcher.drain(2.0)
        await host.stop(timeout=1.0)
        await client.aclose()
