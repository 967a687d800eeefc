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
from bitmusa_plugin._cli.scaffold import next_steps
from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY
from bitmusa_plugin.testing import order_frame, position_frame, replay, wallet_frame
from conftest import ROOT


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


def test_the_scaffold_is_typed_with_the_contract_and_says_how_to_install_it(
    tmp_path: Path,
) -> None:
    assert new_plugin("my-notifier", tmp_path).returncode == 0
    root = tmp_path / "my-notifier"
    pyproject = (root / "pyproject.toml").read_text()
    assert '[tool.mypy]\nstrict = true\nfiles = ["my_notifier", "tests"]' in pyproject
    assert '[tool.setuptools.package-data]\nmy_notifier = ["py.typed"]' in pyproject
    assert (root / "my_notifier" / "py.typed").is_file()
    plugin = (root / "my_notifier" / "__init__.py").read_text()
    assert "from bitmusa_hookspecs import ErrorInfo, Event, Trade, hookimpl" in plugin
    assert "def on_trade(trade: Trade, event: Event) -> None:" in plugin
    assert "def on_error(error: ErrorInfo, event: Event | None) -> None:" in plugin
    assert "Any" not in plugin
    readme = (root / "README.md").read_text()
    for way in (
        "pip install <dist>/bitmusa_hookspecs-*.whl <dist>/bitmusa_plugin-*.whl",
        "pip install --find-links <dist> -e '.[test]'",
        "pip install <clone>/hookspecs <clone>",
        "Once they are published, it is enough anywhere.",
    ):
        assert way in readme


def mypy_in_this_clone(root: Path) -> subprocess.CompletedProcess[str]:
    """The plugin's own `mypy` (strict, from its pyproject), as next_steps() words it for a
    clone: this venv's editable installs are invisible to mypy, so MYPYPATH names them."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "MYPYPATH": f"{ROOT}{os.pathsep}{ROOT / 'hookspecs'}"},
    )


def test_the_scaffold_passes_mypy_strict_and_mypy_reads_the_contract(tmp_path: Path) -> None:
    assert new_plugin("my-notifier", tmp_path).returncode == 0
    root = tmp_path / "my-notifier"
    checked = mypy_in_this_clone(root)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found in 2 source files" in checked.stdout
    # the hooks are typed, not Any: a misspelt key of the contract's Trade is an error
    module = root / "my_notifier" / "__init__.py"
    module.write_text(module.read_text().replace("trade['amount']}", "trade['amont']}"))
    misspelt = mypy_in_this_clone(root)
    assert misspelt.returncode == 1, misspelt.stdout + misspelt.stderr
    assert 'TypedDict "Trade" has no key "amont"' in misspelt.stdout


def test_next_steps_name_this_clone_and_its_wheels(tmp_path: Path) -> None:
    steps = next_steps(tmp_path / "my-notifier")
    assert f"next: cd {tmp_path / 'my-notifier'} && pip install -e '.[test]' && pytest" in steps
    assert f"MYPYPATH={ROOT}{os.pathsep}{ROOT / 'hookspecs'} mypy --follow-imports=silent" in steps
    assert f"pip install {ROOT / 'dist'}/bitmusa_hookspecs-*.whl" in steps
    assert f"pip install {ROOT}/hookspecs {ROOT}" in steps


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
