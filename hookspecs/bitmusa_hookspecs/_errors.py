"""The error vocabulary: every kind ``on_error`` can report, and how a report is built.

``ErrorKind`` is a ``Literal``, so a plugin can ``match error["kind"]`` with type checking;
``ERROR_KINDS`` says what each kind means (the hooks reference is generated from it).
"""

from __future__ import annotations

from ._types import ErrorInfo, ErrorKind

#: What each kind means, in the order the reference lists them.
ERROR_KINDS: dict[ErrorKind, str] = {
    "malformed_json": "the frame is not JSON (one retry without trailing commas was made)",
    "not_an_object": "the frame is JSON but not an object",
    "unknown_stream": "`stream` is missing or not one of the three user streams",
    "missing_field": "a required field is missing (`data`; `orderId`/`ticker` for orders; "
    "`asset`/`free`/`locked` for the wallet; `ticker` for positions)",
    "invalid_field": "a field has the wrong type, or a numeric field is not a number",
    "invalid_value": "a number is out of range (negative size or price, NaN, beyond 1e30 or "
    "below 1e-30, a fill larger than the order, a timestamp outside year 1970-9999)",
    "oversize": "the frame is longer than the limit (64 KiB by default)",
    "internal": "a bug in the mapping; reported with the frame instead of crashing",
    "binary_frame": "the websocket sent a binary frame (the user stream sends text)",
    "plugin_error": "a plugin's handler raised; `plugin` names it, `event` is what it got",
    "plugin_slow": "a handler has run longer than `slow_after` (5 s); its later events wait",
    "plugin_behind": "a plugin with delivery policy `latest` fell `conflate_after` (1,000) "
    "calls behind: until it catches up, queued states of one object merge into the newest "
    "(reported once per episode)",
    "plugin_stalled": "a plugin's handler made no progress for `stall_after` (30 s): it is "
    "switched to delivery policy `latest` for the rest of the run and no longer holds the "
    "stream",
    "queue_overflow": "a stalled plugin is a whole queue (10,000) of events behind: its "
    "further events are dropped and counted (its states still merge)",
    "resync_incomplete": "after an outage, the resync could not tell everything: orders "
    "gone from the snapshot whose end is unknown (delivered with `status` None; the message "
    "says, per order, what the trade history shows), or a trade history that could not be "
    "read back to the gap's start (why, and how far it reached)",
    "trade_estimated": "after an outage, an order had fills the trade history could not "
    "account for (it failed, was cut short by `history_budget`, filled again while it was "
    "read, or does not show them yet): they were delivered as an estimated trade that "
    "closes the order's amount and cost exactly, priced at the average, with no fee "
    "(`trade['info']['estimated']`)",
    "side_unknown": "an order the engine did not know (placed by another client) could not "
    "be given a side (`side_wait` 0, the engine's default, or not within it): it and its "
    "trades were delivered with "
    "`side` None (reported once per order, with why)",
    "rest_error": "a REST call (listenKey or snapshot) failed (the message carries Bitmusa's "
    "code); retried unless permanent",
    "sink_unavailable": "the Redis sink cannot write: events wait in its buffer and are "
    "written in order once Redis is back (reported once per outage)",
    "lease_lost": "worker mode: another worker holds this account's lease now; this worker "
    "stops streaming it",
}

#: The kinds that reject one frame (the frame's text is in ``error["raw"]``).
FRAME_ERROR_KINDS: frozenset[ErrorKind] = frozenset(
    (
        "malformed_json",
        "not_an_object",
        "unknown_stream",
        "missing_field",
        "invalid_field",
        "invalid_value",
        "oversize",
    )
)

#: How much of an offending frame a report carries.
RAW_EXCERPT_CHARS = 512


def error_info(
    kind: ErrorKind,
    message: str,
    account: str | None = None,
    raw: str | bytes | None = None,
    plugin: str | None = None,
) -> ErrorInfo:
    """Build an :class:`ErrorInfo`. ``raw`` is cut to ``RAW_EXCERPT_CHARS``; text that is not
    valid UTF-8 (a line read with ``surrogateescape``) is kept visible as ``\\udcff``
    escapes, so that every output can encode it."""
    if isinstance(raw, bytes):
        raw = raw[: RAW_EXCERPT_CHARS * 4].decode("utf-8", "replace")
    if raw is not None:
        if len(raw) > RAW_EXCERPT_CHARS:
            raw = raw[:RAW_EXCERPT_CHARS] + "…"
        if not raw.isascii():
            raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"kind": kind, "message": message, "account": account, "raw": raw, "plugin": plugin}
