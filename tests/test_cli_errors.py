"""Every expected failure of every command, as a user meets it (in a subprocess): the
documented exit status, exactly one line on standard error that says what failed and what
to do, and never a traceback. Ctrl-C and a closed standard output end quietly."""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bitmusa_plugin._cli import build_parser, main
from bitmusa_plugin._cli.common import (
    DEFAULT_REST_URL,
    DEFAULT_WS_URL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    redis_url,
    rest_url,
    shown_url,
    ws_url,
)
from bitmusa_plugin.testing import RedisSentinels, RedisServer
from conftest import CORPUS, corpus_frames

#: The one line: ``bitmusa-plugin: <what failed>: <what to do>``.
ONE_LINE = re.compile(r"^bitmusa-plugin: \S.*: \S.*$")
CREDENTIALS = (("BITMUSA_API_KEY", "api-key-of-the-tests"), ("BITMUSA_AUTH_KEY", "auth-key-0042"))
BROKEN = (("BITMUSA_LOAD_PLUGINS", "broken_p"), ("PYTHONPATH", "{site}"))
#: ``redis`` not installed: its import fails as it would in a bare ``pip install``
WITHOUT_REDIS = (
    "import sys; sys.modules['redis'] = None; "
    "from bitmusa_plugin._cli import main; sys.exit(main(sys.argv[1:]))"
)


@dataclass(frozen=True)
class Case:
    """``argv`` may name the fixtures' values: {busy} (a port we listen on and never
    answer), {refused} (a port that refuses), {tmp}, {frames}, {site}, {redis} (a real
    redis-server's URL)."""

    argv: tuple[str, ...]
    status: int
    #: the one stderr line must match this; None: nothing at all on stderr
    message: str | None
    env: tuple[tuple[str, str], ...] = ()
    #: "pipe" (read), "closed" (a pipe nobody reads, as after `| head`), "none" (`>&-`)
    stdout: str = "pipe"
    without_redis: bool = False
    needs_redis: bool = False
    needs_sentinel: bool = False


def case(
    *argv: str,
    status: int,
    message: str | None,
    env: tuple[tuple[str, str], ...] = (),
    stdout: str = "pipe",
    without_redis: bool = False,
    needs_redis: bool = False,
    needs_sentinel: bool = False,
) -> Any:
    ident = " ".join(argv).replace("{", "").replace("}", "") or "(no command)"
    if stdout != "pipe":
        ident += f" [stdout {stdout}]"
    if without_redis:
        ident += " [no redis package]"
    return pytest.param(
        Case(argv, status, message, env, stdout, without_redis, needs_redis, needs_sentinel),
        id=ident,
    )


USAGE, UNAVAILABLE = EXIT_USAGE, EXIT_UNAVAILABLE
REFUSED_REDIS = "redis://127.0.0.1:{refused}/0"
SILENT_REDIS = "redis://127.0.0.1:{busy}/0"
CANNOT_REACH = r"cannot reach Redis at redis://127\.0\.0\.1:\d+/0: connection refused: start Redis"
NO_ANSWER = r"Redis at redis://127\.0\.0\.1:\d+/0 did not answer within 2 s: check"
NOT_A_REDIS_URL = r"argument --redis: 'notaurl' is not a Redis URL .*: see 'bitmusa-plugin \w+"
REFUSED_SENTINELS = "redis+sentinel://127.0.0.1:{refused},127.0.0.1:{busy}/bitmusa/0"
NO_SENTINEL = r"no sentinel answers at 127\.0\.0\.1:\d+, 127\.0\.0\.1:\d+: start the sentinels"
UNKNOWN_SERVICE = (
    r"the sentinels at 127\.0\.0\.1:\d+ monitor no service 'nosuch' \(they monitor: "
    r"bitmusa\): fix the service name in --redis"
)

CASES = [
    # -- replay
    case(
        "replay",
        "/nonexistent/frames.txt",
        status=USAGE,
        message=r"cannot read /nonexistent/frames\.txt: No such file or directory: give a",
    ),
    case("replay", "{tmp}", status=USAGE, message=r"cannot read .*: Is a directory: give"),
    case("replay", status=USAGE, message=r"the following arguments are required: FILE\|-: see"),
    case("replay", "{frames}", "--output", "html", status=USAGE, message=r"invalid choice: 'html'"),
    case(
        "replay",
        "{frames}",
        "--strict-plugins",
        env=BROKEN,
        status=USAGE,
        message=r"plugin 'broken_p' failed to load: .*ImportError: broken: fix or uninstall it",
    ),
    case("replay", "{frames}", stdout="closed", status=EXIT_OK, message=None),
    case("replay", "{frames}", "--output", "pretty", stdout="closed", status=EXIT_OK, message=None),
    case("replay", "{frames}", stdout="none", status=EXIT_OK, message=None),
    # -- listen: the command line, the credentials, the URLs, the files, Redis
    case(
        "listen",
        status=USAGE,
        message=r"no credentials: set BITMUSA_API_KEY and BITMUSA_AUTH_KEY in the environment",
    ),
    case(
        "listen",
        env=CREDENTIALS[:1],
        status=USAGE,
        message=r"no credentials: set BITMUSA_AUTH_KEY in the environment",
    ),
    case(
        "listen",
        "--rest-url",
        "htp://127.0.0.1:1/api/v2",
        env=CREDENTIALS,
        status=USAGE,
        message=r"argument --rest-url: 'htp://127\.0\.0\.1:1/api/v2' must start with https:// "
        r"\(or http:// to this machine\): see 'bitmusa-plugin listen --help'",
    ),
    case(
        "listen",
        "--rest-url",
        "127.0.0.1:1/api/v2",
        env=CREDENTIALS,
        status=USAGE,
        message=r"argument --rest-url: '127\.0\.0\.1:1/api/v2' must start with https://",
    ),
    case(
        "listen",
        "--rest-url",
        "ftp://example.com/api/v2",
        env=CREDENTIALS,
        status=USAGE,
        message=r"argument --rest-url: 'ftp://example\.com/api/v2' must start with https://",
    ),
    case(
        "listen",
        "--rest-url",
        "https:///api/v2",
        status=USAGE,
        message=r"argument --rest-url: 'https:///api/v2' has no host",
    ),
    case(
        "listen",
        "--ws-url",
        "https://example.com",
        status=USAGE,
        message=r"argument --ws-url: 'https://example\.com' must start with wss:// \(or ws://",
    ),
    case(
        "listen",
        "--ws-url",
        "ws://example.com:60002",
        env=CREDENTIALS,
        status=USAGE,
        message=r"--ws-url ws://example\.com:60002 is not encrypted and not this machine: use "
        r"https/wss .*--insecure",
    ),
    case(
        "listen",
        "--config",
        "/nonexistent/accounts.toml",
        status=USAGE,
        message=r"cannot read /nonexistent/accounts\.toml: No such file or directory: give",
    ),
    case("listen", "--config", "{tmp}", status=USAGE, message=r"cannot read .*: Is a directory"),
    case(
        "listen",
        "--config",
        "{tmp}/secret.toml",
        status=USAGE,
        message=r"secret\.toml: account 1: put secrets in environment variables .*: see docs",
    ),
    case(
        "listen",
        "--config",
        "{tmp}/broken.toml",
        status=USAGE,
        message=r"broken\.toml: .*line 1.*: see docs/configuration\.md",
    ),
    case(
        "listen",
        "--config",
        "{tmp}/htp.toml",
        env=CREDENTIALS,
        status=USAGE,
        message=r"htp\.toml: account 'main': rest_url 'htp://127\.0\.0\.1:1/api/v2' must start "
        r"with https://.*: fix it in the accounts file",
    ),
    case(
        "listen",
        "--config",
        "{tmp}/typo.toml",
        env=CREDENTIALS,
        status=USAGE,
        message=r"typo\.toml: account 1: unknown key 'rest_ulr' \(did you mean 'rest_url'\?\); "
        r"an entry may hold label, .*: see docs/configuration\.md",
    ),
    case(
        "listen",
        "--config",
        "{tmp}/plain.toml",
        env=CREDENTIALS,
        status=USAGE,
        message=r"plain\.toml: account 'main': ws_url ws://example\.com is not encrypted and "
        r"not this machine",
    ),
    case(
        "listen",
        "--record",
        "/nonexistent/frames.txt",
        env=CREDENTIALS,
        status=USAGE,
        message=r"cannot write /nonexistent/frames\.txt: No such file or directory: give --record",
    ),
    case(
        "listen",
        "--record",
        "{tmp}",
        env=CREDENTIALS,
        status=USAGE,
        message=r"cannot write .*: Is a directory: give --record",
    ),
    case(
        "listen",
        "--keepalive-interval",
        "5000",
        env=CREDENTIALS,
        status=USAGE,
        message=r"--keepalive-interval 5000 leaves no room .* 3600 s validity: use at most \d+",
    ),
    case(
        "listen",
        "--keepalive-interval",
        "-1",
        status=USAGE,
        message=r"argument --keepalive-interval: '-1' must be a positive number",
    ),
    case(
        "listen",
        "--rotate-after",
        "soon",
        status=USAGE,
        message=r"argument --rotate-after: 'soon' is not a number",
    ),
    case("listen", "--rest-rate", "0,200", status=USAGE, message=r"both rates must be at least 1"),
    case("listen", "--redis", "notaurl", status=USAGE, message=NOT_A_REDIS_URL),
    case(
        "listen",
        "--redis",
        "redis://127.0.0.1:port/0",
        status=USAGE,
        message=r"argument --redis: 'redis://127\.0\.0\.1:port/0' has an invalid port",
    ),
    case(
        "listen",
        "--redis",
        "redis://:hunter2hunter2@127.0.0.1/zero",
        status=USAGE,
        message=r"'redis://:\*\*\*@127\.0\.0\.1/zero': the database must be a number",
    ),
    case(
        "listen",
        "--redis",
        REFUSED_REDIS,
        env=CREDENTIALS,
        status=UNAVAILABLE,
        message=CANNOT_REACH,
    ),
    case("listen", "--redis-maxlen", "-5", status=USAGE, message=r"-5 is negative"),
    # -- Sentinel URLs (issue 20)
    case(
        "listen",
        "--redis",
        "redis+sentinel://:hunter2hunter2@127.0.0.1:26379/bitmusa",
        status=USAGE,
        message=r"holds credentials: set BITMUSA_REDIS_USERNAME/BITMUSA_REDIS_PASSWORD",
    ),
    case(
        "listen",
        "--redis",
        "redis+sentinel://127.0.0.1:26379",
        status=USAGE,
        message=r"'redis\+sentinel://127\.0\.0\.1:26379' names no service: add /SERVICE",
    ),
    case(
        "listen",
        "--redis",
        "redis+sentinel://127.0.0.1:26379,:x/bitmusa",
        status=USAGE,
        message=r"has an invalid port in ':x'",
    ),
    case(
        "listen",
        "--redis",
        "rediss+sentinel://h:26379/bitmusa/zero",
        status=USAGE,
        message=r"ends in /SERVICE or /SERVICE/DB, the database a number",
    ),
    case(
        "listen",
        "--redis",
        REFUSED_SENTINELS,
        env=CREDENTIALS,
        status=UNAVAILABLE,
        message=NO_SENTINEL,
    ),
    case("worker", "--redis", REFUSED_SENTINELS, status=UNAVAILABLE, message=NO_SENTINEL),
    case(
        "worker",
        "status",
        "--redis",
        REFUSED_SENTINELS,
        status=UNAVAILABLE,
        message=NO_SENTINEL,
    ),
    case("accounts", "list", "--redis", REFUSED_SENTINELS, status=UNAVAILABLE, message=NO_SENTINEL),
    case(
        "accounts",
        "list",
        "--redis",
        "redis+sentinel://{sentinel}/nosuch",
        needs_sentinel=True,
        status=USAGE,
        message=UNKNOWN_SERVICE,
    ),
    case(
        "worker",
        "--redis",
        "redis+sentinel://{sentinel}/nosuch",
        needs_sentinel=True,
        status=USAGE,
        message=UNKNOWN_SERVICE,
    ),
    case(
        "accounts",
        "list",
        "--redis",
        "redis+sentinel://{sentinel}/bitmusa/0",
        needs_sentinel=True,
        status=EXIT_OK,
        message=None,
    ),
    case(
        "worker",
        "status",
        "--redis",
        "redis+sentinel://{sentinel}/bitmusa",
        stdout="closed",
        needs_sentinel=True,
        status=EXIT_OK,
        message=None,
    ),
    case(
        "listen",
        "--redis",
        REFUSED_REDIS,
        env=CREDENTIALS,
        without_redis=True,
        status=USAGE,
        message=r"this needs the redis package, which is not installed: pip install",
    ),
    case("listen", "--color", status=USAGE, message=r"unrecognized arguments: --color: see"),
    # -- demo
    case("demo", "--output", "html", status=USAGE, message=r"invalid choice: 'html'"),
    case(
        "demo",
        "--strict-plugins",
        env=BROKEN,
        status=USAGE,
        message=r"plugin 'broken_p' failed to load: .*: fix or uninstall it",
    ),
    case("demo", "--output", "jsonl", stdout="closed", status=EXIT_OK, message=None),
    # -- simulate
    case(
        "simulate",
        "--port",
        "{busy}",
        status=UNAVAILABLE,
        message=r"cannot listen on 127\.0\.0\.1:\d+: the address is in use: stop what holds it, "
        r"or choose another --port",
    ),
    case(
        "simulate",
        "--port",
        "99999",
        status=USAGE,
        message=r"argument --port: 99999 is not a port number \(0 to 65535\): see 'bitmusa-plugin "
        r"simulate --help'",
    ),
    case("simulate", "--port", "-1", status=USAGE, message=r"-1 is not a port number"),
    case("simulate", "--port", "http", status=USAGE, message=r"'http' is not a port number"),
    case(
        "simulate",
        "--host",
        "192.0.2.1",  # TEST-NET-1: never an address of this machine
        status=USAGE,
        message=r"cannot listen on 192\.0\.2\.1: not an address of this machine: give --host",
    ),
    case("simulate", "--time-scale", "0", status=USAGE, message=r"'0' must be a positive number"),
    case("simulate", "--drop-every", "nan", status=USAGE, message=r"'nan' must be a positive"),
    case("simulate", stdout="closed", status=EXIT_OK, message=None),
    # -- plugins
    case(
        "plugins",
        "--strict-plugins",
        env=BROKEN,
        status=USAGE,
        message=r"1 plugin\(s\) failed to load \(broken_p\): the listing says why",
    ),
    case("plugins", stdout="closed", env=BROKEN, status=EXIT_OK, message=None),
    case("plugins", "--json", stdout="closed", status=EXIT_OK, message=None),
    case("plugins", stdout="none", status=EXIT_OK, message=None),
    # -- new-plugin
    case(
        "new-plugin",
        "My Plugin",
        "--directory",
        "{tmp}",
        status=USAGE,
        message=r"invalid plugin name 'My Plugin': use lowercase letters",
    ),
    case(
        "new-plugin",
        "taken",
        "--directory",
        "{tmp}",
        status=USAGE,
        message=r"cannot create .*/taken: it already exists: choose another name or --directory",
    ),
    case(
        "new-plugin",
        "fine",
        "--directory",
        "{tmp}/secret.toml",
        status=USAGE,
        message=r"cannot create .*secret\.toml/fine: .*: give --directory a directory you can",
    ),
    case(
        "new-plugin",
        "pytest",
        "--directory",
        "{tmp}",
        status=USAGE,
        message=r"invalid plugin name 'pytest': its module 'pytest' is installed already, .*: "
        r"choose another name, like bitmusa-pytest-plugin",
    ),
    case(
        "new-plugin",
        "bitmusa-plugin",
        "--directory",
        "{tmp}",
        status=USAGE,
        message=r"invalid plugin name 'bitmusa-plugin': its module 'bitmusa_plugin' is installed",
    ),
    case("new-plugin", "quiet", "--directory", "{tmp}", stdout="closed", status=0, message=None),
    # -- worker
    case("worker", status=USAGE, message=r"the following arguments are required: --redis: see"),
    case("worker", "--redis", "notaurl", status=USAGE, message=NOT_A_REDIS_URL),
    case("worker", "--redis", REFUSED_REDIS, status=UNAVAILABLE, message=CANNOT_REACH),
    case("worker", "--redis", SILENT_REDIS, status=UNAVAILABLE, message=NO_ANSWER),
    case(
        "worker",
        "--redis",
        REFUSED_REDIS,
        "--rest-url",
        "htp://x",
        status=USAGE,
        message=r"argument --rest-url: 'htp://x' must start with https://",
    ),
    case(
        "worker",
        "--redis",
        REFUSED_REDIS,
        "--lease-ttl",
        "0",
        status=USAGE,
        message=r"argument --lease-ttl: '0' must be a positive number",
    ),
    case(
        "worker",
        "--redis",
        REFUSED_REDIS,
        without_redis=True,
        status=USAGE,
        message=r"this needs the redis package, which is not installed: pip install",
    ),
    case("worker", "status", "--redis", REFUSED_REDIS, status=UNAVAILABLE, message=CANNOT_REACH),
    case(
        "worker",
        "status",
        "--redis",
        "{redis}",
        stdout="closed",
        needs_redis=True,
        status=EXIT_OK,
        message=None,
    ),
    # -- accounts
    case("accounts", "list", "--redis", REFUSED_REDIS, status=UNAVAILABLE, message=CANNOT_REACH),
    case("accounts", "list", "--redis", SILENT_REDIS, status=UNAVAILABLE, message=NO_ANSWER),
    case(
        "accounts",
        "list",
        "--redis",
        SILENT_REDIS,
        env=(("BITMUSA_REDIS_TIMEOUT", "0.5"),),
        status=UNAVAILABLE,
        message=r"Redis at redis://127\.0\.0\.1:\d+/0 did not answer within 0\.5 s: check",
    ),
    case(
        "accounts",
        "list",
        "--redis",
        SILENT_REDIS,
        env=(("BITMUSA_REDIS_TIMEOUT", "soon"),),
        status=USAGE,
        message=r"BITMUSA_REDIS_TIMEOUT='soon' is not a number of seconds \(0 to 3600\): set",
    ),
    case("accounts", "list", "--redis", "notaurl", status=USAGE, message=NOT_A_REDIS_URL),
    case(
        "accounts",
        "list",
        "--redis",
        "unix://",
        status=USAGE,
        message=r"'unix://' names no socket path",
    ),
    case(
        "accounts",
        "add",
        "--redis",
        REFUSED_REDIS,  # the command line is checked before Redis is asked anything
        status=USAGE,
        message=r"accounts add needs a LABEL: give the account's label after 'add'",
    ),
    case(
        "accounts",
        "add",
        "main",
        "--redis",
        REFUSED_REDIS,
        "--api-key-env",
        "MAIN_API_KEY",
        status=USAGE,
        message=r"cannot add account 'main': give either both environment-variable names or a "
        r"credentials file",
    ),
    case(
        "accounts",
        "add",
        "main",
        "--redis",
        REFUSED_REDIS,
        "--credentials-file",
        "/etc/bitmusa/main.toml",
        "--ws-url",
        "https://example.com",
        status=USAGE,
        message=r"argument --ws-url: 'https://example\.com' must start with wss://",
    ),
    case(
        "accounts",
        "remove",
        "nobody",
        "--redis",
        "{redis}",
        needs_redis=True,
        status=USAGE,
        message=r"no account 'nobody' in group 'default': see bitmusa-plugin accounts list",
    ),
    case(
        "accounts",
        "list",
        "--redis",
        "{redis}99",  # database 99 of a server that has 16
        needs_redis=True,
        status=USAGE,
        message=r"Redis at redis://127\.0\.0\.1:\d+/099 refused: DB index is out of range: check",
    ),
    case(
        "accounts",
        "list",
        "--redis",
        "{redis_wrong_password}",
        needs_redis=True,
        status=USAGE,
        message=r"Redis at redis://alice:\*\*\*@127\.0\.0\.1:\d+/0 refused the credentials: put",
    ),
    case(
        "accounts",
        "list",
        "--redis",
        "{redis}",
        stdout="closed",
        needs_redis=True,
        status=EXIT_OK,
        message=None,
    ),
    case(
        "accounts",
        "list",
        "--redis",
        REFUSED_REDIS,
        without_redis=True,
        status=USAGE,
        message=r"this needs the redis package, which is not installed: pip install",
    ),
    # -- the top level
    case(status=USAGE, message=r"the following arguments are required: COMMAND: see"),
    case("lisen", status=USAGE, message=r"argument COMMAND: invalid choice: 'lisen'"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli-errors")
    files = {
        "secret.toml": "[[accounts]]\nlabel = 'x'\napi_key = 'abc'\n",
        "broken.toml": "[[accounts]\n",
        "htp.toml": "[[accounts]]\nlabel = 'main'\napi_key_env = 'BITMUSA_API_KEY'\n"
        "auth_key_env = 'BITMUSA_AUTH_KEY'\nrest_url = 'htp://127.0.0.1:1/api/v2'\n",
        "typo.toml": "[[accounts]]\nlabel = 'main'\napi_key_env = 'BITMUSA_API_KEY'\n"
        "auth_key_env = 'BITMUSA_AUTH_KEY'\nrest_ulr = 'http://127.0.0.1:1/api/v2'\n",
        "plain.toml": "[[accounts]]\nlabel = 'main'\napi_key_env = 'BITMUSA_API_KEY'\n"
        "auth_key_env = 'BITMUSA_AUTH_KEY'\nws_url = 'ws://example.com'\n",
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
        (tmp / name).chmod(0o600)  # else a warning is logged: a second line
    (tmp / "taken").mkdir()
    # frames that map without a warning (the corpus has an unknown ticker on purpose)
    quiet = [frame for frame in corpus_frames() if "SOLBTC" not in frame]
    (tmp / "frames.txt").write_text("\n".join(quiet * 20) + "\n")
    # an installed plugin that fails to import, for --strict-plugins
    site = tmp / "site"
    info = site / "broken_dist-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-dist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bitmusa]\nbroken_p = broken_p\n")
    (site / "broken_p.py").write_text("raise ImportError('broken')\n")
    return tmp


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, int]]:
    """``busy``: we listen and never answer (the kernel accepts the connection, a Redis
    client then waits for its PING reply). ``refused``: bound but not listening, so a
    connection is refused, and nothing else can take the port meanwhile."""
    with socket.socket() as busy, socket.socket() as refused:
        busy.bind(("127.0.0.1", 0))
        busy.listen(64)
        refused.bind(("127.0.0.1", 0))
        yield {"busy": busy.getsockname()[1], "refused": refused.getsockname()[1]}


@pytest.fixture(scope="module")
def redis_url_of_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    import redis

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        with redis.Redis.from_url(server.url) as client:  # a user whose password we know
            client.execute_command("ACL", "SETUSER", "alice", "on", ">right-pw", "+@all")
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sentinel_of_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sentinel monitoring a primary as ``bitmusa``: its HOST:PORT."""
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    group = RedisSentinels(tmp_path_factory.mktemp("sentinel"), replicas=0, sentinels=1)
    group.start()
    try:
        yield f"127.0.0.1:{group.sentinel_ports[0]}"
    finally:
        group.stop()


def run(command: Case, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [arg.format(**values) for arg in command.argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITMUSA_")}
    env["BITMUSA_LOAD_PLUGINS"] = ""
    env.update({k: v.format(**values) for k, v in command.env})
    if command.without_redis:
        args = [sys.executable, "-c", WITHOUT_REDIS, *argv]
    else:
        args = [sys.executable, "-m", "bitmusa_plugin", *argv]
    if command.stdout == "none":  # the shell's `>&-`: no file descriptor 1 at all
        args = ["bash", "-c", 'exec "$@" >&-', "bash", *args]
    if command.stdout != "closed":
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as `| head -0`
    try:
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("command", CASES)
def test_an_expected_failure_is_one_line_and_its_status(
    command: Case,
    workspace: Path,
    ports: dict[str, int],
    request: pytest.FixtureRequest,
) -> None:
    values = {
        "tmp": str(workspace),
        "site": str(workspace / "site"),
        "frames": str(workspace / "frames.txt"),
        "busy": str(ports["busy"]),
        "refused": str(ports["refused"]),
    }
    if command.needs_redis:
        url = request.getfixturevalue("redis_url_of_tests")
        values["redis"] = url
        values["redis_wrong_password"] = url.replace("redis://", "redis://alice:wrong-pw@")
    if command.needs_sentinel:
        values["sentinel"] = request.getfixturevalue("sentinel_of_tests")
    result = run(command, values)
    out = result.stdout or ""
    assert "Traceback" not in result.stderr + out, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if command.message is None:
        assert lines == [], result.stderr
    else:
        assert len(lines) == 1, result.stderr
        assert ONE_LINE.match(lines[0]), lines[0]
        assert re.search(command.message, lines[0]), lines[0]
    assert result.returncode == command.status, result.stderr


def test_a_password_never_reaches_standard_error(ports: dict[str, int]) -> None:
    url = f"redis://user:hunter2-hunter2@127.0.0.1:{ports['refused']}/0"
    result = run(Case(("accounts", "list", "--redis", url), 0, None), {})
    assert result.returncode == EXIT_UNAVAILABLE
    assert "hunter2" not in result.stderr
    assert "redis://user:***@127.0.0.1" in result.stderr


def test_no_standard_error_still_gives_the_status_and_a_clean_output() -> None:
    """``2>&-``: the message cannot be shown, but it must not land in standard output."""
    shell = ["bash", "-c", 'exec "$@" 2>&-', "bash"]
    result = subprocess.run(
        [*shell, sys.executable, "-m", "bitmusa_plugin", "replay", "/nonexistent/frames.txt"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""


# -- Ctrl-C ---------------------------------------------------------------------------------


#: ``python -m bitmusa_plugin`` with SIGINT at its default, as a terminal's foreground
#: command has it: a shell without job control starts background jobs (a CI step run with
#: ``&``) with SIGINT ignored, the child inherits that, and Python then installs no handler
AT_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'bitmusa_plugin', *sys.argv[1:]])",
]


def _interrupt(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err.decode()


def test_ctrl_c_while_replay_reads_a_terminal_ends_it_at_once_with_130() -> None:
    """asyncio.run only cancels its task at the first Ctrl-C; a task blocked reading
    standard input never noticed, and it took a second Ctrl-C."""
    env = {**os.environ, "BITMUSA_LOAD_PLUGINS": ""}
    proc = subprocess.Popen(
        [*AT_A_TERMINAL, "replay", "-", "-vv"],
        stdin=subprocess.PIPE,  # held open: the read blocks, as on a terminal
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    assert proc.stdin is not None
    while b"replay: reading standard input" not in proc.stderr.readline():  # -vv: ready
        pass
    try:
        code, err = _interrupt(proc)
    finally:
        proc.stdin.close()
    assert code == EXIT_INTERRUPTED
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert not [line for line in err.splitlines() if line.startswith("bitmusa-plugin")]


@pytest.mark.parametrize("command", [["accounts", "list"], ["worker", "status"]])
def test_ctrl_c_while_waiting_for_redis_is_130_and_quiet(command: list[str]) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(30)
        url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        proc = subprocess.Popen(
            [*AT_A_TERMINAL, *command, "--redis", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # the PING waits far longer than the interrupt can take to come, however
            # loaded the machine: at the 2 s default it once timed out first (exit 5)
            env={**os.environ, "BITMUSA_LOAD_PLUGINS": "", "BITMUSA_REDIS_TIMEOUT": "120"},
        )
        connection, _ = server.accept()
        with connection:
            connection.settimeout(30)
            assert connection.recv(64)  # its PING: it waits for the reply now
            code, err = _interrupt(proc)
    assert code == EXIT_INTERRUPTED
    assert err == ""


# -- -v/-vv on either side of the command ---------------------------------------------------

#: The least each command needs to parse.
MINIMAL = {
    "replay": ["replay", "-"],
    "listen": ["listen"],
    "demo": ["demo"],
    "simulate": ["simulate"],
    "plugins": ["plugins"],
    "new-plugin": ["new-plugin", "x"],
    "worker": ["worker", "--redis", "redis://127.0.0.1/0"],
    "accounts": ["accounts", "list", "--redis", "redis://127.0.0.1/0"],
}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_covered_here() -> None:
    assert set(MINIMAL) == set(subcommands())


@pytest.mark.parametrize("name", sorted(MINIMAL))
@pytest.mark.parametrize(
    ("before", "after", "count"),
    [([], ["-v"], 1), ([], ["-vv"], 2), (["-v"], [], 1), (["-vv"], [], 2), (["-v"], ["-v"], 2)],
)
def test_v_counts_before_and_after_the_command(
    name: str, before: list[str], after: list[str], count: int
) -> None:
    from bitmusa_plugin._cli.common import verbosity

    args = build_parser().parse_args([*before, *MINIMAL[name], *after])
    assert verbosity(args) == count
    assert args.handler.__module__ == f"bitmusa_plugin._cli.{name.replace('-', '_')}"


def test_vv_after_the_command_logs_debug() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bitmusa_plugin", "replay", str(CORPUS / "frames.txt"), "-vv"],
        capture_output=True,
        text=True,
        env={**os.environ, "BITMUSA_LOAD_PLUGINS": ""},
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert " DEBUG asyncio: Using selector" in result.stderr


# -- the pieces ----------------------------------------------------------------------------


def test_the_help_shows_the_engines_defaults() -> None:
    from bitmusa_plugin._engine import rest, stream

    assert rest.DEFAULT_REST_URL == DEFAULT_REST_URL
    assert stream.DEFAULT_WS_URL == DEFAULT_WS_URL


def test_no_command_imports_anything_heavy_for_its_help() -> None:
    check = (
        "import sys\n"
        "from bitmusa_plugin._cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.format_help()\n"
        "action = next(a for a in parser._actions if hasattr(a, 'choices') and "
        "isinstance(a.choices, dict))\n"
        "for sub in action.choices.values():\n"
        "    sub.format_help()\n"
        "heavy = ['asyncio', 'httpx', 'websockets', 'rich', 'ccxt', 'redis', 'aiohttp']\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("url", "check", "problem"),
    [
        ("https://openapi.bitmusa.com/api/v2", rest_url, None),
        ("http://127.0.0.1:8000/api/v2", rest_url, None),
        ("HTTPS://openapi.bitmusa.com/api/v2", rest_url, None),
        ("htp://127.0.0.1/api/v2", rest_url, "must start with https://"),
        ("openapi.bitmusa.com/api/v2", rest_url, "must start with https://"),
        ("localhost:8000", rest_url, "must start with https://"),
        ("https:openapi.bitmusa.com", rest_url, "must start with https://"),
        ("https://", rest_url, "has no host"),
        ("https://h:99999/", rest_url, "has an invalid port"),
        ("wss://websocket.bitmusa.com:60002", ws_url, None),
        ("ws://[::1]:8000", ws_url, None),
        ("https://websocket.bitmusa.com", ws_url, "must start with wss://"),
        ("redis://127.0.0.1:6379/0", redis_url, None),
        ("rediss://user:pw@redis.example:6380", redis_url, None),
        ("unix:///run/redis.sock?db=2", redis_url, None),
        ("http://127.0.0.1:6379", redis_url, "is not a Redis URL"),
        ("redis://h/x", redis_url, "the database must be a number"),
        ("redis+sentinel://a:26379,b:26380/svc/2", redis_url, None),
        ("rediss+sentinel://[::1]:26379/svc", redis_url, None),
        ("redis+sentinel://a/svc", redis_url, None),
        ("redis+sentinel://a:1/svc?password=x", redis_url, "takes no query"),
        ("redis+sentinel://a:1,/svc", redis_url, "names no sentinel"),
        ("redis+sentinel://a:1/svc/0/x", redis_url, "ends in /SERVICE or /SERVICE/DB"),
    ],
)
def test_url_checks(url: str, check: Any, problem: str | None) -> None:
    if problem is None:
        assert check(url) == url
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(problem)):
            check(url)


def test_a_shown_url_masks_its_password() -> None:
    assert shown_url("redis://:pw-1@h:1/0") == "redis://:***@h:1/0"
    assert shown_url("rediss://u:p@w@h/0") == "rediss://u:***@h/0"
    assert shown_url("redis://h:1/0") == "redis://h:1/0"


@pytest.mark.parametrize(
    ("exc", "status", "says"),
    [
        (OSError(errno.EADDRINUSE, "in use"), EXIT_UNAVAILABLE, "the address is in use"),
        (OSError(errno.EADDRNOTAVAIL, "no"), EXIT_USAGE, "not an address of this machine"),
        (OSError(errno.EACCES, "denied"), EXIT_USAGE, "permission denied"),
        (socket.gaierror(-2, "Name or service not known"), EXIT_USAGE, "does not resolve"),
        (OSError(errno.EMFILE, "Too many open files"), EXIT_UNAVAILABLE, "Too many open files"),
    ],
)
def test_what_a_failed_bind_means(exc: OSError, status: int, says: str) -> None:
    from bitmusa_plugin._cli.simulate import bind_error

    error = bind_error("example.host", 8000, exc)
    assert error.status == status
    assert says in error.line()
    assert ONE_LINE.match(error.line())


def test_a_broken_pipe_that_is_not_standard_output_is_not_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`| head` ends a command quietly with 0; a socket of ours failing must not."""
    from bitmusa_plugin._cli import plugins

    def broken(args: argparse.Namespace) -> int:
        raise BrokenPipeError(errno.EPIPE, "a socket of ours")

    monkeypatch.setattr(plugins, "run", broken)
    with pytest.raises(BrokenPipeError):
        main(["plugins"])
