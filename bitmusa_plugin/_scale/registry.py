"""Where worker mode keeps its state in Redis, and the account registry.

Every key lives under ``bitmusa:<group>:``:

* ``accounts`` (hash): label -> JSON record: the label, the *names* of the environment
  variables holding the credentials (or a credentials file path), the URLs. Secrets are
  never stored in Redis; each worker resolves the references from its own environment.
* ``workers`` (sorted set): worker id -> its last heartbeat (ms).
* ``lease:<label>`` (string, with a TTL): ``<worker id>:<fencing token>``, the account's
  owner.
* ``fence:<label>`` (counter): the fencing token, incremented on every acquisition.
* ``last`` (hash): label -> the time (ms) of the last event the owner delivered.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bitmusa_plugin._engine.secrets import Credentials, CredentialsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib
from bitmusa_plugin._engine.stream import DEFAULT_WS_URL, AccountConfig

DEFAULT_GROUP = "default"


def key(group: str, *parts: str) -> str:
    return ":".join(("bitmusa", group, *parts))


@dataclass(frozen=True)
class AccountRecord:
    """A registered account: references to its credentials, never the secrets."""

    label: str
    api_key_env: str | None = None
    auth_key_env: str | None = None
    credentials_file: str | None = None  # a TOML file with api_key and auth_key
    rest_url: str | None = None
    ws_url: str | None = None

    def __post_init__(self) -> None:
        by_env = self.api_key_env is not None and self.auth_key_env is not None
        if by_env == (self.credentials_file is not None):
            raise ValueError("give either both environment-variable names or a credentials file")

    def to_json(self) -> bytes:
        return orjson.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, raw: bytes | str) -> AccountRecord:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)

    def resolve(self, default_rest: str, *, insecure: bool = False) -> AccountConfig:
        """The account's config with its credentials, read on this machine."""
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
    raw = await client.hgetall(key(group, "accounts"))
    return {k.decode(): AccountRecord.from_json(v) for k, v in raw.items()}


def redis_password(url: str) -> str | None:
    """The password in a redis:// URL, to register with the redactor."""
    from urllib.parse import urlsplit

    return urlsplit(url).password


def worker_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
