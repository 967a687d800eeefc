"""Bitmusa's REST API (httpx): the listenKey's lifecycle (:class:`ListenKeyClient`), and
the account, trading and market-data calls the resync and the ccxt drop-in make
(:class:`AccountClient`).

One :class:`BitmusaAuth` holds the two credentials and adds both headers; its ``repr``
redacts them. Every response is read as Bitmusa's envelope ``{data, code, message}``:
``code != 0`` is an error even on HTTP 200, raised as a typed exception carrying the code.
What a failure means is the error type's (``_core/errors.py``), *when* to retry is the
machine's business. Requests are paced by a shared
:class:`RateLimiter` (Bitmusa documents 8 requests/s and 200/min, possibly per IP);
placing, cancelling, closing and the settings take its next turn (``TRADING``).

Nothing here retries: a POST that places an order is sent once. When no answer comes, the
exception says whether the request can have reached the server: :class:`NotSentError`
(the connection was never made: nothing was carried out) or :class:`TimedOutError` and
any other :class:`NetworkError` (it may have been carried out).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import socket
import ssl
import weakref
from collections.abc import Generator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from bitmusa_plugin._core import urls
from bitmusa_plugin._core.errors import (
    BitmusaError,
    MisconfiguredError,
    NetworkError,
    ServerError,
    parse_envelope,
)
from bitmusa_plugin._engine.aio import within
from bitmusa_plugin._engine.limiter import ROUTINE, TRADING, RateLimiter
from bitmusa_plugin._engine.secrets import Credentials

log = logging.getLogger(__name__)

DEFAULT_REST_URL = "https://openapi.bitmusa.com/api/v2"
#: Explicit per-request timeout, seconds (connect, read, write and pool alike).
DEFAULT_TIMEOUT = 10.0
LISTEN_KEY_PATH = "/future/userDataStream"
WALLET_PATH = "/future/wallet"
POSITION_PATH = "/future/position"
OPEN_ORDERS_PATH = "/future/order"
TRADE_HISTORY_PATH = "/future/trade/history"
EXCHANGE_INFO_PATH = "/future/market/exchange-info"
TICKER_PATH = "/future/market"
ORDER_BOOK_PATH = "/future/market/orderbook"
PUBLIC_TRADES_PATH = "/future/market/trade"
KLINE_HISTORY_PATH = "/future/market/kline/history"
KLINE_SDK_PATH = "/future/market/kline"
ORDER_PATH = "/future/order"
CANCEL_PATH = "/future/order/cancel/"
CANCEL_ALL_PATH = "/future/order/cancel/all"
CLOSE_ALL_PATH = "/future/position/close/all"
LEVERAGE_PATH = "/future/leverage"
HEDGE_LEVERAGE_PATH = "/future/leverage/hedge"
POSITION_MODE_PATH = "/future/position/mode"
#: under the host's root, not the REST base (ninjaxt's ``api/health``), and public
HEALTH_PATH = "/api/health"
#: trade-history records per page we ask for, and pages at most per call of ours
HISTORY_PAGE = 100
HISTORY_PAGES = 20


class BitmusaAuth(httpx.Auth):
    """``Authorization: Bearer <auth key>`` and ``x-api-key: <api key>``, from one place."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # no keys (the public /api/health, asked without credentials): no headers at all;
        # "Bearer " with nothing after it is not a legal header value
        if self._credentials.auth_key:
            request.headers["Authorization"] = f"Bearer {self._credentials.auth_key}"
        if self._credentials.api_key:
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
    a small pool. Many accounts of one process share one (a :class:`Session` does): one
    pool of sockets and TLS sessions instead of one per account.

    Its requests take a slot of ours before they reach httpcore's pool, so that its queue
    never holds more than it has connections: a request that times out in httpcore's queue
    just as a new connection is assigned to it leaves that connection CONNECTING for good
    (encode/httpcore#550, still seen with 1.0.9 on a loaded machine), and enough of them
    make every later call a PoolTimeout."""
    client = httpx.AsyncClient(
        verify=tls_context(),  # verification stays on; only a transport may be injected
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=max(2, connections // 2)
        ),
        transport=transport,
        headers={"Content-Type": "application/json"},
    )
    _SLOTS[client] = _Slots(connections)
    return client


class _Slots:
    """A pool's free connections: what ``asyncio.Semaphore`` does, first come first served,
    with a deadline on the wait that needs no task of its own. ``within(semaphore.acquire(),
    t)`` took a task, its coroutine and the semaphore's future for every request waiting
    for a connection, and 1,000 accounts starting at once keep hundreds waiting: that peak
    stays in the process's memory once they are idle (issue 21)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, timeout: float) -> None:
        """A slot, or ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await within(waiter, timeout)  # cancelled on a timeout or our cancellation
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it gave up: it passes on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # not one that gave up
                waiter.set_result(None)  # the slot passes to it
                return
        self._free += 1


#: one slot per connection of each pool made by :func:`http_client`
_SLOTS: weakref.WeakKeyDictionary[httpx.AsyncClient, _Slots] = weakref.WeakKeyDictionary()
#: the requests running on each pool, whichever client sent them (see :func:`close_pool`)
_RUNNING: weakref.WeakKeyDictionary[httpx.AsyncClient, set[asyncio.Future[Any]]] = (
    weakref.WeakKeyDictionary()
)


async def close_pool(client: httpx.AsyncClient, timeout: float = 1.0) -> None:
    """Close a shared pool for good: the requests still running on it (abandoned by their
    callers, left to their own timeouts while the pool was shared) are cancelled and
    awaited, so that nothing of ours outlives its owner."""
    running = list(_RUNNING.get(client, ()))
    for request in running:
        request.cancel()
    if running:
        await asyncio.wait(running, timeout=timeout)
    await client.aclose()


class _Client:
    """What every REST client of one account shares: the two credentials (added to each
    request by :class:`BitmusaAuth`), the base URL, the process-wide limiter, the pool, and
    reading the envelope. Its own pool, or ``client`` (shared by many accounts, which then
    closes with its owner, not here). ``auth``: the account's other client's, to share
    (one fewer object an idle stream; it only reads the credentials)."""

    # slots, not an instance dict, here and in the subclasses: an idle stream has two
    # clients (issue 21)
    __slots__ = (
        "_auth",
        "_client",
        "_inflight",
        "_limiter",
        "_owns_client",
        "_prepaid",
        "rest_url",
        "timeout",
    )

    def __init__(
        self,
        credentials: Credentials,
        rest_url: str = DEFAULT_REST_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
        auth: BitmusaAuth | None = None,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.timeout = timeout
        self._limiter = limiter
        # Made by the first request and dropped once none runs: an empty set that held
        # requests is 216 B, and an idle stream has two clients (issue 21).
        self._inflight: set[asyncio.Future[httpx.Response]] | None = None
        self._prepaid = 0  # limiter permits taken ahead by reserve()
        # per request: a shared pool has no one auth
        self._auth = auth if auth is not None else BitmusaAuth(credentials)
        self._owns_client = client is None
        # a resync sends three requests at once; 4 connections, 2 kept idle (httpx's own
        # default keeps 20 idle sockets per client)
        self._client = client or http_client(timeout, transport=transport)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rest_url!r})"

    @property
    def auth(self) -> BitmusaAuth:
        """The two headers' source (``auth`` of another client of the same account)."""
        return self._auth

    @property
    def inflight(self) -> int:
        """Requests under way, those whose callers gave up included (they run to their own
        timeout, never cancelled midway)."""
        return len(self._inflight or ())

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
        running = list(self._inflight or ())
        for request in running:
            request.cancel()
        if running:
            await asyncio.wait(running, timeout=1.0)
        await self._client.aclose()

    def _request_done(self, request: asyncio.Future[httpx.Response]) -> None:
        inflight = self._inflight
        if inflight is not None:
            inflight.discard(request)
            if not inflight:
                self._inflight = None
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
        base: str | None = None,
        priority: int = ROUTINE,
        json: Any = None,
    ) -> dict[str, Any]:
        """One request, its envelope read. ``priority``: ``TRADING`` for orders and cancels
        (first in the shared limiter's queue). ``json``: the request's body."""
        if self._prepaid > 0:
            self._prepaid -= 1
        elif self._limiter is not None:
            await self._limiter.acquire(priority)
        url = (base or self.rest_url) + path
        what = f"{method} {urls.shown(url)}"
        budget = (timeout if timeout is not None else self.timeout) * 2 + 1
        # The request runs as its own task and is never cancelled midway: a request
        # cancelled while httpcore assigns it a connection leaks that pool slot for good
        # (encode/httpcore#1093), and enough of them make every later call a PoolTimeout.
        # A caller that gives up (a resync superseded, a watchdog) just stops waiting; the
        # request ends by httpx's own timeouts and gives its connection back.
        request = asyncio.ensure_future(
            self._send(method, url, params, json, timeout=timeout or self.timeout, budget=budget)
        )
        if self._inflight is None:
            self._inflight = set()
        self._inflight.add(request)
        running = _RUNNING.setdefault(self._client, set())
        running.add(request)
        request.add_done_callback(running.discard)
        request.add_done_callback(self._request_done)
        try:
            # httpx's timeouts bound each phase; this bounds the whole call, so that no
            # transport trouble can leave the lifecycle waiting for an answer forever.
            # ``cancel=False``, not ``asyncio.shield``: the request runs on either way, and
            # the shield's second future and callbacks were 3 KiB of RSS an idle stream at
            # 200 accounts, from the start-up's peak (issue 21). (The turn it cost every
            # answer had hidden a side-gate delay: ``_engine/sides.py``, ``listing``.)
            response = await within(request, budget, cancel=False)
        except asyncio.TimeoutError:
            raise TimedOutError(f"{what}: no answer within {budget:g} s") from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # no connection was made (DNS, refused, TLS, no pool slot): nothing was sent
            raise NotSentError(f"{what}: {network_reason(exc)}") from None
        except httpx.TimeoutException as exc:
            raise TimedOutError(f"{what}: timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise NetworkError(f"{what}: {network_reason(exc)}") from None
        except Exception as exc:
            # Whatever else a transport can raise (seen: h11/anyio errors on a connection the
            # server closed under us) is a failed request too: the lifecycle retries it. An
            # exception escaping here would leave the stream waiting for an answer forever.
            log.debug("%s raised %r", what, exc, exc_info=True)
            raise NetworkError(f"{what}: failed ({type(exc).__name__})") from None
        # the hint is made per answer, not kept per client: an idle stream's two copies
        # were 0.25 KiB (issue 21)
        hint = urls.rest_hint(self.rest_url)
        return parse_envelope(what, response.status_code, response.content, hint)

    async def _send(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        json: Any,
        *,
        timeout: float,
        budget: float,
    ) -> httpx.Response:
        """One request, in a slot of the pool's (:func:`http_client`); one that waited for a
        slot longer than its caller would is not sent at all (nobody waits for it)."""
        slots = _SLOTS.get(self._client)
        if slots is None:  # a client made elsewhere: its own pool's queue
            return await self._client.request(
                method, url, params=params, json=json, timeout=timeout, auth=self._auth
            )
        await slots.acquire(budget)
        try:
            return await self._client.request(
                method, url, params=params, json=json, timeout=timeout, auth=self._auth
            )
        finally:
            slots.release()


class NotSentError(NetworkError):
    """No connection could be made (unknown host, refused, TLS, no free connection): the
    request never reached the server, so nothing it asked for was carried out."""


class TimedOutError(NetworkError):
    """The request went out but no answer came in time: what it asked for may have been
    carried out (an order placed) or not."""


def network_reason(exc: BaseException) -> str:
    """Why no answer came, in words a user can act on: the unknown host, the refused port,
    the certificate, read from the exception's causes (httpx wraps httpcore's, which wraps
    the socket's)."""
    seen: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in seen:
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    for error in seen:
        if isinstance(error, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate not trusted ({error.verify_message}); verification stays "
                "on: fix the trust store (SSL_CERT_FILE) or the host name"
            )
        if isinstance(error, ssl.SSLError):
            return f"TLS failed ({error.reason or error}); is this port TLS (https/wss)?"
        if isinstance(error, socket.gaierror):
            return "unknown host (DNS found no address); check the host name"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused: nothing listens on that port; check host and port"
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host (DNS found no address); check the host name"
    if "All connection attempts failed" in text or "Connection refused" in text:
        return "connection refused: nothing listens on that port; check host and port"
    detail = text[:200]
    return f"{type(exc).__name__}" + (f": {detail}" if detail else "")


#: What a keep-alive path of the other reading answers: 404 where nothing is there, 405
#: where the path is there for POST only (``/api/v2/future/userDataStream`` on a server that
#: keeps its PUT and DELETE under ``/api/v1``): both mean "try the other prefix".
_NOT_THIS_READING = frozenset((404, 405))


class ListenKeyClient(_Client):
    """The user stream's key: POST / PUT / DELETE ``/future/userDataStream``.

    PUT and DELETE go under ``keepalive_prefix`` (``v2``: the REST base, as documented;
    ``v1``: node-bitmusa-api's reading). With ``fallback``, a 404 there makes the client
    try the other reading once; one that answers is kept for the rest of the run (and
    said in one log line), and two refusals are a :class:`MisconfiguredError` naming both.
    A 405 counts as a 404: it is how a server of the other reading answers a PUT on the
    path it serves only for POST."""

    __slots__ = ("_label", "_settled", "fallback", "keepalive_prefix")

    def __init__(
        self,
        credentials: Credentials,
        rest_url: str = DEFAULT_REST_URL,
        *,
        keepalive_prefix: urls.KeepalivePrefix = "v2",
        fallback: bool = True,
        label: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(credentials, rest_url, **kwargs)
        self.keepalive_prefix: urls.KeepalivePrefix = keepalive_prefix
        self.fallback = fallback
        self._label = label
        self._settled = False  # a PUT or DELETE was answered: the reading is known

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
        await self._keyed("PUT")

    async def close_key(self, timeout: float | None = None) -> None:
        """DELETE: close the stream and invalidate the key (for every consumer)."""
        await self._keyed("DELETE", timeout=timeout)

    async def _keyed(self, method: str, timeout: float | None = None) -> None:
        prefix = self.keepalive_prefix
        base = urls.keepalive_base(self.rest_url, prefix)
        try:
            # a keep-alive goes before routine calls, as an order does: a burst of them (a
            # resync's history, another client's orders' sides) must not let the key lapse
            await self._call(method, LISTEN_KEY_PATH, timeout=timeout, base=base, priority=TRADING)
        except MisconfiguredError as first:
            alternative = urls.keepalive_base(self.rest_url, urls.other(prefix))
            if (
                self._settled
                or not self.fallback
                or first.status not in _NOT_THIS_READING
                or alternative == base
            ):
                raise
            try:
                await self._call(
                    method, LISTEN_KEY_PATH, timeout=timeout, base=alternative, priority=TRADING
                )
            except MisconfiguredError as second:
                raise MisconfiguredError(
                    f"{method} userDataStream: {urls.shown(base + LISTEN_KEY_PATH)} and "
                    f"{urls.shown(alternative + LISTEN_KEY_PATH)} both answered "
                    f"HTTP {first.status}/{second.status}",
                    code=second.code,
                    status=second.status,
                    hint=first.hint,
                ) from None
            except BitmusaError:
                self._switch(method, base, alternative, first.status)  # an envelope came
                raise
            self._switch(method, base, alternative, first.status)
        self._settled = True

    def _switch(self, method: str, base: str, alternative: str, status: int | None) -> None:
        self.keepalive_prefix = urls.other(self.keepalive_prefix)
        self._settled = True
        log.warning(
            "%s%s userDataStream answered %s under %s but works under %s "
            "(keepalive_prefix %s): using that for the rest of the run",
            f"{self._label}: " if self._label else "",
            method,
            status,
            urls.shown(base),
            urls.shown(alternative),
            self.keepalive_prefix,
        )


class AccountClient(_Client):
    """The account's state over REST: the snapshots a resync takes (GET ``/future/wallet``,
    ``/future/position``, ``/future/order``), and the ccxt drop-in's fetches."""

    __slots__ = ()

    async def wallet(self) -> list[dict[str, Any]]:
        """GET /future/wallet: one record per margin asset."""
        return await self._records(WALLET_PATH, {})

    async def positions(self, ticker: str | None = None) -> list[dict[str, Any]]:
        """GET /future/position: every position, or one ticker's."""
        return await self._records(POSITION_PATH, {"ticker": ticker} if ticker else {})

    async def trade_history(
        self,
        ticker: str | None = None,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """GET /future/trade/history: the account's fills, newest first, page after page
        (``HISTORY_PAGE`` a page, at most ``HISTORY_PAGES``) until a page comes back short,
        ``limit`` records are in, or the records are older than ``since_ms``. Sends only the
        filters given, as both SDKs do (DF calls four "required"; the simulator does not
        require them: docs/ccxt.md). Reads DF's array and the SDKs' paged ``content``."""
        records: list[dict[str, Any]] = []
        params: dict[str, Any] = {"size": HISTORY_PAGE}
        if ticker:
            params["ticker"] = ticker
        if since_ms is not None:
            params["startTime"] = since_ms
        if until_ms is not None:
            params["endTime"] = until_ms
        for page in range(1, HISTORY_PAGES + 1):
            data = await self.trade_history_page(page, params)
            if data is None:
                break
            records += data
            if len(data) < HISTORY_PAGE or (limit is not None and len(records) >= limit):
                break
        return records if limit is None else records[:limit]

    async def trade_history_page(
        self, page: int, params: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        """One page (from 1) of GET /future/trade/history with ``params`` (``size`` and
        the filters): its records, newest first, or None when the body has none at all.
        (A gap's whole history is read page by page in ``_engine/history.py``.)"""
        body = await self._call("GET", TRADE_HISTORY_PATH, params={**params, "page": page})
        data = body.get("data")
        if isinstance(data, dict):
            data = data.get("content")
        if data is None:
            data = body.get("content")  # node-bitmusa-api reads it at the top level
        if data is None:
            return None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ServerError(
                f"GET {TRADE_HISTORY_PATH}: data is not a list of records",
                code=body.get("code"),
            )
        return data

    async def open_orders(self, ticker: str | None = None, size: int = 50) -> list[dict[str, Any]]:
        """GET /future/order: open orders, newest first (all tickers when none is given)."""
        params: dict[str, Any] = {"size": size}
        if ticker:
            params["ticker"] = ticker
        return await self._records(OPEN_ORDERS_PATH, params)

    # -- market data (every route but health needs both headers, like the rest) ----------

    async def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; its ``data`` (None when absent, as action endpoints answer)."""
        body = await self._call(method, path, **kwargs)
        return body.get("data")

    async def exchange_info(self) -> list[dict[str, Any]]:
        """GET /future/market/exchange-info (undocumented; ninjaxt's): every market."""
        return await self._records(EXCHANGE_INFO_PATH, {})

    async def ticker(self, params: dict[str, Any]) -> dict[str, Any]:
        """GET /future/market: one market's 24 h ticker. ``params`` name the market as
        DF (``symbol``) or the SDKs (``ticker``) do, or both."""
        return _record(await self._data("GET", TICKER_PATH, params=params), TICKER_PATH)

    async def order_book(self, ticker: str, size: int) -> dict[str, Any]:
        """GET /future/market/orderbook: ``buy`` and ``sell`` levels (``size`` a side)."""
        params = {"ticker": ticker, "size": size}
        return _record(await self._data("GET", ORDER_BOOK_PATH, params=params), ORDER_BOOK_PATH)

    async def public_trades(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """GET /future/market/trade: the market's latest trades, newest first."""
        return await self._records(PUBLIC_TRADES_PATH, params)

    async def klines(self, path: str, params: dict[str, Any]) -> list[list[Any]]:
        """GET ``path`` (``KLINE_HISTORY_PATH`` with ``period``, DF's; ``KLINE_SDK_PATH``
        with ``interval``, the SDKs'): rows ``[time, open, high, low, close, qty]``."""
        data = await self._data("GET", path, params=params)
        if data is None:
            return []
        if not isinstance(data, list) or not all(isinstance(row, list) for row in data):
            raise ServerError(f"GET {path}: data is not a list of rows")
        return data

    async def health(self) -> Any:
        """GET /api/health on the host's root: ``"OK"`` when all is well."""
        return await self._data("GET", HEALTH_PATH, base=host_root(self.rest_url))

    # -- trading: never retried, first in the shared limiter's queue; the actions answer
    # -- the envelope, ``{"code": 0, "message": "success"}``

    async def create_order(self, body: dict[str, Any]) -> str:
        """POST /future/order: the new order's id. Sent once, whatever happens."""
        data = await self._data("POST", ORDER_PATH, json=body, priority=TRADING)
        if not isinstance(data, str) or not data:
            raise ServerError(f"POST {ORDER_PATH} answered no order id")
        return data

    async def cancel_order(self, order_id: str) -> dict[str, Any]:
        """POST /future/order/cancel/{orderId} (the id quoted: it is a path segment)."""
        return await self._call("POST", CANCEL_PATH + quote(order_id, safe=""), priority=TRADING)

    async def cancel_all(self, ticker: str) -> dict[str, Any]:
        """POST /future/order/cancel/all for ``ticker``, or ``all``. The ticker goes in the
        query (node-bitmusa-api) and in a JSON body (DF's "Parameter" may mean either)."""
        return await self._call(
            "POST",
            CANCEL_ALL_PATH,
            params={"ticker": ticker},
            json={"ticker": ticker},
            priority=TRADING,
        )

    async def close_all(self, ticker: str) -> dict[str, Any]:
        """POST /future/position/close/all for ``ticker``, or ``all`` (as cancel all)."""
        return await self._call(
            "POST",
            CLOSE_ALL_PATH,
            params={"ticker": ticker},
            json={"ticker": ticker},
            priority=TRADING,
        )

    async def set_leverage(
        self, ticker: str, leverage: int, leverage_type: int = 0
    ) -> dict[str, Any]:
        """POST /future/leverage: 1-125; type 0 ONEWAY, 1 HEDGE_BUY, 2 HEDGE_SELL."""
        body = {"ticker": ticker, "leverage": leverage, "leverage_type": leverage_type}
        return await self._call("POST", LEVERAGE_PATH, json=body, priority=TRADING)

    async def set_hedge_leverage(self, ticker: str, buy: int, sell: int) -> dict[str, Any]:
        """POST /future/leverage/hedge: both sides of a hedge-mode ticker at once."""
        body = {"ticker": ticker, "buy_leverage": buy, "sell_leverage": sell}
        return await self._call("POST", HEDGE_LEVERAGE_PATH, json=body, priority=TRADING)

    async def leverage(self, ticker: str) -> list[dict[str, Any]]:
        """GET /future/leverage: ``[{type: ONEWAY|HEDGE_SELL|HEDGE_BUY, leverage}]``."""
        return await self._records(LEVERAGE_PATH, {"ticker": ticker})

    async def set_position_mode(self, ticker: str, hedged: bool) -> dict[str, Any]:
        """POST /future/position/mode, per ticker: 0 ONEWAY, 1 HEDGE."""
        body = {"ticker": ticker, "position_mode": 1 if hedged else 0}
        return await self._call("POST", POSITION_MODE_PATH, json=body, priority=TRADING)

    async def position_mode(self, ticker: str) -> Any:
        """GET /future/position/mode: ``"ONEWAY"`` or ``"HEDGE"``."""
        return await self._data("GET", POSITION_MODE_PATH, params={"ticker": ticker})


def _record(data: Any, path: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ServerError(f"GET {path}: data is not a record")
    return data


def host_root(rest_url: str) -> str:
    """The host's root for ``rest_url`` (``https://openapi.bitmusa.com/api/v2`` ->
    ``https://openapi.bitmusa.com``): where ``/api/health`` lives. A base that does not end
    in ``/api/v<n>`` (a proxy of one's own) is its own root."""
    base = rest_url.rstrip("/")
    path = urlsplit(base).path
    head, _, version = path.rpartition("/")
    if head.endswith("/api") and version[:1] == "v" and version[1:].isdigit():
        return base[: -len("/api/" + version)]
    return base
