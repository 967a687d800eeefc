"""What every part of the drop-in shares: the options read once with a clear error, the
account's configuration, the engine (one :class:`Session`: its REST pool, TLS context and
limiter, and the user stream), and REST calls with their failures mapped to ccxt's classes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ccxt.async_support.base.exchange import Exchange
from ccxt.base.errors import BadRequest

from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._core import urls
from bitmusa_plugin._core.errors import BitmusaError
from bitmusa_plugin._core.fills import CloseSide
from bitmusa_plugin._core.symbols import SymbolMap
from bitmusa_plugin._engine import rest as bm_rest
from bitmusa_plugin._engine.limiter import RateLimiter
from bitmusa_plugin._engine.secrets import (
    MASK,
    Credentials,
    InsecureURLError,
    redact,
    require_secure,
)
from bitmusa_plugin._engine.session import Session
from bitmusa_plugin._engine.sides import SIDE_WAIT
from bitmusa_plugin._engine.stream import DEFAULT_WS_URL, AccountConfig, Heartbeat

from .errors import raise_for

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")
log = logging.getLogger(__name__)

#: request headers that carry a credential: shown masked when ``verbose`` prints a request
_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})
#: a listenKey in an answer is printed before the stream has registered it as a secret
_LISTEN_KEY = re.compile(r'("listenKey"\s*:\s*")[^"]*(")')

_LIMITER: RateLimiter | None = None


def shared_limiter() -> RateLimiter:
    """One limiter for every bitmusa instance of the process (the limits may be per IP)."""
    global _LIMITER
    if _LIMITER is None:
        _LIMITER = RateLimiter()
    return _LIMITER


class Base(Exchange):  # type: ignore[misc]
    """The engine and REST, for the parts of :class:`bitmusa` (markets, trading, streams)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config or {})
        #: the engine: one pool, TLS context and limiter for every fetch and the stream
        self._engine: Session | None = None
        #: ticker -> symbol: the options', the markets' and every ticker the stream saw
        self._symbols = SymbolMap(self.safe_dict(self.options, "markets", {}))
        self._anonymous: bm_rest.AccountClient | None = None

    # -- options -----------------------------------------------------------------------------

    def _choice(self, name: str, allowed: tuple[str, ...]) -> Any:
        """``options[name]``, one of ``allowed`` (the first is the default)."""
        value = self.options.get(name, allowed[0])
        if value not in allowed:
            raise BadRequest(
                f"bitmusa options['{name}'] is {value!r}: one of {', '.join(map(repr, allowed))}"
            )
        return value

    def _close_side(self) -> CloseSide:
        """How ``position`` reads on closing orders and fills (OQ1, ``options['closeSide']``)."""
        side: CloseSide = self._choice("closeSide", ("trade", "position"))
        return side

    # -- the account and the engine ----------------------------------------------------------

    @property
    def _label(self) -> str:
        return str(self.safe_string(self.options, "account", "bitmusa"))

    def _config(self) -> AccountConfig:
        """The account, from the credentials, the URLs and the options."""
        self.check_required_credentials()
        fallback = self.options.get("apiFallback", True)
        if not isinstance(fallback, bool):
            raise BadRequest(f"bitmusa options['apiFallback'] is {fallback!r}: True or False")
        try:
            return AccountConfig(
                self._label,
                Credentials(self.apiKey, self.secret),
                self.safe_string(self.urls["api"], "rest", bm_rest.DEFAULT_REST_URL),
                self.safe_string(self.urls["api"], "ws", DEFAULT_WS_URL),
                insecure=bool(self.safe_bool(self.options, "insecure", False)),
                ws_path=self._choice("wsPath", urls.WS_PATHS),
                keepalive_prefix=self._choice("keepalivePrefix", urls.KEEPALIVE_PREFIXES),
                fallback=fallback,
            )
        except (urls.UrlError, InsecureURLError) as exc:
            raise BadRequest(f"bitmusa {exc}") from None

    def _timing(self) -> lc.Timing:
        timing = lc.Timing(
            keepalive_interval=self.safe_number(self.options, "keepaliveInterval", 1800.0),
            rotate_after=self.safe_number(self.options, "rotateAfter", 85800.0),
            startup_window=self.safe_number(self.options, "startupWindow", 30.0),
        )
        try:
            return lc.replace_timing(timing, self.safe_dict(self.options, "timing", {}))
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"bitmusa options['timing']: {exc}") from None

    def _limiter(self) -> RateLimiter:
        """The process's shared limiter (8/s, 200/min), or this instance's own with
        ``options['restRate'] = [per second, per minute]``."""
        rate = self.options.get("restRate")
        if rate is None:
            return shared_limiter()
        if (
            not isinstance(rate, list | tuple)
            or len(rate) != 2
            or not all(isinstance(n, int) and n > 0 for n in rate)
        ):
            raise BadRequest(
                f"bitmusa options['restRate'] is {rate!r}: [requests per second, per minute]"
            )
        return RateLimiter(((rate[0], 1.0), (rate[1], 60.0)))

    def _plugins(self) -> dict[str, object]:
        """The session's plugins (the stream part adds its feed)."""
        return {}

    def _session(self) -> Session:
        """The engine, started at first use (a fetch or a watch)."""
        if self._engine is None:
            timing = self._timing()
            close_side = self._close_side()
            limiter = self._limiter()
            beat = self.safe_list(self.options, "heartbeat")
            self._engine = Session(
                self._plugins(),
                command="ccxt",
                limiter=limiter,
                markets={**self._symbols.known, **self.safe_dict(self.options, "markets", {})},
                close_side=close_side,
                timing=timing,
                heartbeat=Heartbeat(float(beat[0]), float(beat[1])) if beat else None,
                keep_listen_key=bool(self.safe_bool(self.options, "keepListenKey", False)),
                resync=bool(self.safe_bool(self.options, "resync", True)),
                rest_timeout=self.timeout / 1000,
                # ccxt's orders and trades carry a side: learn it for another client's
                side_wait=float(self.safe_number(self.options, "sideWait", SIDE_WAIT)),
            )
            self._symbols = self._engine.pipeline.symbols  # tickers seen become known
            _trace_when_verbose(self, self._engine.http)
            self._engine.frame_trace = _frames_when_verbose(self)
            self._engine.start()
        return self._engine

    def _client(self) -> bm_rest.AccountClient:
        """The account's REST client on the session's pool and limiter."""
        config = self._config()
        return self._session().account_client(config)

    def _public_client(self) -> bm_rest.AccountClient:
        """A REST client for the public routes: the account's with keys, else one without
        (its headers empty)."""
        if self.apiKey and self.secret:
            return self._client()
        rest_url = self._rest_url()
        client = self._anonymous
        if client is None or client.rest_url != rest_url.rstrip("/"):
            session = self._session()
            client = self._anonymous = bm_rest.AccountClient(
                Credentials("", ""),
                rest_url,
                timeout=session.rest_timeout,
                limiter=session.limiter,
                client=session.http,
            )
        return client

    def _rest_url(self) -> str:
        """The REST base, checked as an account's is."""
        rest_url: str = self.safe_string(self.urls["api"], "rest", bm_rest.DEFAULT_REST_URL)
        try:
            urls.check_url(rest_url, "rest")
            require_secure(rest_url, insecure=bool(self.safe_bool(self.options, "insecure", False)))
        except (urls.UrlError, InsecureURLError) as exc:
            raise BadRequest(f"bitmusa {exc}") from None
        return rest_url

    async def _rest(self, call: Awaitable[T], context: str | None = None) -> T:
        """Await one REST call; a failure raises its ccxt class (``context``: the method,
        for its refinements of the table)."""
        try:
            return await call
        except BitmusaError as exc:
            raise_for(self, exc, context)

    async def close(self) -> None:
        """Stop the engine (the stream DELETEs its listenKey unless ``keepListenKey``),
        then ccxt's own."""
        engine, self._engine = self._engine, None
        self._anonymous = None
        if engine is not None:
            await engine.aclose()
        await super().close()


def _trace_when_verbose(exchange: Exchange, http: httpx.AsyncClient) -> None:
    """ccxt's ``verbose``: while ``exchange.verbose`` is true, every request on the
    session's pool (the drop-in's calls and the stream's listenKey and snapshot calls) and
    its answer go to ``exchange.log`` (``print``) as ccxt's own ``fetch`` prints them, with
    the credentials and listenKeys masked. Printing never fails a request: an
    ``exchange.log`` that raises (a closed stdout, an encoding) is logged once, and the
    request goes on."""
    show = _printer(exchange, "the calls go on")

    async def on_request(request: httpx.Request) -> None:
        if not exchange.verbose:
            return
        headers = {
            name: MASK if name.lower() in _SECRET_HEADERS else value
            for name, value in request.headers.items()
        }
        body = redact(request.content.decode("utf-8", "replace")) or None
        url = redact(str(request.url))
        show("\nfetch Request:", exchange.id, request.method, url, "RequestHeaders:", headers,
             "RequestBody:", body)  # fmt: skip

    async def on_response(response: httpx.Response) -> None:
        if not exchange.verbose:
            return
        await response.aread()  # kept: the caller reads the same body
        body = _LISTEN_KEY.sub(rf"\1{MASK}\2", redact(response.text))
        request = response.request
        show("\nfetch Response:", exchange.id, request.method, redact(str(request.url)),
             response.status_code, "ResponseHeaders:", dict(response.headers), "ResponseBody:",
             body)  # fmt: skip

    hooks = http.event_hooks
    http.event_hooks = {
        "request": [*hooks["request"], on_request],
        "response": [*hooks["response"], on_response],
    }


def _frames_when_verbose(exchange: Exchange) -> Callable[[str, str, str | None], None]:
    """ccxt.pro's ``verbose`` for websockets: while ``exchange.verbose`` is true, each
    websocket event of the session (the user stream's, and any other stream that calls
    the session's ``frame_trace``) goes to ``exchange.log`` as ccxt.pro's client prints
    its own (``<ISO time> message <frame>``, ``connected``, ``on_close <reason>``), with
    the source named and the credentials and listenKeys masked. Printing never stops a
    stream: a failing ``exchange.log`` is logged once."""
    show = _printer(exchange, "the stream goes on")

    def trace(source: str, event: str, text: str | None) -> None:
        if not exchange.verbose:
            return
        parts: list[Any] = [exchange.iso8601(exchange.milliseconds()), f"bitmusa {source}", event]
        if text is not None:
            parts.append(_LISTEN_KEY.sub(rf"\1{MASK}\2", redact(text)))
        show(*parts)

    return trace


def _printer(exchange: Exchange, going_on: str) -> Callable[..., None]:
    """``exchange.log``, that never raises: the first failure is logged, once."""
    failed: list[Exception] = []

    def show(*parts: Any) -> None:
        try:
            exchange.log(*parts)
        except Exception as exc:
            if not failed:
                failed.append(exc)
                log.warning("bitmusa: verbose output failed (%s): %s", exc, going_on)

    return show
