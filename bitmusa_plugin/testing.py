"""Test helpers for plugin authors, registered with pytest through ``pytest11``.

Installed with bitmusa-plugin, this gives every pytest run:

* the ``bitmusa_simulator`` fixture: a running :class:`~bitmusa_plugin.simulator.Simulator`
  on loopback (async; needs pytest-asyncio or anyio);
* :func:`replay`: feed frames through your plugin exactly as the live stream would
  (decode, map, deliver) and get back what each hook received;
* event factories: :func:`wallet_frame`, :func:`order_frame`, :func:`position_frame`.

Nothing heavy is imported until a helper is used.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from bitmusa_hookspecs import hookimpl

__all__ = [
    "RedisServer",
    "Replayed",
    "bitmusa_simulator",
    "order_frame",
    "position_frame",
    "replay",
    "wallet_frame",
]

_DEFAULT_TIME = 1700703548846


def _frame(stream: str, data: dict[str, Any], event_time: int | None) -> str:
    return orjson.dumps(
        {"data": data, "stream": stream, "eventTime": event_time or _DEFAULT_TIME}
    ).decode()


def wallet_frame(
    asset: str = "USDT", free: str = "1000", locked: str = "0", *, event_time: int | None = None
) -> str:
    """A ``future_wallet`` frame, as Bitmusa sends it (numbers as strings)."""
    return _frame("future_wallet", {"asset": asset, "free": free, "locked": locked}, event_time)


def order_frame(
    order_id: str = "F1",
    ticker: str = "XRPUSDT",
    *,
    status: str = "TRADING",
    side: str | None = "BUY",
    type: str = "LIMIT",
    price: str = "0.5",
    amount: str = "10",
    filled: str = "0",
    value: str = "0",
    direction: str = "OPEN",
    created_time: int = _DEFAULT_TIME,
    event_time: int | None = None,
    **extra: Any,
) -> str:
    """A ``future_order`` frame. ``filled``/``value`` are ``tradedAmount``/``value``."""
    data: dict[str, Any] = {
        "orderId": order_id,
        "ticker": ticker,
        "direction": direction,
        "type": type,
        "price": price,
        "amount": amount,
        "tradedAmount": filled,
        "value": value,
        "status": status,
        "createdTime": created_time,
        "canceledTime": None,
        "completedTime": None,
        **extra,
    }
    if side is not None:
        data["position"] = side
    return _frame("future_order", data, event_time)


def position_frame(
    ticker: str = "XRPUSDT",
    *,
    side: str = "BUY",
    status: str = "OPEN",
    amount: str = "10",
    price: str = "0.5",
    leverage: str = "10",
    liquid_price: str = "0.46",
    unpnl: str = "0",
    margin_mode: str = "ISOLATED",
    event_time: int | None = None,
    **extra: Any,
) -> str:
    """A ``future_position`` frame; ``status`` USER_CLOSE etc. makes it flat."""
    value = str(float(amount) * float(price))
    data = {
        "ticker": ticker,
        "marginMode": margin_mode,
        "positionMode": "ONEWAY",
        "position": side,
        "status": status,
        "leverage": leverage,
        "price": price,
        "amount": amount,
        "value": value,
        "liquidPrice": liquid_price,
        "unpnl": unpnl,
        "createdTime": _DEFAULT_TIME,
        "closeTime": "null",
        **extra,
    }
    return _frame("future_position", data, event_time)


@dataclass
class Replayed:
    """What each hook received, in delivery order."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    @property
    def orders(self) -> list[dict[str, Any]]:
        return [k["order"] for k in self.of("on_order")]

    @property
    def trades(self) -> list[dict[str, Any]]:
        return [k["trade"] for k in self.of("on_trade")]

    @property
    def positions(self) -> list[dict[str, Any]]:
        return [k["position"] for k in self.of("on_position")]

    @property
    def balances(self) -> list[dict[str, Any]]:
        return [k["balance"] for k in self.of("on_wallet")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [k["error"] for k in self.of("on_error")]


class _Spy:
    """Records every hook call, beside the plugin under test."""

    def __init__(self, replayed: Replayed) -> None:
        self.calls = replayed.calls

    @hookimpl
    def on_wallet(self, balance: Any, event: Any) -> None:
        self.calls.append(("on_wallet", {"balance": balance, "event": event}))

    @hookimpl
    def on_order(self, order: Any, event: Any) -> None:
        self.calls.append(("on_order", {"order": order, "event": event}))

    @hookimpl
    def on_trade(self, trade: Any, event: Any) -> None:
        self.calls.append(("on_trade", {"trade": trade, "event": event}))

    @hookimpl
    def on_position(self, position: Any, event: Any) -> None:
        self.calls.append(("on_position", {"position": position, "event": event}))

    @hookimpl
    def on_stream_state(self, state: Any) -> None:
        self.calls.append(("on_stream_state", {"state": state}))

    @hookimpl
    def on_error(self, error: Any, event: Any) -> None:
        self.calls.append(("on_error", {"error": error, "event": event}))


def replay(plugin: object, frames: Iterable[str | bytes], account: str = "test") -> Replayed:
    """Feed raw frames through ``plugin`` the way the live stream does (decode, map, the
    same isolated delivery), wait until it has handled them, and return what the hooks
    received. A failure inside the plugin is reported as an ``on_error`` call in the
    result, exactly as in production."""
    return asyncio.run(replay_async(plugin, frames, account))


async def replay_async(
    plugin: object, frames: Iterable[str | bytes], account: str = "test"
) -> Replayed:
    """:func:`replay` for code already running in an event loop."""
    from ._engine.session import DeliveryOptions, Session

    replayed = Replayed()
    plugins = {"plugin-under-test": plugin, "bitmusa-testing-spy": _Spy(replayed)}
    # every call reaches the plugin under test, as fast as it takes them: no merging
    session = Session(plugins, command="test", delivery=DeliveryOptions(override="all"))
    session.start(replaying=[account])
    async with session:
        for frame in frames:
            session.ingest(account, frame)
            if session.blocked:
                await session.writable()
        await session.drain(10)
    replayed.calls = [c for c in replayed.calls if c[0] not in ("on_startup", "on_shutdown")]
    return replayed


#: The fixture's simulator unless a ``bitmusa_simulator`` marker says otherwise: an hour of
#: exchange time per real second, an event every 50 ms.
SIMULATOR_DEFAULTS: dict[str, Any] = {"time_scale": 3600, "event_interval": 0.05}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bitmusa_simulator(**options): Simulator options for the bitmusa_simulator fixture "
        "(time_scale, event_interval, seed, accounts, script, ...); a test's marker "
        "overrides its class's and module's, option by option",
    )


@pytest.fixture
async def bitmusa_simulator(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A running simulator on loopback: ``.rest_url``, ``.ws_url``, fault methods, and
    the demo credentials in ``bitmusa_plugin.simulator.DEMO_API_KEY``/``DEMO_AUTH_KEY``.

    Configure it with the ``bitmusa_simulator`` marker, on a test, a class or a module::

        pytestmark = pytest.mark.bitmusa_simulator(event_interval=None, seed=5)
    """
    from bitmusa_plugin.simulator import Simulator

    options = dict(SIMULATOR_DEFAULTS)
    for marker in reversed(list(request.node.iter_markers("bitmusa_simulator"))):
        options.update(marker.kwargs)  # the module's, then the class's, then the test's
    simulator = Simulator(**options)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port, no persistence: for testing
    the Redis sink, worker mode or your own consumer (``pytest.skip`` when
    ``RedisServer.available()`` is False). ``stop()`` then ``start()`` restarts it, empty,
    on the same port."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server not found (Debian: apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None
