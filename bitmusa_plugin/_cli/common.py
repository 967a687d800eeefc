"""What every command shares at parse time: the exit statuses, the one-line error, the
parser, the option groups and the checks of their values.

``--help`` imports this module and every command's ``add_parser``: it imports nothing
heavy. What runs a command (the event loop, plugins, Redis, standard output) is in
``runtime``, imported by a command's ``run``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

PROG = "bitmusa-plugin"

# -- exit statuses (docs/cli.md lists them; a test checks the table against these) -------

EXIT_OK = 0
#: Never returned on purpose: an unexpected exception (a bug) prints its traceback.
EXIT_INTERNAL = 1
#: Bad usage, a bad value, an unreadable file, missing credentials, a plugin that failed
#: to load under ``--strict-plugins``: retrying the same command cannot help.
EXIT_USAGE = 2
#: ``replay`` rejected at least one frame (every good frame was still delivered).
EXIT_REJECTED = 3
#: ``listen``/``demo``: an account failed for good (bad key, IP not allowed, no privilege).
EXIT_FAILED = 4
#: Something the command needs is not available now: Redis does not answer, the address
#: is in use. The same command may work later.
EXIT_UNAVAILABLE = 5
#: Interrupted (Ctrl-C) in a command that does not handle SIGINT itself: 128 + SIGINT.
EXIT_INTERRUPTED = 130

#: The engine's defaults, repeated here so that ``--help`` need not import httpx and
#: websockets to show them (tests/test_cli_errors.py checks they agree).
DEFAULT_REST_URL = "https://openapi.bitmusa.com/api/v2"
DEFAULT_WS_URL = "wss://websocket.bitmusa.com:60002"

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """An expected failure. ``main`` prints ``bitmusa-plugin: <what>: <todo>`` as one line
    on standard error and exits with ``status``; never a traceback."""

    def __init__(self, what: str, todo: str, status: int = EXIT_USAGE) -> None:
        super().__init__(what, todo, status)
        self.what = what
        self.todo = todo
        self.status = status

    def line(self) -> str:
        return one_line(f"{PROG}: {self.what}: {self.todo}")


def one_line(text: str) -> str:
    """``text`` on a single line (an exception's message may hold line breaks)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


#: an option that looks like it carries a secret (``--api-key``, ``--secret``, ...)
_SECRET_OPTION = re.compile(r"--?[\w-]*(?:key|secret|passw|token)[\w-]*", re.I)
#: the command line being parsed, for masking what follows such an option in an error
_parsing: list[list[str]] = []


def _secret_values(argv: list[str]) -> list[str]:
    """The values typed after options that look like secrets (none this program takes:
    it reads credentials from the environment or a file)."""
    values = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if eq and _SECRET_OPTION.fullmatch(name) and value:
            values.append(value)
        elif _SECRET_OPTION.fullmatch(arg) and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line that says where to look. A value typed
    after an option that looks like a secret (``--api-key VALUE``: not an option this
    takes) is masked wherever the error repeats it: the user typed it, but the error
    goes to logs."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        # a subcommand's parse and every error (what is left over, too) happen inside
        if _parsing:
            return super().parse_args(args, namespace)
        _parsing.append(list(sys.argv[1:] if args is None else args))
        try:
            return super().parse_args(args, namespace)
        finally:
            _parsing.clear()

    def error(self, message: str) -> NoReturn:
        masked = 0
        for value in _secret_values(_parsing[0] if _parsing else sys.argv[1:]):
            if value and not value.startswith("-") and value in message:
                message = message.replace(value, "***")
                masked += 1
        if masked:
            message += (
                "; credentials come from the environment (BITMUSA_API_KEY and "
                "BITMUSA_AUTH_KEY) or a --config file, never the command line"
            )
        self.exit(EXIT_USAGE, one_line(f"{PROG}: {message}: see '{self.prog} --help'") + "\n")


def add_command(
    subparsers: argparse._SubParsersAction[Parser],
    name: str,
    handler: Handler,
    *,
    help: str,
    description: str | None = None,
) -> Parser:
    """A subcommand that runs ``handler`` and takes ``-v``/``-vv`` after its name too."""
    parser = subparsers.add_parser(
        name, help=help, description=description, parents=[verbosity_options()]
    )
    parser.set_defaults(handler=handler)
    return parser


def verbosity_options() -> Parser:
    """``-v``/``-vv`` for a subcommand. argparse parses a subcommand into a fresh
    namespace and copies it over the parent's, so a shared destination would lose the
    count given before the subcommand: this one counts into ``verbose_after``, and
    :func:`verbosity` adds the two."""
    parent = Parser(add_help=False)
    parent.add_argument(
        "-v",
        "--verbose",
        dest="verbose_after",
        action="count",
        default=0,
        help="log more (-v info, -vv debug), to standard error",
    )
    return parent


def verbosity(args: argparse.Namespace) -> int:
    """How many ``-v`` were given, before and after the subcommand."""
    return int(getattr(args, "verbose", 0)) + int(getattr(args, "verbose_after", 0))


# -- argument types: a bad value is a usage error naming the flag -------------------------


def positive(text: str) -> float:
    """A finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def non_negative(text: str) -> float:
    """A finite number, 0 or above."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or a positive number")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0 to 65535)")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def rest_rate(text: str) -> tuple[int, int]:
    try:
        per_second, per_minute = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PER_S,PER_MIN, got {text!r}") from None
    if per_second < 1 or per_minute < 1:
        raise argparse.ArgumentTypeError("both rates must be at least 1")
    return per_second, per_minute


def shown_url(url: str) -> str:
    """``url`` with any password masked, for messages."""
    from bitmusa_plugin._core.urls import masked

    return masked(url)


def rest_url(text: str) -> str:
    from bitmusa_plugin._core.urls import url_problem

    problem = url_problem(text, "rest")
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def ws_url(text: str) -> str:
    from bitmusa_plugin._core.urls import url_problem

    problem = url_problem(text, "ws")
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def redis_url(text: str) -> str:
    """A Redis URL: redis://, rediss://, unix:// or redis+sentinel:// (``_core/redis_url.py``)."""
    from bitmusa_plugin._core.redis_url import url_problem

    problem = url_problem(text)
    if problem:
        sep = "" if problem.startswith(":") else " "
        raise argparse.ArgumentTypeError(f"{shown_url(text)!r}{sep}{problem}")
    return text


# -- option groups ------------------------------------------------------------------------


def add_output_options(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "--output",
        choices=("jsonl", "pretty", "dashboard", "none"),
        default=default_output,
        help=f"built-in output plugin (default: {default_output})",
    )
    parser.add_argument(
        "--account",
        default="default",
        metavar="NAME",
        help="account label for events (default: %(default)s)",
    )
    parser.add_argument(
        "--strict-plugins",
        action="store_true",
        help="make a plugin that fails to load fatal (exit 2)",
    )


def add_rest_url(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--rest-url",
        metavar="URL",
        type=rest_url,
        default=None,
        help=f"{help} (default: {DEFAULT_REST_URL})",
    )


def add_ws_url(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--ws-url",
        metavar="URL",
        type=ws_url,
        default=None,
        help=f"{help} (default: {DEFAULT_WS_URL})",
    )


def add_insecure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain http/ws to a host other than this machine (credentials would "
        "cross the network unencrypted)",
    )


def add_side_wait(parser: argparse.ArgumentParser) -> None:
    """How long another client's order may wait for its side (``Session(side_wait=...)``)."""
    parser.add_argument(
        "--side-wait",
        metavar="SECONDS",
        type=non_negative,
        default=0.0,  # the engine's own (DEFAULT_SIDE_WAIT): the help must not import it
        help="let an order another client placed wait this long for its side over REST, "
        "the account's other objects flowing on (default: 0, it goes out with side null; "
        "0.25 is well under a second)",
    )


def add_readings(parser: argparse.ArgumentParser) -> None:
    """The API's two open readings (docs/configuration.md, "The API's open readings")."""
    parser.add_argument(
        "--ws-path",
        choices=("documented", "wallet"),
        default=None,
        help="the user stream's path: documented, {ws-url}/ws/future/<listenKey>; or "
        "wallet, {ws-url}/ws/future/wallet/<listenKey> (default: documented)",
    )
    parser.add_argument(
        "--keepalive-prefix",
        choices=("v2", "v1"),
        default=None,
        help="where PUT and DELETE of the listenKey go: v2, the REST base as documented; "
        "or v1, the same under /api/v1 (default: v2)",
    )
    parser.add_argument(
        "--no-fallback",
        action="store_true",
        help="use only the readings given: do not try the other one once when the "
        "configured one answers 404",
    )


def readings(args: argparse.Namespace) -> dict[str, Any]:
    """The readings given on the command line (the accounts file's entries may set their
    own)."""
    chosen: dict[str, Any] = {}
    if args.ws_path is not None:
        chosen["ws_path"] = args.ws_path
    if args.keepalive_prefix is not None:
        chosen["keepalive_prefix"] = args.keepalive_prefix
    if args.no_fallback:
        chosen["fallback"] = False
    return chosen


def add_rest_rate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rest-rate",
        metavar="PER_S,PER_MIN",
        type=rest_rate,
        default=(8, 200),
        help="REST requests allowed, for the whole process (all accounts share them; "
        "requests wait their turn): per second and per minute (default: 8,200, as Bitmusa "
        "documents)",
    )


def add_redis_url(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    parser.add_argument(
        "--redis",
        metavar="URL",
        type=redis_url,
        required=required,
        help=f"{help}: redis://HOST:PORT/DB (rediss:// for TLS), or through Sentinel "
        "redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB (passwords from "
        "BITMUSA_REDIS_PASSWORD, BITMUSA_SENTINEL_PASSWORD)",
    )


def add_redis_sink_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    add_redis_url(parser, required=required, help="write every event to Redis (XADD) at this URL")
    parser.add_argument(
        "--redis-stream",
        metavar="NAME",
        default="bitmusa:events",
        help="the stream's name; {account} in it makes one stream per account "
        "(default: bitmusa:events)",
    )
    parser.add_argument(
        "--redis-maxlen",
        metavar="N",
        type=non_negative_int,
        default=1_000_000,
        help="trim the stream to about N entries (MAXLEN ~; 0: never; default: 1000000)",
    )


# -- files --------------------------------------------------------------------------------


def file_error(action: str, path: object, exc: OSError, todo: str) -> CommandError:
    """``cannot read FILE: No such file or directory: <todo>``."""
    reason = exc.strerror or type(exc).__name__
    return CommandError(f"cannot {action} {path}: {reason}", todo)
