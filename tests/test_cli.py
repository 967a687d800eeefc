"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from bitmusa_plugin._core import compiled
from conftest import CORPUS, ROOT, FakeDistribution, corpus_frames, corpus_rejected


def run(
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    pythonpath: list[str] | None = None,
    columns: int | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "BITMUSA_LOAD_PLUGINS": "", **(env or {})}
    if columns is not None:
        full_env["COLUMNS"] = str(columns)
    if pythonpath:  # ahead of the run's own (make unit-compiled's compiled core)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [*pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
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
    flavour = " (compiled core)" if compiled() else ""
    assert result.stdout.strip() == f"bitmusa-plugin 0.2.0{flavour}"


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
    data = [r for r in out[2:-2] if r["hook"] != "on_trade"]
    trades = [r for r in out[2:-2] if r["hook"] == "on_trade"]
    frames = corpus_frames()
    assert len(data) == len(frames)
    # each fill an order frame shows is a trade, right after its order
    for i, record in enumerate(out[2:-2]):
        if record["hook"] == "on_trade":
            before = out[2:-2][i - 1]
            assert before["hook"] in ("on_order", "on_trade")
            assert record["trade"]["order"] == record["event"]["data"]["orderId"]
    assert trades
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


LIFECYCLE = """
import json, os
from bitmusa_hookspecs import hookimpl

def _log(hook, context):
    with open(os.environ["LIFECYCLE_LOG"], "a") as f:
        f.write(json.dumps({"hook": hook, **context}) + "\\n")

@hookimpl
def on_startup(context):
    _log("on_startup", context)

@hookimpl
async def on_shutdown(context):
    _log("on_shutdown", context)
"""


def test_a_plugin_gets_on_startup_first_and_on_shutdown_last(
    fake_dist: FakeDistribution, tmp_path: Path
) -> None:
    site = fake_dist.install({"lifecycle_p": LIFECYCLE})
    log = tmp_path / "lifecycle.log"
    result = run(
        "replay",
        "-",
        "--output",
        "none",
        "--account",
        "main",
        stdin="\n".join(corpus_frames()[:3]) + "\n",
        env={"LIFECYCLE_LOG": str(log), "BITMUSA_LOAD_PLUGINS": "lifecycle_p"},
        pythonpath=[str(site)],
    )
    assert result.returncode == 0, result.stderr
    calls = [orjson.loads(line) for line in log.read_text().splitlines()]
    assert [c["hook"] for c in calls] == ["on_startup", "on_shutdown"]
    for call in calls:
        assert call["command"] == "replay"
        assert call["accounts"] == ["main"]


def test_plugins_json_lists_status(fake_dist: FakeDistribution) -> None:
    lossless = GOOD + "\nbitmusa_delivery = 'all'\n"
    site = fake_dist.install(
        {"good_p": GOOD, "broken_p": "raise ImportError('broken')\n", "recorder_p": lossless},
        name="my-plugins",
        version="3.1",
    )
    env = {"BITMUSA_LOAD_PLUGINS": "good_p,broken_p,recorder_p"}
    result = run("plugins", "--json", env=env, pythonpath=[str(site)])
    assert result.returncode == 0
    listed = {p["name"]: p for p in orjson.loads(result.stdout)}
    assert listed["good_p"]["status"] == "loaded"
    assert listed["good_p"]["hooks"] == ["on_order"]
    assert listed["good_p"]["delivery"] == "latest"  # the default
    assert listed["recorder_p"]["delivery"] == "all"  # as it declares
    table = run("plugins", env=env, pythonpath=[str(site)], columns=200)
    assert table.returncode == 0
    rows = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if "│" in line}
    assert "│ all " in rows["recorder_p"]
    assert "│ latest " in rows["good_p"]
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
    # one line per fill (on_trade): the order of 0.02 filled 0.008, then the other 0.012
    assert "[default] BTC/USDT:USDT buy 0.008 @ 96500.5" in lines
    assert "[default] BTC/USDT:USDT buy 0.012 @ 96500.5" in lines
    assert "[default] BTC/USDT:USDT is flat (FORCE_CLOSE)" in lines


HELP = (
    "from bitmusa_plugin._cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
)
REPLAY = (
    f"from bitmusa_plugin._cli import main\nmain(['replay', '--output', 'pretty', "
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


def test_replay_into_head_ends_quietly_with_status_0(tmp_path: Path) -> None:
    frames = tmp_path / "frames.txt"
    frames.write_text("\n".join(corpus_frames() * 60) + "\n")  # far more than a pipe holds
    script = (
        f"{sys.executable} -m bitmusa_plugin replay {frames} | head -2 > {tmp_path / 'out'}; "
        'echo "status ${PIPESTATUS[0]}"'
    )
    env = {**os.environ, "BITMUSA_LOAD_PLUGINS": ""}
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.stdout.strip() == "status 0", result.stderr
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
    assert len((tmp_path / "out").read_text().splitlines()) == 2


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_every_non_utf8_line_gets_its_on_error_record_in_jsonl(via: str, tmp_path: Path) -> None:
    good = corpus_frames()[:3]
    bad = [b"\x00\xff\xfe", b'{"stream": "future_wallet", "data": {"asset": "\xff"}}', b"\xc3"]
    lines = [good[0].encode(), *bad, good[1].encode(), bad[0], good[2].encode()]
    path = tmp_path / "frames.bin"
    path.write_bytes(b"\n".join(lines) + b"\n")
    args = [sys.executable, "-m", "bitmusa_plugin", "replay", str(path) if via == "file" else "-"]
    result = subprocess.run(
        args,
        input=path.read_bytes() if via == "stdin" else None,
        capture_output=True,
        env={**os.environ, "BITMUSA_LOAD_PLUGINS": ""},
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr  # some frames rejected, the good ones not
    assert b"Traceback" not in result.stderr
    out = [orjson.loads(line) for line in result.stdout.splitlines()]
    errors = [r["error"] for r in out if r["hook"] == "on_error"]
    assert len(errors) == 4  # one per bad line, each with its record
    assert {e["kind"] for e in errors} == {"malformed_json"}
    assert "\\udcff" in errors[0]["raw"]  # the bytes stay visible, escaped
    events = [r for r in out if r["hook"] in ("on_order", "on_wallet", "on_position")]
    assert len(events) == 3


def test_the_cli_modules_import_each_other_in_one_direction() -> None:
    """main -> parser -> one module per command -> common, and runtime -> common: the old
    cli.py and commands.py imported each other. Imports inside functions count too."""
    import ast
    import graphlib

    package = ROOT / "bitmusa_plugin" / "_cli"
    names = {path.stem for path in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "bitmusa_plugin._cli":
                    edges |= {alias.name for alias in node.names if alias.name in names}
                elif node.module.startswith("bitmusa_plugin._cli."):
                    edges.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = edges
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle
    assert order.index("common") < order.index("runtime") < order.index("__init__")
    assert not graph["common"]  # the bottom: exit statuses, errors, options
