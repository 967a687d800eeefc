"""What plugin authors get: the new-plugin scaffold and bitmusa_plugin.testing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY
from bitmusa_plugin.testing import order_frame, position_frame, replay, wallet_frame


def new_plugin(name: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bitmusa_plugin", "new-plugin", name, "--directory", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_new_plugin_creates_a_package_whose_test_passes_as_is(tmp_path: Path) -> None:
    created = new_plugin("risk-guard", tmp_path)
    assert created.returncode == 0, created.stderr
    root = tmp_path / "risk-guard"
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.bitmusa]\nrisk-guard = "risk_guard"' in pyproject
    assert (root / "README.md").exists()
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "BITMUSA_LOAD_PLUGINS": ""},
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout
    again = new_plugin("risk-guard", tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr


class Counting:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def on_order(self, order: Any) -> None:
        if order["id"] == "BOOM":
            raise RuntimeError("plugin bug")
        self.seen.append(order["id"])

    @hookimpl
    def on_position(self, position: Any) -> None:
        self.seen.append(position["symbol"])


def test_replay_runs_frames_through_the_real_pipeline() -> None:
    plugin = Counting()
    result = replay(
        plugin,
        [
            wallet_frame("USDT", "100", "5"),
            order_frame("A", status="PARTIAL", filled="4", value="2"),
            order_frame("BOOM"),
            position_frame("BTCUSDT", status="FORCE_CLOSE"),
            "not json",
        ],
    )
    assert plugin.seen == ["A", "BTC/USDT:USDT"]
    assert result.balances[0]["total"] == {"USDT": 105.0}
    assert [o["remaining"] for o in result.orders] == [6.0, 10.0]
    assert result.positions[0]["contracts"] == 0.0
    assert sorted(e["kind"] for e in result.errors) == ["malformed_json", "plugin_error"]


async def test_the_simulator_fixture_serves_the_documented_rest(bitmusa_simulator: Any) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            bitmusa_simulator.rest_url + "/future/userDataStream",
            headers={"x-api-key": DEMO_API_KEY, "Authorization": f"Bearer {DEMO_AUTH_KEY}"},
        )
    assert response.json()["data"]["listenKey"]


@pytest.mark.bitmusa_simulator(event_interval=None, seed=7)
async def test_the_marker_configures_the_simulator_fixture(bitmusa_simulator: Any) -> None:
    assert bitmusa_simulator.event_interval is None  # the test's marker
    assert bitmusa_simulator.seed == 7
    assert bitmusa_simulator.time_scale == 3600  # the fixture's default, kept
