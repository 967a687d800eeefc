"""Writes frames.txt (frames that must be accepted) and rejected.txt (kind TAB frame).

Run ``python tests/corpus/make_corpus.py`` after changing it; the outputs are committed so
that the corpus is plain data anyone can replay (``bitmusa-plugin replay``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ET = 1700703548846

# The three documented examples, verbatim (the position one has its trailing comma).
DOC_WALLET = """{
  "data": {
    "asset": "USDT",
    "free": "9981.51952661",
    "locked": "18.48047339"
  },
  "stream": "future_wallet",
  "eventTime": 1700703707123
}"""
DOC_ORDER = """{
  "data": {
    "orderId": "C171558199502193",
    "ticker": "XRPUSDT",
    "direction": "OPEN",
    "type": "LIMIT",
    "price": 0.5155,
    "amount": 2,
    "tradedAmount": 0,
    "value": 0,
    "status": "TRADING",
    "createdTime": 1715581995021,
    "canceledTime": null,
    "completedTime": null
  },
  "stream": "future_order",
  "eventTime": 1700703548846
}"""
DOC_POSITION = """{
  "data": {
    "ticker" : "XRPUSDT",
    "marginMode" : "ISOLATED",
    "positionMode" : "ONEWAY",
    "position" : "BUY",
    "status" : "OPEN",
    "leverage" : "10",
    "price" : "0.5155",
    "amount" : "1",
    "value" : "0.5155",
    "liquidPrice" : "0.5155",
    "unpnl" : "0",
    "createdTime" : 1700703548846,
    "closeTime" : "null",
  },
  "stream": "future_position",
  "eventTime": 1700703548846
}"""


def frame(stream: str, data: dict[str, Any], event_time: Any = ET) -> str:
    return json.dumps({"data": data, "stream": stream, "eventTime": event_time})


def order(**kw: Any) -> str:
    data: dict[str, Any] = {
        "orderId": "C1",
        "ticker": "BTCUSDT",
        "direction": "OPEN",
        "type": "LIMIT",
        "price": "26607.1",
        "amount": "1.5",
        "tradedAmount": "0",
        "value": "0",
        "status": "TRADING",
        "createdTime": 1715581995021,
        "canceledTime": None,
        "completedTime": None,
    }
    data.update(kw)
    return frame("future_order", data)


def position(**kw: Any) -> str:
    data: dict[str, Any] = {
        "ticker": "BTCUSDT",
        "marginMode": "ISOLATED",
        "positionMode": "ONEWAY",
        "position": "BUY",
        "status": "OPEN",
        "leverage": "27",
        "price": "26617.03674876",
        "amount": "2.03",
        "value": "54032.5846",
        "liquidPrice": "25764.30575663",
        "unpnl": "-12.5",
        "createdTime": 1700703548846,
        "closeTime": "null",
    }
    data.update(kw)
    return frame("future_position", data)


def wallet(asset: str = "USDT", free: Any = "100.5", locked: Any = "0.25") -> str:
    return frame("future_wallet", {"asset": asset, "free": free, "locked": locked})


def accepted() -> list[str]:
    frames = [
        DOC_WALLET.replace("\n", " "),
        DOC_ORDER.replace("\n", " "),
        DOC_POSITION.replace("\n", " "),
    ]
    # every documented order enum value, and every numeric code, as int and as string
    for status in (
        "TRADING",
        "PARTIAL",
        "FILLED",
        "CANCELLED",
        "CANCELED",
        "trading",
        0,
        1,
        2,
        3,
        4,
        "0",
        "1",
        "2",
        "3",
        "4",
        "EXPIRED",
        9,
    ):
        frames.append(order(status=status))
    for otype in (
        "MARKET",
        "LIMIT",
        "TAKE_PROFIT",
        "STOP_LOSS",
        "LIQUIDATION",
        0,
        1,
        2,
        3,
        4,
        "3",
        "TRAILING_STOP",
    ):
        frames.append(order(type=otype))
    for direction in ("OPEN", "CLOSE", 0, 1, "close", "null", None):
        frames.append(order(direction=direction))
    for side in ("BUY", "SELL", 0, 1, "1"):
        frames.append(order(position=side))
    for tif in ("GTC", "IOC", "FOK", 0, 1, 2, "PO", "gtx"):
        frames.append(order(tif=tif))
    # life of an order: partial fill, fill, cancel after a partial fill, market fills
    frames += [
        order(status="PARTIAL", tradedAmount="0.5", value="13303.55"),
        order(status="FILLED", tradedAmount="1.5", value="39910.65", completedTime=1715581999999),
        order(status="CANCELLED", tradedAmount="0.2", value="5321.42", canceledTime=1715582000000),
        order(
            type="MARKET",
            price=0,
            status="FILLED",
            tradedAmount="1.5",
            value="39910.6500001",
            completedTime="1715581999999",
        ),
        order(
            type="MARKET", price="0", amount="0", status="FILLED", tradedAmount="3", value="7"
        ),  # amount 0: ccxt takes filled
        order(type="MARKET", price="null", status="TRADING", tradedAmount=None, value=None),
        order(price=0.1, amount=3, tradedAmount=1, value=0.1),  # numbers, not strings
        order(price="0.1", tradedAmount="0.3", value=None),  # cost from filled * price
        order(amount="0.3", tradedAmount="0.1", value="0.07"),  # 0.3 - 0.1 exactly 0.2
        order(amount="1e-7", tradedAmount="0", value="0"),
        order(
            price="30000.00",
            amount="1.500",
            tradedAmount="1.500",
            value="45000.000",
            status="FILLED",
        ),
        order(createdTime="1715581995021", completedTime="null", canceledTime="null"),
        order(orderId=277419, extra="kept in info", another={"nested": [1, 2]}),
        order(ticker="ETHUSDC"),
        order(ticker="BTCUSD"),
        order(ticker="SOLBTC"),  # no known quote: passes through
        frame("future_order", json.loads(order())["data"], str(ET)),
    ]
    for mode in ("ISOLATED", "CROSSED", "CROSS", 0, 1, "1", "PORTFOLIO"):
        frames.append(position(marginMode=mode))
    for pmode in ("ONEWAY", "HEDGE", 0, 1, "null"):
        frames.append(position(positionMode=pmode))
    for side in ("BUY", "SELL", 0, 1):
        liq = "25764.3" if side in ("BUY", 0) else "27764.3"
        frames.append(position(position=side, liquidPrice=liq))
    for status in ("OPEN", "USER_CLOSE", "FORCE_CLOSE", "TAKE_PROFIT", "STOP_LOSS", 0):
        frames.append(position(status=status))
    frames += [
        position(liquidPrice="0"),
        position(liquidPrice=0, unpnl=3.25, leverage=5, price=1.5, amount=2, value=3),
        position(price="null", leverage="10"),  # no entry price: ccxt derives markPrice
        position(leverage="null"),
        position(unpnl="-0.000012345678", value="0.5155", leverage="3"),
        position(unpnl="null"),
        position(value="0", amount="0", price="0", liquidPrice="0", status="USER_CLOSE"),
        position(amount="0.001", value="26.617", leverage="125"),
        position(createdTime="1700703548846", extra=True),
    ]
    frames += [
        wallet(),
        wallet("BTC", "0.5", "0.1"),
        wallet("USDT", "9981.51952661", "18.48047339"),
        wallet("USDC", 5, 0),
        wallet("ETH", 1.25, "0.75"),
        wallet("USDT", "0", "0"),
        frame("future_wallet", {"asset": "USDT", "free": "1", "locked": "2", "extra": 1}),
    ]
    return frames


def rejected() -> list[tuple[str, str]]:
    base = json.loads(order())["data"]
    return [
        ("malformed_json", "not json"),
        ("malformed_json", '{"data": {"asset": "USDT"'),
        ("not_an_object", "[1, 2, 3]"),
        ("not_an_object", '"future_order"'),
        ("not_an_object", "null"),
        ("unknown_stream", frame("future_trade", base)),
        ("unknown_stream", json.dumps({"data": base, "eventTime": ET})),
        ("unknown_stream", json.dumps({"data": base, "stream": 7, "eventTime": ET})),
        ("missing_field", json.dumps({"stream": "future_order", "eventTime": ET})),
        ("invalid_field", json.dumps({"stream": "future_order", "data": [1], "eventTime": ET})),
        ("missing_field", order(orderId=None)),
        ("missing_field", order(ticker="null")),
        ("invalid_field", order(ticker=["XRPUSDT"])),
        ("invalid_field", order(price="abc")),
        ("invalid_field", order(amount=True)),
        ("invalid_field", order(amount={"v": 1})),
        ("invalid_field", order(status={"code": 1})),
        ("invalid_field", order(status=1.5)),
        ("invalid_field", order(createdTime="yesterday")),
        ("invalid_value", order(price="-1")),
        ("invalid_value", order(amount="NaN")),
        ("invalid_value", order(amount="Infinity")),
        ("invalid_value", order(price="1e999")),
        ("invalid_value", order(amount="1", tradedAmount="2")),
        ("invalid_value", order(createdTime=-5)),
        ("invalid_field", frame("future_order", base, "soon")),
        ("missing_field", wallet(asset="")),
        ("missing_field", wallet(free=None)),
        ("invalid_field", wallet(free="ten")),
        ("invalid_value", wallet(locked="-0.5")),
        ("missing_field", position(ticker=None)),
        ("invalid_field", position(leverage="x10")),
        ("invalid_value", position(amount="-1")),
        ("invalid_field", position(marginMode=[0])),
        ("invalid_field", position(status={"a": 1})),
        ("oversize", order(note="x" * 70000)),
    ]


def main() -> None:
    (HERE / "frames.txt").write_text("\n".join(accepted()) + "\n")
    lines = [f"{kind}\t{raw}" for kind, raw in rejected()]
    (HERE / "rejected.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
