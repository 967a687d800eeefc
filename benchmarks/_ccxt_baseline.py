"""ccxt.pro binanceusdm's own user-stream handling, set up offline, as the baseline.

Markets are set by hand, the client is never connected, and messages are pre-parsed dicts
(ccxt.pro parses JSON before handle_message), as in ../shared/MEASUREMENTS.md.
"""

from __future__ import annotations

import copy
from typing import Any

ORDER_TRADE_UPDATE: dict[str, Any] = {
    "e": "ORDER_TRADE_UPDATE",
    "E": 1568879465651,
    "T": 1568879465650,
    "o": {
        "s": "BTCUSDT",
        "c": "TEST",
        "S": "SELL",
        "o": "TRAILING_STOP_MARKET",
        "f": "GTC",
        "q": "0.001",
        "p": "0",
        "ap": "0",
        "sp": "7103.04",
        "x": "NEW",
        "X": "NEW",
        "i": 8886774,
        "l": "0",
        "z": "0",
        "L": "0",
        "N": "USDT",
        "n": "0",
        "T": 1568879465650,
        "t": 0,
        "b": "0",
        "a": "9.91",
        "m": False,
        "R": False,
        "wt": "CONTRACT_PRICE",
        "ot": "TRAILING_STOP_MARKET",
        "ps": "LONG",
        "cp": False,
        "AP": "7476.89",
        "cr": "5.0",
        "pP": False,
        "si": 0,
        "ss": 0,
        "rp": "0",
        "V": "EXPIRE_TAKER",
        "pm": "OPPONENT",
        "gtd": 0,
    },
}
ACCOUNT_UPDATE: dict[str, Any] = {
    "e": "ACCOUNT_UPDATE",
    "E": 1564745798939,
    "T": 1564745798938,
    "a": {
        "m": "ORDER",
        "B": [{"a": "USDT", "wb": "122624.12345678", "cw": "100.12345678", "bc": "50.12345678"}],
        "P": [
            {
                "s": "BTCUSDT",
                "pa": "0",
                "ep": "0.00000",
                "bep": "0",
                "cr": "200",
                "up": "0",
                "mt": "isolated",
                "iw": "0.00000000",
                "ps": "BOTH",
            }
        ],
    },
}


def make_exchange() -> tuple[Any, Any]:
    """A binanceusdm with one market and a client subscribed to the user stream."""
    import ccxt.pro

    exchange = ccxt.pro.binanceusdm({"apiKey": "k", "secret": "s"})
    exchange.set_markets(
        [
            {
                "id": "BTCUSDT",
                "symbol": "BTC/USDT:USDT",
                "base": "BTC",
                "quote": "USDT",
                "settle": "USDT",
                "baseId": "BTC",
                "quoteId": "USDT",
                "settleId": "USDT",
                "type": "swap",
                "spot": False,
                "margin": False,
                "swap": True,
                "future": False,
                "option": False,
                "active": True,
                "contract": True,
                "linear": True,
                "inverse": False,
                "contractSize": 1,
                "expiry": None,
                "expiryDatetime": None,
                "strike": None,
                "optionType": None,
                "precision": {"amount": 0.001, "price": 0.1},
                "limits": {
                    "amount": {"min": 0.001, "max": None},
                    "price": {"min": None, "max": None},
                    "cost": {"min": None, "max": None},
                    "leverage": {"min": None, "max": None},
                },
                "info": {},
                "taker": 0.0004,
                "maker": 0.0002,
            }
        ]
    )
    client = exchange.client("wss://fstream.binance.com/ws/test")
    client.subscriptions["linear"] = True
    exchange.balance["linear"] = {}  # what watch_balance sets up before the first update
    return exchange, client


def handle(exchange: Any, client: Any, message: dict[str, Any]) -> None:
    exchange.handle_message(client, copy.copy(message))
