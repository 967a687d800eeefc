"""``listen``, ``demo`` and ``simulate`` as a user runs them: subprocesses on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

pytestmark = pytest.mark.bitmusa_simulator(
    event_interval=0.02,
    accounts={DEMO_API_KEY: DEMO_AUTH_KEY, "second-api-key": "second-auth-key"},
)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITMUSA_")}
    env["BITMUSA_LOAD_PLUGINS"] = ""
    env.update(extra)
    return env


async def run_cli(
    *args: str,
    env: dict[str, str],
    interrupt_after: float | None = None,
    timeout: float = 30.0,
) -> tuple[int, str, str, float]:
    """Run the CLI; optionally SIGINT it after some seconds. Returns (code, out, err,
    seconds from the signal to the exit)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bitmusa_plugin",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    communicate = asyncio.ensure_future(proc.communicate())
    stopped_at = time.monotonic()
    if interrupt_after is not None:
        done, _ = await asyncio.wait({communicate}, timeout=interrupt_after)
        if not done:
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(communicate, timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - stopped_at


async def start_simulate(*flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bitmusa_plugin",
        "simulate",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
    )


async def post_listen_key(rest_url: str) -> dict[str, Any]:
    """POST userDataStream with the demo credentials; the decoded envelope."""
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.post(
            rest_url + "/future/userDataStream",
            headers={"x-api-key": DEMO_API_KEY, "Authorization": f"Bearer {DEMO_AUTH_KEY}"},
        )
    body: dict[str, Any] = response.json()
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def urls(sim: Simulator) -> list[str]:
    return ["--rest-url", sim.rest_url, "--ws-url", sim.ws_url]


async def test_listen_streams_jsonl_and_shuts_down_cleanly_on_sigint(
    sim: Simulator, tmp_path: Path
) -> None:
    record = tmp_path / "frames.txt"
    env = cli_env(BITMUSA_API_KEY=DEMO_API_KEY, BITMUSA_AUTH_KEY=DEMO_AUTH_KEY)
    code, out, err, shutdown = await run_cli(
        "-vv",
        "listen",
        *urls(sim),
        "--output",
        "jsonl",
        "--keepalive-interval",
        "0.2",
        # the scenario's orders are all another client's: at 0.2 s the keep-alives would
        # share the REST allowance with a side lookup an order (test_sides.py covers those)
        "--side-wait",
        "0",
        "--record",
        str(record),
        env=env,
        interrupt_after=2.5,
    )
    assert code == 0, err
    assert shutdown < 2.0  # SIGINT to exit, DELETE included
    assert sim.account().deletes == 1
    lines = [orjson.loads(line) for line in out.splitlines()]
    hooks = [line["hook"] for line in lines]
    assert hooks[0] == "on_startup"
    assert hooks[-1] == "on_shutdown"
    states = [line["state"]["status"] for line in lines if line["hook"] == "on_stream_state"]
    assert states[:2] == ["connecting", "connected"]
    assert states[-1] == "closed"
    data_hooks = ("on_order", "on_wallet", "on_position")
    events = [
        line for line in lines if line["hook"] in data_hooks and line["event"]["stream"] != "resync"
    ]
    assert len(events) > 20
    assert sim.snapshots[:3] == ["wallet", "position", "order"]  # the start-up resync
    assert len(sim.account().puts) >= 3  # --keepalive-interval took effect
    for secret in (DEMO_API_KEY, DEMO_AUTH_KEY, *sim.account().issued_keys):
        assert secret not in out
        assert secret not in err
    assert "GET /ws/future/***" in err  # debug logging was on, and redacted

    # what --record wrote, replay delivers the same way
    replay_code, replay_out, _, _ = await run_cli("replay", str(record), env=env)
    assert replay_code == 0
    replayed = [orjson.loads(line) for line in replay_out.splitlines()]
    replayed_events = [r for r in replayed if r["hook"] in ("on_order", "on_wallet", "on_position")]

    assert [r["event"]["data"] for r in replayed_events] == [e["event"]["data"] for e in events]


async def test_listen_with_bad_credentials_exits_non_zero_at_once(sim: Simulator) -> None:
    env = cli_env(BITMUSA_API_KEY="not-a-real-key", BITMUSA_AUTH_KEY="not-a-real-auth")
    code, out, err, _ = await run_cli("listen", *urls(sim), "--output", "none", env=env, timeout=10)
    assert code == 4
    assert "account 'default' failed" in err
    assert "1001 (API KEY NOT FOUND): check the API key (x-api-key) and the auth key" in err
    assert len(err.strip().splitlines()) == 1  # one line: what failed, and what to do
    assert sim.rest_calls == [("POST", 1001)]  # no retry loop
    assert "not-a-real-key" not in err + out
    assert "not-a-real-auth" not in err + out


@pytest.mark.parametrize("case", ["ws path", "rest path", "closed port", "unknown host"])
async def test_listen_against_a_wrong_url_ends_within_the_start_up_window_naming_it(
    sim: Simulator, case: str
) -> None:
    port = free_port()
    flags, url, reason = {
        "ws path": (
            ["--rest-url", sim.rest_url, "--ws-url", sim.ws_url + "/ws"],
            f"{sim.ws_url}/ws/ws/future/<listenKey>",
            "answered HTTP 404/404: the websocket base is the server's root",
        ),
        "rest path": (
            ["--rest-url", sim.rest_url.replace("/api/v2", "/api/v3"), "--ws-url", sim.ws_url],
            f"POST {sim.rest_url.replace('/api/v2', '/api/v3')}/future/userDataStream",
            "HTTP 404 (no such path): the REST base should end in /api/v2",
        ),
        "closed port": (
            ["--rest-url", f"http://127.0.0.1:{port}/api/v2", "--ws-url", sim.ws_url],
            f"POST http://127.0.0.1:{port}/api/v2/future/userDataStream",
            "connection refused: nothing listens on that port",
        ),
        "unknown host": (
            ["--rest-url", "https://nosuchhost.invalid/api/v2", "--ws-url", sim.ws_url],
            "POST https://nosuchhost.invalid/api/v2/future/userDataStream",
            "unknown host (DNS found no address)",
        ),
    }[case]
    started = time.monotonic()
    code, out, err, _ = await run_cli(
        "listen",
        *flags,
        "--output",
        "none",
        "--startup-window",
        "2",
        env=cli_env(BITMUSA_API_KEY=DEMO_API_KEY, BITMUSA_AUTH_KEY=DEMO_AUTH_KEY),
        timeout=20,
    )
    seconds = time.monotonic() - started
    assert code == 4, err
    lines = err.splitlines()
    final = lines[-1]
    assert final.startswith("bitmusa-plugin: account 'default' failed: "), err
    assert url in final
    assert reason in final
    assert "Traceback" not in err
    assert DEMO_API_KEY not in err + out
    assert DEMO_AUTH_KEY not in err + out
    assert seconds < 2 + 5  # the window, and a Python start-up
    if case in ("ws path", "rest path"):
        assert lines == [final]  # a misconfiguration is not retried: one line, no more
    else:
        # meanwhile, each attempt's reason (the same, so logged once here) and the next try
        assert all("retrying in" in line for line in lines[:-1]), err
        assert "start-up window, 2 s" in final


async def test_listen_refuses_to_start_without_credentials() -> None:
    code, _, err, _ = await run_cli("listen", "--output", "none", env=cli_env(), timeout=10)
    assert code == 2
    assert "set BITMUSA_API_KEY and BITMUSA_AUTH_KEY in the environment" in err


async def test_listen_takes_many_accounts_from_a_config_file(
    sim: Simulator, tmp_path: Path
) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text(
        "[[accounts]]\nlabel = 'alice'\napi_key_env = 'ALICE_KEY'\n"
        "auth_key_env = 'ALICE_AUTH'\n\n"
        "[[accounts]]\nlabel = 'bob'\napi_key_env = 'BOB_KEY'\nauth_key_env = 'BOB_AUTH'\n"
    )
    config.chmod(0o600)
    env = cli_env(
        ALICE_KEY=DEMO_API_KEY,
        ALICE_AUTH=DEMO_AUTH_KEY,
        BOB_KEY="second-api-key",
        BOB_AUTH="second-auth-key",
    )
    code, out, err, _ = await run_cli(
        "listen",
        *urls(sim),
        "--config",
        str(config),
        "--output",
        "jsonl",
        env=env,
        interrupt_after=2.0,
    )
    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    accounts = {line["event"]["account"] for line in lines if line.get("event")}
    assert accounts == {"alice", "bob"}
    assert lines[0]["context"]["accounts"] == ["alice", "bob"]
    assert all(a.deletes == 1 for a in sim.accounts.values())


async def test_plaintext_to_another_host_is_refused_before_anything_is_sent() -> None:
    env = cli_env(BITMUSA_API_KEY=DEMO_API_KEY, BITMUSA_AUTH_KEY=DEMO_AUTH_KEY)
    code, _, err, _ = await run_cli(
        "listen",
        "--rest-url",
        "http://exchange.invalid/api/v2",
        "--ws-url",
        "ws://exchange.invalid",
        env=env,
        timeout=10,
    )
    assert code == 2
    assert "not encrypted and not this machine" in err
    assert DEMO_API_KEY not in err


async def test_config_file_that_holds_a_secret_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text("[[accounts]]\nlabel = 'x'\napi_key = 'abc'\n")
    code, _, err, _ = await run_cli("listen", "--config", str(config), env=cli_env(), timeout=10)
    assert code == 2
    assert "put secrets in environment variables" in err


async def test_demo_runs_end_to_end_with_a_gap_and_a_rotation() -> None:
    code, out, err, _ = await run_cli("demo", "--seconds", "8", env=cli_env(), timeout=40)
    assert code == 0, err
    assert "gap since" in out
    assert "rotated" in out
    assert "malformed_json" in out
    assert "closed (shutdown)" in out


async def test_simulate_serves_until_interrupted_and_prints_how_to_connect() -> None:
    proc = await start_simulate("--time-scale", "60", "--drop-every", "0.5")
    assert proc.stdout is not None
    printed: list[str] = []
    while len(printed) < 4:
        printed.append((await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip())
    rest = printed[0].split()[-1]
    assert rest.startswith("http://127.0.0.1:")
    assert f"BITMUSA_API_KEY={DEMO_API_KEY}" in printed[2]
    body = await post_listen_key(rest)
    assert body["code"] == 0
    assert body["data"]["listenKey"]
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 5) == 0


async def test_simulate_injects_the_chosen_rest_fault_on_schedule() -> None:
    proc = await start_simulate("--rest-fail-every", "0.1", "--rest-fault", "1011")
    assert proc.stdout is not None
    rest = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()[-1]
    await asyncio.sleep(0.5)  # a few faults are queued by now
    body = await post_listen_key(rest)
    assert body["code"] == 1011  # TOO MANY REQUESTS, as asked
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 5) == 0


async def test_a_20000_frame_burst_through_listen_jsonl_arrives_whole_and_in_order() -> None:
    # The burst of the issue: 20,000 wallet frames on one connection, written as fast as the
    # server can (about 40 ms of wire). Every one must come out of `listen --output jsonl`.
    count = 20_000
    async with Simulator(time_scale=3600, event_interval=None) as sim:
        env = cli_env(BITMUSA_API_KEY=DEMO_API_KEY, BITMUSA_AUTH_KEY=DEMO_AUTH_KEY)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bitmusa_plugin",
            "listen",
            *urls(sim),
            "--output",
            "jsonl",
            "--no-resync",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 20,
        )
        assert proc.stdout is not None
        free: list[str] = []
        connected = asyncio.Event()

        async def read() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                record = orjson.loads(line)
                if record["hook"] == "on_stream_state" and record["state"]["status"] == "connected":
                    connected.set()
                elif record["hook"] == "on_wallet":
                    free.append(record["event"]["data"]["free"])
                    if len(free) == count:
                        return

        reader = asyncio.get_running_loop().create_task(read())
        await asyncio.wait_for(connected.wait(), 15)
        while not sim.live():  # noqa: ASYNC110 (the server's own view, polled)
            await asyncio.sleep(0.01)
        account = sim.account()
        for n in range(count):
            frame = {
                "data": {"asset": "USDT", "free": str(n), "locked": "0"},
                "stream": "future_wallet",
                "eventTime": 1_700_000_000_000 + n,
            }
            await sim.send_text(account, orjson.dumps(frame).decode())
        await asyncio.wait_for(reader, 60)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert free == [str(n) for n in range(count)]  # all of them, in order, none twice
    assert b"Traceback" not in err


async def test_listen_into_a_closed_pipe_ends_quietly_with_status_0(sim: Simulator) -> None:
    env = cli_env(BITMUSA_API_KEY=DEMO_API_KEY, BITMUSA_AUTH_KEY=DEMO_AUTH_KEY)
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bitmusa_plugin",
        "listen",
        *urls(sim),
        "--output",
        "jsonl",
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:  # `| head -1`: one line, then gone
        first = await asyncio.get_running_loop().run_in_executor(None, reader.readline)
    assert orjson.loads(first)["hook"] == "on_startup"
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert sim.account().deletes == 1  # a clean shutdown: the listenKey was deleted


HUNG_RECORDER = """
import threading

from bitmusa_hookspecs import hookimpl

bitmusa_delivery = "all"


@hookimpl
def on_order(order, event):
    threading.Event().wait()  # hangs for good
"""


async def test_listen_stall_after_releases_a_hung_lossless_plugin_on_time(
    sim: Simulator, tmp_path: Path
) -> None:
    """--stall-after reaches the dispatcher: a hung 'all' plugin is reported after the
    bound given (not the default 30 s), and the stream goes on into jsonl."""
    site = tmp_path / "site"
    info = site / "hung_recorder-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hung-recorder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bitmusa]\nhung = hung_recorder\n")
    (site / "hung_recorder.py").write_text(HUNG_RECORDER)
    env = cli_env(
        BITMUSA_API_KEY=DEMO_API_KEY,
        BITMUSA_AUTH_KEY=DEMO_AUTH_KEY,
        BITMUSA_LOAD_PLUGINS="hung",
        PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bitmusa_plugin",
        "listen",
        *urls(sim),
        "--output",
        "jsonl",
        "--stall-after",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    started = time.monotonic()
    stalled_at: float | None = None
    orders_after = 0
    try:
        while orders_after < 5 and time.monotonic() - started < 20:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, "listen ended early"
            record = orjson.loads(line)
            if record["hook"] == "on_error" and record["error"]["kind"] == "plugin_stalled":
                assert record["error"]["plugin"] == "hung"
                stalled_at = time.monotonic()
            elif record["hook"] == "on_order" and stalled_at is not None:
                orders_after += 1
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert stalled_at is not None, "no plugin_stalled within 20 s (the default is 30 s)"
    assert orders_after == 5  # the stream went on
    assert b"Traceback" not in err
