"""Bitmusa's failures as ccxt's exception classes, in one table.

Every REST failure the engine raises (``_core/errors.py``) becomes one ccxt exception whose
message starts ``bitmusa <code>`` and names the call (method and URL, never a key):

* by what it means first: a wrong URL (:class:`MisconfiguredError`) is ``BadRequest``; no
  answer is ccxt's ``NetworkError`` (``RequestTimeout`` when the request went out and no
  answer came in time); a rate limit is ``RateLimitExceeded``;
* then by Bitmusa's code, through ccxt's own ``exceptions`` convention in ``describe()``:
  ``exact`` codes (REFERENCE.md §3, and the simulator's 4001/4002), then ``broad`` phrases of
  the message, for a server whose codes differ from the documented ones; a method may
  refine the table (``createOrder``: an invalid parameter is an ``InvalidOrder``);
* anything else is ``ExchangeError``.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ccxt.base.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    ExchangeError,
    ExchangeNotAvailable,
    InsufficientFunds,
    InvalidOrder,
    NetworkError,
    OperationRejected,
    OrderNotFound,
    PermissionDenied,
    RateLimitExceeded,
    RequestTimeout,
)

from bitmusa_plugin._core import errors as bm
from bitmusa_plugin._engine.rest import TimedOutError

#: ``describe()['exceptions']``: Bitmusa's codes (REFERENCE.md §3) and the HTTP statuses
#: that come without one, then phrases of the documented messages.
EXCEPTIONS: dict[str, Any] = {
    "exact": {
        "999": ExchangeNotAvailable,  # INTERNAL SERVER ERROR
        "1001": AuthenticationError,  # API KEY NOT FOUND
        "1002": PermissionDenied,  # NOT ALLOWED IP
        "1003": AuthenticationError,  # EMPTY API KEY
        "1005": PermissionDenied,  # NOT ALLOWED PRIVILEGE
        "1006": BadRequest,  # REQUEST SIZE LIMIT
        "1007": BadRequest,  # EMPTY ORDER ID
        "1008": InvalidOrder,  # EMPTY ORDER PRICE
        "1009": InvalidOrder,  # ORDER PRICE TOO SMALL
        "1010": BadRequest,  # EMPTY START OR END TIME
        "1011": RateLimitExceeded,  # TOO MANY REQUESTS
        "1012": PermissionDenied,  # NOT ALLOWED PRIVILEGE FOR SUB-ACCOUNT
        "1013": OperationRejected,  # UNABLE TO REQUEST STATUS
        "1014": BadRequest,  # INVALID REQUEST PARAMETER
        "1015": BadRequest,  # END_TIME MUST BE GREATER THEN START_TIME
        "1016": BadRequest,  # INVALID K-LINE INTERVAL
        **{str(code): InvalidOrder for code in range(2001, 2009)},  # spot order fields
        "2007": BadSymbol,  # EMPTY SPOT SYMBOL
        **{str(code): InvalidOrder for code in (3001, 3002, 3003, 3004)},  # UNKNOWN ...
        "3005": BadRequest,  # ADJUSTABLE FUTURE LEVERAGE VALUE
        **{str(code): InvalidOrder for code in (3006, 3007, 3008)},  # triggers
        "3009": BadSymbol,  # EMPTY FUTURE TICKER
        **{str(code): InvalidOrder for code in range(3010, 3015)},  # EMPTY order fields
        "3015": BadRequest,  # EMPTY FUTURE LEVERAGE
        "3016": InvalidOrder,  # ORDER QUANTITY TOO SMALL
        "3017": InvalidOrder,  # UNKNOWN FUTURE TRIGGER DIRECTION
        "3018": InvalidOrder,  # UNKNOWN FUTURE TRIGGER TYPE
        **{str(code): BadRequest for code in (3019, 3020, 3021)},  # leverage types
        "3022": ExchangeError,  # EMPTY LISTEN KEY
        "3023": InvalidOrder,  # UNKNOWN FUTURE TIF
        **{str(code): BadRequest for code in range(3024, 3029)},  # mode settings
        "4001": InsufficientFunds,  # the simulator's INSUFFICIENT BALANCE
        "4002": OrderNotFound,  # the simulator's ORDER NOT FOUND
        "401": AuthenticationError,
        "403": PermissionDenied,
        "429": RateLimitExceeded,
    },
    "broad": {
        "INSUFFICIENT BALANCE": InsufficientFunds,
        "ORDER NOT FOUND": OrderNotFound,
        "TOO MANY REQUESTS": RateLimitExceeded,
        "NOT ALLOWED": PermissionDenied,
        "API KEY": AuthenticationError,
    },
    # per method, before the general table
    "createOrder": {"exact": {"1014": InvalidOrder}},
}


#: What to do, for refusals whose message does not say it (context, code).
HINTS = {
    ("setPositionMode", "1013"): "a market with an open position or order keeps its mode: "
    "close them (cancel_all_orders, close_position) first",
}


def text_of(exc: bm.BitmusaError) -> str:
    """``bitmusa <code> <what failed>``: the code first, as ccxt's messages carry it."""
    return f"bitmusa {exc.code} {exc.message}" if exc.code is not None else f"bitmusa {exc.message}"


def raise_for(
    exchange: Any, exc: bm.BitmusaError, context: str | None = None, text: str | None = None
) -> NoReturn:
    """Raise the ccxt exception for a Bitmusa REST failure: by what it means, then by
    ``exchange.exceptions`` (``context``'s refinement, e.g. ``createOrder``, first) with
    ccxt's own matchers, else ``ExchangeError``."""
    text = text or text_of(exc)
    hint = HINTS.get((context or "", str(exc.code)))
    if hint is not None:
        text = f"{text}: {hint}"
    if isinstance(exc, bm.MisconfiguredError):
        raise BadRequest(text)
    if isinstance(exc, TimedOutError):
        raise RequestTimeout(text)
    if isinstance(exc, bm.NetworkError):
        raise NetworkError(text)
    if isinstance(exc, bm.RateLimitedError):
        raise RateLimitExceeded(text)
    table = exchange.exceptions
    code = None if exc.code is None else str(exc.code)
    if context is not None:
        exchange.throw_exactly_matched_exception(
            exchange.safe_dict(table.get(context), "exact", {}), code, text
        )
    exchange.throw_exactly_matched_exception(table["exact"], code, text)
    exchange.throw_broadly_matched_exception(table["broad"], exc.message, text)
    if isinstance(exc, bm.ServerError):
        raise ExchangeNotAvailable(text)
    raise ExchangeError(text)


def ccxt_error(
    exchange: Any, exc: bm.BitmusaError, context: str | None = None, text: str | None = None
) -> Exception:
    """The exception :func:`raise_for` raises, to keep and raise later (a stream's end)."""
    try:
        raise_for(exchange, exc, context, text)
    except Exception as error:
        return error
