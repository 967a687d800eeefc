"""Failures, classified in one place.

A REST call that fails raises one of these types; the type says what the failure means for
a stream (:data:`Failure`): ``transient`` is retried with backoff, ``gone`` replaces the
listenKey, ``permanent`` stops the account. :func:`parse_envelope` is the one place that
reads Bitmusa's envelope ``{data, code, message}`` and picks the type: ``code != 0`` is an
error even on HTTP 200.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

#: What a failure means for a stream.
Failure = Literal["permanent", "transient", "gone"]

#: Codes that no retry can fix: bad key, IP not allowed, empty key, no privilege.
PERMANENT_CODES = frozenset((1001, 1002, 1003, 1005))
RATE_LIMIT_CODE = 1011
KEY_GONE_CODE = 3022


class BitmusaError(Exception):
    """A failed REST call. ``code`` is Bitmusa's code (or the HTTP status when the body
    carried none), ``status`` the HTTP status (None when no response arrived).

    ``failure`` is what the failure means for a stream; each subclass states its own, and
    nothing else classifies errors (the machine receives ``exc.failure``)."""

    failure: Failure = "transient"

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


class PermanentError(BitmusaError):
    """Credentials or permissions are wrong (1001/1002/1003/1005): never retried."""

    failure: Failure = "permanent"


class RateLimitedError(BitmusaError):
    """1011 or HTTP 429: retried with backoff."""


class ServerError(BitmusaError):
    """HTTP 5xx, 999, or a body that is not Bitmusa's envelope: retried with backoff."""


class NetworkError(BitmusaError):
    """No response: timeout, refused connection, reset. Retried with backoff."""


class ListenKeyGoneError(BitmusaError):
    """3022: the account has no active listenKey any more; create a new one."""

    failure: Failure = "gone"


def parse_envelope(what: str, status: int, content: bytes) -> dict[str, Any]:
    """Read ``{data, code, message}``; raise the typed error for anything but code 0."""
    try:
        body = orjson.loads(content) if content else {}
    except orjson.JSONDecodeError:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(code, str) and code.lstrip("-").isdigit():
        code = int(code)
    what = f"{what}: HTTP {status}"
    if isinstance(code, int) and code != 0:
        text = f"{what}, code {code} ({message or 'no message'})"
        if code in PERMANENT_CODES:
            raise PermanentError(text, code=code, status=status)
        if code == RATE_LIMIT_CODE:
            raise RateLimitedError(text, code=code, status=status)
        if code == KEY_GONE_CODE:
            raise ListenKeyGoneError(text, code=code, status=status)
        if status >= 500 or code == 999:
            raise ServerError(text, code=code, status=status)
        raise BitmusaError(text, code=code, status=status)
    if status == 429:
        raise RateLimitedError(f"{what} (too many requests)", code=status, status=status)
    if status in (401, 403):
        raise PermanentError(f"{what} (not authorised)", code=status, status=status)
    if status >= 500:
        raise ServerError(f"{what}", code=status, status=status)
    if not isinstance(body, dict) or code is None:
        raise ServerError(f"{what}: not a Bitmusa envelope", code=None, status=status)
    if status >= 400:
        raise BitmusaError(what, code=status, status=status)
    return body
