"""``bitmusa-plugin demo``: the simulator and a live listener in one process, scripted.

About 20 seconds: a trading session streams in; a TCP reset cuts the connection in the
middle of a frame and the stream reconnects, reporting the gap; a malformed frame is
reported and skipped; the 24-hour rotation (scaled to seconds) hands over to a new
connection with nothing lost or doubled; then everything shuts down cleanly (the listenKey
is DELETEd) and the command exits 0.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from bitmusa_plugin._cli.common import Parser, add_command, add_output_options, positive

if TYPE_CHECKING:
    import asyncio

    from bitmusa_plugin._engine.plugins import PluginRegistry

log = logging.getLogger(__name__)

#: The demo runs 24 simulated hours in about 15 real seconds.
TIME_SCALE = 86400 / 15


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        subparsers,
        "demo",
        run,
        help="a scripted session on the embedded simulator (about 20 s)",
        description="Starts the simulator in this process and listens to it with the "
        "installed plugins; shows a reconnect with its gap report, a bad frame and a "
        "rotation, then exits 0.",
    )
    add_output_options(parser, default_output="pretty")
    parser.set_defaults(account="demo")
    parser.add_argument("--seconds", type=positive, default=20.0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.runtime import OutputClosed, load_plugins, report_failures, run_loop

    closed = OutputClosed()
    plugins = load_plugins(args.output, strict=args.strict_plugins, on_closed=closed)

    async def main() -> dict[str, str]:
        return await run_demo(
            plugins, seconds=args.seconds, account=args.account, stop_on=closed.bind()
        )

    return report_failures(run_loop(main()))


async def run_demo(
    plugins: PluginRegistry,
    *,
    seconds: float = 20.0,
    account: str = "demo",
    stop_on: asyncio.Event | None = None,
) -> dict[str, str]:
    """Run the scripted session; returns the accounts that failed (none, normally)."""
    import asyncio

    from bitmusa_plugin._core import machine as lc
    from bitmusa_plugin._engine.secrets import Credentials
    from bitmusa_plugin._engine.session import Session
    from bitmusa_plugin._engine.stream import AccountConfig, AccountStream, Heartbeat
    from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

    async with Simulator(time_scale=TIME_SCALE, event_interval=0.4, seed=7) as sim:
        config = AccountConfig(
            account, Credentials(DEMO_API_KEY, DEMO_AUTH_KEY), sim.rest_url, sim.ws_url
        )
        timing = lc.Timing(
            keepalive_interval=1800 / TIME_SCALE,
            key_validity=3600 / TIME_SCALE,
            retry_initial=0.5,
            retry_max=2.0,
            stable_after=2.0,
            rotate_after=seconds * 0.45,  # after the reconnect at 30 %: rotates at ~75 %
            rotate_jitter=0.5,
            rotate_retry=1.0,
            rotate_overlap=0.5,
        )

        async def script(streams: list[AccountStream]) -> None:
            await asyncio.sleep(seconds * 0.3)
            log.warning("demo: the simulator resets the connection in the middle of a frame")
            sim.drop(mid_frame=True)
            await asyncio.sleep(seconds * 0.2)
            # on a connection: a frame sent while the stream reconnects (a heartbeat missed
            # on a loaded machine) reaches nobody, and the demo would not show it
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds * 0.2
            while not sim.live() and loop.time() < deadline:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.05)
            log.warning("demo: the simulator sends a malformed frame")
            await sim.garbage(1)
            await asyncio.sleep(seconds * 0.5)

        # the pretty output already shows every state change; the log would repeat it
        logging.getLogger("bitmusa_plugin._engine.stream").setLevel(logging.ERROR)
        async with Session(
            plugins,
            command="demo",
            accounts=[config],
            timing=timing,
            heartbeat=Heartbeat(1.0, 1.0),
        ) as session:
            result = await session.run(until=script, stop_on=stop_on, handle_signals=True)
        return result.failed
