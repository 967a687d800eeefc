"""``register_ccxt()``: ``bitmusa`` in ccxt's three modules, found by id as ccxt's own are.

* ``ccxt.bitmusa``: the sync face (:mod:`.sync`);
* ``ccxt.async_support.bitmusa`` and ``ccxt.pro.bitmusa``: the async class, with
  ``watch_*``. ccxt's async_support classes have no working ``watch_*``, but each ccxt.pro
  class is a subclass of its async_support one, so a pro class is a valid async_support
  one; a second class without ``watch_*`` would only hide what works;
* ``"bitmusa"`` in each module's ``exchanges`` (kept sorted) and ``__all__``.

All three modules are imported here, so the order of a bot's own imports does not
matter: Python keeps each module once, with ``bitmusa`` in it. Nothing of another
exchange changes. Calling it again does nothing.
"""

from __future__ import annotations

import bisect
import logging
import threading
from types import ModuleType

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
NAME = "bitmusa"


def register_ccxt(*, replace: bool = False) -> None:
    """Put ``bitmusa`` into ``ccxt`` (the sync face), ``ccxt.async_support`` and
    ``ccxt.pro`` (the async class, with ``watch_*``), and into their ``exchanges`` lists:
    ``ccxt.bitmusa(config)``, ``getattr(ccxt.pro, "bitmusa")(config)`` and ``"bitmusa" in
    ccxt.exchanges`` then work, whatever was imported first. Idempotent. Imports ccxt and
    ccxt.pro (about a second and a half), so only when called.

    Should a ccxt release ship a ``bitmusa`` of its own, that one stays and a warning says
    so, unless ``replace=True``."""
    import ccxt
    import ccxt.async_support
    import ccxt.pro

    from .exchange import bitmusa as async_face
    from .sync import bitmusa as sync_face

    with _LOCK:  # two threads registering at once append once
        for module, face in (
            (ccxt, sync_face),
            (ccxt.async_support, async_face),
            (ccxt.pro, async_face),
        ):
            _put(module, face, replace=replace)


def _put(module: ModuleType, face: type, *, replace: bool) -> None:
    present = module.__dict__.get(NAME)
    ours = getattr(present, "__module__", "").startswith("bitmusa_plugin.")
    if present is not None and not ours and not replace:
        log.warning(
            "bitmusa: %s.%s is ccxt's own (%s): left in place; "
            "register_ccxt(replace=True) puts bitmusa-plugin's there",
            module.__name__,
            NAME,
            present.__module__,
        )
        return
    setattr(module, NAME, face)
    for listing in ("exchanges", "__all__"):
        names = getattr(module, listing, None)
        if isinstance(names, list) and NAME not in names:
            if names == sorted(names):
                bisect.insort(names, NAME)
            else:
                names.append(NAME)
