"""The accounts file, and one account from the environment: where ``listen`` and the
worker's registry get their :class:`AccountConfig`. Running them is a
:class:`~bitmusa_plugin._engine.session.Session`'s job.
"""

from __future__ import annotations

import difflib
import logging
import stat
import sys
from pathlib import Path
from typing import Any, Literal

from bitmusa_plugin._core import urls
from bitmusa_plugin._engine.rest import DEFAULT_REST_URL
from bitmusa_plugin._engine.secrets import (
    Credentials,
    CredentialsError,
    InsecureURLError,
    require_secure,
)
from bitmusa_plugin._engine.stream import DEFAULT_WS_URL, AccountConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

log = logging.getLogger(__name__)

API_KEY_ENV = "BITMUSA_API_KEY"
AUTH_KEY_ENV = "BITMUSA_AUTH_KEY"
#: the API's open readings an account may set (``_core/urls.py``), with their defaults
READINGS: dict[str, Any] = {"ws_path": "documented", "keepalive_prefix": "v2", "fallback": True}
#: every key an ``[[accounts]]`` entry may hold: a misspelt one is an error, never a default
#: silently taken (``rest_ulr`` would otherwise send a test's orders to the live exchange)
ENTRY_KEYS = ("label", "api_key_env", "auth_key_env", "rest_url", "ws_url", *READINGS)


class ConfigError(Exception):
    """The config file is unreadable or wrong; the message says where."""


def load_config(
    path: Path,
    *,
    rest_url: str | None = None,
    ws_url: str | None = None,
    insecure: bool = False,
    readings: dict[str, Any] | None = None,
) -> list[AccountConfig]:
    """Accounts from a TOML file::

    [[accounts]]
    label = "main"
    api_key_env = "MAIN_BITMUSA_API_KEY"     # names of environment variables,
    auth_key_env = "MAIN_BITMUSA_AUTH_KEY"   # never the secrets themselves
    rest_url = "https://openapi.bitmusa.com/api/v2"   # optional
    ws_url = "wss://websocket.bitmusa.com:60002"      # optional
    ws_path = "documented"        # optional: or "wallet" (/ws/future/wallet/<key>)
    keepalive_prefix = "v2"       # optional: or "v1" (PUT/DELETE under /api/v1)
    fallback = true               # optional: try the other reading once on a 404

    ``rest_url``, ``ws_url`` and ``readings`` (the command line's) apply to the entries
    that do not set their own. Every error names the file and the entry, and says what
    to change."""
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
        for key in entry:
            if key not in ENTRY_KEYS:
                close = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{where}: unknown key {key!r}{hint}; an entry may hold "
                    + ", ".join(ENTRY_KEYS)
                )
        label = entry.get("label")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{where}: needs a label")
        if label in labels:
            raise ConfigError(f"{where}: label {label!r} is used twice")
        labels.add(label)
        where = f"{path}: account {label!r}"
        api_env, auth_env = entry.get("api_key_env"), entry.get("auth_key_env")
        if not isinstance(api_env, str) or not isinstance(auth_env, str):
            raise ConfigError(f"{where}: needs api_key_env and auth_key_env")
        try:
            credentials = Credentials.from_env(api_env, auth_env)
        except CredentialsError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        chosen = {**READINGS, **(readings or {})}
        for key, default in READINGS.items():
            if key in entry:
                value = entry[key]
                if type(value) is not type(default):
                    raise ConfigError(f"{where}: {key} must be {_shape(key)}, not {value!r}")
                chosen[key] = value
        accounts.append(
            account(
                label,
                credentials,
                str(entry.get("rest_url") or rest_url or DEFAULT_REST_URL),
                str(entry.get("ws_url") or ws_url or DEFAULT_WS_URL),
                insecure=insecure,
                readings=chosen,
                where=f"{where}: ",
                todo="fix it in the accounts file",
            )
        )
    return accounts


def account_from_env(
    label: str,
    rest_url: str | None,
    ws_url: str | None,
    *,
    insecure: bool = False,
    readings: dict[str, Any] | None = None,
) -> AccountConfig:
    """One account, its credentials from ``BITMUSA_API_KEY`` and ``BITMUSA_AUTH_KEY``."""
    return account(
        label,
        Credentials.from_env(API_KEY_ENV, AUTH_KEY_ENV),
        rest_url or DEFAULT_REST_URL,
        ws_url or DEFAULT_WS_URL,
        insecure=insecure,
        readings={**READINGS, **(readings or {})},
    )


def account(
    label: str,
    credentials: Credentials,
    rest_url: str,
    ws_url: str,
    *,
    insecure: bool,
    readings: dict[str, Any],
    where: str = "",
    todo: str = "",
) -> AccountConfig:
    """An :class:`AccountConfig`, every problem a :class:`ConfigError` naming the field."""
    checks: list[tuple[str, str, Literal["rest", "ws"]]] = [
        ("rest_url", rest_url, "rest"),
        ("ws_url", ws_url, "ws"),
    ]
    for key, url, kind in checks:
        problem = urls.url_problem(url, kind)
        if problem is not None:
            raise ConfigError(f"{where}{key} {problem}" + (f": {todo}" if todo else ""))
    for key, url, _ in checks:
        try:
            require_secure(url, insecure=insecure)
        except InsecureURLError as exc:
            raise ConfigError(f"{where}{key} {exc}") from None
    for key, choices in (("ws_path", urls.WS_PATHS), ("keepalive_prefix", urls.KEEPALIVE_PREFIXES)):
        if readings[key] not in choices:
            raise ConfigError(f"{where}{key} must be {_shape(key)}, not {readings[key]!r}")
    try:
        return AccountConfig(
            label,
            credentials,
            rest_url,
            ws_url,
            insecure=insecure,
            ws_path=readings["ws_path"],
            keepalive_prefix=readings["keepalive_prefix"],
            fallback=readings["fallback"],
        )
    except InsecureURLError as exc:
        raise ConfigError(f"{where}{exc}") from None


def _shape(key: str) -> str:
    return {
        "ws_path": " or ".join(repr(p) for p in urls.WS_PATHS),
        "keepalive_prefix": " or ".join(repr(p) for p in urls.KEEPALIVE_PREFIXES),
        "fallback": "true or false",
    }[key]
