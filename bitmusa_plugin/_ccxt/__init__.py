"""The ccxt drop-in: :class:`bitmusa`, a whole ccxt exchange for Bitmusa futures (markets,
market data and trading over REST) with ccxt.pro's ``watch_*`` on the user stream.

This package is the only one that imports ccxt. ``bitmusa_plugin.bitmusa`` and
``load_exchange`` reach it lazily, and it is registered in the ``ccxt.exchanges``
entry-point group (``bitmusa_plugin._ccxt:bitmusa``) so a bot can find it by name.
:mod:`.sync` is ccxt's synchronous face of the same class, and :mod:`.register` puts both
into ccxt's modules by id (``bitmusa_plugin.register_ccxt()``).
"""

from __future__ import annotations

from .errors import EXCEPTIONS, ccxt_error, raise_for
from .exchange import SUPPORTED, bitmusa
from .streams import PositionsCache

__all__ = ["EXCEPTIONS", "SUPPORTED", "PositionsCache", "bitmusa", "ccxt_error", "raise_for"]
