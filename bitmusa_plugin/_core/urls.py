"""Where the API lives: the two open readings of it, the URLs built from them, the checks a
URL must pass, and what to tell a user whose URL is wrong.

Nothing here has run against the real exchange, and the public sources disagree on two
paths (docs/configuration.md, "The API's open readings"):

=====================  ==============================  ==================================
question               documented (the default)        the other reading
=====================  ==============================  ==================================
the user stream        ``/ws/future/<listenKey>``      ``/ws/future/wallet/<listenKey>``
PUT/DELETE of the key  under ``/api/v2``               under ``/api/v1`` (node-bitmusa-api)
=====================  ==============================  ==================================

Both are settings (``ws_path``, ``keepalive_prefix``); with ``fallback`` on, a 404 from the
configured reading makes the engine try the other one once, and keep whichever works.
"""

from __future__ import annotations

from typing import Literal, overload
from urllib.parse import urlsplit

__all__ = [
    "KEEPALIVE_PREFIXES",
    "PUBLIC_WS_PATHS",
    "WS_PATHS",
    "KeepalivePrefix",
    "PublicWsPath",
    "UrlError",
    "WsPath",
    "check_url",
    "keepalive_base",
    "masked",
    "other",
    "other_public",
    "public_stream_url",
    "rest_hint",
    "shown",
    "url_problem",
    "ws_hint",
    "ws_stream_url",
]

WsPath = Literal["documented", "wallet"]
KeepalivePrefix = Literal["v2", "v1"]
WS_PATHS: tuple[WsPath, ...] = ("documented", "wallet")
KEEPALIVE_PREFIXES: tuple[KeepalivePrefix, ...] = ("v2", "v1")

#: The public market stream's two readings (REFERENCE.md §1, an unpublished draft): the
#: draft's ``/ws/future/stream?<stream>/<stream>`` (DMW, the default) and node-bitmusa-api's
#: ``/ws/future/public?stream=<stream>/<stream>`` (N; ninjaxt's ``<sfV0>/public`` agrees).
PublicWsPath = Literal["stream", "public"]
PUBLIC_WS_PATHS: tuple[PublicWsPath, ...] = ("stream", "public")

_WS_TEMPLATES: dict[WsPath, str] = {
    "documented": "/ws/future/{key}",
    "wallet": "/ws/future/wallet/{key}",
}
#: what a URL shows in place of the listenKey: it is a secret
KEY_PLACEHOLDER = "<listenKey>"

_SCHEMES = {"rest": ("https", "http"), "ws": ("wss", "ws")}
_EXAMPLES = {
    "rest": "https://openapi.bitmusa.com/api/v2",
    "ws": "wss://websocket.bitmusa.com:60002",
}
_NAMES = {"rest": "REST base URL", "ws": "websocket base URL"}


class UrlError(ValueError):
    """A URL that cannot be right: no scheme, a scheme of the wrong kind, no host, a port
    out of range."""


def url_problem(url: str, kind: Literal["rest", "ws"]) -> str | None:
    """What is wrong with ``url`` as a ``kind`` base URL (its shape only), or None. Whether
    plain text may go to its host is ``require_secure``'s call (``_engine/secrets.py``)."""
    secure, plain = _SCHEMES[kind]
    parts = urlsplit(url)
    if parts.scheme.lower() not in (secure, plain) or not url.lower().startswith(
        f"{parts.scheme.lower()}://"
    ):
        return f"{masked(url)!r} must start with {secure}:// (or {plain}:// to this machine)"
    if not parts.hostname:
        return f"{masked(url)!r} has no host"
    try:
        port = parts.port  # raises on a port out of range or not a number
    except ValueError:
        port = 0
    if port == 0:
        return f"{masked(url)!r} has an invalid port"
    return None


def check_url(url: str, kind: Literal["rest", "ws"]) -> None:
    """Raise :class:`UrlError` (one line: which URL, what is wrong) unless ``url`` has a
    ``kind`` scheme, a host and a valid port."""
    problem = url_problem(url, kind)
    if problem is not None:
        raise UrlError(f"{_NAMES[kind]} {problem}")


def masked(url: str) -> str:
    """``url`` with any password masked, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


def shown(url: str) -> str:
    """``url`` without its query: scheme, host, port and path (never a credential; a
    listenKey in a path is replaced by the caller before it gets here)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def ws_stream_url(ws_url: str, reading: WsPath, key: str) -> str:
    """The user stream's URL on ``ws_url`` for ``key`` (pass :data:`KEY_PLACEHOLDER` to
    show it)."""
    return ws_url.rstrip("/") + _WS_TEMPLATES[reading].format(key=key)


def public_stream_url(ws_url: str, reading: PublicWsPath, names: list[str]) -> str:
    """The public stream's URL on ``ws_url`` for the stream ``names`` (sorted by the
    caller: the same set gives the same URL). Names are ``<ticker>@...``: nothing in them
    needs quoting."""
    joined = "/".join(names)
    if reading == "stream":
        return f"{ws_url.rstrip('/')}/ws/future/stream?{joined}"
    return f"{ws_url.rstrip('/')}/ws/future/public?stream={joined}"


def other_public(reading: PublicWsPath) -> PublicWsPath:
    """The public stream's other reading."""
    return "public" if reading == "stream" else "stream"


def keepalive_base(rest_url: str, prefix: KeepalivePrefix) -> str:
    """The base PUT and DELETE of the listenKey go to: ``rest_url`` for ``v2`` (as
    documented), the same with ``/api/v1`` for ``v1``. A base that does not end in
    ``/api/v2`` (a proxy of one's own) has no ``v1`` reading: it is used as is."""
    base = rest_url.rstrip("/")
    if prefix == "v1" and base.endswith("/v2"):
        return base[: -len("/v2")] + "/v1"
    return base


@overload
def other(reading: WsPath) -> WsPath: ...
@overload
def other(reading: KeepalivePrefix) -> KeepalivePrefix: ...
def other(reading: str) -> str:
    """The other reading of the same question."""
    pairs = {"documented": "wallet", "wallet": "documented", "v2": "v1", "v1": "v2"}
    return pairs[reading]


def rest_hint(rest_url: str) -> str:
    """What to check when the listenKey path is not there (HTTP 404/405/410, or a body that
    is not Bitmusa's envelope)."""
    path = urlsplit(rest_url).path.rstrip("/")
    if not path.endswith("/api/v2"):
        return f"the REST base should end in /api/v2, e.g. {_EXAMPLES['rest']}"
    return f"is this Bitmusa's API? the REST base is {_EXAMPLES['rest']}"


def ws_hint(ws_url: str) -> str:
    """What to check when the stream's handshake is refused with 400/404."""
    path = urlsplit(ws_url).path.rstrip("/")
    if path:
        return (
            f"the websocket base is the server's root, without a path ({path!r} is "
            f"extra), e.g. {_EXAMPLES['ws']}"
        )
    return f"is this Bitmusa's websocket server? e.g. {_EXAMPLES['ws']}"
