"""ccxt-shaped structures carried by the hooks.

The keys are ccxt's own (``ccxt.base.types``), so a handler written for ccxt's unified
structures reads these unchanged. Numbers are ``float`` (ccxt's ``Num``), timestamps are
integer milliseconds, and a fact the exchange did not send is ``None``, as in ccxt.
"""

from __future__ import annotations

from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

Num = float | None
Str = str | None
Int = int | None
Bool = bool | None

#: How a plugin wants its calls when it falls behind (docs/plugins.md): ``latest`` merges
#: queued states of one object into the newest (never an event), ``all`` delivers every
#: call and makes ingestion wait. A plugin declares it as ``bitmusa_delivery``.
DeliveryPolicy = Literal["latest", "all"]

#: Every ``error["kind"]`` (what each means: ``ERROR_KINDS``).
ErrorKind = Literal[
    "malformed_json",
    "not_an_object",
    "unknown_stream",
    "missing_field",
    "invalid_field",
    "invalid_value",
    "oversize",
    "internal",
    "binary_frame",
    "plugin_error",
    "plugin_slow",
    "plugin_behind",
    "plugin_stalled",
    "queue_overflow",
    "resync_incomplete",
    "trade_estimated",
    "side_unknown",
    "rest_error",
    "sink_unavailable",
    "lease_lost",
]

#: The values ``StreamState["status"]`` takes.
StreamStatus = Literal[
    "connecting",
    "connected",
    "disconnected",
    "gap",
    "rotating",
    "rotated",
    "closed",
    "failed",
]


class Fee(TypedDict):
    """A fee, as ccxt's ``FeeInterface``."""

    currency: Str
    cost: Num
    rate: NotRequired[Num]


class BalanceEntry(TypedDict):
    """One currency's balance, as ccxt's ``Balance``: ``total == free + used``."""

    free: Num
    used: Num
    total: Num


class Balance(TypedDict, total=False):
    """The whole futures account balance, as ccxt's ``Balances``.

    Besides these keys, every currency code seen so far is a key of its own holding a
    :class:`BalanceEntry` (``balance["USDT"]["free"]``), exactly as in ccxt. TypedDict
    cannot spell those dynamic keys; ``balance["free"]["USDT"]`` is the typed way in.
    """

    info: dict[str, Any]
    timestamp: Int
    datetime: Str
    free: dict[str, Num]
    used: dict[str, Num]
    total: dict[str, Num]


class Order(TypedDict):
    """A ccxt unified order (``ccxt.base.types.Order`` plus the keys ``safe_order`` adds)."""

    info: dict[str, Any]
    id: Str
    clientOrderId: Str
    timestamp: Int
    datetime: Str
    lastTradeTimestamp: Int
    lastUpdateTimestamp: Int
    symbol: Str
    type: Str
    timeInForce: Str
    postOnly: Bool
    reduceOnly: Bool
    side: Str
    price: Num
    stopPrice: Num
    triggerPrice: Num
    takeProfitPrice: Num
    stopLossPrice: Num
    amount: Num
    cost: Num
    average: Num
    filled: Num
    remaining: Num
    status: Str
    fee: Fee | None
    fees: list[Fee]
    trades: list[dict[str, Any]]


class Trade(TypedDict):
    """A ccxt unified trade of the account's own (``ccxt.base.types.Trade``): one fill.

    ``id`` is ``"<order id>:<the order's cumulative filled after this fill>"``: the same
    fill has the same id however it reached you (live, or recovered after a gap), so a
    plugin can de-duplicate across restarts. ``fee`` and ``takerOrMaker`` are ``None``
    when the source does not say (the live stream does not: see docs/hooks.md).
    """

    info: dict[str, Any]
    id: Str
    order: Str
    timestamp: Int
    datetime: Str
    symbol: Str
    type: Str
    side: Str
    takerOrMaker: Str
    price: Num
    amount: Num
    cost: Num
    fee: Fee | None
    fees: list[Fee]


class Position(TypedDict):
    """A ccxt unified position (``ccxt.base.types.Position``)."""

    info: dict[str, Any]
    id: Str
    symbol: Str
    timestamp: Int
    datetime: Str
    lastUpdateTimestamp: Int
    initialMargin: Num
    initialMarginPercentage: Num
    maintenanceMargin: Num
    maintenanceMarginPercentage: Num
    entryPrice: Num
    notional: Num
    leverage: Num
    unrealizedPnl: Num
    realizedPnl: Num
    contracts: Num
    contractSize: Num
    marginRatio: Num
    liquidationPrice: Num
    markPrice: Num
    lastPrice: Num
    collateral: Num
    positionMargin: Num
    marginMode: Str
    side: Str
    percentage: Num
    stopLossPrice: Num
    takeProfitPrice: Num
    hedged: Bool


class Event(TypedDict):
    """The envelope every data hook receives beside its unified object.

    ``data`` is the payload exactly as it arrived (the ``data`` member of the frame);
    ``receivedAt`` is when this process read the frame (ms since the epoch).
    ``stream`` is ``future_wallet``, ``future_order`` or ``future_position`` for live
    frames.
    """

    account: str
    stream: str
    eventTime: Int
    receivedAt: int
    data: Any


class StreamState(TypedDict):
    """A connection lifecycle change of one account's stream.

    ``since`` / ``until`` (ms) bound a ``gap``: the last moment events were known to be
    arriving, and the moment the new connection was up. ``reason`` says why, where there
    is one. ``stats`` carries the stream's counters where the engine has them.
    """

    account: str
    status: StreamStatus
    since: Int
    until: Int
    reason: Str
    stats: NotRequired[dict[str, Any]]


class ErrorInfo(TypedDict):
    """Something went wrong and was contained.

    ``kind`` is a stable machine-readable word (see ``docs/hooks.md`` for the list),
    ``message`` a human sentence, ``raw`` the offending frame's text (truncated) where
    a frame was at fault, ``plugin`` the plugin at fault where one was. ``count``, when
    present, is how many occurrences this one report stands for (a plugin with delivery
    policy ``latest`` gets floods summarised after it catches up); absent means one.
    """

    kind: ErrorKind
    message: str
    account: Str
    raw: Str
    plugin: Str
    count: NotRequired[int]


class Context(TypedDict):
    """What ``on_startup`` / ``on_shutdown`` receive: who is running and for whom."""

    version: str
    command: str
    accounts: list[str]
