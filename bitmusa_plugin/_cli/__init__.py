"""The ``bitmusa-plugin`` command.

Exit status: 0 success; 2 bad usage or (with ``--strict-plugins``) a plugin that failed to
load; 3 ``replay`` rejected at least one frame (the good ones were still delivered); 4 a
stream failed for good (bad credentials, IP not allowed, no privilege).
Heavy modules are imported inside the commands so ``--help`` starts fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bitmusa_plugin import __version__

if TYPE_CHECKING:
    pass

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_FAILED = 4

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

    listen = sub.add_parser(
        "listen",
        help="stream accounts live into the plugins",
        description="Credentials come from BITMUSA_API_KEY and BITMUSA_AUTH_KEY, or from the "
        "environment variables a --config file names; never from the command line.",
    )
    listen.add_argument(
        "--rest-url", metavar="URL", help="REST base (default: %(default)s)", default=None
    )
    listen.add_argument("--ws-url", metavar="URL", help="websocket base", default=None)
    listen.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="TOML file listing accounts (see docs/configuration.md)",
    )
    listen.add_argument(
        "--keepalive-interval",
        metavar="SECONDS",
        type=_positive,
        default=None,
        help="PUT the listenKey this often (default 1800, with 10%% jitter)",
    )
    listen.add_argument(
        "--rotate-after",
        metavar="SECONDS",
        type=_positive,
        default=None,
        help="open the next connection this long after the last (default "
        "85800, minus up to 300 of jitter; Bitmusa cuts at 86400)",
    )
    listen.add_argument(
        "--keep-listen-key",
        action="store_true",
        help="do not DELETE the listenKey on exit (DELETE also ends the "
        "stream for any other consumer of the account)",
    )
    listen.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain http/ws to a host other than this machine (credentials would "
        "cross the network unencrypted)",
    )
    _add_rest_rate(listen)
    listen.add_argument(
        "--no-resync",
        action="store_true",
        help="do not fetch REST snapshots at start-up and after every gap",
    )
    _add_redis_sink_options(listen, required=False)
    listen.add_argument(
        "--record",
        metavar="FILE",
        type=Path,
        help="append every raw frame to FILE, in the format replay reads",
    )
    _add_output_options(listen, default_output="pretty")

    demo = sub.add_parser(
        "demo",
        help="a scripted session on the embedded simulator (about 20 s)",
        description="Starts the simulator in this process and listens to it with the "
        "installed plugins; shows a reconnect with its gap report, a bad frame and a "
        "rotation, then exits 0.",
    )
    _add_output_options(demo, default_output="pretty")
    demo.set_defaults(account="demo")
    demo.add_argument("--seconds", type=_positive, default=20.0, help=argparse.SUPPRESS)

    simulate = sub.add_parser(
        "simulate",
        help="serve a Bitmusa-compatible simulator until interrupted",
        description="Prints the URLs and the demo credentials, then serves. Fault flags "
        "inject one fault every N (real) seconds.",
    )
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=0, help="0 picks a free port")
    simulate.add_argument(
        "--time-scale",
        type=_positive,
        default=1.0,
        metavar="X",
        help="simulated seconds per real second",
    )
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument(
        "--event-interval",
        type=_positive,
        default=1.0,
        metavar="SECONDS",
        help="one trading event this often",
    )
    for fault, text in (
        ("drop", "TCP-reset the connections"),
        ("stall", "stall the connections (no data, no pongs) for 60 s"),
        ("garbage", "send a malformed frame"),
        ("refuse", "refuse the next handshake"),
        ("rest-fail", "fail the next REST call (see --rest-fault)"),
        ("expire", "expire the listenKey"),
        ("cut", "cut the connections as at 24 hours"),
    ):
        simulate.add_argument(f"--{fault}-every", type=_positive, metavar="SECONDS", help=text)
    simulate.add_argument(
        "--rest-fault",
        choices=("500", "503", "429", "1011", "timeout"),
        default="503",
        help="how --rest-fail-every fails a call (default: 503)",
    )

    scaffold = sub.add_parser(
        "new-plugin",
        help="create a ready plugin package (entry point, hook, passing test, README)",
    )
    scaffold.add_argument("name", help="distribution name, e.g. my-notifier")
    scaffold.add_argument(
        "--directory", type=Path, default=Path("."), help="where to create it (default: here)"
    )

    worker = sub.add_parser(
        "worker",
        help="stream the accounts registered in Redis, shared with other workers",
        description="Takes a fair share of the accounts registered in Redis (see "
        "`accounts`), streams them into the Redis sink, and hands them over when workers "
        "join or die (docs/scale.md). `worker status` shows who holds what.",
    )
    worker.add_argument("action", nargs="?", choices=("status",), help="show the workers")
    _add_redis_sink_options(worker, required=True)
    worker.add_argument("--group", default="default", help="the registry's name (default)")
    worker.add_argument(
        "--lease-ttl",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="an account's lease lasts this long unrenewed (default 10): a dead worker's "
        "accounts resume elsewhere after it",
    )
    worker.add_argument(
        "--rest-url", metavar="URL", default=None, help="REST base for accounts without one"
    )
    _add_rest_rate(worker)
    worker.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain http/ws to a host other than this machine",
    )
    _add_output_options(worker, default_output="none")

    accounts = sub.add_parser(
        "accounts",
        help="register accounts in Redis for worker mode",
        description="Records hold the label and references to the credentials "
        "(environment-variable names, or a credentials file path), resolved by each "
        "worker; never the secrets.",
    )
    accounts.add_argument("action", choices=("add", "remove", "list"))
    accounts.add_argument("label", nargs="?", help="the account's label (add, remove)")
    accounts.add_argument("--redis", metavar="URL", required=True, help="redis://host:port/db")
    accounts.add_argument("--group", default="default", help="the registry's name (default)")
    accounts.add_argument("--api-key-env", metavar="NAME", help="variable holding the API key")
    accounts.add_argument("--auth-key-env", metavar="NAME", help="variable holding the auth key")
    accounts.add_argument(
        "--credentials-file",
        metavar="PATH",
        help="a TOML file with api_key and auth_key (mode 600), on each worker",
    )
    accounts.add_argument("--rest-url", metavar="URL", default=None)
    accounts.add_argument("--ws-url", metavar="URL", default=None)

    plugins = sub.add_parser("plugins", help="list installed plugins and their status")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.add_argument(
        "--strict-plugins",
        action="store_true",
        help="exit 2 if any plugin failed to load",
    )
    return parser


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _rest_rate(text: str) -> tuple[int, int]:
    try:
        per_second, per_minute = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PER_S,PER_MIN, got {text!r}") from None
    if per_second < 1 or per_minute < 1:
        raise argparse.ArgumentTypeError("both rates must be at least 1")
    return per_second, per_minute


def _add_rest_rate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rest-rate",
        metavar="PER_S,PER_MIN",
        type=_rest_rate,
        default=(8, 200),
        help="REST requests allowed, for the whole process (all accounts share them; "
        "requests wait their turn): per second and per minute (default 8,200, as Bitmusa "
        "documents)",
    )


def _add_redis_sink_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--redis",
        metavar="URL",
        required=required,
        help="write every event to Redis (XADD) at this URL: redis://host:port/db",
    )
    parser.add_argument(
        "--redis-stream",
        metavar="NAME",
        default="bitmusa:events",
        help="the stream's name; {account} in it makes one stream per account "
        "(default bitmusa:events)",
    )
    parser.add_argument(
        "--redis-maxlen",
        metavar="N",
        type=int,
        default=1_000_000,
        help="trim the stream to about N entries (MAXLEN ~; 0: never; default 1000000)",
    )


def _add_output_options(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "--output",
        choices=("jsonl", "pretty", "dashboard", "none"),
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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Standard output was closed (``| head``): stop quietly, as Unix tools do.
        from bitmusa_plugin._cli.commands import silence_stdout

        silence_stdout()
        return EXIT_OK


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from bitmusa_plugin._cli import commands
    from bitmusa_plugin._engine.secrets import install_log_redaction

    install_log_redaction()
    if args.command == "plugins":
        return commands.plugins_command(args)
    if args.command == "simulate":
        return commands.simulate_command(args)
    if args.command == "new-plugin":
        return commands.new_plugin_command(args)
    if args.command == "accounts":
        return commands.accounts_command(args)
    if args.command == "worker" and args.action == "status":
        return commands.worker_status_command(args)
    from bitmusa_plugin._engine.plugins import PluginLoadError

    closed = commands.OutputClosed()
    try:
        plugins = commands.load_plugins(args.output, strict=args.strict_plugins, on_closed=closed)
    except PluginLoadError as exc:
        print(f"bitmusa-plugin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "listen":
        return commands.listen_command(args, plugins, closed)
    if args.command == "demo":
        return commands.demo_command(args, plugins, closed)
    if args.command == "worker":
        return commands.worker_command(args, plugins)
    if args.command == "replay":
        if args.file == "-":
            # a binary line must be reported as a bad frame, not end the command
            sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
            return commands.run_replay(sys.stdin, plugins, args.account, closed)
        try:
            stream = open(args.file, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except OSError as exc:
            print(f"bitmusa-plugin: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        with stream:
            return commands.run_replay(stream, plugins, args.account, closed)
    raise AssertionError(args.command)  # argparse only accepts the commands above


if __name__ == "__main__":
    sys.exit(main())
