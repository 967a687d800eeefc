"""``bitmusa-plugin new-plugin NAME``: a ready plugin package whose test passes as is."""

from __future__ import annotations

import importlib.util
import re
import sys
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
readme = "README.md"
requires-python = ">=3.10"
# The contract only; README.md says how to install it while it is not on the package index.
dependencies = ["bitmusa-hookspecs>=0.2.0"]

[project.optional-dependencies]
# bitmusa-plugin brings bitmusa_plugin.testing (replay, the frame factories) to pytest.
test = ["bitmusa-plugin>=0.2.0", "pytest>=8", "mypy>=1.10"]

# This is what makes it a plugin: bitmusa-plugin loads the entry-point group "bitmusa".
[project.entry-points.bitmusa]
{dist} = "{package}"

[tool.setuptools]
packages = ["{package}"]

# py.typed: code that imports {package} gets its types too.
[tool.setuptools.package-data]
{package} = ["py.typed"]

[tool.pytest.ini_options]
pythonpath = ["."]
testpaths = ["tests"]

# `mypy` checks every key a hook reads against the contract's TypedDicts.
[tool.mypy]
strict = true
files = ["{package}", "tests"]
"""

PLUGIN = '''\
"""{dist}: a bitmusa-plugin handler plugin.

Implement any hook of bitmusa_hookspecs (docs/hooks.md of bitmusa-plugin); each may be def
or async def and take any subset of its arguments. The arguments are the contract's
TypedDicts, so mypy checks every key a hook reads.
"""

from __future__ import annotations

from bitmusa_hookspecs import ErrorInfo, Event, Trade, hookimpl

#: The fills this plugin has seen, newest last (replace with what your plugin does).
FILLS: list[str] = []


@hookimpl
def on_trade(trade: Trade, event: Event) -> None:
    # one call per fill, never for a snapshot: nothing is announced twice
    FILLS.append(f"{{event['account']}} {{trade['symbol']}} {{trade['side']}} {{trade['amount']}}")


@hookimpl
def on_error(error: ErrorInfo, event: Event | None) -> None:
    pass  # error["kind"], error["message"]: a bad frame or a failing plugin, contained


# The other hooks and their types (all importable from bitmusa_hookspecs):
#
#     def on_wallet(balance: Balance, event: Event) -> None
#     def on_order(order: Order, event: Event) -> None   # also snapshots: event["stream"]
#                                                       # == "resync" after a start or a gap
#     def on_position(position: Position, event: Event) -> None
#     def on_stream_state(state: StreamState) -> None  # state["status"] == "gap": resync
#     def on_startup(context: Context) -> None
#     def on_shutdown(context: Context) -> None
#     def on_idle() -> None                            # the queue drained: flush here
#
# A plugin that must see every call even when it falls behind (a recorder) declares
#
#     bitmusa_delivery: DeliveryPolicy = "all"
#
# instead of the default "latest", which merges queued states of one order or position.
'''

TEST = """\
from __future__ import annotations

import {package} as plugin
from bitmusa_plugin.testing import order_frame, replay


def test_each_fill_is_recorded_once() -> None:
    result = replay(
        plugin,
        [
            order_frame("F1", status="TRADING"),
            order_frame("F1", status="PARTIAL", filled="4", value="2"),
            order_frame("F1", status="FILLED", filled="10", value="5"),
        ],
        account="main",
    )
    assert result.errors == []
    assert [o["status"] for o in result.orders] == ["open", "open", "closed"]
    assert plugin.FILLS == ["main XRP/USDT:USDT buy 4.0", "main XRP/USDT:USDT buy 6.0"]
"""

README = """\
# {dist}

A handler plugin for bitmusa-plugin (Bitmusa's futures user data stream).

## Install

It depends on `bitmusa-hookspecs`, the plugin contract; its tests also need
`bitmusa-plugin`. Neither is on the package index yet, so in a fresh environment install
them first, in one of two ways:

- from the built wheels (`make dist` in a clone of bitmusa-plugin writes them to its
  `dist/`): install them by path, then this package

      pip install <dist>/bitmusa_hookspecs-*.whl <dist>/bitmusa_plugin-*.whl
      pip install -e '.[test]'

  or in one step, `pip install --find-links <dist> -e '.[test]'` (pip takes the highest
  version it finds, so a newer release on the package index would win over the wheels);
- from a clone of bitmusa-plugin:

      pip install <clone>/hookspecs <clone>
      pip install -e '.[test]'

  Install the clone without `-e`: mypy cannot see into setuptools' editable installs
  (or add `--config-settings editable_mode=strict` to keep them editable).

In the environment where you ran `bitmusa-plugin new-plugin`, both are installed already:
`pip install -e '.[test]'` is enough. Once they are published, it is enough anywhere. (If
that environment is a clone's `make setup` venv, whose installs are editable, run mypy as
`MYPYPATH=<clone>:<clone>/hookspecs mypy --follow-imports=silent`.)

## Check

    pytest                      # runs tests/ through bitmusa_plugin.testing.replay
    mypy                        # --strict (pyproject.toml): every hook argument is typed
                                # (in a clone's editable venv: MYPYPATH=<clone>:<clone>/hookspecs
                                #  mypy --follow-imports=silent, as above)
    bitmusa-plugin plugins      # lists {dist} as loaded
"""


def shadowed(name: str) -> str | None:
    """The module a plugin called ``name`` would be, when one by that name is installed
    already (``bitmusa-plugin``, ``pytest``, ``redis``...): its package would replace or
    shadow it. None when the name is free."""
    package = name.replace("-", "_")
    if package in sys.stdlib_module_names:
        return package
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    # a directory that merely has the name (a namespace package) is not a module
    return package if found is not None and found.origin is not None else None


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
    (root / package / "py.typed").write_text("")
    (root / "tests" / "test_plugin.py").write_text(TEST.format(**values))
    (root / "README.md").write_text(README.format(**values))
    return root


def next_steps(root: Path) -> str:
    """What to run after :func:`create` (the lines ``new-plugin`` prints). When this
    bitmusa-plugin runs from a clone, its paths are filled in, and mypy is pointed at its
    sources (mypy cannot see into setuptools' editable installs) and told to report only
    the plugin's own errors, as it does for installed packages."""
    clone = Path(__file__).resolve().parents[2]
    if (clone / "hookspecs" / "pyproject.toml").is_file():
        dist, source = f"{clone / 'dist'}", f"{clone}"
        mypy = f"MYPYPATH={clone}:{clone / 'hookspecs'} mypy --follow-imports=silent"
    else:
        dist, source, mypy = "<dist>", "<clone>", "mypy"
    return "\n".join(
        [
            f"next: cd {root} && pip install -e '.[test]' && pytest && {mypy}",
            "  bitmusa-hookspecs and bitmusa-plugin are not on the package index yet: in a fresh",
            "  environment install them first, from the wheels `make dist` builds in a clone:",
            f"    pip install {dist}/bitmusa_hookspecs-*.whl {dist}/bitmusa_plugin-*.whl",
            f"  or from a clone: pip install {source}/hookspecs {source}",
            f"  ({root / 'README.md'} says more)",
        ]
    )
