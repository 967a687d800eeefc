"""Running accounts: the config file, the shared pipeline, signals, shutdown.

``run_accounts`` is what ``bitmusa-plugin listen`` and ``demo`` run: every account gets
its own ``AccountStream``, all of them share one ``Pipeline`` (``event["account"]`` tells
them apart) and one REST rate limiter. SIGINT/SIGTERM stop every stream (each DELETEs
its key unless told to keep it), ``on_shutdown`` runs, and the whole shutdown takes under
2 seconds even offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import stat
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.rest import DEFAULT_REST_URL, RateLimiter, http_client
from bitmusa_plugin._engine.secrets import Credentials, CredentialsError, InsecureURLError
from bitmusa_plugin._engine.stream import DEFAULT_WS_URL, AccountConfig, AccountStream, Heartbeat

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

log = logging.getLogger(__name__)

API_KEY_ENV = "BITMUSA_API_KEY"
AUTH_KEY_ENV = "BITMUSA_AUTH_KEY"


class ConfigError(Exception):
    """The config file is unreadable or wrong; the message says where."""


def load_config(
    path: Path, *, rest_url: str | None = None, ws_url: str | None = None, insecure: bool = False
) -> list[AccountConfig]:
    """Accounts from a TOML file::

    [[accounts]]
    label = "main"
    api_key_env = "MAIN_BITMUSA_API_KEY"     # names of environment variables,
    auth_key_env = "MAIN_BITMUSA_AUTH_KEY"   # never the secrets themselves
    rest_url = "https://openapi.bitmusa.com/api/v2"   # optional
    ws_url = "wss://websocket.bitmusa.com:60002"      # optional
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by group or others; it should not be (chmod 600)", path)
    entries = data.get("accounts")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: needs at least one [[accounts]] table")
    accounts: list[AccountConfig] = []
    labels: set[str] = set()
    for i, entry in enumerate(entries, 1):
        where = f"{path}: account {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table")
        for key in ("api_key", "auth_key", "secret", "apiKey"):
            if key in entry:
                raise ConfigError(
                    f"{where}: put secrets in environment variables and name them with "
                    f"api_key_env / auth_key_env, not {key!r}"
                )
        label = entry.get("label")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{where}: needs a label")
        if label in labels:
            raise ConfigError(f"{where}: label {label!r} is used twice")
        labels.add(label)
        api_env, auth_env = entry.get("api_key_env"), entry.get("auth_key_env")
        if not isinstance(api_env, str) or not isinstance(auth_env, str):
            raise ConfigError(f"{where} ({label}): needs api_key_env and auth_key_env")
        try:
            credentials = Credentials.from_env(api_env, auth_env)
        except CredentialsError as exc:
            raise ConfigError(f"{where} ({label}): {exc}") from None
        try:
            accounts.append(
                AccountConfig(
                    label,
                    credentials,
                    str(entry.get("rest_url") or rest_url or DEFAULT_REST_URL),
                    str(entry.get("ws_url") or ws_url or DEFAULT_WS_URL),
                    insecure=insecure,
                )
            )
        except InsecureURLError as exc:
            raise ConfigError(f"{where} ({label}): {exc}") from None
    return accounts


def account_from_env(
    label: str, rest_url: str | None, ws_url: str | None, *, insecure: bool = False
) -> AccountConfig:
    try:
        return AccountConfig(
            label,
            Credentials.from_env(API_KEY_ENV, AUTH_KEY_ENV),
            rest_url or DEFAULT_REST_URL,
            ws_url or DEFAULT_WS_URL,
            insecure=insecure,
        )
    except InsecureURLError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class RunResult:
    failed: dict[str, str]  # account -> reason

    @property
    def ok(self) -> bool:
        return not self.failed


async def run_accounts(
    accounts: list[AccountConfig],
    host: Pipeline,
    *,
    timing: lc.Timing | None = None,
    heartbeat: Heartbeat | None = None,
    keep_listen_key: bool = False,
    resync: bool = True,
    record: IO[str] | None = None,
    until: Callable[[list[AccountStream]], Coroutine[Any, Any, Any]] | None = None,
    handle_signals: bool = True,
    limiter: RateLimiter | None = None,
    stop_on: asyncio.Event | None = None,
) -> RunResult:
    """Stream every account until a signal, ``until(streams)`` returning, ``stop_on``
    being set (the output was closed), or all failing.

    The accounts share one REST rate limiter (``limiter``; Bitmusa's documented 8/s and
    200/min by default, applied per process since the sources say the limit may be per IP:
    many accounts are paced, not refused) and one REST connection pool."""
    limiter = limiter or RateLimiter()
    http = http_client(connections=min(32, 4 + len(accounts))) if len(accounts) > 1 else None
    streams = [
        AccountStream(
            account,
            host,
            timing=timing,
            heartbeat=heartbeat,
            keep_listen_key=keep_listen_key,
            resync=resync,
            limiter=limiter,
            http=http,
            record=record,
        )
        for account in accounts
    ]
    loop = asyncio.get_running_loop()
    host.start([a.label for a in accounts])

    def stop_all() -> None:
        for stream in streams:
            stream.stop()

    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop_all)
                installed.append(sig)
    tasks = [loop.create_task(s.run(), name=f"bitmusa:{s.account}") for s in streams]
    controller: asyncio.Task[Any] | None = None
    if until is not None or stop_on is not None:

        async def control() -> None:
            waits = [loop.create_task(until(streams))] if until is not None else []
            if stop_on is not None:
                waits.append(loop.create_task(stop_on.wait()))
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
            for task in done:
                task.result()  # a broken script is reported below

        controller = loop.create_task(control())
    try:
        pending: set[asyncio.Future[Any]] = set(tasks)
        if controller is not None:
            pending.add(controller)
        while any(not t.done() for t in tasks):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if controller is not None and controller in done:
                if not controller.cancelled() and controller.exception() is not None:
                    log.error("the run's script failed", exc_info=controller.exception())
                stop_all()  # the script is over (or broken): stop cleanly either way
                controller = None
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if controller is not None:
            controller.cancel()
    failed = {}
    for stream, task in zip(streams, tasks, strict=True):
        exc = task.exception()
        if exc is not None:  # a bug of ours: report it as a failure, never a traceback dump
            log.error("%s: the stream crashed", stream.account, exc_info=exc)
            failed[stream.account] = f"internal error: {exc!r}"
        elif task.result().failed:
            failed[stream.account] = task.result().reason
    if http is not None:
        await http.aclose()
    await host.dispatcher.drain(1.0)
    await host.stop(timeout=0.5)
    return RunResult(failed)
