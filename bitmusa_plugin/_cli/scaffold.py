"""``bitmusa-plugin new-plugin NAME``: a ready plugin package whose test passes as is."""

from __future__ import annotations

import re
from pathlib import Path

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A bitmusa-plugin handler plugin"
requires-python = ">=3.10"
dependencies = ["bitmusa-hookspecs>=0.1.0"]

[project.optional-dependencies]
test = ["bitmusa-plugin>=0.1.0", "pytest>=8"]

# This is what makes it a plugin: bitmusa-plugin loads the entry-point group "bitmusa".
[project.entry-points.bitmusa]
{dist} = "{package}"

[tool.setuptools]
packages = ["{package}"]

[tool.pytest.ini_options]
pythonpath = ["."]
testpaths = ["tests"]
"""

PLUGIN = '''\
"""{dist}: a bitmusa-plugin handler plugin.

Implement any hook of bitmusa_hookspecs (see its docs/hooks.md); each may be def or
async def and take any subset of its arguments.
"""

from __future__ import annotations

from typing import Any

from bitmusa_hookspecs import hookimpl

#: The fills this plugin has seen, newest last (replace with what your plugin does).
FILLS: list[str] = []


@hookimpl
def on_order(order: Any, event: Any) -> None:
    if order["status"] == "closed" and order["filled"]:
        FILLS.append(f"{{event['account']}} {{order['symbol']}} {{order['filled']}}")


@hookimpl
def on_error(error: Any) -> None:
    pass  # error["kind"], error["message"]: a bad frame or a failing plugin, contained
'''

TEST = """\
from __future__ import annotations

import {package} as plugin
from bitmusa_plugin.testing import order_frame, replay


def test_a_fill_is_recorded() -> None:
    result = replay(
        plugin,
        [
            order_frame("F1", status="TRADING"),
            order_frame("F1", status="FILLED", filled="10", value="5"),
        ],
        account="main",
    )
    assert result.errors == []
    assert [o["status"] for o in result.orders] == ["open", "closed"]
    assert plugin.FILLS == ["main XRP/USDT:USDT 10.0"]
"""

README = """\
# {dist}

A [bitmusa-plugin](https://pypi.org/project/bitmusa-plugin/) handler plugin.

    pip install -e '.[test]'
    pytest                      # runs tests/ through bitmusa_plugin.testing.replay
    bitmusa-plugin plugins      # lists {dist} as loaded
"""


def create(name: str, directory: Path) -> Path:
    """Write the package into ``directory / name``; returns that path."""
    if not NAME_RE.match(name):
        raise ValueError(
            f"{name!r}: use lowercase letters, digits and single - or _ (like my-notifier)"
        )
    dist, package = name, name.replace("-", "_")
    root = directory / name
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    (root / package).mkdir(parents=True)
    (root / "tests").mkdir()
    values = {"dist": dist, "package": package}
    (root / "pyproject.toml").write_text(PYPROJECT.format(**values))
    (root / package / "__init__.py").write_text(PLUGIN.format(**values))
    (root / "tests" / "test_plugin.py").write_text(TEST.format(**values))
    (root / "README.md").write_text(README.format(**values))
    return root
