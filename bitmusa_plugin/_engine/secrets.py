"""Credentials and listenKeys never reach a log, a repr, an exception or the CLI's output.

:class:`Credentials` redacts itself. Every secret the process handles (API key, auth key,
and each listenKey as it is issued) is registered with :data:`REDACTOR`, and
:func:`install_log_redaction` puts a filter on the root logger's handlers that replaces any
registered secret in a record's final text, so even a third-party library's log line
(websockets printing a URL, httpx an error) comes out clean. Error reports go through
:func:`redact` too.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

MASK = "***"
#: Shorter strings are not registered: masking "1" everywhere would wreck every message.
MIN_SECRET_CHARS = 6


class Redactor:
    """A set of secret strings and the one function that masks them."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= MIN_SECRET_CHARS:
            with self._lock:
                self._secrets = self._secrets | {secret}

    def __call__(self, text: str) -> str:
        for secret in self._secrets:  # a frozenset swapped atomically: no lock needed
            if secret in text:
                text = text.replace(secret, MASK)
        return text


REDACTOR = Redactor()


def redact(text: str) -> str:
    """``text`` with every registered secret masked."""
    return REDACTOR(text)


class RedactingFilter(logging.Filter):
    """Renders the record's message, masks secrets in it (and in any traceback text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            cleaned = redact(formatted)
            if cleaned != formatted:
                record.exc_text = cleaned
        return True


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Handed to libraries that log URLs (websockets logs its request line, listenKey
    included, at DEBUG): the text is masked before any handler sees it, whatever handlers
    the application has set up."""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, redact(text), **kwargs)


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of ``logger`` (root by default), once."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


@dataclass(frozen=True)
class Credentials:
    """An account's API key (``x-api-key``) and auth key (``Authorization: Bearer``)."""

    api_key: str = field(repr=False)
    auth_key: str = field(repr=False)

    def __post_init__(self) -> None:
        REDACTOR.add(self.api_key)
        REDACTOR.add(self.auth_key)

    def __repr__(self) -> str:
        return f"Credentials(api_key={MASK}, auth_key={MASK})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, api_key_env: str, auth_key_env: str) -> Credentials:
        """Read both from the environment; a clear error names the missing variable (never
        the value)."""
        missing = [name for name in (api_key_env, auth_key_env) if not os.environ.get(name)]
        if missing:
            raise CredentialsError(
                f"set {' and '.join(missing)} in the environment (credentials are never "
                "taken from the command line, where process lists would show them)"
            )
        return cls(os.environ[api_key_env], os.environ[auth_key_env])


class CredentialsError(Exception):
    """Credentials are missing or unusable."""


class InsecureURLError(ValueError):
    """A plaintext URL to a host that is not this machine."""


_LOOPBACK_NAMES = frozenset(("localhost", "ip6-localhost"))


def is_loopback(host: str) -> bool:
    import ipaddress

    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_secure(url: str, *, insecure: bool = False) -> None:
    """Credentials and listenKeys travel only over TLS (``https``/``wss``, verified), or in
    plaintext to this machine (the simulator). ``insecure`` lifts the rule, on purpose."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in ("https", "wss") or insecure:
        return
    if parts.scheme in ("http", "ws") and is_loopback(parts.hostname or ""):
        return
    from bitmusa_plugin._core.urls import masked

    raise InsecureURLError(
        f"{masked(url)} is not encrypted and not this machine: use https/wss (credentials "
        "would cross the network in clear), or allow plain text on a network you trust "
        "(--insecure; the ccxt drop-in: options['insecure'])"
    )
