"""``bitmusa-plugin listen``: stream accounts live into the plugins.

Everything that can be wrong with the command line, the accounts file, the credentials,
the URLs, the ``--record`` file or Redis is found before the first request is sent, and
said in one line (``CommandError``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bitmusa_plugin._cli.common import (
    CommandError,
    Parser,
    add_command,
    add_insecure,
    add_output_options,
    add_readings,
    add_redis_sink_options,
    add_rest_rate,
    add_rest_url,
    add_side_wait,
    add_ws_url,
    file_error,
    positive,
    readings,
    shown_url,
)

if TYPE_CHECKING:
    from bitmusa_plugin._core.machine import Timing
    from bitmusa_plugin._engine.stream import AccountConfig


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        subparsers,
        "listen",
        run,
        help="stream accounts live into the plugins",
        description="Credentials come from BITMUSA_API_KEY and BITMUSA_AUTH_KEY, or from the "
        "environment variables a --config file names; never from the command line. "
        "SIGINT or SIGTERM stops it cleanly (exit 0).",
    )
    add_rest_url(parser, "REST base")
    add_ws_url(parser, "websocket base; the stream is {ws-url}/ws/future/<listenKey>")
    add_readings(parser)
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="TOML file listing accounts (see docs/configuration.md)",
    )
    parser.add_argument(
        "--keepalive-interval",
        metavar="SECONDS",
        type=positive,
        default=None,
        help="PUT the listenKey this often (default: 1800, with 10%% jitter)",
    )
    parser.add_argument(
        "--rotate-after",
        metavar="SECONDS",
        type=positive,
        default=None,
        help="open the next connection this long after the last (default: "
        "85800, minus up to 300 of jitter; Bitmusa cuts at 86400)",
    )
    parser.add_argument(
        "--startup-window",
        metavar="SECONDS",
        type=positive,
        default=None,
        help="before an account's first connection, retry an unreachable server (DNS, "
        "refused, TLS, no answer) this long, then fail it (default: 30)",
    )
    parser.add_argument(
        "--keep-listen-key",
        action="store_true",
        help="do not DELETE the listenKey on exit (DELETE also ends the "
        "stream for any other consumer of the account)",
    )
    add_insecure(parser)
    add_rest_rate(parser)
    add_side_wait(parser)
    parser.add_argument(
        "--no-resync",
        action="store_true",
        help="do not fetch REST snapshots at start-up and after every gap",
    )
    parser.add_argument(
        "--stall-after",
        metavar="SECONDS",
        type=positive,
        default=None,
        help="a plugin with delivery 'all' that makes no progress this long is reported "
        "(plugin_stalled) and stops holding the stream: it gets 'latest' for the rest of "
        "the run (default: 30)",
    )
    add_redis_sink_options(parser, required=False)
    parser.add_argument(
        "--record",
        metavar="FILE",
        type=Path,
        help="append every raw frame to FILE, in the format replay reads",
    )
    add_output_options(parser, default_output="pretty")


def run(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.runtime import (
        OutputClosed,
        check_redis,
        load_plugins,
        make_redis_sink,
        report_failures,
        run_loop,
    )
    from bitmusa_plugin._engine.session import DeliveryOptions, RunResult, Session

    accounts = _accounts(args)
    timing = _timing(args)
    if args.redis:
        run_loop(check_redis(args.redis))
    record = None
    if args.record is not None:
        try:
            record = open(args.record, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise file_error(
                "write", args.record, exc, "give --record a file path you can write to"
            ) from None
    try:
        closed = OutputClosed()
        plugins = load_plugins(args.output, strict=args.strict_plugins, on_closed=closed)
        sink = make_redis_sink(args, plugins)

        async def main() -> RunResult:
            session = Session(
                plugins,
                command="listen",
                accounts=accounts,
                timing=timing,
                keep_listen_key=args.keep_listen_key,
                resync=not args.no_resync,
                record=record,
                rest_rate=args.rest_rate,
                side_wait=args.side_wait,
                connections=min(32, 4 + len(accounts)),
                delivery=DeliveryOptions()
                if args.stall_after is None
                else DeliveryOptions(stall_after=args.stall_after),
            )
            if sink is not None:
                sink.bind(session.pipeline.report)
            try:
                async with session:
                    return await session.run(stop_on=closed.bind(), handle_signals=True)
            finally:
                if sink is not None:
                    await sink.close()  # what is still buffered goes out before we exit

        result = run_loop(main())
    finally:
        if record is not None:
            record.close()
    return report_failures(result.failed)


def _accounts(args: argparse.Namespace) -> list[AccountConfig]:
    """The accounts to stream, every URL and setting checked (each message names the flag
    or the accounts file's entry) before anything is sent."""
    from bitmusa_plugin._engine.config import ConfigError, account_from_env, load_config
    from bitmusa_plugin._engine.secrets import CredentialsError, InsecureURLError

    if args.config is None:
        for flag, url in (("--rest-url", args.rest_url), ("--ws-url", args.ws_url)):
            if url is not None:
                require_secure(flag, url, insecure=args.insecure)
        try:
            return [
                account_from_env(
                    args.account,
                    args.rest_url,
                    args.ws_url,
                    insecure=args.insecure,
                    readings=readings(args),
                )
            ]
        except CredentialsError as exc:
            raise CommandError("no credentials", str(exc)) from None
        except (ConfigError, InsecureURLError) as exc:
            raise CommandError(str(exc), "see docs/configuration.md") from None
    try:
        with open(args.config, "rb"):
            pass
    except OSError as exc:
        raise file_error(
            "read", args.config, exc, "give --config an accounts file you can read"
        ) from None
    try:
        return load_config(
            args.config,
            rest_url=args.rest_url,
            ws_url=args.ws_url,
            insecure=args.insecure,
            readings=readings(args),
        )
    except (ConfigError, CredentialsError) as exc:
        text = str(exc)
        if text.endswith("fix it in the accounts file"):
            what, _, todo = text.rpartition(": ")
            raise CommandError(what, todo) from None
        raise CommandError(text, "see docs/configuration.md") from None


def require_secure(where: str, url: str, *, insecure: bool) -> None:
    """The engine's rule (TLS, or plain text to this machine only), with the flag named."""
    from bitmusa_plugin._engine.secrets import InsecureURLError
    from bitmusa_plugin._engine.secrets import require_secure as engine_rule

    try:
        engine_rule(url, insecure=insecure)
    except InsecureURLError:
        raise CommandError(
            f"{where} {shown_url(url)} is not encrypted and not this machine",
            "use https/wss (credentials would cross the network in clear), or --insecure "
            "on a network you trust",
        ) from None


def _timing(args: argparse.Namespace) -> Timing:
    from dataclasses import replace

    from bitmusa_plugin._core import machine as lc

    timing = lc.Timing()
    if args.keepalive_interval is not None:
        if args.keepalive_interval * (1 + timing.keepalive_jitter) >= timing.key_validity:
            raise CommandError(
                f"--keepalive-interval {args.keepalive_interval:g} leaves no room inside the "
                f"listenKey's {timing.key_validity:.0f} s validity",
                f"use at most "
                f"{timing.key_validity / (1 + timing.keepalive_jitter) / 2:.0f} seconds",
            )
        timing = replace(timing, keepalive_interval=args.keepalive_interval)
    if args.startup_window is not None:
        timing = replace(timing, startup_window=args.startup_window)
    if args.rotate_after is not None:
        timing = replace(
            timing,
            rotate_after=args.rotate_after,
            rotate_jitter=min(timing.rotate_jitter, args.rotate_after / 10),
        )
    return timing
