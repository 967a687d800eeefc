"""``--output jsonl``: one JSON object per hook call, in delivery order.

``{"hook": "on_order", "order": {...}, "event": {...}}`` and so on: the unified objects
exactly as plugins receive them. The format is a contract (docs/outputs.md).
"""

from __future__ import annotations

import sys
from typing import IO, Any

import orjson

from bitmusa_hookspecs import (
    Balance,
    Context,
    ErrorInfo,
    Event,
    Order,
    Position,
    StreamState,
    hookimpl,
)


class JsonlOutput:
    """Writes every hook call as one JSON line to ``stream`` (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def _write(self, record: dict[str, Any]) -> None:
        self._stream.write(orjson.dumps(record).decode() + "\n")
        self._stream.flush()  # a line reaches a pipe (tail -f, jq) as it happens

    @hookimpl
    def on_wallet(self, balance: Balance, event: Event) -> None:
        self._write({"hook": "on_wallet", "balance": balance, "event": event})

    @hookimpl
    def on_order(self, order: Order, event: Event) -> None:
        self._write({"hook": "on_order", "order": order, "event": event})

    @hookimpl
    def on_position(self, position: Position, event: Event) -> None:
        self._write({"hook": "on_position", "position": position, "event": event})

    @hookimpl
    def on_stream_state(self, state: StreamState) -> None:
        self._write({"hook": "on_stream_state", "state": state})

    @hookimpl
    def on_error(self, error: ErrorInfo, event: Event | None) -> None:
        self._write({"hook": "on_error", "error": error, "event": event})

    @hookimpl
    def on_startup(self, context: Context) -> None:
        self._write({"hook": "on_startup", "context": context})

    @hookimpl
    def on_shutdown(self, context: Context) -> None:
        self._write({"hook": "on_shutdown", "context": context})
