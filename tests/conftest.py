from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
CORPUS = TESTS / "corpus"
sys.path.insert(0, str(TESTS))  # the ccxt oracle module


def corpus_frames() -> list[str]:
    return [line for line in (CORPUS / "frames.txt").read_text().splitlines() if line]


def corpus_rejected() -> list[tuple[str, str]]:
    rows = (CORPUS / "rejected.txt").read_text().splitlines()
    return [(kind, raw) for kind, raw in (row.split("\t", 1) for row in rows if row)]


@pytest.fixture
def no_entrypoint_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the plugins a test registers itself (installed ones stay out)."""
    monkeypatch.setenv("BITMUSA_LOAD_PLUGINS", "")


@pytest.fixture(autouse=True)
def _clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BITMUSA_LOAD_PLUGINS", "BITMUSA_DISABLE_PLUGINS"):
        if name in os.environ:
            monkeypatch.delenv(name)
