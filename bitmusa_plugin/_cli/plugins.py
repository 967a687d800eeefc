"""``bitmusa-plugin plugins``: every plugin with its version, hooks, delivery and status."""

from __future__ import annotations

import argparse
import sys

from bitmusa_plugin._cli.common import EXIT_OK, CommandError, Parser, add_command


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        subparsers,
        "plugins",
        run,
        help="list installed plugins and their status",
        description="Lists every plugin of the entry-point group 'bitmusa': name, version, "
        "distribution, hooks, delivery policy and status (loaded, disabled, or failed with "
        "the error).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--strict-plugins",
        action="store_true",
        help="exit 2 if any plugin failed to load",
    )


def run(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.runtime import plugin_errors_unlogged
    from bitmusa_plugin._engine.plugins import PluginRegistry

    host = PluginRegistry()
    with plugin_errors_unlogged():  # the listing shows each failure with its error
        host.load_entrypoints()
    records = [r.as_dict() for r in host.records]
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        from bitmusa_plugin._cli.runtime import rich_raises_broken_pipe

        rich_raises_broken_pipe()  # `plugins | head`: a quiet exit 0, not rich's exit 1

        table = Table("name", "version", "distribution", "hooks", "delivery", "status")
        for r in records:
            status = r["status"] if r["error"] is None else f"{r['status']}: {r['error']}"
            table.add_row(
                r["name"],
                r["version"] or "",
                r["distribution"] or "",
                ", ".join(r["hooks"]),
                r["delivery"] if r["status"] == "loaded" else "",
                status,
            )
        Console().print(table if records else "no plugins installed")
    if args.strict_plugins and host.failed:
        names = ", ".join(r.name for r in host.failed)
        raise CommandError(
            f"{len(host.failed)} plugin(s) failed to load ({names})",
            "the listing says why; fix or uninstall them",
        )
    return EXIT_OK
