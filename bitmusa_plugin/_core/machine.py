"""One account's stream as a pure machine: (now, what happened) -> what to do.

Everything that decides the state of an account's stream lives in this file (h11's
``_state.py`` rule): the listenKey's lifecycle, the connections, and which frames reach the
plugins when. It never touches a socket or a clock: the asyncio shell in
``_engine/stream.py`` feeds it what happened, with the current time, and carries out the
actions it returns; tests drive it on a fake clock, so a simulated week runs in
milliseconds and the exactly-once guarantee is checked frame by frame.

The lifecycle:

* **Keep-alive**: PUT every ``keepalive_interval`` (± jitter) after the last success; on
  failure retry with backoff (capped at ``retry_max``, far inside the 60-minute validity).
  A key reported gone (3022), or one whose validity ran out while retries failed, is
  replaced by POST; a different key means reconnecting on it, and that is a gap.
* **Reconnect**: after any unplanned close, wait a full-jitter exponential backoff
  (``retry_initial`` doubling up to ``retry_max``, no attempt limit; reset once a
  connection has stayed up ``stable_after``), POST (it returns the active key, or a new
  one), then connect.
* **Gap contract**: the first unplanned loss of an outage records ``since`` (the last moment
  the connection was known alive); when a connection is up again exactly one ``gap`` state
  is emitted with ``since``/``until``, *before* any frame of that connection is delivered.
* **Resync closes every gap**: after each gap (and at start-up, with ``resync`` on) a
  snapshot is fetched; a snapshot that fails is retried with backoff on the live connection
  until one succeeds (a newer gap replaces it). No rotation starts while one is in flight.
* **Rotation, make-before-break**: at ``rotate_after`` (minus jitter) a second connection
  opens on the same key; the first keeps delivering while the second buffers.
* **Permanent errors** (bad key, IP not allowed, ...) fail the stream at once: no loops.
* **Misconfiguration** (the listenKey path or the stream's path is not there) fails the
  stream at once, unless that same call has worked before in this run.
* **Start-up window**: before the first connection, an unreachable server (DNS, refused,
  TLS, timeout) is retried only until ``startup_window`` has passed since the start; then
  the stream fails with the last reason. After a first connection it is retried forever.
* **Never silent**: every failed attempt to create the key or to connect is a
  ``connecting`` state whose reason says what failed and when the next attempt is.

The delivery gate: every frame goes through :meth:`AccountMachine.frame`, which says whether
to deliver it now. A connection's frames are *held* while it is pending (its gap state not
yet out), from then until its resync's snapshot is delivered (so a snapshot never overwrites
a newer event, and comes before the new connection's first event; released meanwhile only
if the snapshot waits for the REST allowance), while the snapshot of a later resync is in
flight, and while it is the standby of a rotation; held frames are released by a
``Deliver`` action, in order, when the reason ends, or when their connection goes away with
no other delivering (they were real events). During a rotation, each frame the delivering
connection delivers is counted against the standby's, so that the switch delivers exactly
what the standby has that was not delivered yet. The switch happens as soon as the two have
*joined* (a frame reached both, and the old one delivered it: the old one holds nothing the
new one lacks), else after ``rotate_overlap``, but never while the old one's reader is
paused by backpressure (it may hold frames the new one never got). Frames the old one
delivered that the new one has not read yet are skipped when they arrive, for an overlap.
The switch by the timer (a quiet account: no frame to join on) assumes what every reader
that is not paused does: it reads what reaches it well within the overlap (2 s).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Literal

from bitmusa_hookspecs import StreamStatus
from bitmusa_plugin._core.errors import Failure


@dataclass(frozen=True)
class Timing:
    """Every interval, in seconds. ``scaled(k)`` divides them all (tests, the demo)."""

    keepalive_interval: float = 30 * 60.0
    keepalive_jitter: float = 0.1  # fraction of the interval, either way
    key_validity: float = 60 * 60.0
    retry_initial: float = 0.5
    retry_max: float = 30.0
    stable_after: float = 60.0
    rotate_after: float = 23 * 3600 + 50 * 60.0
    rotate_jitter: float = 5 * 60.0  # rotation happens up to this much earlier
    rotate_retry: float = 60.0
    rotate_overlap: float = 2.0
    #: before the first connection, an unreachable server fails the stream after this
    startup_window: float = 30.0

    def scaled(self, factor: float) -> Timing:
        changes = {f.name: getattr(self, f.name) / factor for f in fields(self)}
        changes["keepalive_jitter"] = self.keepalive_jitter  # a fraction, not a time
        return replace(self, **changes)


def replace_timing(timing: Timing, overrides: dict[str, float]) -> Timing:
    """``timing`` with some intervals replaced by name (an unknown name is an error)."""
    unknown = set(overrides) - {f.name for f in fields(Timing)}
    if unknown:
        raise ValueError(f"unknown timing option(s): {', '.join(sorted(unknown))}")
    return replace(timing, **overrides)


# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateKey:
    """POST userDataStream; answer with key_created / key_failed."""


@dataclass(frozen=True)
class KeepAlive:
    """PUT userDataStream; answer with keepalive_ok / keepalive_failed."""


@dataclass(frozen=True)
class DeleteKey:
    """DELETE userDataStream (shutdown only)."""


@dataclass(frozen=True)
class Connect:
    """Open websocket ``conn`` on ``key``; answer with connected / connect_failed, then feed
    its frames to :meth:`AccountMachine.frame` and report its end with ``closed``."""

    conn: int
    key: str


@dataclass(frozen=True)
class Fetch:
    """Resync on ``conn``: once the REST allowance has turns for the snapshot, call
    ``hold``, fetch it, deliver what it changed, then answer snapshot_done/_failed. A new
    connection's ``Fetch`` comes with its frames held: ``unhold`` them if the allowance
    makes the snapshot wait."""

    conn: int
    #: the gap this resync closes began then (None: the start-up's, which recovers no
    #: fills: what was filled before the stream started is history, not news)
    gap_since: float | None = None


@dataclass(frozen=True)
class Deliver:
    """Deliver these frames now, in this order, before any other."""

    frames: tuple[str, ...]


@dataclass(frozen=True)
class Close:
    """Close ``conn`` on purpose; its closing is not an outage."""

    conn: int
    reason: str


@dataclass(frozen=True)
class EmitState:
    status: StreamStatus
    since: float | None = None
    until: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Finish:
    """The stream is over: stopped on request, or failed for good."""

    failed: bool
    reason: str


Action = CreateKey | KeepAlive | DeleteKey | Connect | Fetch | Deliver | Close | EmitState | Finish

#: ``_close_old_at`` while the old connection's reader is paused: due once it resumes.
_WAITING = float("inf")

ConnState = Literal["pending", "live", "held", "standby"]


@dataclass(slots=True)
class _Conn:
    key: str
    rotation: bool  # a rotation's new connection, until the switch
    state: ConnState = "pending"
    open: bool = False
    opened_at: float | None = None
    paused: bool = False  # its reader waits for a lossless plugin (backpressure)
    joined: bool = False  # standby: a frame reached it that the delivering one delivered
    buffer: list[str] = field(default_factory=list)  # held frames, in order
    buffered: Counter[str] = field(default_factory=Counter)  # standby: buffer as a multiset
    delivered: Counter[str] = field(default_factory=Counter)  # standby: what the other did


@dataclass(slots=True)
class Counters:
    reconnects: int = 0
    gaps: int = 0
    rotations: int = 0
    keepalives: int = 0
    keepalive_failures: int = 0
    key_changes: int = 0
    resyncs: int = 0
    resync_failures: int = 0


# slots: one machine per account, and its ~40 fields in an instance dict cost 2.3 KiB of
# an idle stream's memory (issue 21; docs/benchmarks.md section 9), in slots 0.4 KiB
@dataclass(slots=True)
class AccountMachine:
    """One account's stream. Methods take ``now`` (seconds, any monotonic origin), except
    :meth:`frame`, the hot path, which only decides."""

    timing: Timing = field(default_factory=Timing)
    rng: random.Random = field(default_factory=random.Random)
    keep_listen_key: bool = False
    #: fetch snapshots at start-up and after every gap (see ``resync.py``)
    resync: bool = False

    phase: Literal["idle", "running", "stopped", "failed"] = field(default="idle", init=False)
    key: str | None = field(default=None, init=False)
    counters: Counters = field(default_factory=Counters, init=False)
    #: a switch became possible between ticks (a rotation joined): tick soon
    urgent: bool = field(default=False, init=False)

    _conns: dict[int, _Conn] = field(default_factory=dict, init=False)
    _primary: int | None = field(default=None, init=False)
    _next_id: int = field(default=1, init=False)
    _key_pending: bool = field(default=False, init=False)
    _key_ok_at: float | None = field(default=None, init=False)
    _create_at: float | None = field(default=None, init=False)  # retry a failed POST
    _create_attempt: int = field(default=0, init=False)
    _keepalive_at: float | None = field(default=None, init=False)
    _keepalive_pending: bool = field(default=False, init=False)
    _keepalive_attempt: int = field(default=0, init=False)
    _reconnect_at: float | None = field(default=None, init=False)
    _reconnect_attempt: int = field(default=0, init=False)
    _stable_at: float | None = field(default=None, init=False)
    _gap_since: float | None = field(default=None, init=False)
    _outage: bool = field(default=False, init=False)  # a primary connection is wanted but not up
    _rotate_at: float | None = field(default=None, init=False)
    _rotation: int | None = field(default=None, init=False)
    _close_old_at: float | None = field(default=None, init=False)
    _connected_once: bool = field(default=False, init=False)
    _resync_conn: int | None = field(default=None, init=False)  # a snapshot in flight
    _resync_at: float | None = field(default=None, init=False)  # retry a failed snapshot
    _resync_attempt: int = field(default=0, init=False)
    _resync_since: float | None = field(default=None, init=False)  # the gap it closes
    _standby: _Conn | None = field(default=None, init=False)  # the rotation's, once open
    _skip: Counter[str] = field(default_factory=Counter, init=False)  # after a switch
    _skip_until: float = field(default=0.0, init=False)
    _started_at: float = field(default=0.0, init=False)
    _key_ok_once: bool = field(default=False, init=False)  # a POST has succeeded
    _keepalive_ok_once: bool = field(default=False, init=False)
    _retry_announced: bool = field(default=False, init=False)  # the next try is in a state

    # -- the hot path ---------------------------------------------------------------------

    def frame(self, conn_id: int, text: str) -> bool:
        """A text frame arrived on ``conn_id``: True means deliver it now; otherwise it is
        held (and released by a later ``Deliver``), or it was delivered already."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return False  # a connection we let go: what it still brings is covered
        if conn.state == "live":
            skip = self._skip
            if skip and text in skip:  # the old connection of a rotation delivered it
                if skip[text] == 1:
                    del skip[text]
                else:
                    skip[text] -= 1
                return False
            standby = self._standby
            if standby is not None:
                # the rotation's new connection may carry this frame too: count it, so
                # that it skips what was delivered already
                standby.delivered[text] += 1
                if not standby.joined and standby.buffered[text] > 0:
                    self._join(standby)
            return True
        conn.buffer.append(text)
        if conn.state == "standby":
            conn.buffered[text] += 1
            if not conn.joined and conn.delivered[text] > 0:
                self._join(conn)
        return False

    @property
    def primary(self) -> int | None:
        """The connection that delivers (after :meth:`stop`, the one that did): the shell
        drains it as it closes, so that what reached its socket is delivered."""
        return self._primary

    def unfinished_gap(self) -> float | None:
        """Since when the fills may not all have been delivered: the start of the outage
        under way, or of a gap whose resync has not delivered yet (None: none). Whoever
        takes the account over from here must read the trade history back that far."""
        marks = [t for t in (self._gap_since, self._resync_since) if t is not None]
        return min(marks, default=None)

    def held(self, conn_id: int) -> list[str]:
        """The frames ``conn_id`` holds back now, in order (a resync leaves the objects
        they update to them)."""
        conn = self._conns.get(conn_id)
        return list(conn.buffer) if conn is not None else []

    # -- inputs -----------------------------------------------------------------------------

    def start(self, now: float, gap_since: float | None = None) -> list[Action]:
        """Begin. ``gap_since``: the stream takes over from another process (worker mode)
        whose last sign of life was then: the first connection reports that gap."""
        self.phase = "running"
        self._started_at = now
        self._outage = True
        self._gap_since = gap_since
        return [EmitState("connecting"), *self._create(now)]

    def key_created(self, now: float, key: str) -> list[Action]:
        if self.phase != "running":
            return []
        self._key_ok_once = True
        self._key_pending = False
        self._create_attempt = 0
        self._key_ok_at = now
        self._schedule_keepalive(now)
        actions: list[Action] = []
        changed = self.key is not None and key != self.key
        self.key = key
        if changed:
            self.counters.key_changes += 1
            # Connections on the old key carry nothing more: replace them, with a gap.
            had_primary = self._primary is not None
            actions += self._close_all("listenKey changed")
            if had_primary:
                self._lose_primary(now, now)
                actions.append(EmitState("disconnected", since=now, reason="listenKey changed"))
            self._rotation = self._close_old_at = self._rotate_at = None
        if self._outage and self._reconnect_at is None and not self._connecting():
            actions.append(self._connect(key, rotation=False))
        return actions

    def key_failed(self, now: float, failure: Failure, reason: str) -> list[Action]:
        if self.phase != "running":
            return []
        self._key_pending = False
        fatal = self._fatal(now, failure, reason, worked_before=self._key_ok_once)
        if fatal is not None:
            return self._fail(fatal)
        delay = self._within_window(now, failure, self._backoff(self._create_attempt))
        self._create_at = now + delay
        self._create_attempt += 1
        return [self._retrying(reason, delay)]

    def keepalive_ok(self, now: float) -> list[Action]:
        self._keepalive_ok_once = True
        self._keepalive_pending = False
        self._keepalive_attempt = 0
        self._key_ok_at = now
        self.counters.keepalives += 1
        self._schedule_keepalive(now)
        return []

    def keepalive_failed(self, now: float, failure: Failure, reason: str) -> list[Action]:
        if self.phase != "running":
            return []
        self._keepalive_pending = False
        self.counters.keepalive_failures += 1
        if failure == "permanent" or (failure == "misconfigured" and not self._keepalive_ok_once):
            return self._fail(reason)
        if failure == "gone":
            self._keepalive_at = None
            return self._create(now)
        self._keepalive_at = now + self._backoff(self._keepalive_attempt)
        self._keepalive_attempt += 1
        return []

    def connected(self, now: float, conn_id: int) -> list[Action]:
        conn = self._conns.get(conn_id)
        if conn is None or self.phase != "running":
            return [Close(conn_id, "no longer wanted")]
        conn.open, conn.opened_at = True, now
        if conn.rotation:
            # The standby: its frames wait while the delivering connection goes on
            # (counted for it since the Connect), until the switch.
            self._close_old_at = now + self.timing.rotate_overlap
            return []
        self._primary = conn_id
        self._outage = False
        self._stable_at = now + self.timing.stable_after
        self._schedule_rotation(now)
        actions: list[Action] = [EmitState("connected")]
        gap = self._gap_since is not None
        gap_since = self._gap_since
        if gap_since is not None and self._resync_since is not None:
            gap_since = min(gap_since, self._resync_since)  # an earlier gap's is unfinished
        if gap:
            self.counters.gaps += 1
            actions.append(EmitState("gap", since=self._gap_since, until=now, reason="outage"))
            self._gap_since = None
        first = not self._connected_once
        self._connected_once = True
        if self.resync and (gap or first):
            # What arrived before this call (the reader runs ahead of the shell) is the new
            # connection's and stays held with what follows, for the snapshot to come
            # first: the shell calls ``unhold`` if the snapshot must wait for its turn.
            conn.state = "held"
            self._resync_at, self._resync_attempt = None, 0  # this one supersedes a retry
            self._resync_conn = conn_id
            self._resync_since = gap_since
            actions.append(Fetch(conn_id, gap_since))
            return actions
        # the gap state is out: what arrived meanwhile flows, then everything live
        if conn.buffer:
            actions.append(Deliver(tuple(conn.buffer)))
            conn.buffer.clear()
        conn.state = "live"
        return actions

    def hold(self, now: float, conn_id: int) -> list[Action]:
        """The snapshot of a resync is about to be fetched on ``conn_id``: hold its frames
        until it is delivered (then they are at least as new as it). Until now they flowed
        (after an ``unhold``): a snapshot that waits for the REST allowance never holds
        events back. Held already (the ``Fetch`` of a new connection): nothing changes."""
        conn = self._conns.get(conn_id)
        if conn is not None and conn_id == self._resync_conn and conn.state == "live":
            conn.state = "held"
        return []

    def unhold(self, now: float, conn_id: int) -> list[Action]:
        """The snapshot of ``conn_id``'s resync waits for the REST allowance: what the
        connection holds goes out now, and its frames flow until ``hold``."""
        if conn_id != self._resync_conn:
            return []
        return self._release(conn_id)

    def snapshot_done(self, now: float, conn_id: int) -> list[Action]:
        """The snapshot was fetched and delivered: the gap is closed; release the held."""
        actions = self._release(conn_id)
        if conn_id != self._resync_conn:
            return actions  # a superseded one (its connection was lost meanwhile)
        self._resync_conn = None
        self._resync_since = None
        self._resync_attempt = 0
        self.counters.resyncs += 1
        return actions

    def snapshot_failed(self, now: float, conn_id: int, failure: Failure) -> list[Action]:
        """The snapshot could not be fetched: release the held frames, and retry on the
        live connection unless the failure is permanent (then the next gap tries)."""
        actions = self._release(conn_id)
        if conn_id != self._resync_conn:
            return actions
        self._resync_conn = None
        self.counters.resync_failures += 1
        if self.phase == "running" and failure != "permanent":
            self._resync_at = now + self._backoff(self._resync_attempt)
            self._resync_attempt += 1
        return actions

    def reader_paused(self, now: float, conn_id: int) -> list[Action]:
        """``conn_id``'s reader stopped reading: a lossless plugin is a queue behind."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.paused = True
        return []

    def reader_resumed(self, now: float, conn_id: int) -> list[Action]:
        """``conn_id``'s reader reads again. If it is the old connection of a rotation that
        has not joined, it may hold frames sent before the new one opened: the switch
        waits until it has read unpaused for the whole overlap again."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return []
        conn.paused = False
        standby = self._standby
        joined = standby is not None and standby.joined
        if conn_id == self._primary and self._close_old_at is not None and not joined:
            due = now + self.timing.rotate_overlap
            waiting = self._close_old_at == _WAITING
            self._close_old_at = due if waiting else max(self._close_old_at, due)
        return []

    def connect_failed(
        self, now: float, conn_id: int, reason: str, failure: Failure = "transient"
    ) -> list[Action]:
        """A connection could not be opened. ``failure``: ``misconfigured`` for a handshake
        refused with 400/404 on a key REST just issued (every attempt POSTs first),
        ``unreachable`` for no answer (DNS, refused, TLS, timeout)."""
        conn = self._conns.pop(conn_id, None)
        if conn is None or self.phase != "running":
            return []
        if conn.rotation:
            self._rotation = None
            self._standby = None
            self._rotate_at = now + self.timing.rotate_retry
            return []
        fatal = self._fatal(now, failure, reason, worked_before=self._connected_once)
        if fatal is not None:
            return self._fail(fatal)
        return self._schedule_reconnect(now, reason, announce=True, failure=failure)

    def closed(self, now: float, conn_id: int, reason: str, last_alive: float) -> list[Action]:
        """A connection ended without our asking (server cut, reset, missed pongs)."""
        conn = self._conns.pop(conn_id, None)
        if conn is None or self.phase != "running":
            return []  # one we closed on purpose
        if conn_id == self._rotation:
            self._rotation = self._close_old_at = None
            self._standby = None
            self._rotate_at = now + self.timing.rotate_retry
            return []  # its held frames: the delivering connection has them, or will
        if conn_id != self._primary:
            return []
        # What it held was real: deliver it (a resync in flight, or its gap not yet out).
        actions: list[Action] = [Deliver(tuple(conn.buffer))] if conn.buffer else []
        conn.buffer.clear()
        standby = self._standby
        if standby is not None and standby.open:
            # The old one was cut while the new one already runs: no outage at all.
            self._primary = None
            return actions + self._switch(now, old=None)
        self._lose_primary(now, last_alive)
        return [
            *actions,
            EmitState("disconnected", since=last_alive, reason=reason),
            *self._schedule_reconnect(now, reason),
        ]

    def tick(self, now: float) -> list[Action]:
        """Whatever has come due by ``now``."""
        self.urgent = False
        if self.phase != "running":
            return []
        if self._skip and now >= self._skip_until:
            self._skip = Counter()  # the new connection has caught up long since
        actions: list[Action] = []
        if self._create_at is not None and now >= self._create_at:
            self._create_at = None
            actions += self._create(now)
        if self._reconnect_at is not None and now >= self._reconnect_at:
            self._reconnect_at = None
            self.counters.reconnects += 1
            if not self._retry_announced:  # a failed attempt's state said it already
                actions.append(EmitState("connecting", reason="reconnecting"))
            self._retry_announced = False
            actions += self._create(now)  # POST before every reconnect
        if (
            self._keepalive_at is not None
            and now >= self._keepalive_at
            and not self._keepalive_pending
            and not self._key_pending
        ):
            self._keepalive_at = None
            self._keepalive_pending = True
            actions.append(KeepAlive())
        if (
            self._key_ok_at is not None
            and now >= self._key_ok_at + self.timing.key_validity
            and not self._key_pending
        ):
            # Every keep-alive failed for a whole validity period: the key has lapsed.
            self._key_ok_at = None
            actions += self._create(now)
        if (
            self._resync_at is not None
            and now >= self._resync_at
            and self._primary is not None
            and self._rotation is None
        ):
            self._resync_at = None
            self._resync_conn = self._primary
            actions.append(Fetch(self._primary, self._resync_since))
        if (
            self._rotate_at is not None
            and now >= self._rotate_at
            and self._rotation is None
            and self._primary is not None
            and self.key is not None
            and self._resync_conn is None
        ):
            self._rotate_at = None
            conn = self._connect(self.key, rotation=True)
            self._rotation = conn.conn
            actions += [EmitState("rotating"), conn]
        standby = self._standby
        if (
            standby is not None
            and standby.open
            and (standby.joined or (self._close_old_at is not None and now >= self._close_old_at))
        ):
            old = self._conns.get(self._primary) if self._primary is not None else None
            if old is not None and old.paused and not standby.joined:
                # closing it now would lose the frames it has not read: wait for its reader
                self._close_old_at = _WAITING
            else:
                actions += self._switch(now, old=self._primary)
        return actions

    def stop(self, now: float) -> list[Action]:
        if self.phase in ("stopped", "failed"):
            return []
        self.phase = "stopped"
        actions = self._close_all("shutdown")
        # A POST still under way is about to create a key: DELETE (which names no key: it
        # closes the account's active stream) once it is answered.
        if (self.key is not None or self._key_pending) and not self.keep_listen_key:
            actions.append(DeleteKey())
        actions += [EmitState("closed", reason="shutdown"), Finish(False, "stopped")]
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do. Only deadlines ``tick`` would act on
        count: one it would skip (a keep-alive while a POST is pending, say) would come back
        at once, and the shell would spin on it."""
        if self.phase != "running":
            return None
        times = [self._create_at, self._reconnect_at]
        if self._standby is not None:
            times.append(self._close_old_at)
        if not self._keepalive_pending and not self._key_pending:
            times.append(self._keepalive_at)
        if self._key_ok_at is not None and not self._key_pending:
            times.append(self._key_ok_at + self.timing.key_validity)
        if self._rotation is None and self._primary is not None:
            times.append(self._resync_at)
            if self.key is not None and self._resync_conn is None:
                times.append(self._rotate_at)
        due = [t for t in times if t is not None and t != _WAITING]
        return min(due) if due else None

    # -- helpers ----------------------------------------------------------------------------

    def _join(self, standby: _Conn) -> None:
        standby.joined = True
        self.urgent = True  # the switch can happen now: the shell ticks soon

    def _release(self, conn_id: int) -> list[Action]:
        """A held connection delivers again: its held frames first."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.state != "held":
            return []
        frames = tuple(conn.buffer)
        conn.buffer.clear()
        conn.state = "live"
        return [Deliver(frames)] if frames else []

    def _switch(self, now: float, *, old: int | None) -> list[Action]:
        """The rotation's connection becomes the one delivering: what it holds that was not
        delivered goes out first; frames the old one delivered that it has not read yet
        are skipped when they come (for an overlap); the old one closes."""
        new_id = self._rotation
        assert new_id is not None
        new = self._conns[new_id]
        flush = _undelivered(new)
        self._skip = +new.delivered  # what is left: only the positive counts
        self._skip_until = now + self.timing.rotate_overlap
        new.buffer.clear()
        new.buffered = Counter()
        new.delivered = Counter()
        new.state, new.rotation, new.joined = "live", False, False
        self._standby = None
        self._rotation = self._close_old_at = None
        self._primary = new_id
        self.counters.rotations += 1
        self._schedule_rotation(new.opened_at if new.opened_at is not None else now)
        actions: list[Action] = [Deliver(tuple(flush)), EmitState("rotated")]
        if old is not None and old in self._conns:
            self._conns.pop(old)
            actions.append(Close(old, "rotated"))
        return actions

    def _close_all(self, reason: str) -> list[Action]:
        """Close every connection on purpose. What the primary held back (a resync in
        flight) was real: it goes out first, then what a rotation's standby has that was not
        delivered. A connection still pending (its gap state not out) takes its frames
        along: the next connection's resync covers them."""
        actions: list[Action] = []
        primary = self._conns.get(self._primary) if self._primary is not None else None
        if primary is not None and primary.buffer:
            actions.append(Deliver(tuple(primary.buffer)))
        standby = self._standby
        if standby is not None and primary is not None:
            extra = _undelivered(standby)
            if extra:
                actions.append(Deliver(extra))
        actions += [Close(c, reason) for c in self._conns]
        self._conns.clear()
        self._standby = None
        return actions

    def _create(self, now: float) -> list[Action]:
        if self._key_pending:
            return []
        self._key_pending = True
        return [CreateKey()]

    def _connect(self, key: str, *, rotation: bool) -> Connect:
        conn_id = self._next_id
        self._next_id += 1
        conn = _Conn(key, rotation, state="standby" if rotation else "pending")
        self._conns[conn_id] = conn
        if rotation:
            # from its first frame on (even before its connected is handled), every frame
            # the delivering connection delivers is counted for it
            self._standby = conn
        return Connect(conn_id, key)

    def _connecting(self) -> bool:
        return any(not c.open and not c.rotation for c in self._conns.values())

    def _lose_primary(self, now: float, last_alive: float) -> None:
        self._primary = None
        self._outage = True
        # the next connection brings its own resync (it supersedes a pending retry)
        self._resync_at = self._resync_conn = None
        if self._rotation is not None and self._rotation in self._conns:
            # a rotation still connecting becomes the reconnect attempt: its frames will
            # wait for its gap state, as a new primary's do
            conn = self._conns[self._rotation]
            conn.rotation = False
            conn.state = "pending"
            conn.buffered, conn.delivered = Counter(), Counter()
        self._standby = None
        self._rotate_at = self._rotation = self._close_old_at = None
        if self._gap_since is None:  # one gap per outage, however many attempts
            self._gap_since = last_alive

    def _schedule_reconnect(
        self, now: float, reason: str, announce: bool = False, failure: Failure = "transient"
    ) -> list[Action]:
        if self._stable_at is not None and now >= self._stable_at:
            self._reconnect_attempt = 0  # the last connection was stable: start over
        self._stable_at = None
        delay = self._within_window(now, failure, self._backoff(self._reconnect_attempt))
        self._reconnect_at = now + delay
        self._reconnect_attempt += 1
        if not announce:
            return []
        self._retry_announced = True
        return [self._retrying(reason, delay)]

    def _within_window(self, now: float, failure: Failure, delay: float) -> float:
        """An unreachable server before the first connection is tried once more at the
        start-up window's end, not after it: the verdict comes within the window."""
        if failure != "unreachable" or self._connected_once:
            return delay
        end = self._started_at + self.timing.startup_window
        return max(min(delay, end - now), self.timing.retry_initial / 10)

    def _retrying(self, reason: str, delay: float) -> EmitState:
        """A failed attempt, as the state a stream that stays down shows: what failed, and
        when the next attempt is."""
        return EmitState("connecting", reason=f"{reason}; retrying in {delay:.1f} s")

    def _fatal(
        self, now: float, failure: Failure, reason: str, *, worked_before: bool
    ) -> str | None:
        """The reason to fail the stream for this failure, or None to retry it."""
        if failure == "permanent":
            return reason
        if failure == "misconfigured" and not worked_before:
            return reason
        if failure == "unreachable" and not self._connected_once:
            window = self.timing.startup_window
            if now - self._started_at >= window:
                return f"{reason} (no connection within the start-up window, {window:g} s)"
        return None

    def _schedule_keepalive(self, now: float) -> None:
        jitter = self.timing.keepalive_jitter
        self._keepalive_at = now + self.timing.keepalive_interval * self.rng.uniform(
            1 - jitter, 1 + jitter
        )

    def _schedule_rotation(self, opened_at: float) -> None:
        self._rotate_at = (
            opened_at + self.timing.rotate_after - self.rng.uniform(0, self.timing.rotate_jitter)
        )

    def _backoff(self, attempt: int) -> float:
        """Full jitter (AWS's rule): uniform in [0, min(max, initial * 2**attempt)], with a
        floor of a tenth of the initial delay so a failure never turns into a busy loop."""
        cap = min(self.timing.retry_max, self.timing.retry_initial * 2 ** min(attempt, 30))
        return max(self.rng.uniform(0, cap), self.timing.retry_initial / 10)

    def _fail(self, reason: str) -> list[Action]:
        self.phase = "failed"
        actions = self._close_all("failed")
        return [*actions, EmitState("failed", reason=reason), Finish(True, reason)]


def _undelivered(standby: _Conn) -> tuple[str, ...]:
    """A standby's frames that the delivering connection has not delivered, in order; what
    it delivered is taken off ``standby.delivered`` as it is matched."""
    delivered = standby.delivered
    flush: list[str] = []
    for text in standby.buffer:
        if delivered[text] > 0:
            delivered[text] -= 1  # the old connection delivered this one
        else:
            flush.append(text)
    return tuple(flush)
