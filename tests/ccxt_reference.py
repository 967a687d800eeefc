"""The oracle: the same facts, derived by ccxt's own ``safe_order`` / ``safe_position`` /
``safe_balance``, and ccxt's own structure validators.

The fact extraction below is written the way a ccxt exchange's ``parse_*`` is written
(``safe_string`` / ``safe_integer`` on the raw payload, numbers kept as strings so that
ccxt derives from the exact decimals). The enum tables are product decisions
(docs/mapping.md), so they are shared with the mapping; every number, derived field and
key comes from ccxt.
"""

from __future__ import annotations

import time
import typing
from typing import Any

import ccxt
from ccxt.test.exchange.base.test_balance import test_balance
from ccxt.test.exchange.base.test_order import test_order
from ccxt.test.exchange.base.test_position import test_position

from bitmusa_plugin._core import wire as m
from bitmusa_plugin._core.symbols import SymbolMap

MARKET = {"contractSize": 1, "inverse": False, "linear": True}

#: Facts the Bitmusa stream does not carry, so ccxt's validator cannot demand them
#: (ccxt's own per-exchange skip lists work the same way).
POSITION_SKIPPED = {
    "markPrice": True,  # no mark price in the stream (derived only when price is absent)
    "collateral": True,  # no margin balance in the stream
    "positionMargin": True,
    "percentage": True,  # needs initialMargin, i.e. leverage and a positive notional
}
#: A flat (closed) position has no contracts, notional or entry any more.
FLAT_POSITION_SKIPPED = {
    **POSITION_SKIPPED,
    "contracts": True,
    "notional": True,
    "entryPrice": True,
    "initialMargin": True,
    "initialMarginPercentage": True,
}


class Reference(ccxt.Exchange):  # type: ignore[misc]
    """A ccxt exchange that only parses Bitmusa stream payloads."""

    def __init__(self) -> None:
        super().__init__({"id": "bitmusa"})
        self.wallet: dict[str, dict[str, str | None]] = {}

    def s(self, data: Any, key: str) -> str | None:
        value: str | None = self.safe_string(data, key)
        if value is not None and value.lower() in ("null", "none"):
            return None
        return value

    def enum(self, data: Any, key: str, table: dict[object, Any]) -> Any:
        value = data.get(key)
        if value is None or (isinstance(value, str) and value.lower() in ("", "null", "none")):
            return None
        if value in table:
            return table[value]
        if isinstance(value, str):
            return table.get(value.upper(), value.lower())
        return str(value)

    def parse_order(self, data: Any, event_time: int | None) -> Any:
        tif = self.enum(data, "tif", m.TIME_IN_FORCE)
        direction = data.get("direction")
        reduce_only = None
        if direction is not None and str(direction).lower() not in ("", "null", "none"):
            key = direction.upper() if isinstance(direction, str) else direction
            reduce_only = m.REDUCE_ONLY.get(key)
        created = self.safe_integer(data, "createdTime")
        return self.safe_order(
            {
                "info": data,
                "id": self.s(data, "orderId"),
                "clientOrderId": None,
                "timestamp": created,
                "datetime": None,
                "lastTradeTimestamp": self.safe_integer(data, "completedTime"),
                "lastUpdateTimestamp": event_time,
                "symbol": SymbolMap()(self.s(data, "ticker") or ""),
                "type": self.enum(data, "type", m.ORDER_TYPE),
                "timeInForce": tif.upper() if isinstance(tif, str) else tif,
                "postOnly": None,
                "reduceOnly": reduce_only,
                "side": self.enum(data, "position", m.ORDER_SIDE),
                "price": self.s(data, "price"),
                "triggerPrice": None,
                "takeProfitPrice": None,
                "stopLossPrice": None,
                "amount": self.s(data, "amount"),
                "cost": self.s(data, "value"),
                "average": None,
                "filled": self.s(data, "tradedAmount"),
                "remaining": None,
                "status": self.enum(data, "status", m.ORDER_STATUS),
                "fee": None,
                "trades": None,
            },
            MARKET,
        )

    def parse_wallet(self, data: Any, event_time: int | None) -> Any:
        self.wallet[data["asset"]] = {"free": self.s(data, "free"), "used": self.s(data, "locked")}
        balance: dict[str, Any] = {
            "info": data,
            "timestamp": event_time,
            "datetime": self.iso8601(event_time),
        }
        for code, entry in self.wallet.items():
            balance[code] = dict(entry)
        return self.safe_balance(balance)

    def parse_position(self, data: Any, event_time: int | None) -> Any:
        contracts, notional = self.s(data, "amount"), self.s(data, "value")
        status = data.get("status")
        if isinstance(status, str) and status.upper() in m.CLOSING_STATUSES:
            contracts, notional = "0", "0"
        mode = data.get("positionMode")
        hedged = None
        if mode is not None and str(mode).lower() not in ("", "null", "none"):
            hedged = m.HEDGED.get(mode.upper() if isinstance(mode, str) else mode)
        created = self.safe_integer(data, "createdTime")
        position = self.safe_position(
            {
                "info": data,
                "id": None,
                "symbol": SymbolMap()(self.s(data, "ticker") or ""),
                "timestamp": created,
                "datetime": self.iso8601(created),
                "lastUpdateTimestamp": event_time,
                "initialMargin": None,
                "initialMarginPercentage": None,
                "maintenanceMargin": None,
                "maintenanceMarginPercentage": None,
                "entryPrice": self.s(data, "price"),
                "notional": notional,
                "leverage": self.s(data, "leverage"),
                "unrealizedPnl": self.s(data, "unpnl"),
                "realizedPnl": None,
                "contracts": contracts,
                "contractSize": self.parse_number("1"),
                "marginRatio": None,
                "liquidationPrice": self.omit_zero(self.s(data, "liquidPrice")),
                "markPrice": None,
                "lastPrice": None,
                "collateral": None,
                "marginMode": self.enum(data, "marginMode", m.MARGIN_MODE),
                "side": self.enum(data, "position", m.POSITION_SIDE),
                "percentage": None,
                "stopLossPrice": None,
                "takeProfitPrice": None,
                "hedged": hedged,
            }
        )
        # The facts went in as exact strings; ccxt's parse_position hands numbers out.
        for key in ("entryPrice", "notional", "leverage", "unrealizedPnl", "contracts"):
            position[key] = self.parse_number(position[key])
        position["liquidationPrice"] = self.parse_number(position["liquidationPrice"])
        return position

    def parse_frame(self, frame: dict[str, Any]) -> tuple[str, Any]:
        event_time = self.safe_integer(frame, "eventTime")
        data = frame["data"]
        stream = frame["stream"]
        if stream == "future_order":
            return "on_order", self.parse_order(data, event_time)
        if stream == "future_wallet":
            return "on_wallet", self.parse_wallet(data, event_time)
        return "on_position", self.parse_position(data, event_time)


def validate(exchange: ccxt.Exchange, hook: str, obj: Any) -> None:
    """Run ccxt's shipped validator for the structure (raises AssertionError)."""
    now = int(time.time() * 1000)
    if hook == "on_order":
        skipped: dict[str, Any] = {}
        if obj["status"] not in ("open", "closed", "canceled"):
            skipped["status"] = True  # unknown statuses pass through by design
        if obj["timeInForce"] not in (None, "GTC", "IOC", "FOK", "PO"):
            skipped["timeInForce"] = True
        if obj["side"] not in (None, "buy", "sell"):
            skipped["side"] = True
        test_order(exchange, skipped, "watchOrders", obj, obj["symbol"], now)
    elif hook == "on_wallet":
        test_balance(exchange, {}, "watchBalance", obj)
    else:
        flat = obj["contracts"] == 0
        skipped = dict(FLAT_POSITION_SKIPPED if flat else POSITION_SKIPPED)
        for key in ("side", "marginMode"):
            if obj[key] not in ("long", "short", "cross", "isolated"):
                skipped[key] = True
        for key in ("entryPrice", "notional", "leverage", "unrealizedPnl", "contracts"):
            if obj[key] is None:
                skipped.setdefault("allowNull", []).append(key)
        if obj["liquidationPrice"] is not None and obj["liquidationPrice"] == obj["entryPrice"]:
            # the documented example sends its entry price as the liquidation price: a
            # placeholder, not a mapping error; ccxt's check needs liq beyond entry
            skipped["liquidationPrice"] = True
        if not obj["leverage"]:
            skipped["initialMargin"] = skipped["initialMarginPercentage"] = True
        test_position(exchange, skipped, "watchPositions", obj, obj["symbol"], now)


# -- the drop-in against the simulator ------------------------------------------------------

#: a retry schedule for loopback tests: the stream recovers in a fraction of a second
FAST_TIMING = {"retry_initial": 0.05, "retry_max": 0.3, "stable_after": 0.3}


def make_exchange(sim: Any, *, options: dict[str, Any] | None = None, **config: Any) -> Any:
    """The drop-in on the simulator, through ``load_exchange`` as a bot gets it: its own
    REST allowance (the process-wide one is shared by every test), a fast retry schedule."""
    from bitmusa_plugin import load_exchange
    from bitmusa_plugin.simulator import DEMO_API_KEY, DEMO_AUTH_KEY

    base: dict[str, Any] = {
        "apiKey": DEMO_API_KEY,
        "secret": DEMO_AUTH_KEY,
        "urls": {"api": {"rest": sim.rest_url, "ws": sim.ws_url}},
        "options": {
            "timing": FAST_TIMING,
            "heartbeat": [0.5, 2.0],
            "restRate": [1000, 100000],
            **(options or {}),
        },
    }
    base.update(config)
    return load_exchange("bitmusa", base)


def _format_of(structure: type) -> dict[str, Any]:
    """A validator format from a ccxt structure's own type (``ccxt.base.types``): one
    sample value of each key's type."""
    format: dict[str, Any] = {}
    for key, hint in structure.__annotations__.items():
        kinds = set(typing.get_args(hint)) or {hint}
        if key == "info":
            format[key] = {}
        elif float in kinds:  # Num: any number
            format[key] = 1.5
        elif int in kinds:
            format[key] = 1
        else:
            format[key] = "x"
    return format


def check_funding_rate(exchange: Any, entry: Any, symbol: str) -> None:
    """ccxt ships no ``test_funding_rate`` (4.5.90): its ``FundingRate`` type's keys, and
    the shared checks its validators use (symbol, timestamp and datetime)."""
    from ccxt.base.types import FundingRate
    from ccxt.test.exchange.base import test_shared_methods as shared

    method = "fetchFundingRate"
    format = _format_of(FundingRate)
    required = ["symbol", "fundingRate", "timestamp", "datetime"]
    empty = [key for key in format if key not in required]
    shared.assert_structure(exchange, {}, method, entry, format, empty)
    shared.assert_symbol(exchange, {}, method, entry, "symbol", symbol)
    shared.assert_timestamp_and_datetime(exchange, {}, method, entry)
    shared.assert_timestamp_and_datetime(exchange, {}, method, entry, None, "fundingTimestamp")


def check_leverage(exchange: Any, entry: Any, symbol: str) -> None:
    """ccxt ships no ``test_leverage`` (4.5.90): its ``Leverage`` type's keys, checked as
    its validators check structures."""
    from ccxt.base.types import Leverage
    from ccxt.test.exchange.base import test_shared_methods as shared

    method = "fetchLeverage"
    format = _format_of(Leverage)
    shared.assert_structure(exchange, {}, method, entry, format, ["marginMode"])
    shared.assert_symbol(exchange, {}, method, entry, "symbol", symbol)
    for key in ("longLeverage", "shortLeverage"):
        shared.assert_greater_or_equal(exchange, {}, method, entry, key, "1")


def ccxt_test(name: str) -> Any:
    """ccxt's own test of a unified method (``ccxt/test/exchange/async/test_<name>.py``,
    or ccxt.pro's ``ccxt/pro/test/Exchange/test_<name>.py`` for ``watch_*``): it calls
    the method and runs ccxt's validator on what comes back. Imported by name: ``async``
    is a keyword, and a ``test_*`` name in a test module would be collected by pytest."""
    import importlib

    package = "ccxt.pro.test.Exchange" if name.startswith("watch") else "ccxt.test.exchange.async"
    module = importlib.import_module(f"{package}.test_{name}")
    return getattr(module, f"test_{name}")
