"""The commands behind ``bitmusa-plugin``: replay, listen, demo, simulate, plugins.

``cli.py`` parses the arguments and imports this module only once it knows a command
runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from typing import IO, Any, TypeVar

from bitmusa_plugin import __version__
from bitmusa_plugin._cli import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from bitmusa_plugin._engine.plugins import PluginRegistry

T = TypeVar("T")
log = logging.getLogger("bitmusa_plugin")


class OutputClosed:
    """Called by a built-in output, from its thread, when standard output is closed (the
    reader of ``| head`` has gone). The command then stops as Unix tools do: quietly, with
    exit status 0, after a clean shutdown (the listenKey DELETEd, the other plugins
    flushed). Standard output is pointed at /dev/null so that nothing later (the
    interpreter's own final flush included) fails on it."""

    def __init__(self) -> None:
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    def bind(self) -> asyncio.Event:
        """Call on the running loop: the event set once the output is closed."""
        self._loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        if self.closed:
            self.event.set()
        return self.event

    def __call__(self) -> None:
        if self.closed:
            return
        self.closed = True
        silence_stdout()
        if self._loop is not None and self.event is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to stop
                self._loop.call_soon_threadsafe(self.event.set)


def silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null (after EPIPE: nobody reads it any more)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def load_plugins(
    output: str,
    *,
    strict: bool,
    stream: IO[str] | None = None,
    on_closed: OutputClosed | None = None,
) -> PluginRegistry:
    """The plugin host with the chosen built-in output and every enabled entry point."""
    from bitmusa_plugin._engine.plugins import PluginRegistry
    from bitmusa_plugin._outputs import make_output

    host = PluginRegistry(strict=strict)
    plugin = make_output(output, stream, on_closed=on_closed)
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


async def replay(
    lines: IO[str],
    plugins: PluginRegistry,
    account: str = "default",
    closed: OutputClosed | None = None,
) -> int:
    """Feed each line through the same path the live stream uses; the exit status. Every
    plugin gets every call, whatever its delivery policy: the file is read only as fast as
    the slowest plugin takes it."""
    from bitmusa_plugin._engine.pipeline import Pipeline

    if closed is not None:
        closed.bind()
    host = Pipeline(plugins, command="replay", policy_override="all")
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
    dispatcher = host.dispatcher
    for n, line in enumerate(lines):
        if closed is not None and closed.closed:
            break  # nobody reads the output any more
        frame = line.rstrip("\r\n")
        if not frame:
            continue
        if not host.ingest(account, frame):
            rejected += 1
        if dispatcher.blocked:
            await dispatcher.writable()  # a file is read faster than plugins consume it
        elif n % 256 == 0:
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
    if closed is not None and closed.closed:
        return EXIT_OK
    if rejected:
        log.warning("replay: %d frame(s) rejected", rejected)
    return EXIT_REJECTED if rejected else EXIT_OK


def plugins_command(args: argparse.Namespace) -> int:
    from bitmusa_plugin._engine.plugins import PluginRegistry

    host = PluginRegistry()
    host.load_entrypoints()
    records = [r.as_dict() for r in host.records]
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from rich.console import Console
        from rich.table import Table

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
        return EXIT_USAGE
    return EXIT_OK


def listen_command(
    args: argparse.Namespace, plugins: PluginRegistry, closed: OutputClosed | None = None
) -> int:
    from dataclasses import replace

    from bitmusa_plugin._core import machine as lc
    from bitmusa_plugin._engine.config import (
        ConfigError,
        account_from_env,
        load_config,
        run_accounts,
    )
    from bitmusa_plugin._engine.pipeline import Pipeline
    from bitmusa_plugin._engine.rest import RateLimiter
    from bitmusa_plugin._engine.secrets import CredentialsError

    try:
        if args.config is not None:
            accounts = load_config(
                args.config, rest_url=args.rest_url, ws_url=args.ws_url, insecure=args.insecure
            )
        else:
            accounts = [
                account_from_env(args.account, args.rest_url, args.ws_url, insecure=args.insecure)
            ]
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
        sink = make_redis_sink(args, plugins)
        host = Pipeline(plugins, command="listen")
        if sink is not None:
            sink.bind(host.report)

        async def main() -> Any:
            try:
                return await run_accounts(
                    accounts,
                    host,
                    timing=timing,
                    keep_listen_key=args.keep_listen_key,
                    resync=not args.no_resync,
                    record=record,
                    limiter=RateLimiter(((args.rest_rate[0], 1.0), (args.rest_rate[1], 60.0))),
                    stop_on=closed.bind() if closed is not None else None,
                )
            finally:
                if sink is not None:
                    await sink.close()  # what is still buffered goes out before we exit

        result = run_loop(main())
    finally:
        if record is not None:
            record.close()
    return _report_failures(result.failed)


def run_replay(
    lines: IO[str], plugins: PluginRegistry, account: str, closed: OutputClosed | None = None
) -> int:
    return run_loop(replay(lines, plugins, account, closed))


def _report_failures(failed: dict[str, str]) -> int:
    for account, reason in failed.items():
        print(f"bitmusa-plugin: account {account!r} failed: {reason}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def demo_command(
    args: argparse.Namespace, plugins: PluginRegistry, closed: OutputClosed | None = None
) -> int:
    from bitmusa_plugin._cli.demo import run_demo

    async def main() -> dict[str, str]:
        stop_on = closed.bind() if closed is not None else None
        return await run_demo(plugins, seconds=args.seconds, account=args.account, stop_on=stop_on)

    failed = run_loop(main())
    return _report_failures(failed)


def simulate_command(args: argparse.Namespace) -> int:
    import signal

    from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY, Simulator

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
        for name, action in _fault_actions(sim, args.rest_fault).items():
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

    run_loop(serve())
    return EXIT_OK


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
    while True:
        await asyncio.sleep(seconds)
        log.warning("simulator: injecting %s", name)
        await action()


def make_redis_sink(args: argparse.Namespace, plugins: PluginRegistry) -> Any:
    """Register the Redis sink when ``--redis`` is given; bind it to the host once made."""
    if not getattr(args, "redis", None):
        return None
    from bitmusa_plugin._engine.secrets import REDACTOR
    from bitmusa_plugin._scale.registry import redis_password
    from bitmusa_plugin._scale.sink import RedisSink

    REDACTOR.add(redis_password(args.redis))
    sink = RedisSink(args.redis, stream=args.redis_stream, maxlen=args.redis_maxlen or None)
    plugins.register(
        sink, "redis-sink", distribution="bitmusa-plugin", version=__version__, builtin=True
    )
    return sink


def worker_command(args: argparse.Namespace, plugins: PluginRegistry) -> int:
    from bitmusa_plugin._engine.pipeline import Pipeline
    from bitmusa_plugin._engine.rest import DEFAULT_REST_URL, RateLimiter
    from bitmusa_plugin._scale.worker import WorkerOptions, run_worker

    sink = make_redis_sink(args, plugins)
    host = Pipeline(plugins, command="worker")
    options = WorkerOptions(
        group=args.group,
        lease_ttl=args.lease_ttl,
        rest_url=args.rest_url or DEFAULT_REST_URL,
        insecure=args.insecure,
        limiter=RateLimiter(((args.rest_rate[0], 1.0), (args.rest_rate[1], 60.0))),
    )

    async def main() -> None:
        try:
            await run_worker(args.redis, host, options, sink=sink)
        finally:
            await sink.close()  # what is still buffered goes out before we exit

    run_loop(main())
    return EXIT_OK


def worker_status_command(args: argparse.Namespace) -> int:
    from bitmusa_plugin._engine.secrets import REDACTOR
    from bitmusa_plugin._scale.registry import redis_password

    REDACTOR.add(redis_password(args.redis))  # never in a log line or an error
    from bitmusa_plugin._scale.worker import status

    async def main() -> dict[str, Any]:
        import redis.asyncio as redis

        client = redis.Redis.from_url(args.redis, socket_connect_timeout=2.0)
        try:
            return await status(client, args.group)
        finally:
            await client.aclose()

    report = run_loop(main())
    print(f"{len(report['workers'])} worker(s)")
    for ident, age in sorted(report["workers"].items()):
        held = [a for a, info in report["accounts"].items() if info["worker"] == ident]
        print(f"  {ident}  heartbeat {age:.1f} s ago  {len(held)} account(s)")
    print(f"{len(report['accounts'])} account(s)")
    for label, info in report["accounts"].items():
        age = info["last_event_age"]
        last = "never" if age is None else f"{age:.1f} s ago"
        print(f"  {label:<24} {info['worker'] or '(unowned)':<32} last event {last}")
    return EXIT_OK


def accounts_command(args: argparse.Namespace) -> int:
    from bitmusa_plugin._engine.secrets import REDACTOR
    from bitmusa_plugin._scale.registry import redis_password

    REDACTOR.add(redis_password(args.redis))  # never in a log line or an error
    from bitmusa_plugin._scale import registry

    async def main() -> int:
        import redis.asyncio as redis

        client = redis.Redis.from_url(args.redis, socket_connect_timeout=2.0)
        try:
            if args.action == "list":
                for label, record in sorted((await registry.load(client, args.group)).items()):
                    refs = (
                        record.credentials_file or f"${record.api_key_env} ${record.auth_key_env}"
                    )
                    print(f"{label}\t{refs}\t{record.rest_url or ''}\t{record.ws_url or ''}")
                return EXIT_OK
            if not args.label:
                print(f"bitmusa-plugin: accounts {args.action} needs a LABEL", file=sys.stderr)
                return EXIT_USAGE
            if args.action == "remove":
                if not await registry.remove(client, args.group, args.label):
                    print(f"bitmusa-plugin: no account {args.label!r}", file=sys.stderr)
                    return EXIT_USAGE
                return EXIT_OK
            try:
                record = registry.AccountRecord(
                    args.label,
                    args.api_key_env,
                    args.auth_key_env,
                    args.credentials_file,
                    args.rest_url,
                    args.ws_url,
                )
            except ValueError as exc:
                print(f"bitmusa-plugin: {exc}", file=sys.stderr)
                return EXIT_USAGE
            await registry.add(client, args.group, record)
            return EXIT_OK
        finally:
            await client.aclose()

    return run_loop(main())


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run the command's coroutine on asyncio's loop, or on uvloop with
    ``BITMUSA_LOOP=uvloop`` (when it is installed). Not the default: measured end to end
    with runs interleaved, it changed throughput by +4 % and p99 latency by +11 %, within
    this machine's noise (docs/benchmarks.md)."""
    choice = os.environ.get("BITMUSA_LOOP", "asyncio")
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("BITMUSA_LOOP=uvloop, but uvloop is not installed: using asyncio")
        else:
            return uvloop.run(main)
    elif choice != "asyncio":
        log.warning("BITMUSA_LOOP=%r is neither asyncio nor uvloop: using asyncio", choice)
    return asyncio.run(main)


def new_plugin_command(args: argparse.Namespace) -> int:
    from bitmusa_plugin._cli.scaffold import create

    try:
        root = create(args.name, args.directory)
    except (ValueError, FileExistsError) as exc:
        print(f"bitmusa-plugin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"created {root}")
    print(f"next: cd {root} && pip install -e '.[test]' && pytest")
    return EXIT_OK
