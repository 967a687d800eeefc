"""``bitmusa-plugin replay FILE|-``: recorded frames through the live stream's path."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import IO, TYPE_CHECKING

from bitmusa_plugin._cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    Parser,
    add_command,
    add_output_options,
    file_error,
)

if TYPE_CHECKING:
    from bitmusa_hookspecs import StreamState, StreamStatus
    from bitmusa_plugin._cli.runtime import OutputClosed
    from bitmusa_plugin._engine.plugins import PluginRegistry

log = logging.getLogger("bitmusa_plugin")


def add_parser(subparsers: argparse._SubParsersAction[Parser]) -> None:
    parser = add_command(
        subparsers,
        "replay",
        run,
        help="feed recorded frames through the mapping into the plugins",
        description="Each line of FILE is one raw websocket text frame, exactly as received. "
        "Exit 0 if every frame was accepted, 3 if any was rejected.",
    )
    parser.add_argument("file", metavar="FILE|-", help="frames file, or - for standard input")
    add_output_options(parser, default_output="jsonl")


def run(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.runtime import (
        OutputClosed,
        interrupt_at_once,
        load_plugins,
        run_loop,
    )

    opened: contextlib.AbstractContextManager[IO[str]]
    if args.file == "-":
        # a binary line must be reported as a bad frame, not end the command
        sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
        opened = contextlib.nullcontext(sys.stdin)
    else:
        try:
            opened = open(args.file, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except OSError as exc:
            raise file_error(
                "read", args.file, exc, "give a frames file you can read, or - for standard input"
            ) from None
    with opened as lines:
        closed = OutputClosed()
        plugins = load_plugins(args.output, strict=args.strict_plugins, on_closed=closed)

        async def main() -> int:
            if args.file != "-":
                return await replay(lines, plugins, args.account, closed)
            # The loop blocks reading standard input, where a cancelled task never notices
            # asyncio's first Ctrl-C. Set up here, once the loop is built: a
            # KeyboardInterrupt inside the loop's construction would break the loop.
            with interrupt_at_once():
                log.debug("replay: reading standard input (Ctrl-C stops)")
                return await replay(lines, plugins, args.account, closed)

        return run_loop(main())


async def replay(
    lines: IO[str],
    plugins: PluginRegistry,
    account: str = "default",
    closed: OutputClosed | None = None,
) -> int:
    """Feed each line through the same path the live stream uses; the exit status. Every
    plugin gets every call, whatever its delivery policy: the file is read only as fast as
    the slowest plugin takes it."""
    import asyncio

    from bitmusa_plugin._engine.session import DeliveryOptions, Session

    if closed is not None:
        closed.bind()
    session = Session(plugins, command="replay", delivery=DeliveryOptions(override="all"))
    session.start(replaying=[account])
    session.pipeline.stream_state(_state(account, "connected", "replay"))
    rejected = 0
    # Session.ingest and Session.blocked, looked up once: the loop runs once a frame
    ingest, dispatcher = session.pipeline.ingest, session.pipeline.dispatcher
    for n, line in enumerate(lines):
        if closed is not None and closed.closed:
            break  # nobody reads the output any more
        frame = line.rstrip("\r\n")
        if not frame:
            continue
        if not ingest(account, frame):
            rejected += 1
        if dispatcher.blocked:
            await session.writable()  # a file is read faster than plugins consume it
        elif n % 256 == 0:
            await asyncio.sleep(0)
    session.pipeline.stream_state(_state(account, "closed", "end of replay"))
    await session.drain()
    await session.aclose()
    if closed is not None and closed.closed:
        return EXIT_OK
    if rejected:
        log.warning("replay: %d frame(s) rejected", rejected)
    return EXIT_REJECTED if rejected else EXIT_OK


def _state(account: str, status: StreamStatus, reason: str) -> StreamState:
    return {"account": account, "status": status, "since": None, "until": None, "reason": reason}
