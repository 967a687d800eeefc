"""``bitmusa-plugin worker [status]``: stream a fair share of the accounts registered in
Redis, handing them over as workers join and die (docs/scale.md); ``status`` shows who
holds what."""

from __future__ import annotations

import argparse
from typing import Any

from bitmusa_plugin._cli.common import (
    EXIT_OK,
    Parser,
    add_command,
    add_insecure,
    add_output_options,
    add_readings,
    add_redis_sink_options,
    add_rest_rate,
    add_rest_url,
    add_side_wait,
    positive,
    readings,
)


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        subparsers,
        "worker",
        run,
        help="stream the accounts registered in Redis, shared with other workers",
        description="Takes a fair share of the accounts registered in Redis (see "
        "`accounts`), streams them into the Redis sink, and hands them over when workers "
        "join or die (docs/scale.md). `worker status` shows who holds what. SIGINT or "
        "SIGTERM stops it cleanly (exit 0).",
    )
    parser.add_argument("action", nargs="?", choices=("status",), help="show the workers")
    add_redis_sink_options(parser, required=True)
    parser.add_argument("--group", default="default", help="the registry's name (default: default)")
    parser.add_argument(
        "--lease-ttl",
        type=positive,
        default=10.0,
        metavar="SECONDS",
        help="an account's lease lasts this long unrenewed (default: 10): a dead worker's "
        "accounts resume elsewhere after it",
    )
    add_rest_url(parser, "REST base for accounts registered without one")
    add_readings(parser)  # for accounts registered without their own readings
    add_rest_rate(parser)
    add_side_wait(parser)
    add_insecure(parser)
    add_output_options(parser, default_output="none")


def run(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.runtime import check_redis, run_loop

    if args.action == "status":
        return status(args)
    run_loop(check_redis(args.redis))  # once: later outages are ridden out (docs/scale.md)

    from bitmusa_plugin._cli.runtime import load_plugins, make_redis_sink
    from bitmusa_plugin._engine.rest import DEFAULT_REST_URL
    from bitmusa_plugin._engine.session import Session
    from bitmusa_plugin._scale.worker import WorkerOptions, run_worker

    plugins = load_plugins(args.output, strict=args.strict_plugins)
    sink = make_redis_sink(args, plugins)
    options = WorkerOptions(
        group=args.group,
        lease_ttl=args.lease_ttl,
        rest_url=args.rest_url or DEFAULT_REST_URL,
        insecure=args.insecure,
        readings=readings(args),
    )

    async def main() -> None:
        # the account's stream outlives this worker: its listenKey is never DELETEd
        session = Session(
            plugins,
            command="worker",
            rest_rate=args.rest_rate,
            keep_listen_key=True,
            side_wait=args.side_wait,
        )
        try:
            await run_worker(args.redis, session, options, sink=sink)
        finally:
            await sink.close()  # what is still buffered goes out before we exit

    run_loop(main())
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.runtime import redis_connection, run_loop

    async def main() -> dict[str, Any]:
        from bitmusa_plugin._scale.worker import status

        async with redis_connection(args.redis) as client:
            return await status(client, args.group)

    report = run_loop(main())
    print(f"{len(report['workers'])} worker(s)")
    for ident, age in sorted(report["workers"].items()):
        held = [a for a, info in report["accounts"].items() if info["worker"] == ident]
        print(f"  {ident}  heartbeat {age:.1f} s ago  {len(held)} account(s)")
    print(f"{len(report['accounts'])} account(s)")
    for label, info in report["accounts"].items():
        age = info["last_event_age"]
        last = "never" if age is None else f"{age:.1f} s ago"
        state = info["state"] or "-"
        print(f"  {label:<24} {info['worker'] or '(unowned)':<32} {state:<12} last event {last}")
        if info["reason"] and state != "connected":  # failed, or retrying: why, one line
            where = f" (on {info['state_by']})" if info["state_by"] != info["worker"] else ""
            print(f"    {state}{where}: {info['reason']}")
    return EXIT_OK
