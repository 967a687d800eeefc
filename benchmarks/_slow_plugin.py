"""A third-party plugin for bench_e2e's CLI path: synchronous, 1 ms per call, delivery
policy ``latest`` (the default). It keeps the final state of every object and writes them
to ``$SLOW_PLUGIN_OUT`` (JSON) whenever its queue drains."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from bitmusa_hookspecs import hookimpl

final: dict[str, int] = {}
calls = 0


def _take(key: str, event: dict[str, Any]) -> None:
    global calls
    time.sleep(0.001)
    calls += 1
    final[key] = event["eventTime"]


@hookimpl
def on_order(order: dict[str, Any], event: dict[str, Any]) -> None:
    _take(f"order:{order['id']}", event)


@hookimpl
def on_position(position: dict[str, Any], event: dict[str, Any]) -> None:
    _take(f"position:{position['symbol']}", event)


@hookimpl
def on_wallet(event: dict[str, Any]) -> None:
    _take("balance", event)


@hookimpl
def on_idle() -> None:
    path = os.environ["SLOW_PLUGIN_OUT"]
    with open(path + ".tmp", "wb") as out:
        out.write(orjson.dumps({"final": final, "calls": calls}))
    os.replace(path + ".tmp", path)
