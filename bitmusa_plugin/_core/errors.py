"""Failures, classified in one place.

A REST call that fails raises one of these types; the type says what the failure means for
a stream (:data:`Failure`):

* ``permanent``: the credentials or their permissions are wrong; the account stops.
* ``misconfigured``: the URL is wrong (the path is not there, or what answers is not
  Bitmusa); the account stops with the URL and a hint, unless the same call has worked
  before in this run (then the server is having trouble: retried).
* ``unreachable``: no answer at all (DNS, refused, TLS, timeout); retried, but before an
  account's first connection only for the start-up window.
* ``transient``: the server answered with trouble (5xx, rate limit); retried with backoff.
* ``gone``: the listenKey is no more; a new one is created.

The machine (``machine.py``) decides what each means over time. :func:`parse_envelope` is
the one place that reads Bitmusa's envelope ``{data, code, message}`` and picks the type:
``code != 0`` is an error even on HTTP 200. The websocket's handshake failures are
classified the same way, in the stream's shell.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

#: What a failure means for a stream.
Failure = Literal["permanent", "misconfigured", "unreachable", "transient", "gone"]

#: Codes that no retry can fix: bad key, IP not allowed, empty key, no privilege.
PERMANENT_CODES = frozenset((1001, 1002, 1003, 1005))
#: What to do about each, said on the same line (docs/troubleshooting.md says the same).
PERMANENT_HINTS = {
    1001: "check the API key (x-api-key) and the auth key (Bearer): both must be this "
    "account's, and they are not interchangeable",
    1002: "add this machine's public IP address to the key's allow-list on Bitmusa",
    1003: "the API key reached the exchange empty: set it, or name the right variable",
    1005: "give the key the futures privilege on Bitmusa, or use a key that has it",
}
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


class MisconfiguredError(BitmusaError):
    """The URL is wrong: HTTP 404/405/410 on the path, or a body that is not Bitmusa's
    envelope. ``hint`` says what to check."""

    failure: Failure = "misconfigured"

    def __init__(
        self, message: str, *, code: int | None = None, status: int | None = None, hint: str = ""
    ):
        super().__init__(f"{message}: {hint}" if hint else message, code=code, status=status)
        self.hint = hint


class RateLimitedError(BitmusaError):
    """1011 or HTTP 429: retried with backoff."""


class ServerError(BitmusaError):
    """HTTP 5xx, 999, or a body that is not Bitmusa's envelope: retried with backoff."""


class NetworkError(BitmusaError):
    """No response: unknown host, refused connection, TLS failure, timeout, reset."""

    failure: Failure = "unreachable"


class ListenKeyGoneError(BitmusaError):
    """3022: the account has no active listenKey any more; create a new one."""

    failure: Failure = "gone"


#: HTTP statuses that say the path is wrong, not that the server is in trouble
WRONG_PATH_STATUSES = frozenset((404, 405, 410))


def parse_envelope(what: str, status: int, content: bytes, hint: str = "") -> dict[str, Any]:
    """Read ``{data, code, message}``; raise the typed error for anything but code 0.
    ``hint``: what to check when the answer says the URL is wrong."""
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
            raise PermanentError(f"{text}: {PERMANENT_HINTS[code]}", code=code, status=status)
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
    if status in WRONG_PATH_STATUSES:
        raise MisconfiguredError(f"{what} (no such path)", code=status, status=status, hint=hint)
    if not isinstance(body, dict) or code is None:
        raise MisconfiguredError(
            f"{what}: the answer is not Bitmusa's envelope", code=None, status=status, hint=hint
        )
    if status >= 400:
        raise BitmusaError(what, code=status, status=status)
    return body
