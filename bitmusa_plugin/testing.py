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
    "RedisSentinels",
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

    def __init__(self, directory: Path, *, args: Iterable[str] = ()) -> None:
        self.port = _free_port()
        self.directory = directory
        self.args = list(args)  # more of redis-server's options (``--replicaof``, ...)
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
                *self.args,
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisSentinels:
    """A throwaway replicated Redis on loopback: a primary, ``replicas`` replicas and
    ``sentinels`` ``redis-server --sentinel`` processes monitoring it as ``service``
    (quorum a majority, ``down-after-milliseconds`` ``down_after_ms``). ``.url`` is the
    ``redis+sentinel://`` URL; ``primary()`` says which server is the primary now (after a
    failover, a promoted replica). ``stop()`` kills every process; use it in a finalizer.
    Each sentinel's config file is written under ``directory`` (sentinel rewrites it)."""

    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = "bitmusa",
        down_after_ms: int = 1000,
    ) -> None:
        self.directory = directory
        self.service = service
        self.down_after_ms = down_after_ms
        first = directory / "redis0"
        first.mkdir(parents=True, exist_ok=True)
        self.servers = [RedisServer(first)]
        for i in range(replicas):
            d = directory / f"redis{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            replicaof = ["--replicaof", "127.0.0.1", str(self.servers[0].port)]
            self.servers.append(RedisServer(d, args=replicaof))
        self.sentinel_ports = [_free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self, timeout: float = 30.0) -> RedisSentinels:
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server not found (Debian: apt-get install redis-server)")
        for redis_server in self.servers:
            redis_server.start()
        quorum = len(self.sentinel_ports) // 2 + 1
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.directory}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.servers[0].port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 10000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self._sentinels.append(
                subprocess.Popen(
                    [server, str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + timeout
        try:
            while not self._ready():
                if time.monotonic() > deadline:
                    raise RuntimeError("the sentinels did not see the primary and its replicas")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _ask(self, port: int, *command: str) -> Any:
        import redis

        with redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0) as c:
            if command[:2] == ("SENTINEL", "MASTER"):
                return c.sentinel_master(command[2])
            return c.execute_command(*command)

    def _ready(self) -> bool:
        """Every sentinel knows the primary, its replicas and the other sentinels."""
        import redis

        try:
            for port in self.sentinel_ports:
                info = self._ask(port, "SENTINEL", "MASTER", self.service)  # parsed: a dict
                if int(info["num-slaves"]) < len(self.servers) - 1:
                    return False
                if int(info["num-other-sentinels"]) < len(self.sentinel_ports) - 1:
                    return False
            for replica in self.servers[1:]:
                role = self._ask(replica.port, "ROLE")
                if role[0] != b"slave" or role[3] != b"connected":
                    return False
        except (redis.RedisError, OSError):
            return False
        return True

    def primary(self) -> RedisServer | None:
        """The server the sentinels name as the primary now (None: none agreed on)."""
        import redis

        for port in self.sentinel_ports:
            try:
                host_port = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            except (redis.RedisError, OSError):
                continue
            if host_port:
                return next((s for s in self.servers if s.port == int(host_port[1])), None)
        return None

    def stop(self) -> None:
        for proc in self._sentinels:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
        self._sentinels.clear()
        for redis_server in self.servers:
            if redis_server.proc is not None and redis_server.proc.poll() is None:
                redis_server.proc.kill()
            if redis_server.proc is not None:
                redis_server.proc.wait(5)
            redis_server.proc = None
