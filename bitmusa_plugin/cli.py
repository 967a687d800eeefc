"""The ``bitmusa-plugin`` command.

Exit status: 0 success; 2 bad usage or (with ``--strict-plugins``) a plugin that failed to
load; 3 ``replay`` rejected at least one frame (the good ones were still delivered); 4 a
stream failed for good (bad credentials, IP not allowed, no privilege).
Heavy modules are imported inside the commands so ``--help`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .plugins import PluginHost

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
        "--no-resync",
        action="store_true",
        help="do not fetch REST snapshots at start-up and after every gap",
    )
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
        ("rest-fail", "fail the next REST call with HTTP 503"),
        ("expire", "expire the listenKey"),
        ("cut", "cut the connections as at 24 hours"),
    ):
        simulate.add_argument(f"--{fault}-every", type=_positive, metavar="SECONDS", help=text)

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


def _listen_command(args: argparse.Namespace, plugins: PluginHost) -> int:
    from dataclasses import replace

    from . import lifecycle as lc
    from .app import ConfigError, account_from_env, load_config, run_accounts
    from .host import Host
    from .secrets import CredentialsError

    try:
        if args.config is not None:
            accounts = load_config(args.config, rest_url=args.rest_url, ws_url=args.ws_url)
        else:
            accounts = [account_from_env(args.account, args.rest_url, args.ws_url)]
    except (ConfigError, CredentialsError) as exc:
        print(f"bitmusa-plugin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    timing = lc.Timing()
    if args.keepalive_interval is not None:
        if args.keepalive_interval * (1 + timing.keepalive_jitter) >= timing.key_validity:
            print(
                "bitmusa-plugin: --keepalive-interval must leave room inside the key's "
                f"{timing.key_validity:.0f} s validity (at most "
                f"{timing.key_validity / (1 + timing.keepalive_jitter) / 2:.0f} is sensible)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        timing = replace(timing, keepalive_interval=args.keepalive_interval)
    if args.rotate_after is not None:
        timing = replace(
            timing,
            rotate_after=args.rotate_after,
            rotate_jitter=min(timing.rotate_jitter, args.rotate_after / 10),
        )
    record = None
    if args.record is not None:
        try:
            record = open(args.record, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            print(f"bitmusa-plugin: cannot write {args.record}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    try:
        result = asyncio.run(
            run_accounts(
                accounts,
                Host(plugins, command="listen"),
                timing=timing,
                keep_listen_key=args.keep_listen_key,
                resync=not args.no_resync,
                record=record,
            )
        )
    finally:
        if record is not None:
            record.close()
    return _report_failures(result.failed)


def _report_failures(failed: dict[str, str]) -> int:
    for account, reason in failed.items():
        print(f"bitmusa-plugin: account {account!r} failed: {reason}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _demo_command(args: argparse.Namespace, plugins: PluginHost) -> int:
    from .demo import run_demo

    failed = asyncio.run(run_demo(plugins, seconds=args.seconds, account=args.account))
    return _report_failures(failed)


def _simulate_command(args: argparse.Namespace) -> int:
    import signal

    from .simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

    async def serve() -> None:
        sim = Simulator(
            host=args.host,
            port=args.port,
            time_scale=args.time_scale,
            seed=args.seed,
            event_interval=args.event_interval,
        )
        await sim.start()
        print(f"REST      {sim.rest_url}")
        print(f"websocket {sim.ws_url}")
        print(f"export BITMUSA_API_KEY={DEMO_API_KEY} BITMUSA_AUTH_KEY={DEMO_AUTH_KEY}")
        print(f"bitmusa-plugin listen --rest-url {sim.rest_url} --ws-url {sim.ws_url}")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        faults: list[asyncio.Task[None]] = []
        for name, action in _fault_actions(sim).items():
            every = getattr(args, f"{name.replace('-', '_')}_every")
            if every:
                faults.append(loop.create_task(_every(every, name, action)))
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for task in faults:
            task.cancel()
        await sim.stop()

    asyncio.run(serve())
    return EXIT_OK


def _fault_actions(sim: Any) -> dict[str, Any]:
    async def drop() -> None:
        sim.drop()

    async def stall() -> None:
        sim.stall(60.0)

    async def garbage() -> None:
        await sim.garbage(1)

    async def refuse() -> None:
        sim.refuse()

    async def rest_fail() -> None:
        sim.fail_rest("503")

    async def expire() -> None:
        sim.expire_key()

    async def cut() -> None:
        await sim.cut()

    return {
        "drop": drop,
        "stall": stall,
        "garbage": garbage,
        "refuse": refuse,
        "rest-fail": rest_fail,
        "expire": expire,
        "cut": cut,
    }


async def _every(seconds: float, name: str, action: Any) -> None:
    while True:
        await asyncio.sleep(seconds)
        log.warning("simulator: injecting %s", name)
        await action()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .secrets import install_log_redaction

    install_log_redaction()
    if args.command == "plugins":
        return _plugins_command(args)
    if args.command == "simulate":
        return _simulate_command(args)
    from .plugins import PluginLoadError

    try:
        plugins = load_plugins(args.output, strict=args.strict_plugins)
    except PluginLoadError as exc:
        print(f"bitmusa-plugin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "listen":
        return _listen_command(args, plugins)
    if args.command == "demo":
        return _demo_command(args, plugins)
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
