"""The ``bitmusa-plugin`` command.

Exit status: 0 success; 2 bad usage or (with ``--strict-plugins``) a plugin that failed to
load; 3 ``replay`` rejected at least one frame (the good ones were still delivered).
Heavy modules are imported inside the commands so ``--help`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .plugins import PluginHost

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REJECTED = 3

log = logging.getLogger("bitmusa_plugin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitmusa-plugin",
        description="Bitmusa futures user data stream -> ccxt unified structures -> plugins.",
    )
    parser.add_argument("--version", action="version", version=f"bitmusa-plugin {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    replay = sub.add_parser(
        "replay",
        help="feed recorded frames through the mapping into the plugins",
        description="Each line of FILE is one raw websocket text frame, exactly as received. "
        "Exit 0 if every frame was accepted, 3 if any was rejected.",
    )
    replay.add_argument("file", metavar="FILE|-", help="frames file, or - for standard input")
    _add_output_options(replay, default_output="jsonl")

    plugins = sub.add_parser("plugins", help="list installed plugins and their status")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.add_argument(
        "--strict-plugins",
        action="store_true",
        help="exit 2 if any plugin failed to load",
    )
    return parser


def _add_output_options(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "--output",
        choices=("jsonl", "pretty", "none"),
        default=default_output,
        help=f"built-in output plugin (default: {default_output})",
    )
    parser.add_argument(
        "--account", default="default", metavar="NAME", help="account label for events"
    )
    parser.add_argument(
        "--strict-plugins",
        action="store_true",
        help="make a plugin that fails to load fatal (exit 2)",
    )


def load_plugins(output: str, *, strict: bool, stream: IO[str] | None = None) -> PluginHost:
    """The plugin host with the chosen built-in output and every enabled entry point."""
    from .outputs import make_output
    from .plugins import PluginHost

    host = PluginHost(strict=strict)
    plugin = make_output(output, stream)
    if plugin is not None:
        host.register(
            plugin,
            f"output-{output}",
            distribution="bitmusa-plugin",
            version=__version__,
            builtin=True,
        )
    host.load_entrypoints()
    return host


async def replay(lines: IO[str], plugins: PluginHost, account: str = "default") -> int:
    """Feed each line through the same path the live stream uses; the exit status."""
    from .host import Host

    host = Host(plugins, command="replay")
    host.start([account])
    host.stream_state(
        {
            "account": account,
            "status": "connected",
            "since": None,
            "until": None,
            "reason": "replay",
        }
    )
    rejected = 0
    limit = host.dispatcher.queue_size // 2
    for n, line in enumerate(lines):
        frame = line.rstrip("\r\n")
        if not frame:
            continue
        if not host.ingest(account, frame):
            rejected += 1
        if n % 64 == 0:
            # a file is read faster than plugins consume: wait instead of overflowing
            while host.dispatcher.backlog() > limit:  # noqa: ASYNC110 (a counter, not an event)
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)
    host.stream_state(
        {
            "account": account,
            "status": "closed",
            "since": None,
            "until": None,
            "reason": "end of replay",
        }
    )
    await host.dispatcher.drain()
    await host.stop()
    if rejected:
        log.warning("replay: %d frame(s) rejected", rejected)
    return EXIT_REJECTED if rejected else EXIT_OK


def _plugins_command(args: argparse.Namespace) -> int:
    from .plugins import PluginHost

    host = PluginHost()
    host.load_entrypoints()
    records = [r.as_dict() for r in host.records]
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("name", "version", "distribution", "hooks", "status")
        for r in records:
            status = r["status"] if r["error"] is None else f"{r['status']}: {r['error']}"
            table.add_row(
                r["name"],
                r["version"] or "",
                r["distribution"] or "",
                ", ".join(r["hooks"]),
                status,
            )
        Console().print(table if records else "no plugins installed")
    if args.strict_plugins and host.failed:
        return EXIT_USAGE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "plugins":
        return _plugins_command(args)
    from .plugins import PluginLoadError

    try:
        plugins = load_plugins(args.output, strict=args.strict_plugins)
    except PluginLoadError as exc:
        print(f"bitmusa-plugin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "replay":
        if args.file == "-":
            return asyncio.run(replay(sys.stdin, plugins, args.account))
        try:
            stream = open(args.file, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except OSError as exc:
            print(f"bitmusa-plugin: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        with stream:
            return asyncio.run(replay(stream, plugins, args.account))
    raise AssertionError(args.command)  # argparse only accepts the commands above


if __name__ == "__main__":
    sys.exit(main())
