"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import CORPUS, ROOT, FakeDistribution, corpus_frames, corpus_rejected


def run(
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    pythonpath: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "BITMUSA_LOAD_PLUGINS": "", **(env or {})}
    if pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "bitmusa_plugin", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def records(stdout: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stdout.splitlines()]


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "bitmusa-plugin 0.1.0"


def test_replay_corpus_delivers_every_frame_in_order_as_jsonl() -> None:
    result = run("replay", str(CORPUS / "frames.txt"))
    assert result.returncode == 0, result.stderr
    out = records(result.stdout)
    assert out[0]["hook"] == "on_startup"
    assert out[1] == {
        "hook": "on_stream_state",
        "state": {
            "account": "default",
            "status": "connected",
            "since": None,
            "until": None,
            "reason": "replay",
        },
    }
    assert out[-2]["hook"] == "on_stream_state"
    assert out[-2]["state"]["status"] == "closed"
    assert out[-1]["hook"] == "on_shutdown"
    data = out[2:-2]
    frames = corpus_frames()
    assert len(data) == len(frames)
    key = {"on_order": "order", "on_wallet": "balance", "on_position": "position"}
    for record, raw in zip(data, frames, strict=True):
        assert set(record) == {"hook", key[record["hook"]], "event"}
        assert record["event"]["stream"] in raw
        unified = record[key[record["hook"]]]
        assert unified["info"] == record["event"]["data"]
    first = data[3]["order"]  # the first generated order: amount "1.5", a string
    assert first["amount"] == 1.5
    assert isinstance(first["amount"], float)  # numbers, not strings


def test_replay_reports_each_rejected_frame_and_exits_3() -> None:
    rejected = corpus_rejected()
    good = corpus_frames()[0]
    stdin = "\n".join([good] + [raw for _, raw in rejected] + [good]) + "\n"
    result = run("replay", "-", "--account", "main", stdin=stdin)
    assert result.returncode == 3
    out = records(result.stdout)
    errors = [r["error"] for r in out if r["hook"] == "on_error"]
    assert [e["kind"] for e in errors] == [kind for kind, _ in rejected]
    assert all(e["account"] == "main" and e["raw"] for e in errors)
    assert all(len(e["raw"]) <= 513 for e in errors)
    wallets = [r for r in out if r["hook"] == "on_wallet"]
    assert len(wallets) == 2  # the good frames on either side still arrived


@pytest.mark.parametrize("value", ["8", "8,x", "0,200", "8,200,1"])
def test_a_bad_rest_rate_is_a_usage_error(value: str) -> None:
    result = run("listen", "--rest-rate", value)
    assert result.returncode == 2
    assert "--rest-rate" in result.stderr


def test_replay_missing_file_is_a_clear_error() -> None:
    result = run("replay", "/nonexistent/frames.txt")
    assert result.returncode == 2
    assert "cannot read /nonexistent/frames.txt" in result.stderr


def test_pretty_output_is_readable() -> None:
    result = run("replay", "--output", "pretty", str(ROOT / "examples" / "sample-session.jsonl"))
    assert result.returncode == 3  # the sample holds one cut-off frame on purpose
    assert "BTC/USDT:USDT" in result.stdout
    assert "malformed_json" in result.stdout
    assert "flat (FORCE_CLOSE)" in result.stdout


GOOD = """
import os
from bitmusa_hookspecs import hookimpl

@hookimpl
def on_order(order, event):
    with open(os.environ["GOOD_LOG"], "a") as f:
        f.write(order["id"] + "\\n")
"""
RAISING = """
from bitmusa_hookspecs import hookimpl

@hookimpl
async def on_order(order):
    raise RuntimeError("always")
"""


def test_good_plugin_beside_broken_and_raising_ones_gets_every_event(
    fake_dist: FakeDistribution, tmp_path: Path
) -> None:
    site = fake_dist.install(
        {"good_p": GOOD, "raising_p": RAISING, "broken_p": "raise ImportError('broken')\n"}
    )
    log = tmp_path / "good.log"
    frames = [f for f in corpus_frames() if '"future_order"' in f]
    result = run(
        "replay",
        "-",
        "--output",
        "none",
        stdin="\n".join(frames) + "\n",
        env={"GOOD_LOG": str(log), "BITMUSA_LOAD_PLUGINS": "good_p,raising_p,broken_p"},
        pythonpath=[str(site)],
    )
    assert result.returncode == 0, result.stderr
    ids = [orjson.loads(f)["data"]["orderId"] for f in frames]
    assert log.read_text().splitlines() == [str(i) for i in ids]
    assert "plugin broken_p failed to load" in result.stderr
    assert result.stderr.count("plugin 'raising_p' raised in on_order") >= len(frames)

    strict = run(
        "replay",
        "-",
        "--strict-plugins",
        stdin=frames[0] + "\n",
        env={"BITMUSA_LOAD_PLUGINS": "broken_p"},
        pythonpath=[str(site)],
    )
    assert strict.returncode == 2
    assert "broken_p" in strict.stderr


def test_plugins_json_lists_status(fake_dist: FakeDistribution) -> None:
    site = fake_dist.install(
        {"good_p": GOOD, "broken_p": "raise ImportError('broken')\n"},
        name="my-plugins",
        version="3.1",
    )
    result = run(
        "plugins", "--json", env={"BITMUSA_LOAD_PLUGINS": "good_p,broken_p"}, pythonpath=[str(site)]
    )
    assert result.returncode == 0
    listed = {p["name"]: p for p in orjson.loads(result.stdout)}
    assert listed["good_p"]["status"] == "loaded"
    assert listed["good_p"]["hooks"] == ["on_order"]
    assert (listed["good_p"]["distribution"], listed["good_p"]["version"]) == ("my-plugins", "3.1")
    assert listed["broken_p"]["status"] == "failed"
    assert "ImportError: broken" in listed["broken_p"]["error"]
    strict = run(
        "plugins",
        "--strict-plugins",
        env={"BITMUSA_LOAD_PLUGINS": "broken_p"},
        pythonpath=[str(site)],
    )
    assert strict.returncode == 2


def test_example_plugin_is_installed_and_announces_fills(tmp_path: Path) -> None:
    log = tmp_path / "fills.log"
    result = run(
        "replay",
        "--output",
        "none",
        str(ROOT / "examples" / "sample-session.jsonl"),
        env={"BITMUSA_LOAD_PLUGINS": "fill-notifier", "BITMUSA_FILL_LOG": str(log)},
    )
    assert result.returncode == 3
    lines = log.read_text().splitlines()
    assert "[default] BTC/USDT:USDT buy 0.012 @ 96500.5 filled" in lines
    assert "[default] BTC/USDT:USDT is flat (FORCE_CLOSE)" in lines


HELP = (
    "from bitmusa_plugin.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
)
REPLAY = (
    f"from bitmusa_plugin.cli import main\nmain(['replay', '--output', 'pretty', "
    f"{str(CORPUS / 'frames.txt')!r}])"
)
NETWORK = {"ccxt", "websockets", "httpx", "aiohttp"}


@pytest.mark.parametrize(
    ("code", "forbidden"),
    [
        ("import bitmusa_hookspecs", NETWORK | {"orjson", "rich"}),
        ("import bitmusa_plugin", NETWORK | {"rich", "asyncio"}),
        (HELP, NETWORK | {"rich", "asyncio"}),
        (REPLAY, NETWORK),
    ],
)
def test_no_heavy_imports(code: str, forbidden: set[str]) -> None:
    check = (
        f"{code}\nimport sys\n"
        f"heavy = {sorted(forbidden)!r}\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "BITMUSA_LOAD_PLUGINS": ""},
    )
    assert result.returncode == 0, result.stderr
