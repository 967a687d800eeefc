"""Redis URLs, the one reading every command, the sink and ``consume()`` share.

Three forms are accepted:

* ``redis://[USER:PASSWORD@]HOST[:PORT][/DB]`` and ``rediss://...`` (TLS), as redis-py's
  ``from_url`` reads them;
* ``unix://PATH[?db=N]``;
* ``redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`` and ``rediss+sentinel://...``
  (TLS to the primary and to the sentinels): the sentinels to ask, the service (the
  ``sentinel monitor`` name) and the database. The primary is found by redis-py's own
  Sentinel support (``redis.asyncio.sentinel``), again after every failover.

A sentinel URL carries no password: the URL is a command-line argument, and process lists
show those. The passwords come from the environment (:data:`PASSWORD_ENV`), read by the
shell that connects (``_scale/connect.py``), never here: this module is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
DEFAULT_SENTINEL_PORT = 26379

#: where a sentinel URL's credentials come from: the primary's (and its replicas'), the
#: sentinels' (unset: none)
USERNAME_ENV = "BITMUSA_REDIS_USERNAME"
PASSWORD_ENV = "BITMUSA_REDIS_PASSWORD"
SENTINEL_USERNAME_ENV = "BITMUSA_SENTINEL_USERNAME"
SENTINEL_PASSWORD_ENV = "BITMUSA_SENTINEL_PASSWORD"

FORMS = "redis://HOST:PORT/DB, rediss://…, unix://PATH or redis+sentinel://HOST:PORT,…/SERVICE/DB"


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    tls: bool

    def shown(self) -> str:
        """How messages name it: the sentinels and the service (never a secret: it holds
        none)."""
        hosts = ",".join(_host_port(h, p) for h, p in self.sentinels)
        scheme = SENTINEL_SCHEMES[1] if self.tls else SENTINEL_SCHEMES[0]
        return f"{scheme}://{hosts}/{self.service}/{self.db}"

    def sentinels_shown(self) -> str:
        return ", ".join(_host_port(h, p) for h, p in self.sentinels)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel(url: str) -> SentinelURL:
    """``url`` (a sentinel URL) read; ``ValueError`` with the one line saying what is
    wrong otherwise (the caller adds the URL)."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError("is not a sentinel URL (redis+sentinel://HOST:PORT,…/SERVICE/DB)")
    if "?" in rest or "#" in rest:
        raise ValueError("takes no query: the passwords come from the environment")
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        raise ValueError(
            f"holds credentials: set {USERNAME_ENV}/{PASSWORD_ENV} (and "
            f"{SENTINEL_USERNAME_ENV}/{SENTINEL_PASSWORD_ENV}) in the environment instead, "
            "where process lists do not show them"
        )
    sentinels = []
    for item in netloc.split(","):
        if not item:
            raise ValueError("names no sentinel (HOST:PORT, comma-separated)")
        parts = urlsplit(f"//{item}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"has an invalid port in {item!r}") from None
        if not parts.hostname:
            raise ValueError(f"has no host in {item!r}")
        sentinels.append((parts.hostname, port or DEFAULT_SENTINEL_PORT))
    segments = path.split("/") if path else []
    if not segments or not segments[0]:
        raise ValueError("names no service: add /SERVICE (the name in `sentinel monitor`)")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError("ends in /SERVICE or /SERVICE/DB, the database a number")
    db = int(segments[1]) if len(segments) == 2 else 0
    return SentinelURL(tuple(sentinels), segments[0], db, scheme == SENTINEL_SCHEMES[1])


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a Redis URL, as the rest of a sentence after the
    URL itself; None when it is one of the forms above."""
    if is_sentinel(url):
        try:
            parse_sentinel(url)
        except ValueError as exc:
            return str(exc)
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"is not a Redis URL ({FORMS})"
    try:
        _ = parts.port  # raises on a bad port
    except ValueError:
        return "has an invalid port"
    if parts.scheme == "unix":
        if not parts.path:
            return "names no socket path"
    else:
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            return ": the database must be a number"
    return None
