"""Consumers on other machines: the sink's stream through a consumer group.

    async for item in consume("redis://redis:6379/0", "risk-service"):
        if item.hook == "on_order":
            handle(item.obj)        # the unified order, as plugins receive it

Each entry is acknowledged (``XACK``) when the loop asks for the next one, i.e. after the
body processed it; one that a consumer took but never acknowledged (it died) is handed to
another after ``claim_after`` seconds (``XAUTOCLAIM``). Duplicates (a worker handover
delivers an event twice, a redelivered entry) are dropped by idempotency id, across every
consumer of the group: the first to ``SET NX`` the id wins for ``dedupe_ttl`` seconds.
Each consumer also remembers the ids it yielded last, since a failover can lose the
``SET NX`` marks the old primary acknowledged (docs/scale.md, "Redis with Sentinel"), and it
rides out a failover or restart as the workers do.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from bitmusa_plugin._scale.sink import DEFAULT_STREAM

#: what each hook's record calls its object
_OBJECT_KEYS = {
    "on_wallet": "balance",
    "on_order": "order",
    "on_trade": "trade",
    "on_position": "position",
    "on_stream_state": "state",
    "on_error": "error",
    "on_startup": "context",
    "on_shutdown": "context",
}


def _entries(reply: Any) -> list[Any]:
    """XREADGROUP's entries for our one stream, as RESP2 (a list) or RESP3 (a dict) has it."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [entry for entries in reply.values() for entry in entries[0]]
    return list(reply[0][1])


@dataclass(frozen=True)
class Consumed:
    """One event: ``hook``, the unified object (``obj``), its ``event`` envelope (None for
    states and errors without one), the idempotency ``id`` and the Redis ``entry_id``."""

    hook: str
    obj: dict[str, Any]
    event: dict[str, Any] | None
    id: str
    entry_id: str
    record: dict[str, Any]


async def consume(
    redis_url: str,
    group: str,
    *,
    stream: str = DEFAULT_STREAM,
    consumer: str | None = None,
    block_ms: int = 1000,
    count: int = 100,
    claim_after: float = 30.0,
    dedupe_ttl: int = 86400,
    stop_when_idle: bool = False,
    remember: int = 100_000,
    reconnect_for: float = 30.0,
) -> AsyncIterator[Consumed]:
    """Yield every event of ``stream`` once for the consumer ``group`` (see the module
    doc). ``stop_when_idle`` ends the iteration when a read returns nothing (tests, batch
    jobs); otherwise it waits for new events forever.

    Across a failover (or a restart) Redis may come back without the last writes it
    acknowledged: the ``seen`` marks, the group's position, acknowledgements. So this
    consumer also remembers the last ``remember`` ids it yielded, and never yields one of
    them again, and it rides out a Redis that does not answer for up to ``reconnect_for``
    seconds (then the error is raised), re-reading what it took and did not acknowledge."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from bitmusa_plugin._scale import connect

    name = consumer or f"{socket.gethostname()}:{os.getpid()}"
    client = connect.client(redis_url, socket_connect_timeout=2.0)
    recent: OrderedDict[str, None] = OrderedDict()
    seen_prefix = f"bitmusa:seen:{group}:"
    down_since: float | None = None
    try:
        ready = False
        pending = "0"  # first what this consumer took and did not acknowledge
        while True:
            try:
                if not ready:
                    try:
                        await client.xgroup_create(stream, group, id="0", mkstream=True)
                    except ResponseError as exc:
                        if "BUSYGROUP" not in str(exc):
                            raise
                    ready = True
                # entries a dead consumer left unacknowledged: take them over
                claimed = await client.xautoclaim(
                    stream, group, name, int(claim_after * 1000), "0-0", count=count
                )
                entries = list(claimed[1]) if claimed and len(claimed) > 1 else []
                if not entries:
                    reply: Any = await client.xreadgroup(
                        group, name, {stream: pending}, count=count, block=block_ms
                    )
                    entries = _entries(reply)
                    if pending != ">" and not entries:
                        pending = ">"
                        continue
                down_since = None
                if not entries:
                    if stop_when_idle:
                        return
                    continue
                for entry_id, fields in entries:
                    if not fields:  # a deleted entry still pending
                        await client.xack(stream, group, entry_id)
                        continue
                    ident = fields[b"id"].decode()
                    fresh = ident not in recent and await client.set(
                        seen_prefix + ident, 1, nx=True, ex=dedupe_ttl
                    )
                    if not fresh:
                        await client.xack(stream, group, entry_id)  # a duplicate: done
                        continue
                    recent[ident] = None
                    if len(recent) > remember:
                        recent.popitem(last=False)
                    record = orjson.loads(fields[b"json"])
                    hook = record["hook"]
                    yield Consumed(
                        hook,
                        record.get(_OBJECT_KEYS.get(hook, ""), {}),
                        record.get("event"),
                        ident,
                        entry_id.decode(),
                        record,
                    )
                    await client.xack(stream, group, entry_id)  # processed
            except (RedisConnectionError, RedisTimeoutError, OSError):
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                elif now - down_since > reconnect_for:
                    raise
                ready, pending = False, "0"  # the group may be gone; our pending too
                await asyncio.sleep(0.5)
    finally:
        await client.aclose()
