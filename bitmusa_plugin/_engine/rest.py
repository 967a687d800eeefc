"""The listenKey REST client (httpx): create, keep alive and close the user stream's key.

One :class:`BitmusaAuth` holds the two credentials and adds both headers; its ``repr``
redacts them. Every response is read as Bitmusa's envelope ``{data, code, message}``:
``code != 0`` is an error even on HTTP 200, raised as a typed exception carrying the code.
What a failure means is the error type's (``_core/errors.py``), *when* to retry is the
machine's business. Requests are paced by a shared
:class:`RateLimiter` (Bitmusa documents 8 requests/s and 200/min, possibly per IP).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import ssl
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx

from bitmusa_plugin._core.errors import (
    NetworkError,
    ServerError,
    parse_envelope,
)
from bitmusa_plugin._engine.aio import within
from bitmusa_plugin._engine.secrets import Credentials

log = logging.getLogger(__name__)

DEFAULT_REST_URL = "https://openapi.bitmusa.com/api/v2"
#: Explicit per-request timeout, seconds (connect, read, write and pool alike).
DEFAULT_TIMEOUT = 10.0
LISTEN_KEY_PATH = "/future/userDataStream"
WALLET_PATH = "/future/wallet"
POSITION_PATH = "/future/position"
OPEN_ORDERS_PATH = "/future/order"


class RateLimiter:
    """Sliding-window limits shared by every client of a process (per IP, to be safe):
    a request waits for its turn instead of being refused."""

    def __init__(
        self,
        limits: tuple[tuple[int, float], ...] = ((8, 1.0), (200, 60.0)),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sent: collections.deque[float] = collections.deque()
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def acquire(self) -> None:
        # an asyncio.Lock belongs to one event loop; a process-wide limiter may see several
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            self._locks = {lp: lk for lp, lk in self._locks.items() if not lp.is_closed()}
            lock = self._locks[loop] = asyncio.Lock()
        async with lock:
            while (delay := self._delay()) > 0:  # noqa: ASYNC110 (waits for time, not an event)
                await asyncio.sleep(delay)
            self._sent.append(self._clock())

    def ready(self, n: int = 1) -> bool:
        """Would ``n`` requests go out now, without waiting (and with nobody queued)?"""
        lock = self._locks.get(asyncio.get_running_loop())
        if lock is not None and lock.locked():
            return False
        now = self._clock()
        return all(
            sum(1 for t in self._sent if now - t < window) + n <= count
            for count, window in self.limits
        )

    def _delay(self) -> float:
        now = self._clock()
        longest = max(window for _, window in self.limits)
        while self._sent and now - self._sent[0] >= longest:
            self._sent.popleft()
        delay = 0.0
        for count, window in self.limits:
            recent = [t for t in self._sent if now - t < window]
            if len(recent) >= count:
                delay = max(delay, recent[-count] + window - now)
        return delay


class BitmusaAuth(httpx.Auth):
    """``Authorization: Bearer <auth key>`` and ``x-api-key: <api key>``, from one place."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._credentials.auth_key}"
        request.headers["x-api-key"] = self._credentials.api_key
        yield request

    def __repr__(self) -> str:
        return f"BitmusaAuth({self._credentials!r})"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context (httpx's: certifi's roots, SSL_CERT_FILE honoured) for
    every REST client and websocket of the process. Building one loads the CA bundle: about
    40 ms and a few hundred KiB each, which 1,000 accounts must not pay 1,000 times."""
    return httpx.create_ssl_context()


def http_client(
    timeout: float = DEFAULT_TIMEOUT,
    *,
    connections: int = 4,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An httpx client as every account's REST uses it: verifying TLS, explicit timeouts,
    a small pool. Many accounts of one process share one (``run_accounts`` does): one pool
    of sockets and TLS sessions instead of one per account."""
    return httpx.AsyncClient(
        verify=tls_context(),  # verification stays on; only a transport may be injected
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=max(2, connections // 2)
        ),
        transport=transport,
        headers={"Content-Type": "application/json"},
    )


class _Client:
    """What every REST client of one account shares: the two credentials (added to each
    request by :class:`BitmusaAuth`), the base URL, the process-wide limiter, the pool, and
    reading the envelope. Its own pool, or ``client`` (shared by many accounts, which then
    closes with its owner, not here)."""

    def __init__(
        self,
        credentials: Credentials,
        rest_url: str = DEFAULT_REST_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.timeout = timeout
        self._limiter = limiter
        self._inflight: set[asyncio.Future[httpx.Response]] = set()
        self._prepaid = 0  # limiter permits taken ahead by reserve()
        self._auth = BitmusaAuth(credentials)  # per request: a shared pool has no one auth
        self._owns_client = client is None
        # a resync sends three requests at once; 4 connections, 2 kept idle (httpx's own
        # default keeps 20 idle sockets per client)
        self._client = client or http_client(timeout, transport=transport)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rest_url!r})"

    def ready(self, n: int = 1) -> bool:
        """Would ``n`` calls go out now, without waiting for the shared limiter?"""
        return self._limiter is None or self._limiter.ready(n)

    async def reserve(self, n: int) -> None:
        """Wait for ``n`` turns of the shared limiter now; the next ``n`` calls use them.
        (A resync waits for its turns while frames still flow, then holds them only for
        the snapshot's round trip.)"""
        if self._limiter is not None:
            for _ in range(n):
                await self._limiter.acquire()
                self._prepaid += 1

    async def aclose(self) -> None:
        """Close our own pool (requests still running, abandoned by their callers, end
        now). A shared pool is left to its owner, and our requests on it run to their own
        timeout: cancelling one would cost the others a pool slot."""
        if not self._owns_client:
            return
        for request in list(self._inflight):
            request.cancel()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=1.0)
        await self._client.aclose()

    def _request_done(self, request: asyncio.Future[httpx.Response]) -> None:
        self._inflight.discard(request)
        if not request.cancelled():
            request.exception()  # retrieved: an abandoned request's failure is not news

    async def _records(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        body = await self._call("GET", path, params=params)
        data = body.get("data")
        if data is None:
            return []
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ServerError(f"GET {path}: data is not a list of records", code=body.get("code"))
        return data

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        if self._prepaid > 0:
            self._prepaid -= 1
        elif self._limiter is not None:
            await self._limiter.acquire()
        url = self.rest_url + path
        what = f"{method} {path.rsplit('/', 1)[-1]}"
        budget = (timeout if timeout is not None else self.timeout) * 2 + 1
        # The request runs as its own task and is never cancelled midway: a request
        # cancelled while httpcore assigns it a connection leaks that pool slot for good
        # (encode/httpcore#1093), and enough of them make every later call a PoolTimeout.
        # A caller that gives up (a resync superseded, a watchdog) just stops waiting; the
        # request ends by httpx's own timeouts and gives its connection back.
        request = asyncio.ensure_future(
            self._client.request(
                method, url, params=params, timeout=timeout or self.timeout, auth=self._auth
            )
        )
        self._inflight.add(request)
        request.add_done_callback(self._request_done)
        try:
            # httpx's timeouts bound each phase; this bounds the whole call, so that no
            # transport trouble can leave the lifecycle waiting for an answer forever.
            response = await within(asyncio.shield(request), budget)
        except asyncio.TimeoutError:
            raise NetworkError(f"{what} timed out (no answer within {budget:g} s)") from None
        except httpx.TimeoutException as exc:
            raise NetworkError(f"{what} timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            # the reason matters to whoever reads it: "CERTIFICATE_VERIFY_FAILED", "refused"
            detail = str(exc)[:200]
            raise NetworkError(
                f"{what} failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
            ) from None
        except Exception as exc:
            # Whatever else a transport can raise (seen: h11/anyio errors on a connection the
            # server closed under us) is a failed request too: the lifecycle retries it. An
            # exception escaping here would leave the stream waiting for an answer forever.
            log.debug("%s raised %r", what, exc, exc_info=True)
            raise NetworkError(f"{what} failed: {type(exc).__name__}") from None
        return parse_envelope(what, response.status_code, response.content)


class ListenKeyClient(_Client):
    """The user stream's key: POST / PUT / DELETE ``/future/userDataStream``."""

    async def create(self) -> str:
        """POST: the account's active listenKey, or a new one."""
        body = await self._call("POST", LISTEN_KEY_PATH)
        data = body.get("data")
        key = data.get("listenKey") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            raise ServerError("POST userDataStream returned no listenKey", code=body.get("code"))
        return key

    async def keepalive(self) -> None:
        """PUT: extend the active key's validity by 60 minutes."""
        await self._call("PUT", LISTEN_KEY_PATH)

    async def close_key(self, timeout: float | None = None) -> None:
        """DELETE: close the stream and invalidate the key (for every consumer)."""
        await self._call("DELETE", LISTEN_KEY_PATH, timeout=timeout)


class AccountClient(_Client):
    """The account's state over REST: the snapshots a resync takes (GET ``/future/wallet``,
    ``/future/position``, ``/future/order``), and the ccxt drop-in's fetches."""

    async def wallet(self) -> list[dict[str, Any]]:
        """GET /future/wallet: one record per margin asset."""
        return await self._records(WALLET_PATH, {})

    async def positions(self, ticker: str | None = None) -> list[dict[str, Any]]:
        """GET /future/position: every position, or one ticker's."""
        return await self._records(POSITION_PATH, {"ticker": ticker} if ticker else {})

    async def open_orders(self, ticker: str | None = None, size: int = 50) -> list[dict[str, Any]]:
        """GET /future/order: open orders, newest first (all tickers when none is given)."""
        params: dict[str, Any] = {"size": size}
        if ticker:
            params["ticker"] = ticker
        return await self._records(OPEN_ORDERS_PATH, params)
