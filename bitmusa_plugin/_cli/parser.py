"""The ``bitmusa-plugin`` argument parser, assembled from one module per command.

Each command module has ``add_parser(subparsers)``, which registers its options and its
``run(args) -> int`` as ``handler``. Importing them is cheap: their ``run`` imports what
the command needs, so ``--help`` stays fast.
"""

from __future__ import annotations

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


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Bitmusa futures user data stream -> ccxt unified structures -> plugins.",
    )
    flavour = " (compiled core)" if compiled() else ""
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}{flavour}")
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
