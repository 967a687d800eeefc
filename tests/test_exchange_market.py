"""The drop-in's markets and market data against the simulator, checked by ccxt's own tests
(``ccxt.test.exchange``: each calls the method and runs ccxt's validator on what came back)
and against the simulator's own numbers; each reading an option, each option tried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from itertools import pairwise
from typing import Any

import ccxt
import pytest

from bitmusa_plugin._core import market as bm_market
from bitmusa_plugin.simulator import Simulator
from ccxt_reference import ccxt_test, check_funding_rate, make_exchange

pytestmark = pytest.mark.bitmusa_simulator(script=False, event_interval=None, seed=5)

BTC = "BTC/USDT:USDT"


@pytest.fixture
async def exchange(sim: Simulator) -> AsyncIterator[Any]:
    await sim.set_price("BTCUSDT", "100000")
    await sim.set_price("ETHUSDT", "3000")
    exchange = make_exchange(sim)
    try:
        yield exchange
    finally:
        await exchange.close()


async def test_markets_come_from_exchange_info_with_tick_size_precision(exchange: Any) -> None:
    assert await ccxt_test("load_markets")(exchange, {})
    assert exchange.symbols == [BTC, "ETH/USDT:USDT", "XRP/USDT:USDT"]
    btc = exchange.market(BTC)
    assert exchange.precisionMode == ccxt.TICK_SIZE
    assert (btc["id"], btc["settle"], btc["contractSize"]) == ("BTCUSDT", "USDT", 1)
    assert (btc["precision"]["price"], btc["precision"]["amount"]) == (0.1, 0.001)
    assert (btc["maker"], btc["taker"]) == (0.0002, 0.0003)  # "0.02" and "0.03" percent
    # the swapped reading (the default): 0.001 is the amount step, 10 a notional
    assert btc["limits"]["amount"] == {"min": 0.001, "max": 1000.0}
    assert btc["limits"]["cost"] == {"min": 10.0, "max": 2000000.0}
    assert btc["limits"]["price"] == {"min": 0.1, "max": 1000000.0}
    assert btc["limits"]["leverage"] == {"min": 1, "max": 125}
    xrp = exchange.market("XRP/USDT:USDT")
    assert (xrp["precision"]["price"], xrp["precision"]["amount"]) == (0.0001, 1)


async def test_a_wrong_rest_base_is_not_taken_for_a_missing_market_list(sim: Simulator) -> None:
    """exchange-info is undocumented, so its 404 falls back to the shipped table, but only
    once a documented route answers: on a wrong base that one is missing too."""
    wrong = sim.rest_url.replace("/api/v2", "/api/v3")
    exchange = make_exchange(sim, urls={"api": {"rest": wrong, "ws": sim.ws_url}})
    try:
        with pytest.raises(ccxt.BadRequest) as raised:
            await exchange.load_markets()
    finally:
        await exchange.close()
    message = str(raised.value)
    assert "GET http://127.0.0.1:" in message
    assert "/api/v3/future/market: HTTP 404" in message  # the probe's, not exchange-info's
    assert "/api/v2" in message  # the hint: where the base should end


@pytest.mark.parametrize(("fault", "falls_back"), [("999", True), ("1001", True), ("503", False)])
async def test_only_an_answer_in_bitmusa_s_envelope_proves_the_base(
    sim: Simulator, fault: str, falls_back: bool
) -> None:
    """A refusal with Bitmusa's code is an answer; a bare HTTP 503 proves nothing, and
    load_markets raises it as any call would (the bot retries, no table is taken)."""
    sim.fail_rest("404", 1, path="/future/market/exchange-info")
    sim.fail_rest(fault, 1, path="/future/market")  # type: ignore[arg-type]
    exchange = make_exchange(sim)
    try:
        if falls_back:
            assert list(await exchange.load_markets()) == [BTC]
        else:
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await exchange.load_markets()
    finally:
        await exchange.close()


async def test_the_quantity_fields_as_named_is_an_option(sim: Simulator) -> None:
    exchange = make_exchange(sim, options={"exchangeInfoQuantities": "as-named"})
    try:
        btc = (await exchange.load_markets())[BTC]
    finally:
        await exchange.close()
    assert btc["limits"]["amount"] == {"min": 10.0, "max": 2000000.0}  # ninjaxt's reading
    assert btc["limits"]["cost"] == {"min": 0.001, "max": 1000.0}


async def test_without_exchange_info_the_shipped_table_and_named_markets(sim: Simulator) -> None:
    sim.fail_rest("404", 1, path="/future/market/exchange-info")
    exchange = make_exchange(sim, options={"markets": {"ETHUSDT": "ETH/USDT:USDT"}})
    try:
        markets = await exchange.load_markets()
        assert sorted(markets) == [BTC, "ETH/USDT:USDT"]
        assert markets[BTC]["precision"] == {"amount": 0.001, "price": 0.1}  # the sample's
        eth = markets["ETH/USDT:USDT"]
        assert eth["precision"]["amount"] is None  # named, not described: no guess
        with pytest.raises(ccxt.BadSymbol, match="no amount precision"):
            await exchange.create_order("ETH/USDT:USDT", "market", "buy", 0.01)
        assert not sim.engine().orders
        calls = [label for label, _ in sim.rest_calls]
        assert calls.count("GET /future/market/exchange-info") == 1
        assert calls.count("GET /future/market") == 1  # the base answers: only the list lacks
    finally:
        await exchange.close()
    table = make_exchange(sim, options={"marketsSource": "table"})
    try:
        assert list(await table.load_markets()) == [BTC]
    finally:
        await table.close()
    assert [label for label, _ in sim.rest_calls].count("GET /future/market/exchange-info") == 1


async def test_an_unknown_option_value_is_one_clear_error(sim: Simulator) -> None:
    exchange = make_exchange(sim, options={"exchangeInfoQuantities": "sideways"})
    try:
        with pytest.raises(ccxt.BadRequest, match=r"exchangeInfoQuantities.*'swapped'"):
            await exchange.load_markets()
    finally:
        await exchange.close()


async def test_tickers_validate_and_read_the_24h_fields(sim: Simulator, exchange: Any) -> None:
    assert await ccxt_test("fetch_ticker")(exchange, {}, BTC)
    ticker = await exchange.fetch_ticker(BTC)
    record = ticker["info"]
    assert ticker["last"] == ticker["close"] == 100000.0
    assert ticker["open"] == record["base_price"]
    assert ticker["percentage"] == record["change_rate"]
    assert (ticker["bid"], ticker["ask"]) == (None, None)  # Bitmusa's ticker has none
    assert ticker["markPrice"] == float(sim.market.marks["BTCUSDT"])
    await ccxt_test("fetch_tickers")(exchange, {}, BTC)
    tickers = await exchange.fetch_tickers()
    assert sorted(tickers) == sorted(exchange.symbols)  # one call per market
    assert (await exchange.fetch_tickers(["ETH/USDT:USDT"]))["ETH/USDT:USDT"]["last"] == 3000.0


@pytest.mark.parametrize("name", bm_market.TICKER_PARAMS)
async def test_the_ticker_is_named_as_the_option_says(sim: Simulator, name: str) -> None:
    exchange = make_exchange(sim, options={"tickerParam": name})
    try:
        assert (await exchange.fetch_ticker("ETH/USDT:USDT"))["symbol"] == "ETH/USDT:USDT"
        assert (await exchange.fetch_trades("ETH/USDT:USDT", limit=2))[0]["symbol"] == (
            "ETH/USDT:USDT"
        )
    finally:
        await exchange.close()


async def test_order_books_are_sorted_best_first_and_capped_at_21(
    sim: Simulator, exchange: Any
) -> None:
    assert await ccxt_test("fetch_order_book")(exchange, {}, BTC)
    assert await ccxt_test("fetch_l2_order_book")(exchange, {}, BTC)
    book = await exchange.fetch_order_book(BTC, 50)
    assert len(book["bids"]) == len(book["asks"]) == 21  # DF: 21 at most
    assert book["asks"][0][0] == 100000.1  # the simulator lists asks descending, best last
    assert book["bids"][0][0] == 99999.9
    small = await exchange.fetch_order_book(BTC, 3)
    assert len(small["asks"]) == 3
    assert small["asks"] == book["asks"][:3]
    assert isinstance(book["timestamp"], int)


async def test_public_trades_oldest_first_with_their_side(sim: Simulator, exchange: Any) -> None:
    await exchange.load_markets()
    await exchange.create_order(BTC, "market", "sell", 0.003)  # our taker fill, on the tape
    assert await ccxt_test("fetch_trades")(exchange, {}, BTC)  # asks for 12,000: capped at 1,000
    trades = await exchange.fetch_trades(BTC, limit=5)
    assert len(trades) == 5
    assert [t["timestamp"] for t in trades] == sorted(t["timestamp"] for t in trades)
    newest = trades[-1]
    assert (newest["side"], newest["amount"], newest["price"]) == ("sell", 0.003, 100000.0)
    assert newest["cost"] == 300.0
    since = trades[2]["timestamp"]
    assert all(t["timestamp"] >= since for t in await exchange.fetch_trades(BTC, since))


@pytest.mark.parametrize("path", bm_market.KLINE_PATHS)
async def test_candles_from_either_kline_path(sim: Simulator, path: str) -> None:
    exchange = make_exchange(sim, options={"ohlcvPath": path})
    try:
        assert set(exchange.timeframes) == set(bm_market.timeframes(path))  # type: ignore[arg-type]
        assert await ccxt_test("fetch_ohlcv")(exchange, {}, BTC)
        candles = await exchange.fetch_ohlcv(BTC, "1h", limit=5)
        assert len(candles) == 5
        assert [c[0] for c in candles] == sorted(c[0] for c in candles)
        assert all(b[0] - a[0] == 3_600_000 for a, b in pairwise(candles))
        since = candles[1][0]
        assert (await exchange.fetch_ohlcv(BTC, "1h", since, 2))[0][0] == since
        await sim.set_price("BTCUSDT", "100000")
        last = await exchange.fetch_ohlcv(BTC, "1m", limit=2)  # a minute may turn meanwhile
        assert last[-1][4] == 100000.0  # the forming candle closes at the last price
        with pytest.raises(ccxt.NotSupported, match="timeframe '7m'"):
            await exchange.fetch_ohlcv(BTC, "7m")
    finally:
        await exchange.close()
    endpoint = "/future/market/kline/history" if path == "history" else "/future/market/kline"
    assert f"GET {endpoint}" in {label for label, _ in sim.rest_calls}


async def test_only_the_sdk_path_serves_5m_candles(sim: Simulator) -> None:
    exchange = make_exchange(sim)
    try:
        with pytest.raises(ccxt.NotSupported, match="ohlcvPath"):
            await exchange.fetch_ohlcv(BTC, "5m")
    finally:
        await exchange.close()


@pytest.mark.parametrize(("unit", "rate"), [("percent", "0.000001"), ("fraction", "0.0001")])
async def test_funding_rate_in_the_unit_the_option_says(
    sim: Simulator, unit: str, rate: str
) -> None:
    exchange = make_exchange(sim, options={"fundingRateUnit": unit})
    try:
        await exchange.load_markets()
        funding = await exchange.fetch_funding_rate(BTC)
    finally:
        await exchange.close()
    check_funding_rate(exchange, funding, BTC)
    assert Decimal(repr(funding["fundingRate"])) == Decimal(rate)  # the simulator's 0.0001
    record = funding["info"]
    assert funding["fundingTimestamp"] == (
        record["last_updated_time"] + record["remaining_funding_time"]
    )
    assert funding["fundingTimestamp"] % 3_600_000 == 0


async def test_status_needs_no_keys(sim: Simulator, exchange: Any) -> None:
    assert await ccxt_test("fetch_status")(exchange, {})
    assert (await exchange.fetch_status())["status"] == "ok"
    keyless = make_exchange(sim, apiKey=None, secret=None)
    try:
        assert (await keyless.fetch_status())["info"] == "OK"
        with pytest.raises(ccxt.AuthenticationError, match='requires "apiKey"'):
            await keyless.fetch_ticker(BTC)
    finally:
        await keyless.close()
