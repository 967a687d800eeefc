"""``exchange.features`` is true to ``create_order``: each feature claimed is accepted by the
drop-in and the simulator (an order comes back, the engine holds what was asked), each one
refused is refused before anything is sent. Also the balance's currencies and the emulated
methods (``fetch_position``, ``fetch_order_trades``, ``fetch_funding_rates``,
``fetch_trading_fee(s)``, ``fetch_last_prices``), against the simulator over loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ccxt.base.errors import ArgumentsRequired, InvalidOrder, NotSupported
from ccxt.test.exchange.base.test_balance import test_balance as ccxt_balance
from ccxt.test.exchange.base.test_last_price import test_last_price as ccxt_last_price
from ccxt.test.exchange.base.test_position import test_position as ccxt_position
from ccxt.test.exchange.base.test_trade import test_trade as ccxt_trade
from ccxt.test.exchange.base.test_trading_fee import test_trading_fee as ccxt_trading_fee

from bitmusa_plugin.simulator import Simulator
from ccxt_reference import check_funding_rate, make_exchange

pytestmark = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=7, time_scale=1)

BTC = "BTC/USDT:USDT"
HANG = 20


@pytest.fixture
async def exchange(sim: Simulator) -> AsyncIterator[Any]:
    await sim.set_price("BTCUSDT", "100000")
    await sim.set_price("ETHUSDT", "3000")
    exchange = make_exchange(sim)
    try:
        await exchange.load_markets()
        yield exchange
    finally:
        await exchange.close()


def limit(price: float = 90000, **params: Any) -> tuple[str, float | None, dict[str, Any]]:
    return "limit", price, params


def market(**params: Any) -> tuple[str, float | None, dict[str, Any]]:
    return "market", None, params


#: a create_order call for each leaf of features['swap']['linear']['createOrder']: what a
#: True leaf accepts, or what a False one refuses
CASES: dict[str, tuple[str, float | None, dict[str, Any]]] = {
    "marginMode": limit(marginMode="cross"),
    "triggerPrice": limit(triggerPrice=95000),
    "triggerDirection": limit(triggerPrice=95000, triggerDirection="below"),
    "stopLossPrice": limit(stopLossPrice=80000),
    "takeProfitPrice": limit(takeProfitPrice=120000),
    "attachedStopLossTakeProfit.triggerPriceType.last": limit(
        takeProfit={"triggerPrice": 120000, "priceType": "last"}
    ),
    "attachedStopLossTakeProfit.triggerPriceType.mark": limit(
        stopLoss={"triggerPrice": 80000, "priceType": "mark"}
    ),
    "attachedStopLossTakeProfit.triggerPriceType.index": limit(
        stopLoss={"triggerPrice": 80000, "priceType": "index"}
    ),
    "attachedStopLossTakeProfit.price": limit(
        takeProfit={"triggerPrice": 120000, "type": "limit", "price": 119000}
    ),
    "timeInForce.GTC": limit(timeInForce="GTC"),
    "timeInForce.IOC": limit(timeInForce="IOC"),
    "timeInForce.FOK": limit(timeInForce="FOK"),
    "timeInForce.PO": limit(timeInForce="PO"),
    "timeInForce.GTD": limit(timeInForce="GTD"),
    "trailing": market(trailingPercent=1),
    "leverage": limit(leverage=5),
    "marketBuyByCost": market(cost=100),
    "marketBuyRequiresPrice": market(),  # False: a market buy without a price is accepted
}
#: leaves where False is the capability (the call is accepted when the feature is False)
INVERTED = frozenset({"marketBuyRequiresPrice"})


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every True/False leaf."""
    if isinstance(node, dict):
        found: dict[str, Any] = {}
        for key, value in node.items():
            found.update(leaves(value, f"{prefix}{key}."))
        return found
    return {prefix[:-1]: node} if isinstance(node, bool) else {}


def test_features_has_ccxts_shape(exchange: Any) -> None:
    features = exchange.features
    assert features["spot"] is None
    assert features["swap"]["inverse"] is None
    assert features["future"] == {"linear": None, "inverse": None}
    linear = features["swap"]["linear"]
    # ccxt's features_generator copies the attached TP/SL block to stopLoss / takeProfit
    assert linear["createOrder"]["stopLoss"] == linear["createOrder"]["attachedStopLossTakeProfit"]
    assert linear["fetchOrder"]["symbolRequired"] is False


def test_every_create_order_feature_has_a_case(exchange: Any) -> None:
    create = dict(exchange.features["swap"]["linear"]["createOrder"])
    for derived in ("stopLoss", "takeProfit", "symbolRequired"):  # ccxt's copies and default
        create.pop(derived)
    assert set(leaves(create)) == set(CASES) | {"hedged"}


@pytest.mark.parametrize("feature", sorted(CASES))
async def test_create_order_does_what_features_says(
    sim: Simulator, exchange: Any, feature: str
) -> None:
    claimed = leaves(exchange.features["swap"]["linear"]["createOrder"])[feature]
    accepted = not claimed if feature in INVERTED else claimed
    kind, price, params = CASES[feature]
    engine = sim.engine()
    before = set(engine.orders)
    side = "buy"
    if accepted:
        order = await exchange.create_order(BTC, kind, side, 0.001, price, params)
        assert order["id"] in engine.orders  # the simulator took it as sent
        placed = engine.orders[order["id"]]
        if feature.startswith("attached"):
            assert placed.take_profit is not None or placed.stop_loss is not None
        if feature == "timeInForce.PO":
            assert placed.post_only
    else:
        with pytest.raises((NotSupported, InvalidOrder)):
            await exchange.create_order(BTC, kind, side, 0.001, price, params)
        assert set(engine.orders) == before  # refused: before it was sent, or by the server


async def test_hedged_a_buy_and_a_sell_open_both_sides(sim: Simulator, exchange: Any) -> None:
    assert exchange.features["swap"]["linear"]["createOrder"]["hedged"] is True
    await exchange.set_position_mode(True, BTC)
    await exchange.create_order(BTC, "market", "buy", 0.002)
    await exchange.create_order(BTC, "market", "sell", 0.001)
    sides = {p["side"]: p["contracts"] for p in await exchange.fetch_positions([BTC])}
    assert sides == {"long": 0.002, "short": 0.001}
    with pytest.raises(ArgumentsRequired, match="side"):
        await exchange.fetch_position(BTC)
    short = await exchange.fetch_position(BTC, {"side": "short"})
    assert (short["side"], short["contracts"]) == ("short", 0.001)


# -- balances -------------------------------------------------------------------------------


async def test_balance_has_every_market_currency_zero_where_none_is_held(
    sim: Simulator, exchange: Any
) -> None:
    balance = await exchange.fetch_balance()
    ccxt_balance(exchange, {}, "fetchBalance", balance)
    held = sim.engine().balance
    assert float(balance["USDT"]["total"]) == float(held)
    for code in ("BTC", "ETH"):
        assert balance[code] == {"free": 0.0, "used": 0.0, "total": 0.0}
        assert balance["total"][code] == 0.0
    streamed = await asyncio.wait_for(exchange.watch_balance(), HANG)
    ccxt_balance(exchange, {}, "watchBalance", streamed)
    assert streamed["BTC"] == {"free": 0.0, "used": 0.0, "total": 0.0}


async def test_balance_wallet_only_when_asked(sim: Simulator) -> None:
    await sim.set_price("BTCUSDT", "100000")
    exchange = make_exchange(sim, options={"balanceCurrencies": "wallet"})
    try:
        await exchange.load_markets()
        balance = await exchange.fetch_balance()
        assert "BTC" not in balance
        assert "BTC" not in balance["total"]
        assert "USDT" in balance
    finally:
        await exchange.close()


# -- emulated methods -----------------------------------------------------------------------


async def test_fetch_position_and_a_flat_one(sim: Simulator, exchange: Any) -> None:
    flat = await exchange.fetch_position(BTC)
    assert (flat["symbol"], flat["contracts"]) == (BTC, 0.0)
    await exchange.create_order(BTC, "market", "buy", 0.002)
    position = await exchange.fetch_position(BTC)
    assert (position["side"], position["contracts"]) == ("long", 0.002)
    assert position["markPrice"] is not None  # the REST record's mark_price
    ccxt_position(exchange, {}, "fetchPosition", position, BTC, None)  # ccxt's validator


async def test_fetch_order_trades_are_the_orders_fills(sim: Simulator, exchange: Any) -> None:
    first = await exchange.create_order(BTC, "market", "buy", 0.002)
    other = await exchange.create_order(BTC, "market", "buy", 0.001)
    # a market order fills before its POST is answered: the history has it already
    trades = await exchange.fetch_order_trades(first["id"], BTC)
    assert trades
    assert {t["order"] for t in trades} == {first["id"]}
    assert sum(t["amount"] for t in trades) == pytest.approx(0.002)
    for trade in trades:
        ccxt_trade(exchange, {}, "fetchOrderTrades", trade, BTC, exchange.milliseconds(), False)
    assert {t["order"] for t in await exchange.fetch_order_trades(other["id"])} == {other["id"]}


async def test_funding_rates_and_last_prices_per_market(sim: Simulator, exchange: Any) -> None:
    rates = await exchange.fetch_funding_rates()
    assert set(rates) == set(exchange.symbols)
    one = await exchange.fetch_funding_rate(BTC)
    assert rates[BTC]["fundingRate"] == one["fundingRate"]
    for symbol, rate in rates.items():
        check_funding_rate(exchange, rate, symbol)
    prices = await exchange.fetch_last_prices([BTC])
    assert set(prices) == {BTC}
    assert prices[BTC]["price"] == 100000.0
    assert prices[BTC]["side"] is None
    ccxt_last_price(exchange, {}, "fetchLastPrices", prices[BTC], BTC)


async def test_trading_fee_is_exchange_infos_and_unknown_without_it(
    sim: Simulator, exchange: Any
) -> None:
    fee = await exchange.fetch_trading_fee(BTC)
    market = exchange.market(BTC)
    assert (fee["maker"], fee["taker"]) == (market["maker"], market["taker"])
    ccxt_trading_fee(exchange, {}, "fetchTradingFee", BTC, fee)
    assert set(await exchange.fetch_trading_fees()) == set(exchange.symbols)
    table = make_exchange(sim, options={"marketsSource": "table"})
    try:
        await table.load_markets()
        with pytest.raises(NotSupported, match="exchange-info"):
            await table.fetch_trading_fee(BTC)
    finally:
        await table.close()
