"""Bitmusa tickers and ccxt symbols. Pure."""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

#: Quote currencies recognised at the end of a ticker, longest first.
QUOTES = ("USDT", "USDC", "USD")


class SymbolMap:
    """Bitmusa tickers -> ccxt symbols (``XRPUSDT`` -> ``XRP/USDT:USDT``), cached.

    ``markets`` (ticker -> unified symbol) overrides the rule. A ticker that ends in no
    known quote passes through unchanged, with one warning per ticker.
    """

    __slots__ = ("known",)

    def __init__(self, markets: Mapping[str, str] | None = None) -> None:
        #: ticker -> symbol for every ticker seen (and every one given); read it directly
        #: on hot paths, call the map for a ticker not in it yet.
        self.known: dict[str, str] = dict(markets or {})

    def __call__(self, ticker: str) -> str:
        symbol = self.known.get(ticker)
        if symbol is None:
            symbol = self._derive(ticker)
            self.known[ticker] = symbol
        return symbol

    @staticmethod
    def _derive(ticker: str) -> str:
        upper = ticker.upper()
        for quote in QUOTES:
            if upper.endswith(quote) and len(upper) > len(quote):
                return f"{upper[: -len(quote)]}/{quote}:{quote}"
        log.warning("unknown ticker %r: no known quote currency, passing it through", ticker)
        return ticker

    def ticker(self, symbol: str) -> str:
        """The ticker of a unified symbol: one seen or given, else by the rule."""
        for ticker, known in self.known.items():
            if known == symbol:
                return ticker
        base, _, rest = symbol.partition("/")
        return base + rest.partition(":")[0] if rest else symbol
