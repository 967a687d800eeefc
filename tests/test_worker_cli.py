"""Worker mode's command-line face: the API's readings in registry records, and what
``worker status`` says about an account that failed or is retrying (never a secret).

Against a real redis-server, like tests/test_scale.py; the worker runs in-process here so
that the test can wait for the states it means instead of sleeping.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.session import Session
from bitmusa_plugin._scale import registry
from bitmusa_plugin._scale.sink import RedisSink
from bitmusa_plugin._scale.worker import Worker, WorkerOptions
from bitmusa_plugin.simulator import Simulator
from bitmusa_plugin.testing import RedisServer

pytestmark = pytest.mark.skipif(
    not RedisServer.available(),
    reason="redis-server not found: `apt-get install redis-server` (Debian/Ubuntu) or "
    "`brew install redis`; `make test` installs it when run as root",
)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bitmusa_plugin", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


async def until(predicate: Any, timeout: float = 30.0) -> None:
    start = time.monotonic()
    while not await predicate():
        assert time.monotonic() - start < timeout, "not reached in time"
        await asyncio.sleep(0.05)


# -- readings in records ---------------------------------------------------------------


def test_a_record_s_readings_win_over_the_worker_s_and_unset_ones_are_the_worker_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BITMUSA_TEST_A", "api-value-1")
    monkeypatch.setenv("BITMUSA_TEST_B", "auth-value-1")
    record = registry.AccountRecord("main", "BITMUSA_TEST_A", "BITMUSA_TEST_B", ws_path="wallet")
    assert orjson.loads(record.to_json())["ws_path"] == "wallet"
    config = record.resolve(
        "http://127.0.0.1:1/api/v2", ws_path="documented", keepalive_prefix="v1"
    )
    assert (config.ws_path, config.keepalive_prefix, config.fallback) == ("wallet", "v1", True)
    # an older record (no readings) still loads; a bad reading is refused, named
    assert registry.AccountRecord.from_json(b'{"label":"x","credentials_file":"f"}').ws_path is None
    with pytest.raises(ValueError, match="ws_path 'nope'"):
        registry.AccountRecord.from_json(b'{"label":"x","credentials_file":"f","ws_path":"nope"}')


async def test_accounts_add_takes_the_readings_as_listen_does(
    redis_server: RedisServer, client: Any
) -> None:
    at = ["--redis", redis_server.url]
    added = cli(
        "accounts", "add", "main", "--api-key-env", "MY_API", "--auth-key-env", "MY_AUTH",
        "--ws-path", "wallet", "--keepalive-prefix", "v1", "--no-fallback", *at,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    plain = cli("accounts", "add", "other", "--credentials-file", "/x.toml", *at)
    assert plain.returncode == 0, plain.stderr
    stored = orjson.loads(await client.hget("bitmusa:default:accounts", "main"))
    assert stored["ws_path"] == "wallet"
    assert stored["keepalive_prefix"] == "v1"
    assert stored["fallback"] is False
    assert "ws_path" not in orjson.loads(await client.hget("bitmusa:default:accounts", "other"))
    listed = cli("accounts", "list", *at).stdout.splitlines()
    assert listed[0].endswith("\tws_path=wallet keepalive_prefix=v1 fallback=False")
    assert listed[1] == "other\t/x.toml\t\t"  # unchanged for a record without readings
    bad = cli("accounts", "add", "x", "--credentials-file", "f", "--ws-path", "nope", *at)
    assert bad.returncode == 2
    assert "invalid choice: 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


# -- worker status: each account's state, and why ----------------------------------------


class Errors:
    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    @hookimpl
    def on_error(self, error: dict[str, Any]) -> None:
        self.errors.append(error)


async def test_worker_status_says_why_an_account_failed_and_never_shows_a_secret(
    redis_server: RedisServer, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = {"status-api-key-0001": "status-auth-key-0001"}
    async with Simulator(accounts=creds) as sim:
        monkeypatch.setenv("GOOD_API", "status-api-key-0001")
        monkeypatch.setenv("GOOD_AUTH", "status-auth-key-0001")
        records = [
            registry.AccountRecord("good", "GOOD_API", "GOOD_AUTH", None, sim.rest_url, sim.ws_url),
            # the variables are not set on this worker
            registry.AccountRecord("nocreds", "NOT_SET_API", "NOT_SET_AUTH", None, sim.rest_url),
            # a websocket base where nothing listens: retried for the start-up window, then
            # failed for good
            registry.AccountRecord(
                "badws", "GOOD_API", "GOOD_AUTH", None, sim.rest_url, "ws://127.0.0.1:1"
            ),
        ]
        for record in records:
            await registry.add(client, "default", record)
        errors = Errors()
        session = Session(
            [errors], command="worker", keep_listen_key=True, timing=lc.Timing(startup_window=1.0)
        )
        sink = RedisSink(redis_server.url)
        session.registry.register(sink, "redis-sink")
        options = WorkerOptions(rest_url=sim.rest_url, tick=0.2, lease_ttl=3.0)
        worker = Worker(client, session, options, "w1")
        sink.bind(session.pipeline.report, worker.fence, "bitmusa:default:last")
        session.start()
        task = asyncio.get_running_loop().create_task(worker.run())
        try:

            async def states() -> dict[str, dict[str, Any]]:
                raw = await client.hgetall("bitmusa:default:state")
                return {k.decode(): orjson.loads(v) for k, v in raw.items()}

            seen: list[dict[str, dict[str, Any]]] = []

            async def settled() -> bool:
                now = await states()
                seen.append(now)
                return (
                    now.get("good", {}).get("status") == "connected"
                    and now.get("nocreds", {}).get("status") == "failed"
                    and now.get("badws", {}).get("status") == "failed"
                )

            await until(settled)
            shown = await asyncio.to_thread(cli, "worker", "status", "--redis", redis_server.url)
        finally:
            worker.stop()
            await task
            await session.aclose()
            await sink.close()
        listen_keys = list(sim.accounts["status-api-key-0001"].issued_keys)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    good = next(line for line in lines if line.strip().startswith("good "))
    assert "w1" in good
    assert "connected" in good
    # one line of reason under each failed account, naming what to fix
    nocreds = lines.index(next(x for x in lines if x.strip().startswith("nocreds ")))
    assert "failed" in lines[nocreds]
    assert lines[nocreds + 1].strip().startswith("failed (on w1): ")
    assert "NOT_SET_API" in lines[nocreds + 1]
    badws = lines.index(next(x for x in lines if x.strip().startswith("badws ")))
    assert lines[badws + 1].strip().startswith("failed (on w1): ")
    assert "127.0.0.1:1" in lines[badws + 1]
    # a retrying state was shown with its reason on the way there
    retrying = [s["badws"] for s in seen if s.get("badws", {}).get("status") == "connecting"]
    assert any(r["reason"] and "127.0.0.1:1" in r["reason"] for r in retrying)
    # each failure also went through on_error, saying what it means for the account
    nocreds_errors = [e for e in errors.errors if e.get("account") == "nocreds"]
    assert any("released for another worker" in e["message"] for e in nocreds_errors)
    # nothing Redis shows (status text, the state hash, the records) holds a secret
    everything = shown.stdout + shown.stderr
    everything += repr(seen) + repr(await client.hgetall("bitmusa:default:accounts"))
    everything += repr(worker) + "".join(e["message"] for e in errors.errors)
    assert listen_keys
    for secret in ("status-api-key-0001", "status-auth-key-0001", *listen_keys):
        assert secret not in everything


@pytest.mark.parametrize("command", ["listen", "worker"])
def test_side_wait_is_an_option_of_listen_and_worker_with_the_engines_default(
    command: str,
) -> None:
    """A worker's recorder needs the side of another client's orders as much as
    ``listen``'s does: both take ``--side-wait``, and without it the engine's own
    default (off) holds."""
    from bitmusa_plugin._cli import build_parser
    from bitmusa_plugin._engine.sides import DEFAULT_SIDE_WAIT

    extra = ["--redis", "redis://127.0.0.1:6379/0"] if command == "worker" else []
    parser = build_parser()
    assert parser.parse_args([command, *extra]).side_wait == DEFAULT_SIDE_WAIT
    assert parser.parse_args([command, *extra, "--side-wait", "0.25"]).side_wait == 0.25
