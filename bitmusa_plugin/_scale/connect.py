"""One way to get a Redis client from a URL, for every part that talks to Redis: the
commands, the sink, the worker and ``consume()``.

A ``redis://``/``rediss://``/``unix://`` URL is redis-py's ``from_url``. A sentinel URL
(``_core/redis_url.py``) is redis-py's own Sentinel support: ``Sentinel(...).master_for``,
whose pool asks the sentinels for the primary before each new connection and drops a
connection whose server turned out to be a replica (``READONLY``: a demoted primary). So a
failover is, for the caller, a connection error or two, then the new primary: the same
thing a Redis restart is, which every caller here already rides out. We write no
discovery of our own.

The sentinel URL's passwords come from the environment (``BITMUSA_REDIS_PASSWORD``,
``BITMUSA_SENTINEL_PASSWORD``; usernames likewise), never the command line; every one is
added to the redactor, so no log line or error shows it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from bitmusa_plugin._core import redis_url
from bitmusa_plugin._engine.secrets import REDACTOR


def shown(url: str) -> str:
    """How messages name ``url``: a sentinel URL as its sentinels and service, any other
    with its password masked."""
    if redis_url.is_sentinel(url):
        try:
            return redis_url.parse_sentinel(url).shown()
        except ValueError:
            return url.partition("@")[2] or url
    from bitmusa_plugin._core.urls import masked

    return masked(url)


def _credentials(prefix: str) -> dict[str, str]:
    user_env, pw_env = (
        (redis_url.USERNAME_ENV, redis_url.PASSWORD_ENV)
        if prefix == "redis"
        else (redis_url.SENTINEL_USERNAME_ENV, redis_url.SENTINEL_PASSWORD_ENV)
    )
    out = {}
    if os.environ.get(user_env):
        out["username"] = os.environ[user_env]
    if os.environ.get(pw_env):
        out["password"] = os.environ[pw_env]
        REDACTOR.add(out["password"])
    return out


def client(url: str, **kwargs: Any) -> Any:
    """A ``redis.asyncio.Redis`` for ``url``; ``kwargs`` are the connection's (timeouts,
    retry). Its ``aclose()`` also closes the sentinel connections. ``ValueError`` for a URL
    that is none of the forms (the message says why)."""
    import redis.asyncio as redis

    if not redis_url.is_sentinel(url):
        from urllib.parse import urlsplit

        REDACTOR.add(urlsplit(url).password)
        return redis.Redis.from_url(url, **kwargs)
    from redis.asyncio.sentinel import Sentinel

    target = redis_url.parse_sentinel(url)
    timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    tls: dict[str, Any] = {"ssl": True} if target.tls else {}
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={**timeouts, **tls, **_credentials("sentinel")},
        **kwargs,
    )
    options: dict[str, Any] = {"db": target.db, **tls, **_credentials("redis")}
    return sentinel.master_for(target.service, redis_class=_sentinel_redis(), **options)


@functools.cache
def _sentinel_redis() -> type[Any]:
    """A ``redis.asyncio.Redis`` that closes its sentinels too (``master_for``'s client
    closes only its own pool), made on first use: redis is an optional extra."""
    import redis.asyncio as redis

    class SentinelRedis(redis.Redis):
        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            pool = self.connection_pool
            await super().aclose(close_connection_pool)
            manager = getattr(pool, "sentinel_manager", None)
            if manager is not None:
                await manager.aclose()

    return SentinelRedis


async def diagnose(url: str, exc: BaseException) -> tuple[str, bool] | None:
    """For a sentinel URL whose primary was not found: what failed, and whether it is
    the user's to fix (an unknown service: True) or may pass (no sentinel answers, or no
    primary now: False). None for any other URL or error. It asks the sentinels what they
    monitor (``SENTINEL MASTERS``): a question, not a discovery of our own."""
    if not redis_url.is_sentinel(url):
        return None
    from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
    from redis.exceptions import RedisError

    if not isinstance(exc, MasterNotFoundError):
        return None
    target = redis_url.parse_sentinel(url)
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
            **({"ssl": True} if target.tls else {}),
            **_credentials("sentinel"),
        },
    )
    answered: list[Any] = []  # each sentinel's SENTINEL MASTERS: name -> state
    try:
        for node in sentinel.sentinels:
            try:
                answered.append(await node.sentinel_masters())
            except (RedisError, OSError):  # an unreachable sentinel: what we count
                continue
    finally:
        await sentinel.aclose()
    where = target.sentinels_shown()
    if not answered:
        return f"no sentinel answers at {where}", False
    if not any(target.service in masters for masters in answered):
        known = sorted({name for masters in answered for name in masters})
        listed = ", ".join(known) if known else "none"
        return (
            f"the sentinels at {where} monitor no service {target.service!r} (they "
            f"monitor: {listed})",
            True,
        )
    return f"the sentinels at {where} know no reachable primary for {target.service!r} now", False
