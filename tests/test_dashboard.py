"""The dashboard, rendered to a recording console, fed by the real pipeline."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bitmusa_plugin._outputs.dashboard import DashboardOutput
from bitmusa_plugin.testing import order_frame, position_frame, replay, wallet_frame


def frames() -> list[str]:
    return [
        wallet_frame("USDT", "9981.51952661", "18.48047339"),
        order_frame(
            "F1",
            "BTCUSDT",
            price="96500.5",
            amount="0.02",
            filled="0.008",
            value="772.004",
            status="PARTIAL",
        ),
        order_frame("F2", "ETHUSDT", price="3100", amount="1", status="TRADING", side="SELL"),
        order_frame("F3", "XRPUSDT", status="FILLED", filled="10", value="5"),
        position_frame(
            "BTCUSDT", amount="0.008", price="96500.5", liquid_price="87330.2", unpnl="-1.25"
        ),
        position_frame("XRPUSDT", status="TAKE_PROFIT"),
    ]


def render(dashboard: DashboardOutput, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, force_terminal=True)
    console.print(dashboard.render())
    return console.export_text()


def fed(width: int = 140) -> tuple[DashboardOutput, Any]:
    dashboard = DashboardOutput(io.StringIO(), force=True)
    dashboard.console = Console(file=io.StringIO(), width=width, force_terminal=True)
    dashboard.on_stream_state(
        {"account": "main", "status": "connected", "since": None, "until": None, "reason": None}
    )
    result = replay(dashboard, frames(), account="main")
    return dashboard, result


def test_the_dashboard_shows_state_balances_positions_and_open_orders() -> None:
    dashboard, result = fed()
    text = render(dashboard, 140)
    assert result.errors == []
    for expected in (
        "main",
        "connected",
        "USDT",
        "9981.51952661",
        "10000",  # exact total
        "BTC/USDT:USDT",
        "87330.2",
        "-1.25",
    ):
        assert expected in text, expected
    assert "9.5%" in text  # distance from entry to liquidation
    assert "XRP/USDT:USDT" not in text.split("positions")[1].split("open orders")[0]  # flat
    orders = text.split("open orders")[1].split("recent trades")[0]
    assert "F1" in orders
    assert "F2" in orders
    assert "F3" not in orders  # only open orders
    trades = text.split("recent trades")[1]
    assert "F3:10" in trades  # the filled order's trade: its id, the cumulative fill
    assert "F1:0.008" in trades
    assert any(ch in text for ch in "▁▂▃▄▅▆▇█")  # the event-rate sparkline


def test_a_narrow_terminal_drops_columns_instead_of_breaking() -> None:
    dashboard, _ = fed(width=60)
    text = render(dashboard, 60)
    assert "BTC/USDT:USDT" in text or "BTC/USDT" in text
    assert "distance" not in text
    assert max(len(line) for line in text.splitlines()) <= 60


def test_without_a_terminal_it_degrades_to_pretty_lines() -> None:
    out = io.StringIO()
    dashboard = DashboardOutput(out)  # a StringIO is no terminal
    assert dashboard.live_mode is False
    replay(dashboard, frames(), account="main")
    lines = out.getvalue().splitlines()
    assert any("WALLET" in line and "USDT" in line for line in lines)
    assert any("ORDER" in line and "F2" in line for line in lines)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_demo_dashboard_in_a_real_terminal_under_tmux(tmp_path: Path) -> None:
    socket = f"bitmusa-test-{os.getpid()}"
    tmux = ["tmux", "-L", socket]
    command = f"{sys.executable} -m bitmusa_plugin demo --output dashboard --seconds 8"
    env = {**os.environ, "BITMUSA_LOAD_PLUGINS": ""}
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "120", "-y", "50", command],
        check=True,
        env=env,
        timeout=20,
    )
    try:
        screen = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.5)
            captured = subprocess.run(
                [*tmux, "capture-pane", "-p"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            screen = captured.stdout
            if "open orders" in screen and "connected" in screen:
                break
        assert "bitmusa-plugin" in screen, screen
        assert "connected" in screen, screen
        assert "balances" in screen, screen
        assert "USDT" in screen, screen
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10, check=False)


def test_pretty_shows_a_snapshot_wallet_with_its_values_and_when_it_was_received() -> None:
    from bitmusa_plugin._core import build, wire
    from bitmusa_plugin._outputs.pretty import PrettyOutput

    record = {"symbol": "USDT", "total_wallet_balance": 120.5, "total_available_balance": 100}
    balance = build.balance(dict([build.asset(wire.rest_wallet_fields(record))]), record)
    out = io.StringIO()
    pretty = PrettyOutput(out)
    event = {
        "account": "main",
        "stream": "resync",
        "eventTime": None,
        "receivedAt": 1_700_000_000_123,
        "data": record,
    }
    pretty.on_wallet(balance, event)  # type: ignore[arg-type]
    line = out.getvalue()
    assert "22:13:20.123" in line  # received at, not --:--:--.---
    assert "snapshot" in line
    assert "USDT free 100 used 20.5 total 120.5" in line
