"""ccxt's three faces, found by id after ``register_ccxt()``: the sync face (``ccxt.bitmusa``)
against the simulator over loopback, from several threads at once; the async_support and
pro faces; registration in any import order, idempotent, touching no other exchange; the
example bot that takes its exchange by id from a config, for each face.

The sync face is called from worker threads (``asyncio.to_thread``) while the simulator
serves on the test's loop, as a bot's threads would call it beside a real exchange.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest

import bitmusa_plugin
from bitmusa_plugin import load_exchange, register_ccxt
from bitmusa_plugin._ccxt import bitmusa as async_bitmusa
from bitmusa_plugin._ccxt import sync as bm_sync
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator, SimulatorThread
from ccxt_reference import FAST_TIMING
from conftest import ROOT

pytestmark = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)

BTC = "BTC/USDT:USDT"
#: a bound that only turns a hang into a failure
HANG = 30


@pytest.fixture(autouse=True)
def registered() -> None:
    register_ccxt()


def config_for(sim: Any, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiKey": DEMO_API_KEY,
        "secret": DEMO_AUTH_KEY,
        "urls": {"api": {"rest": sim.rest_url, "ws": sim.ws_url}},
        "options": {"timing": FAST_TIMING, "heartbeat": [0.5, 2.0], "restRate": [1000, 100000]},
    }
    config.update(extra)
    return config


def python(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter (its own ccxt modules, its own exit)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def rest_orders(sim: Simulator) -> list[Any]:
    return [o for o in sim.engine().orders.values() if o.origin == "rest"]


# -- the sync face ------------------------------------------------------------------------------


async def test_the_sync_face_is_found_by_id_and_trades_from_two_threads_at_once(
    sim: Simulator,
) -> None:
    await sim.set_price("BTCUSDT", "100000")
    assert "bitmusa" in ccxt.exchanges
    exchange = ccxt.bitmusa(config_for(sim))
    assert isinstance(exchange, ccxt.Exchange)
    assert not isinstance(exchange, ccxt.async_support.Exchange)
    start = threading.Barrier(2)

    def trade(price: int) -> tuple[str, list[str], str, str]:
        start.wait(HANG)  # both threads call at once
        order = exchange.create_order(BTC, "limit", "buy", 0.01, price)
        listed = [o["id"] for o in exchange.fetch_open_orders(BTC)]
        fetched = exchange.fetch_order(order["id"], BTC)
        canceled = exchange.cancel_order(order["id"], BTC)
        return order["id"], listed, fetched["status"], canceled["status"]

    try:
        await asyncio.to_thread(exchange.load_markets)
        results = await asyncio.wait_for(
            asyncio.gather(asyncio.to_thread(trade, 90000), asyncio.to_thread(trade, 91000)),
            HANG,
        )
    finally:
        await asyncio.to_thread(exchange.close)
    ids = [r[0] for r in results]
    assert len(set(ids)) == 2
    for order_id, listed, fetched, canceled in results:
        assert order_id in listed
        assert (fetched, canceled) == ("open", "canceled")
    placed = rest_orders(sim)
    assert sorted(o.order_id for o in placed) == sorted(ids)  # each placed once
    assert {o.status for o in placed} == {"CANCELLED"}


async def test_the_sync_face_reads_and_sets_the_one_state(sim: Simulator) -> None:
    exchange = ccxt.bitmusa(config_for(sim))
    inner = exchange._sync_inner
    try:
        markets = await asyncio.to_thread(exchange.load_markets)
        assert exchange.markets is inner.markets is markets
        assert exchange.symbols == inner.symbols
        assert BTC in exchange.symbols
        assert exchange.market(BTC)["id"] == "BTCUSDT"  # ccxt's sync helper, async's markets
        assert exchange.amount_to_precision(BTC, 0.0123456) == inner.amount_to_precision(
            BTC, 0.0123456
        )
        assert exchange.amountToPrecision(BTC, "0.0123456") == exchange.amount_to_precision(
            BTC, "0.0123456"
        )
        exchange.options["closeSide"] = "position"
        assert inner.options["closeSide"] == "position"
        exchange.timeout = 4321
        assert inner.timeout == 4321
        exchange.verbose = True
        assert inner.verbose is True
        exchange.verbose = False
        # has: the async class's, every websocket method false (ccxt's sync API has none)
        assert exchange.has["fetchTicker"] is True
        assert exchange.has["createOrder"] is True
        assert inner.has["watchOrders"] is True
        assert exchange.has["watchOrders"] is False
        assert exchange.has["ws"] is False
        assert exchange.describe()["has"] == exchange.has
        assert repr(exchange) == "ccxt.bitmusa()"
        assert DEMO_API_KEY not in repr(exchange)
        with pytest.raises(ccxt.NotSupported):
            exchange.watch_orders()  # ccxt's own sync stub
    finally:
        await asyncio.to_thread(exchange.close)


def test_every_async_method_has_its_sync_face() -> None:
    """Derived from the async class: every public coroutine method but the websocket ones
    (those other parts add too), with ccxt's camelCase alias; the parts' own plain methods
    (parse_*) are the async instance's."""
    face = ccxt.bitmusa
    wrapped = [
        name
        for name, member in inspect.getmembers(async_bitmusa, inspect.iscoroutinefunction)
        if not name.startswith(("_", "watch", "un_watch")) and name == name.lower()
    ]
    assert {"fetch_balance", "create_order", "cancel_order", "load_markets"} <= set(wrapped)
    for name in wrapped:
        method = getattr(face, name)
        assert not inspect.iscoroutinefunction(method), name
        assert method.__name__ == name
        camel = bm_sync._camel(name)
        assert getattr(face, camel) is method, camel
    assert face.fetchOHLCV is face.fetch_ohlcv
    assert face.parse_ticker is not ccxt.Exchange.parse_ticker


def test_a_method_or_property_added_to_the_async_class_gets_its_sync_face() -> None:
    """What another part adds to the async class this round appears on the sync face with
    no edit of sync.py: checked on a subclass built here, through the same derivation."""

    class grown(async_bitmusa):
        async def fetch_something(self, symbol: str) -> str:
            return f"{symbol} from {threading.current_thread().name}"

        def parse_something(self, value: str) -> str:
            return value.upper()

        @property
        def something(self) -> str:
            return "inner"

        async def watch_something(self) -> None:
            raise AssertionError("a websocket method has no sync face")

    class face(bm_sync.bitmusa):
        async_class = grown

    bm_sync._install(face, grown)
    assert "fetch_something" in bm_sync.coroutine_methods(grown)
    assert "watch_something" not in bm_sync.coroutine_methods(grown)
    exchange = face({})
    try:
        assert exchange.fetch_something("BTC") == "BTC from bitmusa-ccxt-sync"
        assert exchange.fetchSomething("ETH") == "ETH from bitmusa-ccxt-sync"
        assert exchange.parse_something("x") == "X"
        assert exchange.something == "inner"
        assert not hasattr(exchange, "watch_something")  # ccxt's sync API has none
        with pytest.raises(ccxt.NotSupported):
            exchange.watch_orders()  # those ccxt's sync base knows: its stubs
        assert exchange.has["watchOrders"] is False  # the face's describe and has stay
        assert exchange.describe()["has"]["watchOrders"] is False
    finally:
        exchange.close()


async def test_a_failure_raises_the_async_faces_class_without_the_loops_frames(
    sim: Simulator,
) -> None:
    exchange = ccxt.bitmusa(config_for(sim, apiKey="wrong", secret="wrong-too"))
    try:
        with pytest.raises(ccxt.AuthenticationError, match="1001") as raised:
            await asyncio.to_thread(exchange.fetch_balance)
    finally:
        await asyncio.to_thread(exchange.close)
    # from the face's frame on, nothing: neither the loop's, nor the engine's, nor the
    # future's (the caller's own frames, here to_thread's, stay as they are)
    files = [frame.filename for frame in traceback.extract_tb(raised.value.__traceback__)]
    face = files.index(bm_sync.__file__)
    assert files[face:] == [bm_sync.__file__] * 2, files
    assert "wrong-too" not in str(raised.value)


async def test_a_timeout_is_reported_once_and_the_order_never_sent_again(sim: Simulator) -> None:
    await sim.set_price("BTCUSDT", "100000")
    exchange = ccxt.bitmusa(config_for(sim, timeout=1000))
    try:
        await asyncio.to_thread(exchange.load_markets)
        sim.fail_rest("timeout_after", method="POST", path="/future/order")
        with pytest.raises(ccxt.RequestTimeout):
            await asyncio.to_thread(exchange.create_order, BTC, "limit", "buy", 0.01, 90000)
    finally:
        await asyncio.to_thread(exchange.close)
    assert len(rest_orders(sim)) == 1  # placed by the call that timed out, not again


async def test_close_and_the_context_manager_end_the_engine(sim: Simulator) -> None:
    def use() -> Any:
        with ccxt.bitmusa(config_for(sim)) as exchange:
            exchange.fetch_balance()
            assert exchange._sync_inner._engine is not None  # the engine ran
            assert exchange in bm_sync._LOOP.open
        return exchange

    exchange = await asyncio.to_thread(use)
    assert exchange._sync_inner._engine is None
    assert exchange not in bm_sync._LOOP.open
    other = ccxt.bitmusa(config_for(sim))
    await asyncio.to_thread(other.fetch_balance)
    await asyncio.to_thread(other.close)
    assert other._sync_inner._engine is None
    await asyncio.to_thread(other.close)  # twice: nothing to do


@pytest.fixture
def sigint_at_its_default() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt, as at a terminal: a shell without job control
    starts background jobs (a CI step run with ``&``) with SIGINT ignored, and Python then
    installs no handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_at_its_default")
def test_ctrl_c_during_an_order_raises_at_once_and_never_resends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The order's answer never comes (the simulator places it, then stays silent); Ctrl-C
    (SIGINT to this process, as a terminal sends it) ends the wait with KeyboardInterrupt,
    a warning says the order may stand, and exactly one order exists."""
    with SimulatorThread(script=False, event_interval=None, seed=7, time_scale=1) as handle:
        sim = handle.simulator
        exchange = ccxt.bitmusa(config_for(sim))
        try:
            exchange.load_markets()
            sim.fail_rest("timeout_after", method="POST", path="/future/order")
            placed = threading.Event()

            def interrupt_once_placed() -> None:
                deadline = time.monotonic() + HANG
                while not rest_orders(sim) and time.monotonic() < deadline:
                    time.sleep(0.01)  # the simulator's thread places it
                placed.set()
                os.kill(os.getpid(), signal.SIGINT)

            threading.Thread(target=interrupt_once_placed, daemon=True).start()
            with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
                exchange.create_order(BTC, "limit", "buy", 0.01, 90000)
            assert placed.is_set()
            assert "create_order interrupted" in caplog.text
            assert "not sent again" in caplog.text
            assert len(rest_orders(sim)) == 1
            # the face still works, and shows the order that stands
            assert [o["id"] for o in exchange.fetch_open_orders(BTC)] == [
                o.order_id for o in rest_orders(sim)
            ]
        finally:
            exchange.close()


def test_a_process_that_never_closes_exits_and_deletes_its_listen_key() -> None:
    """A script that places an order with the sync face (which starts the user stream) and
    ends without ``close()`` exits: the loop thread is a daemon, and the atexit hook closes
    the instance first, so the listenKey is DELETEd; nothing is printed at exit. A call
    from a later exit handler raises instead of waiting for the stopped loop."""
    script = (
        "import atexit\n"
        "# registered before bitmusa's hook, so it runs after it (atexit is last in, first out)\n"
        "def late():  # a bot's own exit handler, after bitmusa's: no hang, a clear error\n"
        "    print('deletes', sim.account().deletes, flush=True)\n"
        "    exchange.close()\n"
        "    try:\n"
        "        exchange.fetch_balance()\n"
        "    except ccxt.ExchangeClosedByUser as exc:\n"
        "        print(type(exc).__name__, flush=True)\n"
        "atexit.register(late)\n"
        "import asyncio, bitmusa_plugin, ccxt\n"
        "from bitmusa_plugin.simulator import SimulatorThread, DEMO_API_KEY, DEMO_AUTH_KEY\n"
        "handle = SimulatorThread(script=False, event_interval=None)\n"
        "sim = handle.start()\n"
        "asyncio.run(handle.call_async(lambda s: s.set_price('BTCUSDT', '100000')))\n"
        "bitmusa_plugin.register_ccxt()\n"
        "exchange = ccxt.bitmusa({'apiKey': DEMO_API_KEY, 'secret': DEMO_AUTH_KEY,\n"
        "    'urls': {'api': {'rest': sim.rest_url, 'ws': sim.ws_url}}})\n"
        "print(exchange.create_order('BTC/USDT:USDT', 'limit', 'buy', 0.01, 90000)['status'])\n"
    )
    done = python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["open", "deletes", "1", "ExchangeClosedByUser"]
    assert done.stderr == ""


def test_a_forked_child_gets_a_loop_of_its_own() -> None:
    """multiprocessing forks on Linux: an exchange made in the child works; one made in the
    parent says so instead of waiting for a loop thread the child does not have."""
    script = (
        "import os, ccxt, bitmusa_plugin\n"
        "bitmusa_plugin.register_ccxt()\n"
        "parents = ccxt.bitmusa({})\n"
        "parents.sleep(1)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ccxt.bitmusa({}).sleep(1)\n"
        "    try:\n"
        "        parents.sleep(1)\n"
        "    except ccxt.ExchangeError as exc:\n"
        "        print('refused:', 'forked' in str(exc), flush=True)\n"
        "    os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "parents.sleep(1)\n"
        "print('child exit', os.waitstatus_to_exitcode(status))\n"
    )
    done = python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["refused: True", "child exit 0"]


def test_the_sync_face_refuses_its_own_loop_thread() -> None:
    exchange = ccxt.bitmusa({"apiKey": "k", "secret": "s"})
    loop = bm_sync._LOOP.get()
    future = asyncio.run_coroutine_threadsafe(_call_on_loop(exchange), loop)
    with pytest.raises(ccxt.ExchangeError, match="own event-loop thread"):
        future.result(HANG)
    exchange.close()


async def _call_on_loop(exchange: Any) -> Any:
    return exchange.fetch_balance()  # a plugin calling the sync face: refused, not a deadlock


#: ccxt's own sync test functions (``ccxt/test/exchange/sync``), with the arguments ccxt's
#: runner (``ccxt/test/tests_sync.py``) passes them; the whole async set runs in
#: tests/test_ccxt_suite.py. ``has`` is true for each but loadMarkets (checked).
CCXT_SYNC_TESTS = {
    "loadMarkets": (),
    "fetchStatus": (),
    "fetchTicker": (BTC,),
    "fetchTickers": (BTC,),
    "fetchOHLCV": (BTC,),
    "fetchTrades": (BTC,),
    "fetchOrderBook": (BTC,),
    "fetchL2OrderBook": (BTC,),
    "fetchBalance": (),
    "fetchOpenOrders": (BTC,),
    "fetchMyTrades": (BTC,),
    "fetchPositions": (BTC,),
}


@pytest.fixture(scope="module")
def trading_sync_face() -> Iterator[Any]:
    """The sync face on a simulator of its own thread, with an open order, a fill and a
    position, so that no ccxt test meets an empty answer."""
    register_ccxt()
    with SimulatorThread(script=False, event_interval=None, seed=7, time_scale=1) as handle:
        sim = handle.simulator
        asyncio.run(handle.call_async(lambda s: s.set_price("BTCUSDT", "100000")))
        with ccxt.bitmusa(config_for(sim)) as exchange:
            exchange.load_markets()
            exchange.create_order(BTC, "limit", "buy", 0.01, 90000)
            exchange.create_order(BTC, "market", "buy", 0.01)
            yield exchange


@pytest.mark.parametrize("method", CCXT_SYNC_TESTS)
def test_ccxts_own_sync_tests_pass_on_the_sync_face(trading_sync_face: Any, method: str) -> None:
    exchange = trading_sync_face
    assert method == "loadMarkets" or exchange.has[method] is True
    name = _snake(method)
    test = getattr(importlib.import_module(f"ccxt.test.exchange.sync.test_{name}"), f"test_{name}")
    test(exchange, {}, *CCXT_SYNC_TESTS[method])  # no skipped properties; raises if wrong


def _snake(method: str) -> str:
    """ccxt's camelCase method name as its test file's (fetchOHLCV -> fetch_ohlcv)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in method.replace("OHLCV", "Ohlcv"))


# -- the async faces ----------------------------------------------------------------------------


async def test_the_async_support_face_is_found_by_id(sim: Simulator) -> None:
    assert "bitmusa" in ccxt.async_support.exchanges
    assert ccxt.async_support.bitmusa is async_bitmusa
    exchange = ccxt.async_support.bitmusa(config_for(sim))
    assert isinstance(exchange, ccxt.async_support.Exchange)
    try:
        balance = await exchange.fetch_balance()
        assert balance["USDT"]["free"] is not None
    finally:
        await exchange.close()


async def test_the_pro_face_is_found_by_id(sim: Simulator) -> None:
    assert "bitmusa" in ccxt.pro.exchanges
    exchange_id = "bitmusa"  # as bots do, from a config
    exchange = getattr(ccxt.pro, exchange_id)(config_for(sim))
    assert isinstance(exchange, async_bitmusa)
    try:
        balance = await asyncio.wait_for(exchange.watch_balance(), HANG)
        assert balance["USDT"]["total"] is not None
    finally:
        await exchange.close()


def test_load_exchange_knows_the_faces() -> None:
    assert type(load_exchange("bitmusa", face="sync")) is ccxt.bitmusa
    assert type(load_exchange("bitmusa", face="async")) is async_bitmusa
    assert type(load_exchange("bitmusa")) is async_bitmusa
    assert type(load_exchange("binanceusdm", face="sync")) is ccxt.binanceusdm
    with pytest.raises(ValueError, match="face 'spot'"):
        load_exchange("bitmusa", face="spot")


# -- registration -------------------------------------------------------------------------------


def test_registration_is_idempotent_and_changes_no_other_exchange() -> None:
    modules = (ccxt, ccxt.async_support, ccxt.pro)
    before = {m.__name__: {n: getattr(m, n) for n in m.exchanges} for m in modules}
    lists = {m.__name__: list(m.exchanges) for m in modules}
    register_ccxt()
    register_ccxt()
    for module in modules:
        assert module.exchanges == lists[module.__name__]
        assert module.exchanges.count("bitmusa") == 1
        if hasattr(module, "__all__"):  # ccxt.pro has none
            assert module.__all__.count("bitmusa") == 1
        assert module.exchanges == sorted(module.exchanges)
        assert {n: getattr(module, n) for n in module.exchanges} == before[module.__name__]
    assert bitmusa_plugin.register_ccxt is register_ccxt


def test_the_first_registration_adds_bitmusa_and_nothing_else() -> None:
    script = (
        "import ccxt, ccxt.async_support, ccxt.pro\n"
        "modules = (ccxt, ccxt.async_support, ccxt.pro)\n"
        "def state():\n"
        "    return [(list(m.exchanges), list(getattr(m, '__all__', [])),\n"
        "             {n: getattr(m, n) for n in m.exchanges}) for m in modules]\n"
        "before = state()\n"
        "assert all('bitmusa' not in names for names, _, _ in before)\n"
        "import bitmusa_plugin\n"
        "bitmusa_plugin.register_ccxt()\n"
        "for (names, alls, classes), m in zip(before, modules):\n"
        "    assert [n for n in m.exchanges if n != 'bitmusa'] == names, m\n"
        "    assert [n for n in getattr(m, '__all__', []) if n != 'bitmusa'] == alls, m\n"
        "    assert {n: getattr(m, n) for n in names} == classes, m\n"
        "    assert m.exchanges == sorted(m.exchanges), m\n"
        "print('ok')\n"
    )
    done = python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_an_exchange_ccxt_ships_under_the_name_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    class official(ccxt.Exchange):  # type: ignore[misc]
        pass

    monkeypatch.setattr(ccxt, "bitmusa", official)
    register_ccxt()
    assert ccxt.bitmusa is official
    register_ccxt(replace=True)
    assert ccxt.bitmusa is bm_sync.bitmusa


REGISTERED = (
    "assert ccxt.bitmusa is bitmusa_plugin._ccxt.sync.bitmusa\n"
    "assert ccxt.async_support.bitmusa is bitmusa_plugin._ccxt.bitmusa\n"
    "assert getattr(ccxt.pro, 'bitmusa') is bitmusa_plugin._ccxt.bitmusa\n"
    "for m in (ccxt, ccxt.async_support, ccxt.pro):\n"
    "    assert m.exchanges.count('bitmusa') == 1, m\n"
    "from ccxt import bitmusa\n"
    "from ccxt.pro import bitmusa as pro\n"
    "print('ok')\n"
)


@pytest.mark.parametrize(
    "order",
    [
        "import bitmusa_plugin\nbitmusa_plugin.register_ccxt()\nimport ccxt, ccxt.pro\n",
        "import ccxt.pro\nimport bitmusa_plugin\nbitmusa_plugin.register_ccxt()\nimport ccxt\n",
        "import ccxt.async_support\nfrom bitmusa_plugin import register_ccxt\n"
        "register_ccxt()\nregister_ccxt()\nimport ccxt, ccxt.pro, bitmusa_plugin\n",
    ],
    ids=["register-first", "ccxt-pro-first", "async-support-first-twice"],
)
def test_registration_holds_in_any_import_order(order: str) -> None:
    script = order + "import ccxt.async_support, bitmusa_plugin._ccxt.sync\n" + REGISTERED
    done = python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_sitecustomize_line_registers_for_a_bot_left_unchanged(tmp_path: Path) -> None:
    """docs/ccxt.md's line, in a sitecustomize.py on PYTHONPATH: a bot that only does
    ``ccxt.bitmusa(...)`` finds it."""
    page = (ROOT / "docs" / "ccxt.md").read_text()
    (line,) = [ln for ln in page.splitlines() if ln.startswith('__import__("bitmusa_plugin")')]
    (tmp_path / "sitecustomize.py").write_text(line + "\n")
    bot = "import ccxt\nprint(type(ccxt.bitmusa({})).__name__, 'bitmusa' in ccxt.exchanges)\n"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = python(bot, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["bitmusa", "True"]


def test_importing_the_package_or_register_ccxt_imports_no_ccxt() -> None:
    script = (
        "import sys\nimport bitmusa_plugin\nfrom bitmusa_plugin import register_ccxt\n"
        "print([m for m in ('ccxt', 'asyncio', 'httpx') if m in sys.modules])\n"
    )
    done = python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the example bot, for each face -------------------------------------------------------------


@pytest.mark.parametrize("face", ["sync", "async", "pro"])
async def test_the_bot_that_takes_its_exchange_by_id_runs_on_each_face(
    sim: Simulator, tmp_path: Path, face: str
) -> None:
    await sim.set_price("BTCUSDT", "100000")
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"face": face, "exchanges": {"bitmusa": config_for(sim)}}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "exchange_by_id.py"),
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    lines = [line.split() for line in out.decode().splitlines()]
    steps = [(exchange, f, step, status) for exchange, f, step, _, status in lines]
    expected = [
        ("bitmusa", face, "placed", "open"),
        ("bitmusa", face, "listed", "open"),
        ("bitmusa", face, "cancel", "canceled"),
    ]
    if face == "pro":
        expected.append(("bitmusa", face, "watched", "canceled"))
    assert steps == expected
    (placed,) = rest_orders(sim)
    assert {line[3] for line in lines} == {placed.order_id}
    assert placed.status == "CANCELLED"
