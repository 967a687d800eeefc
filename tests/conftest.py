from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bitmusa_plugin._core import compiled
from bitmusa_plugin.simulator import Simulator
from bitmusa_plugin.testing import RedisServer

TESTS = Path(__file__).parent
ROOT = TESTS.parent
CORPUS = TESTS / "corpus"


def pytest_configure(config: pytest.Config) -> None:
    """``make unit-compiled`` sets BITMUSA_COMPILED=1: then the compiled core must be what
    is imported, or the run would test the pure package twice and say it tested both."""
    wanted = os.environ.get("BITMUSA_COMPILED") == "1"
    if wanted and not compiled():
        raise pytest.UsageError(
            "BITMUSA_COMPILED=1 but bitmusa_plugin._core is the pure package: run "
            "`make compiled` and put build/compiled first on PYTHONPATH"
        )


def corpus_frames() -> list[str]:
    return [line for line in (CORPUS / "frames.txt").read_text().splitlines() if line]


def corpus_rejected() -> list[tuple[str, str]]:
    rows = (CORPUS / "rejected.txt").read_text().splitlines()
    return [(kind, raw) for kind, raw in (row.split("\t", 1) for row in rows if row)]


@pytest.fixture
def sim(bitmusa_simulator: Simulator) -> Simulator:
    """The simulator fixture plugin authors get (``bitmusa_plugin.testing``), by a short
    name; a module configures it with ``pytest.mark.bitmusa_simulator(...)``."""
    return bitmusa_simulator


@pytest.fixture
def no_entrypoint_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the plugins a test registers itself (installed ones stay out)."""
    monkeypatch.setenv("BITMUSA_LOAD_PLUGINS", "")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own in tmp_path (tests/test_scale.py, test_worker_cli.py)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    import redis.asyncio as redis

    c = redis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


@pytest.fixture(autouse=True)
def _clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BITMUSA_LOAD_PLUGINS", "BITMUSA_DISABLE_PLUGINS"):
        if name in os.environ:
            monkeypatch.delenv(name)


class FakeDistribution:
    """Installs a distribution with ``bitmusa`` entry points onto sys.path, for real
    entry-point discovery without pip."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.count = 0

    def install(
        self,
        modules: dict[str, str],
        entry_points: dict[str, str] | None = None,
        name: str | None = None,
        version: str = "1.0",
    ) -> Path:
        self.count += 1
        name = name or f"fake-plugins-{self.count}"
        site = self.root / f"site{self.count}"
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        eps = entry_points or {mod: mod for mod in modules}
        lines = "\n".join(f"{ep} = {target}" for ep, target in eps.items())
        (info / "entry_points.txt").write_text(f"[bitmusa]\n{lines}\n")
        for mod, source in modules.items():
            (site / f"{mod}.py").write_text(source)
        self.monkeypatch.syspath_prepend(str(site))
        return site


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDistribution:
    return FakeDistribution(tmp_path, monkeypatch)
