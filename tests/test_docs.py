"""datasette's meta-tests: every hook is documented with its exact signature, and tested."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from bitmusa_hookspecs import HOOK_NAMES, specs
from conftest import ROOT, TESTS

HOOKS_MD = ROOT / "docs" / "hooks.md"


def gen_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_hooks", ROOT / "docs" / "gen_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hook_names_are_exactly_the_hookspecs() -> None:
    declared = {name for name in dir(specs) if hasattr(getattr(specs, name), "bitmusa_spec")}
    assert declared == set(HOOK_NAMES)


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    text = HOOKS_MD.read_text()
    assert f"\n## {hook}\n" in text
    assert f"\n{gen_hooks().signature(hook)}\n" in text


def test_hooks_md_is_generated_from_current_docstrings() -> None:
    assert HOOKS_MD.read_text() == gen_hooks().render(), "run: python docs/gen_hooks.py"


def test_the_command_reference_is_generated_from_the_cli_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("COLUMNS", "100")
    page = (ROOT / "docs" / "cli-reference.md").read_text()
    assert page == module.render(), "run: python docs/gen_cli.py"
    for flag in (
        "--keepalive-interval",
        "--rotate-after",
        "--keep-listen-key",
        "--record",
        "--insecure",
        "--strict-plugins",
        "--time-scale",
        "--rest-fault",
    ):
        assert flag in page


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    sources = [p.read_text() for p in Path(TESTS).glob("test_*.py") if p.name != "test_docs.py"]
    assert any(re.search(rf"\b{hook}\b", source) for source in sources)


def test_every_frame_error_kind_is_documented() -> None:
    from bitmusa_hookspecs import FRAME_ERROR_KINDS

    assert set(FRAME_ERROR_KINDS) <= set(gen_hooks().ERROR_KINDS)


def test_docs_links_resolve() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    for target in re.findall(r"\]\((docs/[^)#]+)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).exists(), f"README links to missing {target}"
