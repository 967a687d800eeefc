"""Where worker mode keeps its state in Redis, and the account registry.

Every key lives under ``bitmusa:<group>:``:

* ``accounts`` (hash): label -> JSON record: the label, the *names* of the environment
  variables holding the credentials (or a credentials file path), the URLs and the API's
  readings (``ws_path``, ``keepalive_prefix``, ``fallback``; unset: the worker's). Secrets
  are never stored in Redis; each worker resolves the references from its own environment.
* ``workers`` (sorted set): worker id -> its last heartbeat (ms).
* ``lease:<label>`` (string, with a TTL): ``<worker id>:<fencing token>``, the account's
  owner.
* ``fence:<label>`` (counter): the fencing token, incremented on every acquisition.
* ``last`` (hash): label -> the time (ms) of the last event the owner's sink wrote, held
  at the start of a gap whose fills are not all written (``_scale/sink.py``).
* ``live`` (hash): label -> the holder whose stream delivers (a handing-over worker stops
  once a later fence shows here); ``handover:<label>``: a hand-back's promise;
  ``unconfirmed`` (hash): takeovers on trust not yet confirmed (``_core/lease.py``);
  ``pinned`` (hash): label -> the start (ms) of the gap a hand-back's stream had not
  delivered yet: the next owner reads it, and takes nothing on trust.
* ``orders:<label>`` (hash): order id -> the last ``on_order`` record the owner's sink
  wrote of it, until the order is done and a minute behind ``last``: a new owner starts
  its fills from them (``resync.inherit``), so that a fill it reads again is not counted
  twice.
* ``state`` (hash): label -> JSON ``{worker, status, reason, at}``, what ``worker status``
  shows: the stream's state and, when it failed or is retrying, why (a URL and a code,
  never a key).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bitmusa_plugin._core import urls
from bitmusa_plugin._engine.secrets import Credentials, CredentialsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib
from bitmusa_plugin._engine.stream import DEFAULT_WS_URL, AccountConfig

DEFAULT_GROUP = "default"


def key(group: str, *parts: str) -> str:
    return ":".join(("bitmusa", group, *parts))


#: an environment variable's name, as a shell exports it
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class AccountRecord:
    """A registered account: references to its credentials, never the secrets."""

    label: str
    api_key_env: str | None = None
    auth_key_env: str | None = None
    credentials_file: str | None = None  # a TOML file with api_key and auth_key
    rest_url: str | None = None
    ws_url: str | None = None
    #: the API's open readings (docs/configuration.md); None: the worker's own
    ws_path: urls.WsPath | None = None
    keepalive_prefix: urls.KeepalivePrefix | None = None
    fallback: bool | None = None

    def __post_init__(self) -> None:
        by_env = self.api_key_env is not None and self.auth_key_env is not None
        if by_env == (self.credentials_file is not None):
            raise ValueError("give either both environment-variable names or a credentials file")
        for option, name in (("api", self.api_key_env), ("auth", self.auth_key_env)):
            if name is not None and not _ENV_NAME.fullmatch(name):
                # not echoed: a value here is most likely the key itself, typed in its place
                raise ValueError(
                    f"--{option}-key-env takes the name of an environment variable (letters, "
                    "digits and _, e.g. ALICE_API_KEY), not the key itself; what was given "
                    "is not one (not shown: it may be the key)"
                )
        if self.ws_path is not None and self.ws_path not in urls.WS_PATHS:
            raise ValueError(f"ws_path {self.ws_path!r}: one of {', '.join(urls.WS_PATHS)}")
        if self.keepalive_prefix is not None and self.keepalive_prefix not in (
            urls.KEEPALIVE_PREFIXES
        ):
            raise ValueError(
                f"keepalive_prefix {self.keepalive_prefix!r}: one of "
                f"{', '.join(urls.KEEPALIVE_PREFIXES)}"
            )
        if self.fallback is not None and not isinstance(self.fallback, bool):
            raise ValueError(f"fallback {self.fallback!r}: true or false")

    def readings(self) -> dict[str, Any]:
        """The readings this record sets (the others are the worker's)."""
        chosen = {
            "ws_path": self.ws_path,
            "keepalive_prefix": self.keepalive_prefix,
            "fallback": self.fallback,
        }
        return {k: v for k, v in chosen.items() if v is not None}

    def to_json(self) -> bytes:
        return orjson.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, raw: bytes | str) -> AccountRecord:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)

    def resolve(
        self, default_rest: str, *, insecure: bool = False, **defaults: Any
    ) -> AccountConfig:
        """The account's config with its credentials, read on this machine. ``defaults``:
        the worker's readings, for those the record does not set."""
        if self.credentials_file is not None:
            credentials = _from_file(Path(self.credentials_file))
        else:
            assert self.api_key_env is not None
            assert self.auth_key_env is not None
            credentials = Credentials.from_env(self.api_key_env, self.auth_key_env)
        return AccountConfig(
            self.label,
            credentials,
            self.rest_url or default_rest,
            self.ws_url or DEFAULT_WS_URL,
            insecure=insecure,
            **{**defaults, **self.readings()},
        )


def _from_file(path: Path) -> Credentials:
    try:
        mode = path.stat().st_mode
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(f"credentials file {path} is readable by others: chmod 600 it")
    api, auth = data.get("api_key"), data.get("auth_key")
    if not isinstance(api, str) or not isinstance(auth, str) or not api or not auth:
        raise CredentialsError(f"credentials file {path} needs api_key and auth_key")
    return Credentials(api, auth)


async def add(client: Any, group: str, record: AccountRecord) -> None:
    await client.hset(key(group, "accounts"), record.label, record.to_json())


async def remove(client: Any, group: str, label: str) -> bool:
    return bool(await client.hdel(key(group, "accounts"), label))


async def load(client: Any, group: str) -> dict[str, AccountRecord]:
    """The registered accounts; one whose record is not valid (say, written before its
    checks existed) is left out, with a warning saying how to fix it."""
    records: dict[str, AccountRecord] = {}
    for k, v in (await client.hgetall(key(group, "accounts"))).items():
        label = k.decode()
        try:
            records[label] = AccountRecord.from_json(v)
        except (ValueError, TypeError) as exc:
            logging.getLogger(__name__).warning(
                "account %r: its record is not valid (%s); add it again, or remove it with "
                "'bitmusa-plugin accounts remove %s'",
                label,
                exc,
                label,
            )
    return records


def redis_password(url: str) -> str | None:
    """The password in a redis:// URL, to register with the redactor."""
    from urllib.parse import urlsplit

    return urlsplit(url).password


def worker_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
