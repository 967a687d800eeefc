"""A gap's trade history, read back to the gap's start however many pages that takes.

The plan (``_core/resync.py``) needs every fill since a margin before the gap; this module
is the I/O that gets them. Pages of GET /future/trade/history, newest first, until a page
comes back short, or its records are older than the window (a server that ignores
``startTime``), or the time bound runs out. Each page takes a routine turn of the shared
limiter, so an order or a cancel never waits behind a long history. A page that fails with
a transient error (429, 5xx, a timeout) is asked again (a GET changes nothing) after a
short backoff, within the same time bound; a permanent error ends the read.

While the pages are read, new fills push older records down a page: a record can come
twice, on the end of one page and the head of the next. Records are kept once, by id.

After the history, the open orders are read once more: :func:`resync.proven_bases` tells
from the two snapshots around the read where each open order's records start (the
snapshot/history race). Orders that filled during the read are asked about again, history
and open orders, while the bound lasts (at most ``PROOF_ROUNDS`` reads). The open orders
are read once after the history even when the bound ran out: without that read no record
of an open order could be placed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bitmusa_plugin._core import resync
from bitmusa_plugin._core.errors import BitmusaError
from bitmusa_plugin._core.fills import record_time
from bitmusa_plugin._core.numbers import Pair
from bitmusa_plugin._engine.aio import within

if TYPE_CHECKING:  # httpx stays out of replay and --help (test_cli's heavy imports)
    from bitmusa_plugin._engine.rest import AccountClient

#: records a page we ask the gap's history for
GAP_HISTORY_PAGE = 100
#: the default time bound of a gap's history read, seconds (``history_budget``)
DEFAULT_HISTORY_BUDGET = 30.0
#: history reads, at most, to prove where each open order's records start
PROOF_ROUNDS = 3
#: the pauses before a failed page is read again; then the last, until the time bound
_BACKOFF = (0.1, 0.2, 0.5, 1.0)


@dataclass
class GapHistory:
    """What a gap's history read found: ``records`` (newest first, each once) since
    ``window_start_ms``; ``cut``: why they do not reach back that far (None: they do);
    ``bases``: each open order's proven cumulative fill before its records."""

    records: list[dict[str, Any]]
    window_start_ms: int
    cut: str | None = None
    bases: dict[str, Pair] = field(default_factory=dict)
    pages: int = 0
    failures: list[str] = field(default_factory=list)


def _identity(record: dict[str, Any]) -> object:
    rid = record.get("id")
    if rid is not None:
        return ("id", str(rid))
    return tuple(sorted((k, str(v)) for k, v in record.items()))


async def read_pages(
    client: AccountClient,
    since_ms: int,
    *,
    deadline: float,
    clock: Callable[[], float],
    page_size: int = GAP_HISTORY_PAGE,
) -> tuple[list[dict[str, Any]], str | None, int, list[str]]:
    """Every record since ``since_ms``, newest first, each once: (records, why the read
    stopped short or None, pages read, the failures met on the way)."""
    params: dict[str, Any] = {"size": page_size, "startTime": since_ms}
    records: list[dict[str, Any]] = []
    seen: set[object] = set()
    failures: list[str] = []
    page, attempt = 1, 0
    failing: str | None = None  # the last read of this page failed so
    while True:
        left = deadline - clock()
        if left <= 0:
            why = _bound_cut(records, page - 1) if failing is None else failing
            return records, why, page - 1, failures
        try:
            data = await within(client.trade_history_page(page, params), left)
        except asyncio.TimeoutError:
            return records, _bound_cut(records, page - 1), page - 1, failures
        except BitmusaError as exc:
            failures.append(exc.message)
            if exc.failure in ("permanent", "misconfigured"):
                return records, f"page {page} failed: {exc.message}", page - 1, failures
            # bounded by time, never by a count of failures: a page that fails five
            # times and then answers still gives the gap's fills, not an unknown end;
            # the last try comes with what the bound leaves
            failing = f"page {page} kept failing ({exc.message})"
            pause = _BACKOFF[min(attempt, len(_BACKOFF) - 1)]
            attempt += 1
            await asyncio.sleep(max(0.0, min(pause, deadline - clock() - 0.01)))
            continue
        attempt, failing = 0, None
        rows = data or []
        for row in rows:
            key = _identity(row)
            if key not in seen:
                seen.add(key)
                records.append(row)
        if len(rows) < page_size:
            return records, None, page, failures
        oldest = min((t for t in map(record_time, rows) if t is not None), default=None)
        if oldest is not None and oldest < since_ms:
            return records, None, page, failures  # a server that ignores startTime
        page += 1


def _bound_cut(records: list[dict[str, Any]], pages: int) -> str:
    times = [t for t in map(record_time, records) if t is not None]
    back = f", back to {min(times)} ms" if times else ""
    return f"the history read's time bound ran out after {pages} pages{back}"


async def read_gap_history(
    client: AccountClient,
    since_ms: int,
    first_orders: list[dict[str, Any]],
    *,
    budget: float,
    clock: Callable[[], float],
    open_orders: Callable[[], Any],
) -> GapHistory:
    """The gap's history since ``since_ms`` and, for the open orders of the snapshot
    (``first_orders``), where their records start (``open_orders()`` reads the open
    orders again). Never raises a :class:`BitmusaError`: what failed is in ``cut``."""
    deadline = clock() + budget
    before = first_orders
    bases: dict[str, Pair] = {}
    records: list[dict[str, Any]] = []
    cut: str | None = None
    pages = 0
    failures: list[str] = []
    wanted = {str(r.get("order_id")) for r in first_orders}
    for round_ in range(PROOF_ROUNDS):
        got, got_cut, read, met = await read_pages(client, since_ms, deadline=deadline, clock=clock)
        pages += read
        failures += met
        if round_ and got_cut is not None:
            break  # keep the read that reached the window: its bases hold for its records
        records, cut = got, got_cut
        try:  # past the bound too: without it no record of an open order can be placed
            after = await open_orders()
        except BitmusaError:
            break
        # a base is where an order's records begin: the same for every read that reaches
        # the window's start (a later one only adds newer records), not for one cut short
        proven = resync.proven_bases(before, records, after)
        bases.update(proven)
        wanted -= set(proven)
        wanted &= {str(r.get("order_id")) for r in after}
        if cut is not None or not wanted or clock() >= deadline:
            break
        before = after
    return GapHistory(records, since_ms, cut, bases, pages, failures)
