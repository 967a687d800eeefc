"""``bitmusa-plugin simulate``: serve the simulator until SIGINT/SIGTERM, faults on a timer."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Any

from bitmusa_plugin._cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    CommandError,
    Parser,
    add_command,
    port,
    positive,
)

log = logging.getLogger("bitmusa_plugin")

FAULTS = (
    ("drop", "TCP-reset the connections"),
    ("stall", "stall the connections (no data, no pongs) for 60 s"),
    ("garbage", "send a malformed frame"),
    ("refuse", "refuse the next handshake"),
    ("rest-fail", "fail the next REST call (see --rest-fault)"),
    ("expire", "expire the listenKey"),
    ("cut", "cut the connections as at 24 hours"),
)


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        subparsers,
        "simulate",
        run,
        help="serve a Bitmusa-compatible simulator until interrupted",
        description="Prints the URLs and the demo credentials, then serves until SIGINT or "
        "SIGTERM (exit 0). Fault flags inject one fault every N (real) seconds.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="an address of this machine to listen on (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--port", type=port, default=0, help="the port to listen on (default: 0, a free one)"
    )
    parser.add_argument(
        "--time-scale",
        type=positive,
        default=1.0,
        metavar="X",
        help="simulated seconds per real second (default: 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="the trading scenario's seed (default: 1)"
    )
    parser.add_argument(
        "--event-interval",
        type=positive,
        default=1.0,
        metavar="SECONDS",
        help="one trading event this often (default: 1)",
    )
    for fault, text in FAULTS:
        parser.add_argument(f"--{fault}-every", type=positive, metavar="SECONDS", help=text)
    parser.add_argument(
        "--rest-fault",
        choices=("500", "503", "429", "1011", "timeout"),
        default="503",
        help="how --rest-fail-every fails a call (default: 503)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from bitmusa_plugin._cli.runtime import run_loop
    from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

    async def serve() -> None:
        sim = Simulator(
            host=args.host,
            port=args.port,
            time_scale=args.time_scale,
            seed=args.seed,
            event_interval=args.event_interval,
        )
        try:
            await sim.start()
        except OSError as exc:
            await sim.stop()  # what start() set up before the bind failed
            raise bind_error(args.host, args.port, exc) from None
        faults: list[asyncio.Task[None]] = []
        try:
            print(f"REST      {sim.rest_url}")
            print(f"websocket {sim.ws_url}")
            print(f"export BITMUSA_API_KEY={DEMO_API_KEY} BITMUSA_AUTH_KEY={DEMO_AUTH_KEY}")
            print(f"bitmusa-plugin listen --rest-url {sim.rest_url} --ws-url {sim.ws_url}")
            sys.stdout.flush()
            loop = asyncio.get_running_loop()
            for name, action in _fault_actions(sim, args.rest_fault).items():
                every = getattr(args, f"{name.replace('-', '_')}_every")
                if every:
                    faults.append(loop.create_task(_every(every, name, action)))
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            for task in faults:
                task.cancel()
            await sim.stop()

    run_loop(serve())
    return EXIT_OK


def bind_error(host: str, port: int, exc: OSError) -> CommandError:
    """What a failed bind means, and what to do about it."""
    import socket

    where = f"{host}:{port}" if port else host
    if isinstance(exc, socket.gaierror):
        return CommandError(
            f"cannot listen on {host}: the name does not resolve",
            "give --host an IP address of this machine, or a name that resolves to one",
        )
    if exc.errno == errno.EADDRINUSE:
        return CommandError(
            f"cannot listen on {where}: the address is in use",
            "stop what holds it, or choose another --port (0 picks a free one)",
            EXIT_UNAVAILABLE,
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return CommandError(
            f"cannot listen on {host}: not an address of this machine",
            "give --host 127.0.0.1, 0.0.0.0, or an address of one of its interfaces",
        )
    if exc.errno == errno.EACCES:
        return CommandError(
            f"cannot listen on {where}: permission denied",
            "choose a --port above 1023 (0 picks a free one)",
        )
    return CommandError(
        f"cannot listen on {where}: {exc.strerror or exc}",
        "check --host and --port",
        EXIT_UNAVAILABLE,
    )


def _fault_actions(sim: Any, rest_fault: str = "503") -> dict[str, Any]:
    async def drop() -> None:
        sim.drop()

    async def stall() -> None:
        sim.stall(60.0)

    async def garbage() -> None:
        await sim.garbage(1)

    async def refuse() -> None:
        sim.refuse()

    async def rest_fail() -> None:
        sim.fail_rest(rest_fault)

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
    import asyncio

    while True:
        await asyncio.sleep(seconds)
        log.warning("simulator: injecting %s", name)
        await action()
