"""Bitmusa user-stream frames -> ccxt unified structures, per account. Pure: no I/O, no
clock, no ccxt import.

One :class:`Mapper` per account turns a raw text frame into a :class:`Mapped` (which hook
to call with which unified object) or a :class:`Rejected` (one error report). It never
raises. It composes the wire decoding (``wire.py``) and the pure builders (``build.py``),
and holds the only per-account state the mapping needs: the cumulative wallet and the
symbol map.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from bitmusa_hookspecs import Balance, ErrorInfo, Event, Order, Position, error_info
from bitmusa_plugin._core import build, wire
from bitmusa_plugin._core.build import Asset
from bitmusa_plugin._core.build import asset as build_asset
from bitmusa_plugin._core.build import balance as build_balance
from bitmusa_plugin._core.build import order as build_order
from bitmusa_plugin._core.build import position as build_position
from bitmusa_plugin._core.numbers import Reject
from bitmusa_plugin._core.symbols import SymbolMap
from bitmusa_plugin._core.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    STREAM_HOOKS,
    decode,
)

log = logging.getLogger(__name__)


class Mapped(NamedTuple):
    """An accepted frame: call ``hook`` with ``{key: obj, "event": event}``."""

    hook: str
    key: str
    obj: dict[str, Any]
    event: Event


_new_mapped = tuple.__new__


class Rejected(NamedTuple):
    """A frame that could not be accepted, as its one error report."""

    error: ErrorInfo


class Mapper:
    """Maps one account's frames. ``feed`` never raises."""

    __slots__ = ("_assets", "account", "max_frame_bytes", "symbols")

    def __init__(
        self,
        account: str = "default",
        markets: Mapping[str, str] | None = None,
        *,
        symbols: SymbolMap | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.account = account
        self.symbols = symbols if symbols is not None else SymbolMap(markets)
        self.max_frame_bytes = max_frame_bytes
        self._assets: dict[str, Asset] = {}

    # -- frames --------------------------------------------------------------------------

    def feed(self, raw: str | bytes, received_at: int) -> Mapped | Rejected:
        """Decode and map one text frame, read at ``received_at`` (ms since the epoch)."""
        try:
            stream, data, event_time, fields = decode(raw, self.max_frame_bytes)
            obj: dict[str, Any]
            if stream == "future_order":
                # memo: the fields are orjson's, of exact types (build.ORDER_MEMO)
                obj = build_order(fields, event_time, self.symbols, data, memo=True)  # type: ignore[assignment]
                hook, key = "on_order", "order"  # STREAM_HOOKS' entry, without the look-up
            elif stream == "future_position":
                obj = build_position(fields, event_time, self.symbols, data)  # type: ignore[assignment]
                hook, key = STREAM_HOOKS[stream]
            else:
                code, entry = build_asset(fields)
                self._assets[code] = entry
                obj = build_balance(self._assets, data, event_time)  # type: ignore[assignment]
                hook, key = STREAM_HOOKS[stream]
        except Reject as exc:
            return Rejected(error_info(exc.kind, exc.message, self.account, raw))
        except Exception as exc:  # a bug of ours must not stop the stream either
            log.exception("bitmusa mapping failed unexpectedly")
            return Rejected(error_info("internal", repr(exc), self.account, raw))
        event: Event = {
            "account": self.account,
            "stream": stream,
            "eventTime": event_time,
            "receivedAt": received_at,
            "data": data,
        }
        return _new_mapped(Mapped, (hook, key, obj, event))  # NamedTuple.__new__ is slow

    # -- structures ------------------------------------------------------------------------

    def order(self, data: dict[str, Any], event_time: int | None) -> Order:
        """A ``future_order`` payload -> ccxt order."""
        return build.order(wire.order_fields(data), event_time, self.symbols, data)

    def position(self, data: dict[str, Any], event_time: int | None) -> Position:
        """A ``future_position`` payload -> ccxt position."""
        return build.position(wire.position_fields(data), event_time, self.symbols, data)

    def wallet(self, data: dict[str, Any], event_time: int | None) -> Balance:
        """A ``future_wallet`` payload -> the whole account balance after this update."""
        code, entry = build.asset(wire.wallet_fields(data))
        self._assets[code] = entry
        return build.balance(self._assets, data, event_time)

    def balance(self, info: Any = None, event_time: int | None = None) -> Balance:
        """The cumulative balance, as a fresh ccxt ``Balances`` structure."""
        return build.balance(self._assets, info, event_time)

    @property
    def assets(self) -> Mapping[str, Asset]:
        """The cumulative wallet, by currency (read only: :meth:`set_asset` changes it)."""
        return self._assets

    def set_asset(self, code: str, entry: Asset) -> None:
        """Take one currency's entry from elsewhere (a resync snapshot)."""
        self._assets[code] = entry


__all__ = ["DEFAULT_MAX_FRAME_BYTES", "Mapped", "Mapper", "Rejected", "SymbolMap"]
