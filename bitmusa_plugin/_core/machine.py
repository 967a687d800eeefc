"""The stream lifecycle as a pure policy: (now, what happened) -> what to do.

It never touches a socket or a clock (websockets/h11's sans-I/O rule): the asyncio shell in
``stream.py`` feeds it events with the current time and carries out the actions it
returns, and tests drive it with a fake clock, so a simulated week runs in milliseconds.

What it decides:

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
  is emitted with ``since``/``until``, *before* that connection is activated (its frames
  delivered).
* **Rotation, make-before-break**: at ``rotate_after`` (minus jitter) open a second
  connection on the same key, activate it, and close the old one ``rotate_overlap`` later;
  the shell delivers the overlap's duplicates once. The old one closes as soon as the
  rotation has *joined* (a frame reached the new one that the old one delivered: the old one
  holds nothing the new one lacks), else after the overlap. An old connection whose reader
  is paused (a lossless plugin holds the stream) may hold frames the new one never got: it
  is not closed by the overlap while paused, only after reading unpaused for the whole
  overlap again (or a join), and no rotation starts meanwhile.
  If the new one cannot be opened, stay on the old one and retry every ``rotate_retry``;
  only a cut of the old one then causes an ordinary reconnect (with its gap).
* **Resync closes every gap**: after each gap (and at start-up, with ``resync`` on) the
  snapshot is fetched before the new connection's frames flow; a snapshot that fails is
  retried with backoff on the live connection until one succeeds (a newer gap replaces
  it), so no outage is left unhealed. No rotation starts while a resync is in flight.
* **Permanent errors** (bad key, IP not allowed, ...) fail the stream at once: no loops.
"""

from __future__ import annotations

import random
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
    """POST userDataStream."""


@dataclass(frozen=True)
class KeepAlive:
    """PUT userDataStream."""


@dataclass(frozen=True)
class DeleteKey:
    """DELETE userDataStream (shutdown only)."""


@dataclass(frozen=True)
class Connect:
    """Open websocket ``conn`` on ``key``; report connected / connect_failed."""

    conn: int
    key: str


@dataclass(frozen=True)
class Activate:
    """Start delivering ``conn``'s frames (after any gap state was emitted)."""

    conn: int


@dataclass(frozen=True)
class Resync:
    """Hold ``conn``'s frames, deliver what a REST snapshot changed, then activate it."""

    conn: int


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


Action = (
    CreateKey | KeepAlive | DeleteKey | Connect | Activate | Resync | Close | EmitState | Finish
)

#: ``_close_old_at`` while the old connection's reader is paused: due once it resumes.
_WAITING = float("inf")


@dataclass
class _Conn:
    key: str
    rotation: bool
    open: bool = False
    opened_at: float | None = None
    paused: bool = False  # its reader waits for a lossless plugin (backpressure)
    joined: bool = False  # a rotation's: a frame reached it that the old one delivered


@dataclass
class Counters:
    reconnects: int = 0
    gaps: int = 0
    rotations: int = 0
    keepalives: int = 0
    keepalive_failures: int = 0
    key_changes: int = 0
    resyncs: int = 0
    resync_failures: int = 0


@dataclass
class StreamPolicy:
    """One account's lifecycle. Methods take ``now`` (seconds, any monotonic origin)."""

    timing: Timing = field(default_factory=Timing)
    rng: random.Random = field(default_factory=random.Random)
    keep_listen_key: bool = False
    #: fetch snapshots at start-up and after every gap (see ``resync.py``)
    resync: bool = False

    phase: Literal["idle", "running", "stopped", "failed"] = field(default="idle", init=False)
    key: str | None = field(default=None, init=False)
    counters: Counters = field(default_factory=Counters, init=False)

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

    # -- inputs -----------------------------------------------------------------------------

    def start(self, now: float, gap_since: float | None = None) -> list[Action]:
        """Begin. ``gap_since``: the stream takes over from another process (worker mode)
        whose last sign of life was then: the first connection reports that gap."""
        self.phase = "running"
        self._outage = True
        self._gap_since = gap_since
        return [EmitState("connecting"), *self._create(now)]

    def key_created(self, now: float, key: str) -> list[Action]:
        if self.phase != "running":
            return []
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
            for conn_id in list(self._conns):
                actions.append(Close(conn_id, "listenKey changed"))
                self._conns.pop(conn_id)
            if self._primary is not None:
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
        if failure == "permanent":
            return self._fail(reason)
        self._create_at = now + self._backoff(self._create_attempt)
        self._create_attempt += 1
        return []

    def keepalive_ok(self, now: float) -> list[Action]:
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
        if failure == "permanent":
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
            self._close_old_at = now + self.timing.rotate_overlap
            return [Activate(conn_id)]
        self._primary = conn_id
        self._outage = False
        self._stable_at = now + self.timing.stable_after
        self._schedule_rotation(now)
        actions: list[Action] = [EmitState("connected")]
        gap = self._gap_since is not None
        if gap:
            self.counters.gaps += 1
            actions.append(EmitState("gap", since=self._gap_since, until=now, reason="outage"))
            self._gap_since = None
        first = not self._connected_once
        self._connected_once = True
        if self.resync and (gap or first):
            self._resync_at, self._resync_attempt = None, 0  # this one supersedes a retry
            self._resync_conn = conn_id
            actions.append(Resync(conn_id))
        else:
            actions.append(Activate(conn_id))
        return actions

    def reader_paused(self, now: float, conn_id: int) -> list[Action]:
        """``conn_id``'s reader stopped reading: a lossless plugin is a queue behind."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            conn.paused = True
        return []

    def reader_resumed(self, now: float, conn_id: int) -> list[Action]:
        """``conn_id``'s reader reads again. If it is the old connection of a rotation, it
        may hold frames sent before the new one opened: it is closed only after reading
        unpaused for the whole overlap again."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return []
        conn.paused = False
        rotation = self._conns.get(self._rotation) if self._rotation is not None else None
        joined = rotation is not None and rotation.joined
        if conn_id == self._primary and self._close_old_at is not None and not joined:
            due = now + self.timing.rotate_overlap
            waiting = self._close_old_at == _WAITING
            self._close_old_at = due if waiting else max(self._close_old_at, due)
        return []

    def rotation_joined(self, now: float, conn_id: int) -> list[Action]:
        """The rotation's new connection received a frame the old one had delivered: the
        old one holds nothing that only it has, paused or not, and can close now."""
        conn = self._conns.get(conn_id)
        if conn is not None and conn_id == self._rotation and conn.open:
            conn.joined = True
            if self._close_old_at is not None:
                self._close_old_at = now
        return []

    def resync_done(self, now: float, conn_id: int) -> list[Action]:
        """The snapshot was fetched and delivered: the gap is closed."""
        if conn_id != self._resync_conn:
            return []  # a superseded one (its connection was lost meanwhile)
        self._resync_conn = None
        self._resync_attempt = 0
        self.counters.resyncs += 1
        return []

    def resync_failed(self, now: float, conn_id: int, failure: Failure) -> list[Action]:
        """The snapshot could not be fetched (the held frames were released). Retry on
        the live connection, unless the failure is permanent (then the next gap tries)."""
        if conn_id != self._resync_conn:
            return []
        self._resync_conn = None
        self.counters.resync_failures += 1
        if self.phase == "running" and failure != "permanent":
            self._resync_at = now + self._backoff(self._resync_attempt)
            self._resync_attempt += 1
        return []

    def connect_failed(self, now: float, conn_id: int, reason: str) -> list[Action]:
        conn = self._conns.pop(conn_id, None)
        if conn is None or self.phase != "running":
            return []
        if conn.rotation:
            self._rotation = None
            self._rotate_at = now + self.timing.rotate_retry
            return []
        return self._schedule_reconnect(now, reason)

    def closed(self, now: float, conn_id: int, reason: str, last_alive: float) -> list[Action]:
        """A connection ended without our asking (server cut, reset, missed pongs)."""
        conn = self._conns.pop(conn_id, None)
        if conn is None or self.phase != "running":
            return []  # one we closed on purpose
        if conn_id == self._rotation:
            self._rotation = self._close_old_at = None
            self._rotate_at = now + self.timing.rotate_retry
            return []
        if conn_id != self._primary:
            return []
        if self._rotation is not None and self._conns[self._rotation].open:
            # The old one was cut while the new one already runs: no outage at all.
            return self._promote_rotation(now)
        self._lose_primary(now, last_alive)
        return [
            EmitState("disconnected", since=last_alive, reason=reason),
            *self._schedule_reconnect(now, reason),
        ]

    def tick(self, now: float) -> list[Action]:
        """Whatever has come due by ``now``."""
        if self.phase != "running":
            return []
        actions: list[Action] = []
        if self._create_at is not None and now >= self._create_at:
            self._create_at = None
            actions += self._create(now)
        if self._reconnect_at is not None and now >= self._reconnect_at:
            self._reconnect_at = None
            self.counters.reconnects += 1
            actions.append(EmitState("connecting", reason="reconnecting"))
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
            actions.append(Resync(self._primary))
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
        if self._close_old_at is not None and now >= self._close_old_at:
            primary = self._conns.get(self._primary) if self._primary is not None else None
            rotation = self._conns.get(self._rotation) if self._rotation is not None else None
            joined = rotation is not None and rotation.joined
            if primary is not None and primary.paused and not joined:
                # closing it now would lose the frames it has not read: wait for its reader
                self._close_old_at = _WAITING
                return actions
            self._close_old_at = None
            old = self._primary
            actions += self._promote_rotation(now)
            if old is not None and old in self._conns:
                self._conns.pop(old)
                actions.insert(0, Close(old, "rotated"))
        return actions

    def stop(self, now: float) -> list[Action]:
        if self.phase in ("stopped", "failed"):
            return []
        self.phase = "stopped"
        actions: list[Action] = [Close(c, "shutdown") for c in self._conns]
        self._conns.clear()
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
        times = [self._create_at, self._reconnect_at, self._close_old_at]
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

    def _create(self, now: float) -> list[Action]:
        if self._key_pending:
            return []
        self._key_pending = True
        return [CreateKey()]

    def _connect(self, key: str, *, rotation: bool) -> Connect:
        conn_id = self._next_id
        self._next_id += 1
        self._conns[conn_id] = _Conn(key, rotation)
        return Connect(conn_id, key)

    def _connecting(self) -> bool:
        return any(not c.open and not c.rotation for c in self._conns.values())

    def _lose_primary(self, now: float, last_alive: float) -> None:
        self._primary = None
        self._outage = True
        # the next connection brings its own resync (it supersedes a pending retry)
        self._resync_at = self._resync_conn = None
        if self._rotation is not None and self._rotation in self._conns:
            # a rotation still connecting becomes the reconnect attempt
            self._conns[self._rotation].rotation = False
        self._rotate_at = self._rotation = self._close_old_at = None
        if self._gap_since is None:  # one gap per outage, however many attempts
            self._gap_since = last_alive

    def _schedule_reconnect(self, now: float, reason: str) -> list[Action]:
        if self._stable_at is not None and now >= self._stable_at:
            self._reconnect_attempt = 0  # the last connection was stable: start over
        self._stable_at = None
        self._reconnect_at = now + self._backoff(self._reconnect_attempt)
        self._reconnect_attempt += 1
        return []

    def _promote_rotation(self, now: float) -> list[Action]:
        new = self._rotation
        self._rotation = None
        if new is None or new not in self._conns:
            return []
        conn = self._conns[new]
        conn.rotation = False
        self._primary = new
        self.counters.rotations += 1
        self._schedule_rotation(conn.opened_at if conn.opened_at is not None else now)
        return [EmitState("rotated")]

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
        actions: list[Action] = [Close(c, "failed") for c in self._conns]
        self._conns.clear()
        return [*actions, EmitState("failed", reason=reason), Finish(True, reason)]
