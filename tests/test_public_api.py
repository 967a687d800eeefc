"""The public API is bitmusa_plugin.__all__ (and the testing and simulator modules'); the
docs' API page lists exactly it; everything else is private; the examples use only it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re

import pytest

import bitmusa_plugin
from conftest import ROOT

#: modules that are public besides the package itself, each with its own __all__
PUBLIC_MODULES = ("bitmusa_plugin.testing", "bitmusa_plugin.simulator")


def all_modules() -> list[str]:
    names = ["bitmusa_plugin"]
    for info in pkgutil.walk_packages(bitmusa_plugin.__path__, "bitmusa_plugin."):
        names.append(info.name)
    return names


def test_every_module_but_the_public_ones_is_private() -> None:
    for name in all_modules():
        parts = name.split(".")[1:]
        if name in ("bitmusa_plugin", *PUBLIC_MODULES) or parts == ["__main__"]:
            continue
        assert any(part.startswith("_") for part in parts), f"{name} is public by its name"


@pytest.mark.parametrize("module", ["bitmusa_plugin", *PUBLIC_MODULES])
def test_every_public_name_exists(module: str) -> None:
    imported = importlib.import_module(module)
    for name in imported.__all__:
        assert getattr(imported, name) is not None, f"{module}.{name}"


def test_the_api_page_lists_exactly_all() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^## `([A-Za-z_]+)`$", page, flags=re.M))
    assert documented == set(bitmusa_plugin.__all__)


def test_the_examples_import_only_public_names() -> None:
    publics = {
        module: set(importlib.import_module(module).__all__)
        for module in ("bitmusa_plugin", *PUBLIC_MODULES)
    }
    sources = sorted((ROOT / "examples").glob("*.py"))
    assert sources
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "bitmusa_plugin"
            ):
                assert node.module in publics, f"{path.name} imports {node.module}"
                for alias in node.names:
                    assert alias.name in publics[node.module], f"{path.name}: {alias.name}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("bitmusa_plugin._"), path.name
