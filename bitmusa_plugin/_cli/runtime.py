"""What a running command shares: the event loop, plugin loading, Redis, and standard
streams that are closed (``| head``, ``>&-``).

Imported by a command's ``run`` and by ``main``; nothing heavy at module level either
(asyncio, redis, the engine and the outputs are imported where they are used), since
``main`` imports it before it knows whether a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from bitmusa_plugin import __version__
from bitmusa_plugin._cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    PROG,
    CommandError,
    one_line,
)

if TYPE_CHECKING:
    import asyncio

    from bitmusa_plugin._engine.plugins import PluginRegistry

T = TypeVar("T")
log = logging.getLogger("bitmusa_plugin")

#: How long a Redis connection attempt, or a reply, may take before we say so, seconds;
#: the environment's ``BITMUSA_REDIS_TIMEOUT`` replaces it (a slow link, a loaded host).
REDIS_TIMEOUT = 2.0


def redis_timeout() -> float:
    """:data:`REDIS_TIMEOUT`, or ``BITMUSA_REDIS_TIMEOUT`` when it is set."""
    text = os.environ.get("BITMUSA_REDIS_TIMEOUT", "").strip()
    if not text:
        return REDIS_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:  # nan fails too
        raise CommandError(
            f"BITMUSA_REDIS_TIMEOUT={text[:32]!r} is not a number of seconds (0 to 3600)",
            "set it to seconds, such as BITMUSA_REDIS_TIMEOUT=5, or unset it for 2",
        )
    return value


# -- Redis --------------------------------------------------------------------------------


def needs_redis() -> CommandError:
    return CommandError(
        "this needs the redis package, which is not installed",
        "pip install 'bitmusa-plugin[redis]'",
    )


def redis_error(shown: str, exc: BaseException, timeout: float = REDIS_TIMEOUT) -> CommandError:
    """What a failure of redis-py means for the user. redis-py wraps the cause (the OS's
    error, the server's answer) in a ConnectionError: the chain says which it was."""
    from redis import exceptions

    chain = _chain(exc)
    if any(isinstance(e, exceptions.AuthenticationError) for e in chain):
        return CommandError(
            f"Redis at {shown} refused the credentials",
            "put the right user and password in the --redis URL",
        )
    if any(isinstance(e, (exceptions.TimeoutError, TimeoutError)) for e in chain):
        return CommandError(
            f"Redis at {shown} did not answer within {timeout:g} s",
            "check that Redis runs there and that this machine may reach it",
            EXIT_UNAVAILABLE,
        )
    refused = next((e for e in chain if isinstance(e, exceptions.ResponseError)), None)
    if refused is not None:  # the server answered no: a database number, a user's rights
        return CommandError(
            f"Redis at {shown} refused: {refused}",
            "check the database number in --redis and the user's rights",
        )
    if isinstance(exc, exceptions.ConnectionError):
        reason = _os_reason(chain) or str(exc).rstrip(".")
        return CommandError(
            f"cannot reach Redis at {shown}: {reason.lower()}",
            "start Redis there, or give --redis the URL of one that runs",
            EXIT_UNAVAILABLE,
        )
    return CommandError(
        f"Redis at {shown} failed: {exc}",
        "check the server (redis-cli PING) and the --redis URL",
        EXIT_UNAVAILABLE,
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _os_reason(chain: list[BaseException]) -> str | None:
    """The OS's words for the failure under a wrapped exception (``Connection refused``)."""
    for seen in chain:
        if isinstance(seen, OSError) and seen.errno is not None and seen.errno > 0:
            return os.strerror(seen.errno)  # asyncio puts its own words in strerror
        if isinstance(seen, OSError) and seen.strerror:  # a resolver error: errno < 0
            return seen.strerror
    return None


@contextlib.asynccontextmanager
async def redis_connection(url: str) -> AsyncIterator[Any]:
    """A client for ``url`` that answered PING, closed on the way out. Every Redis failure
    inside the block (connecting, or a command) becomes a :class:`CommandError`."""
    import asyncio

    from bitmusa_plugin._engine.secrets import REDACTOR

    REDACTOR.add(urlsplit(url).password)  # never in a log line or an error
    try:
        import redis.asyncio  # noqa: F401 - the extra is installed, or we say so
        from redis import exceptions

        from bitmusa_plugin._scale import connect
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "redis":
            raise
        raise needs_redis() from None
    shown = connect.shown(url)
    timeout = redis_timeout()
    try:
        client = connect.client(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        raise CommandError(f"{shown!r} is not a usable Redis URL ({exc})", "fix --redis") from None
    try:
        await _interruptible(client.ping())
        yield client
    except exceptions.RedisError as exc:
        if _interrupted():  # Ctrl-C came first: its cancellation was lost on the way
            raise asyncio.CancelledError from None
        found = await connect.diagnose(url, exc)
        if found is not None:
            what, yours = found
            if yours:
                raise CommandError(
                    what, "fix the service name in --redis (the name in `sentinel monitor`)"
                ) from None
            raise CommandError(
                what,
                "start the sentinels (and a primary they monitor), or give --redis the "
                "sentinels that run",
                EXIT_UNAVAILABLE,
            ) from None
        raise redis_error(shown, exc, timeout) from None
    finally:
        with contextlib.suppress(Exception):  # closing a connection that never opened
            await client.aclose()


async def _interruptible(call: Coroutine[Any, Any, T]) -> T:
    """``await call``, where Ctrl-C ends the wait at once. On Python 3.11, ``asyncio.wait_for``
    (which redis-py wraps each write in) drops a cancellation that comes as the write ends
    (cpython#86296): the command then waited for its timeout and said Redis did not answer.
    ``asyncio.wait`` is cancelled by itself, whatever the call does with it."""
    import asyncio

    task = asyncio.ensure_future(call)
    try:
        await asyncio.wait([task])
    finally:
        if not task.done():  # interrupted: the call ends as the client closes
            task.cancel()
            task.add_done_callback(_ended)
    return task.result()


def _ended(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # the closing connection's error, of a call nobody awaits now


def _interrupted() -> bool:
    """Is this task being cancelled (asyncio.run's answer to Ctrl-C), though what it
    awaited returned or raised something else?"""
    import asyncio

    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is not None and cancelling() > 0


async def check_redis(url: str) -> None:
    """Fail now, with one line, if Redis at ``url`` does not answer: a worker or a sink
    would otherwise start and wait for it without a word."""
    async with redis_connection(url):
        pass


def make_redis_sink(args: argparse.Namespace, plugins: PluginRegistry) -> Any:
    """Register the Redis sink when ``--redis`` is given; bind it to the host once made."""
    if not getattr(args, "redis", None):
        return None
    from bitmusa_plugin._engine.secrets import REDACTOR
    from bitmusa_plugin._scale.sink import RedisSink

    REDACTOR.add(urlsplit(args.redis).password)
    sink = RedisSink(args.redis, stream=args.redis_stream, maxlen=args.redis_maxlen or None)
    plugins.register(
        sink, "redis-sink", distribution="bitmusa-plugin", version=__version__, builtin=True
    )
    return sink


# -- plugins ------------------------------------------------------------------------------


def load_plugins(
    output: str,
    *,
    strict: bool,
    stream: IO[str] | None = None,
    on_closed: OutputClosed | None = None,
) -> PluginRegistry:
    """The plugin registry with the chosen built-in output and every enabled entry point; a
    plugin that fails under ``strict`` is a :class:`CommandError`."""
    from bitmusa_plugin._engine.plugins import PluginLoadError, PluginRegistry
    from bitmusa_plugin._outputs import make_output

    if output in ("pretty", "dashboard"):
        rich_raises_broken_pipe()
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
    try:
        with plugin_errors_unlogged(strict):  # under strict, our one line says it
            host.load_entrypoints()
    except PluginLoadError as exc:
        raise CommandError(
            str(exc), "fix or uninstall it, or drop --strict-plugins (bitmusa-plugin plugins)"
        ) from None
    return host


@contextlib.contextmanager
def plugin_errors_unlogged(unlogged: bool = True) -> Iterator[None]:
    """Within the block, the plugin registry's error records (``plugin x failed to load``)
    are not logged: the caller reports the failure itself (``plugins`` in its listing, a
    ``--strict-plugins`` failure as its one line), and would otherwise say it twice."""
    if not unlogged:
        yield
        return

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    logger = logging.getLogger("bitmusa_plugin._engine.plugins")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def rich_raises_broken_pipe() -> None:
    """Make rich report a closed standard output as ``BrokenPipeError``, as Python does.

    rich's ``Console.on_broken_pipe`` (since rich 13.x) raises ``SystemExit(1)`` instead,
    which the pretty and dashboard outputs do not catch (they catch BrokenPipeError): their
    hook failed with a logged traceback at every ``listen | head``, and ``plugins | head``
    exited 1. Until the outputs handle it themselves, this command's process, which owns
    its standard output, restores the plain error. Older rich raises it already."""
    from rich.console import Console

    def on_broken_pipe(self: Console) -> None:
        self.quiet = True  # nothing more is written, as rich's own version does
        raise BrokenPipeError(errno.EPIPE, "standard output is closed")

    if hasattr(Console, "on_broken_pipe"):
        setattr(Console, "on_broken_pipe", on_broken_pipe)  # noqa: B010 (mypy: a method)


def report_failures(failed: dict[str, str]) -> int:
    """One line per account that failed for good; the exit status."""
    from bitmusa_plugin._engine.secrets import redact

    for account, reason in failed.items():
        print(redact(one_line(f"{PROG}: account {account!r} failed: {reason}")), file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# -- the event loop -----------------------------------------------------------------------


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run the command's coroutine on asyncio's loop, or on uvloop with
    ``BITMUSA_LOOP=uvloop`` (when it is installed). Not the default: measured end to end
    with runs interleaved, it changed throughput by +4 % and p99 latency by +11 %, within
    this machine's noise (docs/benchmarks.md)."""
    import asyncio

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


@contextlib.contextmanager
def interrupt_at_once() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt wherever the main thread is.

    ``asyncio.run`` answers the first Ctrl-C by cancelling its main task, which takes
    effect at the task's next ``await``: a task blocked reading a terminal or a pipe (``replay
    -``) never gets there, and the command ignored Ctrl-C until it was pressed twice. Use
    it inside the running loop (asyncio's own handler is back once the block ends)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cancelled_by_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is asyncio's main task cancelled by Ctrl-C, escaping ``asyncio.run``.

    asyncio.run turns that cancellation into KeyboardInterrupt, unless Ctrl-C lands between
    its installing its SIGINT handler and resetting its count of them (CPython 3.11's
    ``Runner.run``): the CancelledError then escapes. No command cancels its main task
    itself, so at the top it means Ctrl-C."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


# -- standard streams ---------------------------------------------------------------------


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
        import asyncio

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


def stdout_is_closed() -> bool:
    """Whether standard output is a pipe or socket nobody reads any more. A
    ``BrokenPipeError`` from elsewhere (a socket of ours) must not pass for ``| head``
    ending the command quietly."""
    import select

    try:
        poller = select.poll()
    except AttributeError:  # pragma: no cover - no poll (Windows): trust the error
        return True
    try:
        poller.register(1, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return True
    return any(mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, mask in events)


def ensure_std_streams() -> None:
    """Give a closed standard stream (``2>&-``, ``>&-``) a harmless file descriptor.

    Otherwise the next file or socket we open takes its number: the JSON lines would go
    into the ``--record`` file or the Redis connection, or an error message into standard
    output. A closed standard output becomes a pipe nobody reads, so that it ends the
    command as ``| head`` does (quietly, status 0); standard input reads nothing; standard
    error goes to /dev/null."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError as exc:
            if exc.errno != errno.EBADF:
                continue
        if fd == 1:
            read_end, write_end = os.pipe()  # the lowest free numbers: maybe 1 itself
            if write_end != 1:
                os.dup2(write_end, 1)
                os.close(write_end)
            if read_end != 1:
                os.close(read_end)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        else:
            flags = os.O_RDONLY if fd == 0 else os.O_WRONLY
            opened = os.open(os.devnull, flags)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            if fd == 0:
                sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
            else:
                sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115


def setup_logging(verbose: int) -> None:
    """Log records to standard error, secrets masked in every one (``-v`` counts)."""
    from bitmusa_plugin._engine.secrets import install_log_redaction

    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_a_final_failure)


def _not_a_final_failure(record: logging.LogRecord) -> bool:
    """An account that failed for good is said once, by the command's last line
    (:func:`report_failures`), not also by the stream's log record."""
    return getattr(record, "bitmusa_status", None) != "failed"
