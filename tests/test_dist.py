"""The built wheels, installed into a fresh venv, work on their own.

Nothing here comes from the source tree: the venv gets the two wheels by path (from
``dist/`` when ``make dist`` left a fresh build there, else from a build of its own) and
their dependencies from the package index; every command runs in a directory outside the
clone, with no PYTHONPATH. It proves the wheels carry ``py.typed``, the entry points and the
simulator, that a plugin scaffolded by the installed CLI installs with its ``[test]`` extra
(``bitmusa-hookspecs`` resolved from the wheels through ``--find-links``), and that its own
tests and ``mypy --strict`` pass there.

On the 2-core development machine beside a CPU hog it takes about 40 seconds reusing
``dist/`` and 90 building its own, so the default pytest run skips it: ``make dist-test``
builds ``dist/`` and runs it (``BITMUSA_DIST_TEST=1``). Without the package index it skips,
saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import CORPUS, ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("BITMUSA_DIST_TEST") != "1",
        reason="installs the wheels into a fresh venv (over a minute): make dist-test",
    ),
    # the fixtures' build and installs count against the first test that needs them
    pytest.mark.timeout(900),
]

PROJECTS = {"bitmusa-hookspecs": ROOT / "hookspecs", "bitmusa-plugin": ROOT}
BIN = "Scripts" if os.name == "nt" else "bin"
PLUGIN = "my-notifier"


def version(project: Path) -> str:
    data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    return str(data["project"]["version"])


def artifacts() -> dict[str, str]:
    """The file names one build of both projects gives, by kind: ``hookspecs-wheel``, ..."""
    names = {}
    for name, project in PROJECTS.items():
        stem, short = f"{name.replace('-', '_')}-{version(project)}", name.split("-")[1]
        names[f"{short}-wheel"] = f"{stem}-py3-none-any.whl"
        names[f"{short}-sdist"] = f"{stem}.tar.gz"
    return names


def sources() -> Iterator[Path]:
    """Every file a build reads."""
    for project in PROJECTS.values():
        yield project / "pyproject.toml"
        yield project / "README.md"
    for package in (ROOT / "bitmusa_plugin", ROOT / "hookspecs" / "bitmusa_hookspecs"):
        yield from (p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def is_fresh(dist: Path) -> bool:
    """``dist`` holds exactly one build of both projects, newer than every source file."""
    if not dist.is_dir() or sorted(p.name for p in dist.iterdir()) != sorted(artifacts().values()):
        return False
    built = min(p.stat().st_mtime for p in dist.iterdir())
    return built > max(p.stat().st_mtime for p in sources())


def run(
    args: Sequence[str | Path],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(
    args: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    done = run(args, cwd, env, timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def clean_env(venv: Path) -> dict[str, str]:
    """This process's environment (the pip index settings, HOME, proxies) without anything
    that points Python, pytest, mypy or bitmusa-plugin elsewhere, the venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "PYTEST", "MYPY", "BITMUSA_", "VIRTUAL_ENV", "CONDA"))
    }
    env["PATH"] = f"{venv / BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def without_received_at(value: Any) -> Any:
    """A replay's JSON line, less the one field that is the time it ran."""
    if isinstance(value, dict):
        return {k: without_received_at(v) for k, v in value.items() if k != "receivedAt"}
    if isinstance(value, list):
        return [without_received_at(v) for v in value]
    return value


PROBE = """\
import json, sys, sysconfig
from importlib import metadata
from pathlib import Path

import bitmusa_hookspecs, bitmusa_plugin

site = Path(sysconfig.get_paths()["purelib"]).resolve()
groups = ("ccxt.exchanges", "pytest11", "console_scripts", "bitmusa")
print(json.dumps({
    "site": str(site),
    "sys_path": sys.path,
    "files": {m.__name__: str(Path(m.__file__).resolve()) for m in
              (bitmusa_hookspecs, bitmusa_plugin)},
    "py_typed": {m.__name__: (Path(m.__file__).parent / "py.typed").is_file() for m in
                 (bitmusa_hookspecs, bitmusa_plugin)},
    "entry_points": {g: {ep.name: ep.value for ep in metadata.entry_points(group=g)}
                     for g in groups},
    "direct_url": {n: json.loads(metadata.distribution(n).read_text("direct_url.json") or "null")
                   for n in ("bitmusa-hookspecs", "bitmusa-plugin")},
    "pth": {p.name: p.read_text() for p in site.glob("*.pth")},
}))
"""

SIMULATE = """\
import asyncio, json

import httpx
import orjson
from websockets.asyncio.client import connect

from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator


async def main() -> None:
    async with Simulator(time_scale=3600, event_interval=0.05) as sim:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                sim.rest_url + "/future/userDataStream",
                headers={"x-api-key": DEMO_API_KEY, "Authorization": f"Bearer {DEMO_AUTH_KEY}"},
            )
        key = response.json()["data"]["listenKey"]
        async with connect(f"{sim.ws_url}/ws/future/{key}") as ws:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
    print(json.dumps({"listenKey": bool(key), "stream": frame["stream"]}))


asyncio.run(main())
"""


@dataclass
class Installed:
    """A fresh venv with the two wheels installed, and what its CLI printed there."""

    dist: Path
    work: Path
    venv: Path
    env: dict[str, str]
    probe: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def bin(self, name: str) -> Path:
        return self.venv / BIN / name

    def run(
        self, *args: str | Path, cwd: Path | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return run(list(args), cwd or self.work, self.env, timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("dist-test").resolve()
    assert ROOT.resolve() not in work.parents, "the fresh venv must live outside the clone"

    # the wheels' dependencies come from the package index: without it, skip, saying why
    probe = run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--timeout", "15", "--retries", "1", "--dest", work / "probe", "pluggy>=1.3"),
        ],
        work,
        timeout=120,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"the package index is unreachable, and the wheels need it: {last}")
    shutil.rmtree(work / "probe")

    dist = ROOT / "dist"
    if not is_fresh(dist):  # build into the temp dir: the test leaves the clone as it was
        dist = work / "dist"
        for project in PROJECTS.values():
            ok([sys.executable, "-m", "build", "--outdir", dist, project], ROOT)
    files = artifacts()
    ok([sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir())], work)

    venv = work / "venv"
    # --upgrade-deps: a current pip (the one ensurepip bundles may predate --report)
    ok([sys.executable, "-m", "venv", "--upgrade-deps", venv], work)
    env = clean_env(venv)
    inst = Installed(dist=dist, work=work, venv=venv, env=env)
    # Both wheels by path: they can come from nowhere else; their dependencies from the index.
    wheels = [dist / files["hookspecs-wheel"], dist / files["plugin-wheel"]]
    ok([inst.bin("python"), "-m", "pip", "install", "--quiet", *wheels], work, env)

    inst.probe = json.loads(ok([inst.bin("python"), "-c", PROBE], work, env).stdout)
    shutil.copy(CORPUS / "frames.txt", work / "frames.txt")
    cli = inst.bin("bitmusa-plugin")
    inst.runs["version"] = inst.run(cli, "--version")
    inst.runs["plugins"] = inst.run(cli, "plugins", "--json")
    inst.runs["replay"] = inst.run(cli, "replay", "frames.txt")
    inst.runs["simulator"] = inst.run(inst.bin("python"), "-c", SIMULATE, timeout=180)
    return inst


@dataclass
class Scaffolded:
    root: Path
    created: subprocess.CompletedProcess[str]
    resolved: dict[str, Any]
    runs: dict[str, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def scaffolded(installed: Installed) -> Scaffolded:
    """``new-plugin my-notifier`` by the installed CLI, installed with its ``[test]`` extra
    as its README says, then its own checks."""
    inst = installed
    created = inst.run(inst.bin("bitmusa-plugin"), "new-plugin", PLUGIN, "--directory", inst.work)
    assert created.returncode == 0, created.stdout + created.stderr
    root = inst.work / PLUGIN
    pip: list[str | Path] = [inst.bin("python"), "-m", "pip", "install", "--find-links", inst.dist]
    # What --find-links resolves in an environment that has neither package yet
    report = inst.work / "resolved.json"
    resolve: list[str | Path] = [
        *pip,
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        report,
    ]
    ok([*resolve, f"./{PLUGIN}[test]"], inst.work, inst.env)
    ok([*pip, "--quiet", "-e", f"./{PLUGIN}[test]"], inst.work, inst.env)
    runs = {
        "plugins": inst.run(inst.bin("bitmusa-plugin"), "plugins", "--json", cwd=root),
        "pytest": inst.run(inst.bin("pytest"), "-p", "no:cacheprovider", cwd=root),
        "mypy": inst.run(inst.bin("mypy"), cwd=root),
    }
    return Scaffolded(root, created, json.loads(report.read_text()), runs)


def test_the_wheels_hold_the_packages_py_typed_and_the_entry_points(
    installed: Installed,
) -> None:
    files = artifacts()
    with zipfile.ZipFile(installed.dist / files["hookspecs-wheel"]) as wheel:
        names = set(wheel.namelist())
    assert "bitmusa_hookspecs/py.typed" in names
    assert {n.split("/")[0] for n in names} == {
        "bitmusa_hookspecs",
        f"bitmusa_hookspecs-{version(PROJECTS['bitmusa-hookspecs'])}.dist-info",
    }
    with zipfile.ZipFile(installed.dist / files["plugin-wheel"]) as wheel:
        names = set(wheel.namelist())
        info = f"bitmusa_plugin-{version(ROOT)}.dist-info"
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert {"bitmusa_plugin/py.typed", "bitmusa_plugin/simulator/__init__.py"} <= names
    assert {n.split("/")[0] for n in names} == {"bitmusa_plugin", info}  # no tests, no docs
    # every module of the source tree is in the wheel
    tree = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "bitmusa_plugin").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert tree <= names
    for line in (
        "bitmusa-plugin = bitmusa_plugin._cli:main",
        "bitmusa = bitmusa_plugin._ccxt:bitmusa",
        "bitmusa = bitmusa_plugin.testing",
    ):
        assert line in entry_points


def test_the_venv_runs_the_wheels_not_the_source_tree(installed: Installed) -> None:
    probe = installed.probe
    site = Path(probe["site"])
    for module, file in probe["files"].items():
        assert Path(file).is_relative_to(site), (module, file)
    root = str(ROOT.resolve())
    assert not [p for p in probe["sys_path"] if p and Path(p).resolve().is_relative_to(root)]
    assert not [name for name, text in probe["pth"].items() if root in text or "editable" in name]
    files = artifacts()
    for dist, kind in (
        ("bitmusa-hookspecs", "hookspecs-wheel"),
        ("bitmusa-plugin", "plugin-wheel"),
    ):
        direct = probe["direct_url"][dist]
        assert direct["url"] == (installed.dist / files[kind]).as_uri()
        assert not direct.get("dir_info", {}).get("editable")
    assert probe["py_typed"] == {"bitmusa_hookspecs": True, "bitmusa_plugin": True}


def test_the_entry_points_are_registered(installed: Installed) -> None:
    points = installed.probe["entry_points"]
    assert points["ccxt.exchanges"]["bitmusa"] == "bitmusa_plugin._ccxt:bitmusa"
    assert points["pytest11"]["bitmusa"] == "bitmusa_plugin.testing"
    assert points["console_scripts"]["bitmusa-plugin"] == "bitmusa_plugin._cli:main"
    assert points["bitmusa"] == {}  # no plugin installed yet


def test_version_and_plugins(installed: Installed) -> None:
    shown = installed.runs["version"]
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"bitmusa-plugin {version(ROOT)}"
    listed = installed.runs["plugins"]
    assert listed.returncode == 0, listed.stderr
    assert [p for p in json.loads(listed.stdout) if not p["builtin"]] == []


def test_replay_gives_what_the_source_tree_gives(installed: Installed) -> None:
    replayed = installed.runs["replay"]
    assert replayed.returncode == 0, replayed.stderr
    lines = [json.loads(line) for line in replayed.stdout.splitlines()]
    frames = [line for line in (CORPUS / "frames.txt").read_text().splitlines() if line]
    assert [line["hook"] for line in lines[:2]] == ["on_startup", "on_stream_state"]
    assert lines[0]["context"]["version"] == version(ROOT)
    assert [line["hook"] for line in lines[-2:]] == ["on_stream_state", "on_shutdown"]
    assert len(lines) == len(frames) + 4
    here = ok(
        [sys.executable, "-m", "bitmusa_plugin", "replay", CORPUS / "frames.txt"],
        ROOT,
        {**os.environ, "BITMUSA_LOAD_PLUGINS": ""},
    )
    expected = [json.loads(line) for line in here.stdout.splitlines()]
    assert without_received_at(lines) == without_received_at(expected)


def test_the_simulator_serves_rest_and_the_stream(installed: Installed) -> None:
    simulated = installed.runs["simulator"]
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    result = json.loads(simulated.stdout)
    assert result["listenKey"] is True
    assert result["stream"] in ("future_wallet", "future_order", "future_position")


def test_the_scaffold_resolves_the_contract_from_the_wheels(
    installed: Installed, scaffolded: Scaffolded
) -> None:
    files = artifacts()
    urls = {
        item["metadata"]["name"]: item["download_info"]["url"]
        for item in scaffolded.resolved["install"]
    }
    assert urls["bitmusa-hookspecs"] == (installed.dist / files["hookspecs-wheel"]).as_uri()
    assert urls["bitmusa-plugin"] == (installed.dist / files["plugin-wheel"]).as_uri()
    listed = scaffolded.runs["plugins"]
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout) if not p["builtin"]}
    assert plugins[PLUGIN]["status"] == "loaded", plugins
    assert sorted(plugins[PLUGIN]["hooks"]) == ["on_error", "on_order"]


def test_the_scaffold_passes_its_tests_and_mypy_strict(scaffolded: Scaffolded) -> None:
    tested = scaffolded.runs["pytest"]
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout
    assert "plugins: bitmusa-plugin" in tested.stdout  # bitmusa_plugin.testing via pytest11
    checked = scaffolded.runs["mypy"]
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found in 2 source files" in checked.stdout
