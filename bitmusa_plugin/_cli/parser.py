"""The ``bitmusa-plugin`` argument parser, assembled from one module per command.

Each command module has ``add_parser(subparsers)``, which registers its options and its
``run(args) -> int`` as ``handler``. Importing them is cheap: their ``run`` imports what
the command needs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from bitmusa_plugin import __version__
from bitmusa_plugin._cli import (
    accounts,
    demo,
    listen,
    new_plugin,
    plugins,
    replay,
    simulate,
    worker,
)
from bitmusa_plugin._cli.common import PROG, Parser
from bitmusa_plugin._core import compiled

#: In the order ``--help`` lists them.
COMMANDS = (replay, listen, demo, simulate, plugins, new_plugin, worker, accounts)


class _Version(argparse.Action):
    """argparse's ``version`` action, which also names the build (:func:`compiled`); asked
    only when ``--version`` is given, so that other commands do not pay for it."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show program's version number and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        flavour = " (compiled core)" if compiled() else ""
        print(f"{PROG} {__version__}{flavour}")  # to stdout, as argparse's own
        parser.exit()


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Bitmusa futures user data stream -> ccxt unified structures -> plugins.",
    )
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more (-v info, -vv debug), to standard error; also after the command",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser
