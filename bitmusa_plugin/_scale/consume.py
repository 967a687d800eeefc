"""Consumers on other machines: the sink's stream through a consumer group.

    async for item in consume("redis://redis:6379/0", "risk-service"):
        if item.hook == "on_order":
            handle(item.obj)        # the unified order, as plugins receive it

Each entry is acknowledged (``XACK``) when the loop asks for the next one, i.e. after the
body processed it; one that a consumer took but never acknowledged (it died) is handed to
another after ``claim_after`` seconds (``XAUTOCLAIM``). Duplicates (a worker handover
delivers an event twice, a redelivered entry) are dropped by idempotency id, across every
consumer of the group: the first to ``SET NX`` the id wins for ``dedupe_ttl`` seconds.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from bitmusa_plugin._scale.sink import DEFAULT_STREAM

#: what each hook's record calls its object
_OBJECT_KEYS = {
    "on_wallet": "balance",
    "on_order": "order",
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
) -> AsyncIterator[Consumed]:
    """Yield every event of ``stream`` once for the consumer ``group`` (see the module
    doc). ``stop_when_idle`` ends the iteration when a read returns nothing (tests, batch
    jobs); otherwise it waits for new events forever."""
    from redis.exceptions import ResponseError

    from bitmusa_plugin._scale import connect

    name = consumer or f"{socket.gethostname()}:{os.getpid()}"
    client = connect.client(redis_url, socket_connect_timeout=2.0)
    try:
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        seen_prefix = f"bitmusa:seen:{group}:"
        pending = "0"  # first what this consumer took and did not acknowledge
        while True:
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
            if not entries:
                if stop_when_idle:
                    return
                continue
            for entry_id, fields in entries:
                if not fields:  # a deleted entry still pending
                    await client.xack(stream, group, entry_id)
                    continue
                ident = fields[b"id"].decode()
                if not await client.set(seen_prefix + ident, 1, nx=True, ex=dedupe_ttl):
                    await client.xack(stream, group, entry_id)  # a duplicate: done
                    continue
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
    finally:
        await client.aclose()
