"""Worker mode's lease policy as a pure planner: (now, what Redis holds) -> what to do.

It never touches Redis, a socket or a clock (the sans-I/O rule of ``machine.py``): the shell
in ``_scale/worker.py`` reads Redis once a tick into a :class:`View`, calls :meth:`tick`,
carries out the actions it gets, and tells the planner how each one went (``renewed``,
``acquired``, ...), which may return more actions. Tests drive it against a fake Redis on
a fake clock, so an outage, a rebalance or a dead worker runs in milliseconds.

Every account's owner holds its **lease** ``<worker>:<fence>``; the fence comes from a
counter that only grows, taken in the same atomic script as the lease. Each tick:

1. **Registry**: an account removed from the registry is stopped at once, its lease
   released.
2. **Renew** what we hold. A lease that is gone (it lapsed, or Redis lost its data) is
   taken again with a new fence while the stream runs on: nobody else held it, so nothing
   changes hands. A lease another worker holds now is lost: stop (``lease_lost``).
3. **Self-fencing**: a lease not renewed for ``lease_ttl - tick`` may be someone else's
   soon: its stream stops before that (:meth:`expire`; the shell calls it on time even
   while Redis hangs).
4. **Make-before-break handovers**: a worker above its fair share gives a lease up
   (:class:`HandBack`: a marker, then the lease deleted, atomically) and streams on until
   a later owner says in the ``live`` hash that it delivers; a successor that finds a
   fresh marker reports no gap, unless the stream handed over had a gap it had not
   delivered (``pinned``, written by the shell with the hand-back or after it): the
   successor's stream then reads that gap. Nobody took it within ``lease_ttl``: take it
   back. Nobody delivered within ``2 * lease_ttl`` (the marker's life): stop.
5. **Fair share** ``ceil(accounts / live workers)``: above it, hand back at most
   ``handovers_per_tick`` per tick; below it, take free accounts (in random order, so that
   workers starting together do not race for the same ones). A takeover that found no
   fresh marker reports a gap from the last event the previous owner's sink wrote.

**After a Redis outage** every heartbeat looks stale at once (or is gone, if Redis lost its
data), so the first worker back would count itself alone and take everything. Once Redis
answers again the planner therefore waits ``grace`` (by default two ticks: every live
worker heartbeats within one tick of Redis answering, and we judge one tick after that)
before it judges any worker dead or recomputes its share: it only renews, takes back its
own lapsed leases, and retakes the accounts it had fenced during the outage.

State changes when the shell reports an outcome, not when an action is emitted: an action
the shell never got to carry out (Redis failed first) leaves nothing half-done, and the
next tick's view reconciles what an unanswered one did (a lease we hold but do not know
about is adopted or released; a hand-back that did not happen is taken back).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

#: The ``on_error`` kinds a :class:`Report` may carry (None: the log only).
ReportKind = Literal["lease_lost", "rest_error"]


def holder_of(worker: str, fence: int) -> str:
    """A lease's value: ``<worker id>:<fence>`` (a worker id may hold colons)."""
    return f"{worker}:{fence}"


def worker_of(holder: str) -> str:
    return holder.rsplit(":", 1)[0]


def fence_of(holder: str | None) -> int | None:
    if holder is None:
        return None
    try:
        return int(holder.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


# -- what the shell read ---------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """One tick's reading of Redis, and which of our streams deliver."""

    #: the registry's labels
    accounts: frozenset[str]
    #: worker id -> seconds since its last heartbeat
    heartbeats: Mapping[str, float]
    #: label -> holder, for every lease that exists (of the registry's accounts and ours)
    leases: Mapping[str, str]
    #: label -> the holder that last said its stream delivers (the ``live`` hash)
    live: Mapping[str, str]
    #: our streams whose connection is up and delivering
    delivering: frozenset[str] = frozenset()
    #: our heartbeat was not in Redis when we wrote it: Redis lost its data (a restart from
    #: an old snapshot, a failover), even if no tick of ours saw it down
    rejoined: bool = False
    #: the wall clock (ms) at the reading: gap reports are in wall time
    wall_ms: int = 0
    #: worker id -> seconds since the heartbeat of a worker shutting down (it streams what
    #: it hands over until the successors deliver, but takes no share)
    draining: Mapping[str, float] = field(default_factory=dict)
    #: label -> the start (wall ms) of a gap a previous owner's stream had not delivered
    #: when it stopped streaming the account (the ``pinned`` hash)
    pinned: Mapping[str, int] = field(default_factory=dict)


# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Renew:
    """Extend the lease if it still holds ``holder`` (compare-and-extend). Answer
    :meth:`LeasePlanner.renewed`, or :meth:`LeasePlanner.renew_refused` with what it holds."""

    label: str
    holder: str


@dataclass(frozen=True)
class Acquire:
    """Take the lease if it is free, with a new fence above ``floor``, in one atomic script
    that also consumes the handover marker. A fresh takeover (``min_promise`` set) also
    consumes the ``unconfirmed`` record a previous owner may have left, and takes a
    handover on trust when the marker has ``min_promise`` seconds of life left (recording
    the gap it would be, until confirmed); None: we stream it already, take it again.
    Answer :meth:`LeasePlanner.acquired` or :meth:`LeasePlanner.acquire_refused`."""

    label: str
    floor: int = 0
    min_promise: float | None = None


@dataclass(frozen=True)
class Start:
    """Stream ``label`` (its lease is ours, under ``fence``), reporting a gap from
    ``resume_since_ms`` (wall ms) when set. Answer :meth:`LeasePlanner.start_failed` if
    it cannot be started."""

    label: str
    fence: int
    resume_since_ms: int | None


@dataclass(frozen=True)
class MarkLive:
    """Say in the ``live`` hash that ``holder``'s stream delivers: a worker handing the
    account over stops once it reads a fence above its own."""

    label: str
    holder: str


@dataclass(frozen=True)
class Confirmed:
    """A takeover on trust is confirmed (or its gap reported): delete the ``unconfirmed``
    record it left, if it still holds ``since_ms``. ``restarted``: the stream restarts
    to read the gap from ``since_ms``, and ``last`` comes down to it. Answer
    :meth:`LeasePlanner.settled`; until then every tick sends it again while the lease is
    ours (a record left behind would make the next owner read from it, far behind what
    was delivered), and the account is not handed back."""

    label: str
    since_ms: int
    restarted: bool = False


@dataclass(frozen=True)
class Unpin:
    """The gap a previous owner handed over unfinished is being read: delete the
    ``pinned`` record, if it still holds ``since_ms``, and bring ``last`` down to it.
    Answer :meth:`LeasePlanner.settled`; until then every tick sends it again (the stream
    is not restarted again for that pin) and the account is not handed back."""

    label: str
    since_ms: int


@dataclass(frozen=True)
class HandBack:
    """Make-before-break: if the lease still holds ``holder``, leave the handover marker
    (alive ``2 * lease_ttl``) and delete the lease, atomically. The stream runs on. Answer
    :meth:`LeasePlanner.handed_back` or :meth:`LeasePlanner.handback_refused`."""

    label: str
    holder: str


@dataclass(frozen=True)
class Release:
    """Delete the lease and the handover marker where they still hold ``holder``
    (compare-and-delete). Answer :meth:`LeasePlanner.released` with the lease's holder
    afterwards. ``if_failed`` is what it means for the account if it cannot be done."""

    label: str
    holder: str
    if_failed: str | None = None


@dataclass(frozen=True)
class Stop:
    """Stop streaming ``label`` now (the listenKey is kept: the account streams elsewhere)."""

    label: str
    reason: str


@dataclass(frozen=True)
class Report:
    """What a failure means for ``account``: through ``on_error`` when ``kind`` is set,
    else a warning in the log."""

    account: str | None
    message: str
    kind: ReportKind | None = None


Action = Renew | Acquire | Start | MarkLive | Confirmed | Unpin | HandBack | Release | Stop | Report

#: actions that need Redis (the others are carried out in the process)
REDIS_ACTIONS = (Renew, Acquire, MarkLive, Confirmed, Unpin, HandBack, Release)


# -- state -----------------------------------------------------------------------------


@dataclass
class _Owned:
    holder: str
    fence: int
    #: when the last renewal that succeeded was *sent* (the lease lives ttl from then, or
    #: a little longer: measuring from the send is the safe side)
    renewed_at: float
    renewing_at: float | None = None  # a Renew sent then, not answered yet
    handing_back: float | None = None  # a HandBack sent then, not answered yet


@dataclass
class _Releasing:
    """Handed back: the lease is given up, the stream runs until a successor delivers."""

    holder: str
    fence: int
    since: float
    renewed_at: float  # of the lease given up, should it turn out to be ours still


@dataclass
class _Trust:
    """Taken over with the previous owner's promise to stream until we deliver: to be
    confirmed once we deliver (it was alive then, within its promise), else the stream is
    restarted with a gap report."""

    previous: str  # the worker that handed it over
    until: float  # its promise ends, at the earliest
    since_ms: int  # the gap, if it stopped early, starts no earlier (recorded in Redis)
    seen_at: float | None = None  # our stream first seen delivering


@dataclass
class LeasePlanner:
    """One worker's leases. Methods take ``now`` (seconds, any monotonic origin)."""

    worker: str
    lease_ttl: float = 10.0
    tick_interval: float = 1.0
    handovers_per_tick: int = 5
    #: after an outage, how long Redis must answer before any worker is judged dead
    #: (None: two ticks, see the module doc)
    grace: float | None = None
    rng: random.Random = field(default_factory=random.Random)

    owned: dict[str, _Owned] = field(default_factory=dict, init=False)
    releasing: dict[str, _Releasing] = field(default_factory=dict, init=False)
    stopping: bool = field(default=False, init=False)
    _acquiring: dict[str, float] = field(default_factory=dict, init=False)  # label -> sent
    _reachable: bool = field(default=True, init=False)
    _back_at: float | None = field(default=None, init=False)  # Redis answered again then
    #: accounts whose streams we stopped during an outage (self-fencing), with their
    #: fence: ours to take back while the grace lasts
    _fenced: dict[str, int] = field(default_factory=dict, init=False)
    #: accounts we stopped, with the wall ms their gap starts at the latest: should we
    #: start one again, its gap is reported from there (Redis may have lost or overtaken
    #: the last event's time)
    _gap_from: dict[str, int] = field(default_factory=dict, init=False)
    _ticked: bool = field(default=False, init=False)
    _hold_until: float = field(default=float("-inf"), init=False)  # after a data loss
    _wall_offset: float = field(default=0.0, init=False)  # wall ms - now * 1000
    _retry_at: dict[str, float] = field(default_factory=dict, init=False)  # start failed
    _trusting: dict[str, _Trust] = field(default_factory=dict, init=False)
    #: records Redis has not been told to delete yet (a trust settled here, a pin being
    #: read: the :class:`Confirmed` or :class:`Unpin` failed, was put off, or is
    #: unanswered): (kind, label) -> it, sent again each tick while the lease is ours
    _settling: dict[tuple[str, str], Confirmed | Unpin] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.grace is None:
            self.grace = 2 * self.tick_interval

    # -- queries --------------------------------------------------------------------------

    def fence(self, label: str) -> int | None:
        """The fencing token under which ``label``'s events are delivered now (while it is
        handed over, the one it held)."""
        if label in self.owned:
            return self.owned[label].fence
        if label in self.releasing:
            return self.releasing[label].fence
        return None

    def labels(self) -> set[str]:
        """Every account this worker streams or may hold a lease of (the shell reads their
        leases along with the registry's)."""
        return set(self.owned) | set(self.releasing) | set(self._acquiring) | set(self._fenced)

    @property
    def idle(self) -> bool:
        return not self.owned and not self.releasing

    def in_grace(self, now: float) -> bool:
        """Redis answered again too recently to judge who is alive or what is free."""
        assert self.grace is not None
        after_outage = self._back_at is not None and now < self._back_at + self.grace
        return after_outage or now < self._hold_until

    def fence_deadline(self) -> float | None:
        """When the first of our leases must be given up unless renewed: the shell bounds
        every Redis call by it, so that a hanging Redis cannot delay self-fencing."""
        times = [own.renewed_at + self._fence_after for own in self.owned.values()]
        return min(times) if times else None

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do."""
        times = [own.renewed_at + self._fence_after for own in self.owned.values()]
        times += [rel.since + 2 * self.lease_ttl for rel in self.releasing.values()]
        return min(times) if times else None

    @property
    def _fence_after(self) -> float:
        return self.lease_ttl - self.tick_interval

    # -- inputs ---------------------------------------------------------------------------

    def tick(self, now: float, view: View) -> list[Action]:
        """A tick whose reading of Redis succeeded."""
        lost_data = view.rejoined and self._ticked
        if not self._reachable or lost_data:
            self._reachable = True
            self._back_at = now
        if lost_data:
            # A lease Redis forgot may still be streamed by an owner that cannot reach
            # Redis: it fences itself within a lease TTL of its last renewal, so nothing
            # that looks free is taken before then.
            self._hold_until = now + self.lease_ttl
        self._ticked = True
        self._wall_offset = view.wall_ms - now * 1000
        # anything still unanswered belongs to a tick that ended: the view says what it did
        self._acquiring.clear()
        for own in self.owned.values():
            own.renewing_at = own.handing_back = None
        local: list[Action] = self._expire(now)
        redis: list[Action] = []
        me = self.worker
        live_workers = {w for w, age in view.heartbeats.items() if age < self.lease_ttl}
        others = live_workers - {me}

        # 1. accounts removed from the registry: stopped at once, nobody takes them over
        released: set[str] = set()
        for label in [label for label in self.owned if label not in view.accounts]:
            own = self.owned.pop(label)
            local.append(Stop(label, "removed from the registry"))
            redis.append(Release(label, own.holder))
            released.add(label)
            self._trusting.pop(label, None)
        for label in [label for label in self.releasing if label not in view.accounts]:
            rel = self.releasing.pop(label)
            local.append(Stop(label, "removed from the registry"))
            redis.append(Release(label, rel.holder))
            released.add(label)

        # 2. handovers under way
        for label, rel in list(self.releasing.items()):
            holder = view.leases.get(label)
            if holder is not None and worker_of(holder) == me:
                # the hand-back did not happen (or our taking it back did, unanswered)
                del self.releasing[label]
                self.owned[label] = _Owned(holder, fence_of(holder) or rel.fence, rel.renewed_at)
                continue
            live_fence = fence_of(view.live.get(label))
            if live_fence is not None and live_fence > rel.fence:
                del self.releasing[label]  # a later owner delivers
                local.append(Stop(label, f"handed over to {worker_of(view.live[label])}"))
            elif self.stopping and not others and holder is None:
                # shutting down and nobody is left to take it: withdraw the marker (if a
                # successor took it meanwhile, the answer says so and we stream on)
                redis.append(Release(label, rel.holder))
            elif (
                not self.stopping
                and now >= rel.since + self.lease_ttl
                and holder is None
                and not self.in_grace(now)  # a lease Redis lost may look free till then
            ):
                # nobody took it: keep it rather than drop it (the stream runs on)
                self._acquiring[label] = now
                redis.append(Acquire(label, rel.fence))

        # 3. what we hold: renew, take again if lapsed, stop if another holds it
        renew: list[Action] = []
        for label, own in list(self.owned.items()):
            holder = view.leases.get(label)
            if holder is not None and holder != own.holder and worker_of(holder) == me:
                own.holder, own.fence = holder, fence_of(holder) or own.fence  # unanswered
                holder = own.holder  # acquisition of ours: adopt it
            if holder == own.holder:
                own.renewing_at = now
                renew.append(Renew(label, own.holder))
            elif holder is None:
                # it lapsed, or Redis lost it: nobody else holds it, so take it again (a new
                # fence) while the stream runs on; nothing changes hands
                self._acquiring[label] = now
                renew.append(Acquire(label, own.fence))
            else:
                del self.owned[label]
                local += self._lost(now, label, f"worker {worker_of(holder)} holds its lease now")
        redis = renew + redis

        # 4. handovers we took on trust: was the previous owner still streaming when ours
        #    began to deliver? (it may have died in between: then say so with a gap)
        local += self._confirm(now, view)  # what Redis is told: in 4c

        # 4b. a gap the previous owner's stream had not delivered, written by it after we
        #     took the account over (its connection dropped while it handed over): ours
        #     restarts with that gap, and its resync reads it
        for label, since_ms in view.pinned.items():
            mine = self.owned.get(label)
            if mine is None or mine.renewing_at != now:
                continue
            unpin = self._settling.get(("Unpin", label))
            if unpin is not None and unpin.since_ms <= since_ms:
                continue  # its stream reads it already: the Unpin is sent again below
            local += _restart(
                label,
                mine.fence,
                since_ms,
                "restarting, to read a gap",
                f"worker {self.worker}: {label}'s previous owner stopped streaming it "
                f"with a gap since {since_ms} (ms) not delivered: its stream restarts "
                "and reads that gap",
            )
            self._settling[("Unpin", label)] = Unpin(label, since_ms)

        # 4c. what Redis has not been told yet of 4 and 4b: sent (again) while ours
        for key, settle in list(self._settling.items()):
            if key[1] in self.owned:
                redis.append(settle)
            else:  # not ours any more: a takeover consumed the record (or reads from it)
                del self._settling[key]

        # 5. say which of ours deliver (a handing-over worker waits for it)
        for label, own in self.owned.items():
            confirmed = own.renewing_at == now  # the view says the lease is ours
            if confirmed and label in view.delivering and view.live.get(label) != own.holder:
                redis.append(MarkLive(label, own.holder))

        # 6. leases of ours that nothing here knows about: an acquisition answered too
        #    late, a renewal that landed after we fenced, a previous process with our id
        known = self.labels() - set(self._fenced) | released
        for label, holder in view.leases.items():
            if worker_of(holder) == me and label not in known:
                redis.append(Release(label, holder))

        if self.stopping:
            redis += self._leave(now, others, view)
            return local + redis

        # 7. fair share, once Redis has answered long enough to judge who is alive
        free = sorted(
            label
            for label in view.accounts
            if label not in view.leases
            and label not in self.owned
            and label not in self.releasing
            and label not in self._acquiring
            and self._retry_at.get(label, now) <= now
        )
        if self.in_grace(now):
            # Nobody is judged dead, nothing is taken: a lease that looks free may be one
            # Redis lost, whose owner streams on and takes it again on its first tick.
            return local + redis
        share = math.ceil(len(view.accounts) / max(1, len(live_workers | {me})))
        held = [  # a takeover still to be confirmed or settled stays until it is
            label
            for label, own in self.owned.items()
            if own.renewing_at == now and label not in self._trusting and not self._unsettled(label)
        ]
        extra = max(0, min(len(self.owned) - share, self.handovers_per_tick))
        for label in held[:extra]:
            own = self.owned[label]
            own.handing_back = now
            redis.append(HandBack(label, own.holder))
        self.rng.shuffle(free)  # workers starting together do not all race for the same
        # what we had to stop during an outage first: then nothing changes hands
        free.sort(key=lambda label: label not in self._fenced)
        for label in free[: max(0, share - len(self.owned))]:
            self._acquiring[label] = now
            redis.append(Acquire(label, self._fenced.get(label, 0), self.lease_ttl / 2))
        # (a takeover put off by the shell keeps its floor and its place for the next tick)
        for label in [label for label in self._fenced if label not in self._acquiring]:
            del self._fenced[label]
        return local + redis

    def _leave(self, now: float, others: set[str], view: View) -> list[Action]:
        """Shutting down: hand everything over when another worker can take it, else
        release it (whoever starts next resumes it, with a gap report)."""
        actions: list[Action] = []
        for label, own in list(self.owned.items()):
            if own.renewing_at != now or label in self._trusting or self._unsettled(label):
                continue  # being taken again, or to be confirmed or settled: on a later tick
            if others:
                own.handing_back = now
                actions.append(HandBack(label, own.holder))
            else:
                del self.owned[label]
                actions += [
                    Stop(label, "shutting down, no other worker"),
                    Release(label, own.holder),
                ]
        return actions

    def unreachable(
        self,
        now: float,
        reason: str,
        failed: Action | None = None,
        dropped: Sequence[Action] = (),
    ) -> list[Action]:
        """A tick failed: Redis could not be read, or carrying out ``failed`` raised
        ``reason`` (its outcome unknown) and the shell dropped the rest (``dropped``, never
        attempted). Says what that means for each account, and fences what is due."""
        self._reachable = False
        self._back_at = None
        actions: list[Action] = []
        for action in [failed, *dropped] if failed is not None else list(dropped):
            attempted = action is failed
            if isinstance(action, HandBack) and action.label in self.owned:
                own = self.owned[action.label]
                sent, own.handing_back = own.handing_back, None
                if attempted:
                    # it may have been handed back (marker set, lease deleted): stream on
                    # until a successor delivers, as promised; a lease still ours is taken
                    # back on the next tick
                    del self.owned[action.label]
                    self.releasing[action.label] = _Releasing(
                        own.holder, own.fence, now if sent is None else sent, own.renewed_at
                    )
                    actions.append(
                        Report(
                            action.label,
                            f"worker {self.worker}: handing {action.label} over failed "
                            f"({reason}); it streams on until a successor delivers (at most "
                            f"{2 * self.lease_ttl:g} s) or, if the lease is still ours, keeps it",
                        )
                    )
            elif isinstance(action, Release) and action.if_failed is not None:
                actions.append(
                    Report(
                        action.label,
                        f"worker {self.worker}: {action.if_failed} ({reason})",
                        "lease_lost",
                    )
                )
        self._acquiring.clear()
        for own in self.owned.values():
            own.renewing_at = None
        return actions + self._expire(now)

    def expire(self, now: float) -> list[Action]:
        """Self-fencing and handover timeouts that have come due (see :meth:`next_deadline`)."""
        return self._expire(now)

    def renewed(self, now: float, label: str) -> list[Action]:
        own = self.owned.get(label)
        if own is not None and own.renewing_at is not None:
            own.renewed_at, own.renewing_at = own.renewing_at, None
        return []

    def renew_refused(self, now: float, label: str, holder: str | None) -> list[Action]:
        """The lease did not hold our value any more; ``holder`` is what it held."""
        own = self.owned.get(label)
        if own is None:
            return []
        own.renewing_at = None
        if holder is None:  # lapsed between the reading and the renewal: take it again
            self._acquiring[label] = now
            return [Acquire(label, own.fence)]
        if worker_of(holder) == self.worker:
            return []  # an acquisition of ours, unanswered: adopted on the next tick
        del self.owned[label]
        return self._lost(now, label, f"worker {worker_of(holder)} holds its lease now")

    def acquired(
        self,
        now: float,
        label: str,
        fence: int,
        *,
        previous: str | None = None,
        promised: float = 0.0,
        since_ms: int | None = None,
    ) -> list[Action]:
        """The lease is ours under ``fence``. Taken over on trust: ``previous`` is the
        holder that handed it over and streams for ``promised`` seconds more at most, and
        ``since_ms`` the gap recorded should it have stopped early. Otherwise ``since_ms``
        is where the gap starts (the last event written, or an unconfirmed record), if
        anywhere."""
        sent = self._acquiring.pop(label, None)
        holder = holder_of(self.worker, fence)
        if sent is None:  # we gave up on it meanwhile (fenced, or the tick ended)
            return [Release(label, holder)]
        self._fenced.pop(label, None)
        gap_from = self._gap_from.pop(label, None)
        if label in self.owned:  # taken again while streaming
            own = self.owned[label]
            own.holder, own.fence, own.renewed_at = holder, fence, sent
            return []
        if label in self.releasing:  # nobody took it over: kept
            del self.releasing[label]
            self.owned[label] = _Owned(holder, fence, sent)
            return [Report(label, f"worker {self.worker} keeps {label}: nobody took it over")]
        self.owned[label] = _Owned(holder, fence, sent)
        since = since_ms
        if previous is not None and since_ms is not None:
            # its holder streams until we deliver (at most until the marker lapses), so
            # nothing is missed: no gap, once confirmed
            self._trusting[label] = _Trust(worker_of(previous), sent + promised, since_ms)
            since = None
        elif gap_from is not None:
            # we stopped it ourselves: its gap starts then, at the latest
            since = gap_from if since is None else min(since, gap_from)
        return [Start(label, fence, since)]

    def acquire_refused(self, now: float, label: str) -> list[Action]:
        """Another worker took the lease first."""
        if self._acquiring.pop(label, None) is None:
            return []
        if label in self.owned:
            del self.owned[label]
            return self._lost(now, label, "another worker took its lapsed lease first")
        return []  # a handover's successor, or a free account: someone else has it

    def start_failed(self, now: float, label: str, reason: str) -> list[Action]:
        """The stream could not be started (credentials, a bad URL): free the lease for a
        worker that can, and try again only after a lease TTL."""
        own = self.owned.pop(label, None)
        if own is None:
            return []
        self._retry_at[label] = now + self.lease_ttl
        return [
            Release(label, own.holder),
            Report(
                label,
                f"worker {self.worker} cannot stream {label}: {reason}; its lease is "
                f"released for another worker, and this one tries again in {self.lease_ttl:g} s",
                "rest_error",
            ),
        ]

    def settled(self, now: float, action: Confirmed | Unpin) -> list[Action]:
        """A :class:`Confirmed` or :class:`Unpin` was carried out (the record is gone,
        whoever deleted it)."""
        key = (type(action).__name__, action.label)
        if self._settling.get(key) == action:
            del self._settling[key]
        return []

    def handed_back(self, now: float, label: str) -> list[Action]:
        own = self.owned.get(label)
        if own is None or own.handing_back is None:
            return []
        del self.owned[label]
        self.releasing[label] = _Releasing(own.holder, own.fence, own.handing_back, own.renewed_at)
        return []

    def handback_refused(self, now: float, label: str, holder: str | None) -> list[Action]:
        """The lease was no longer ours when we meant to hand it back (no marker was left)."""
        own = self.owned.get(label)
        if own is None:
            return []
        own.handing_back = None
        if holder is None or worker_of(holder) == self.worker:
            return []  # lapsed, or ours under another fence: the next tick decides
        del self.owned[label]
        return self._lost(now, label, f"worker {worker_of(holder)} holds its lease now")

    def released(self, now: float, label: str, holder: str | None) -> list[Action]:
        """A :class:`Release` was done; ``holder`` is what the lease holds now. For an
        account being handed over while we shut down, it says whether a successor took
        it (then we stream on until it delivers) or not (then we stop)."""
        rel = self.releasing.get(label)
        if rel is None or not self.stopping or holder is not None:
            return []
        del self.releasing[label]
        return [Stop(label, "shutting down, no other worker")]

    def stop(self) -> None:
        """Shutting down: from the next tick, hand everything over (or release it when no
        other worker is alive) and take nothing."""
        self.stopping = True

    def abandon(self, now: float) -> list[Action]:
        """The end of a shutdown: whatever is left stops now."""
        actions: list[Action] = []
        for label, own in self.owned.items():
            why = "Redis unreachable" if not self._reachable else "no successor in time"
            actions += [
                Stop(label, "shutting down"),
                Report(
                    label,
                    f"worker {self.worker} stops {label} without a handover ({why}): the "
                    "next owner resumes it with a gap report from the last event written",
                    "lease_lost",
                ),
            ]
            if self._reachable:
                actions.append(
                    Release(
                        label,
                        own.holder,
                        if_failed=f"could not release the lease of {label}: it expires "
                        f"within {self.lease_ttl:g} s, and only then can another worker take it",
                    )
                )
        for label, rel in self.releasing.items():
            consequence = (
                f"stops {label} while handing it over, before a successor delivered: "
                "a successor that took it may not report the gap"
            )
            actions += [
                Stop(label, "shutting down"),
                Report(label, f"worker {self.worker} {consequence}", "lease_lost"),
            ]
            if self._reachable:
                actions.append(Release(label, rel.holder))
        self.owned.clear()
        self.releasing.clear()
        self._acquiring.clear()
        return actions

    # -- helpers --------------------------------------------------------------------------

    def _expire(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for label, own in list(self.owned.items()):
            if now < own.renewed_at + self._fence_after:
                continue
            del self.owned[label]
            self._acquiring.pop(label, None)
            if own.handing_back is not None:
                # a hand-back in flight may have left the marker: stream on as promised
                self.releasing[label] = _Releasing(
                    own.holder, own.fence, own.handing_back, own.renewed_at
                )
                continue
            if not self._reachable:
                self._fenced[label] = own.fence
            actions += self._lost(
                now,
                label,
                f"its lease could not be renewed for {self._fence_after:g} s (Redis "
                "unreachable) and may be another worker's soon",
            )
        for label, rel in list(self.releasing.items()):
            if now >= rel.since + 2 * self.lease_ttl:
                del self.releasing[label]
                actions += [
                    Stop(label, "no successor delivered"),
                    Report(
                        label,
                        f"worker {self.worker} stops streaming {label}: it handed it over "
                        f"{2 * self.lease_ttl:g} s ago and no successor said it delivers; "
                        "whoever holds or takes its lease streams it, reporting the gap",
                        "lease_lost",
                    ),
                ]
        return actions

    def _confirm(self, now: float, view: View) -> list[Action]:
        """Takeovers on trust: confirmed once the previous owner is seen alive after ours
        delivered (within its promise); otherwise ours restarts, reporting the gap."""
        local: list[Action] = []
        for label, trust in list(self._trusting.items()):
            own = self.owned.get(label)
            if own is None:
                del self._trusting[label]
                continue
            if trust.seen_at is None:
                if label in view.delivering and own.renewing_at == now:
                    trust.seen_at = now
                continue
            beats = (view.heartbeats.get(trust.previous), view.draining.get(trust.previous))
            ages = [age for age in beats if age is not None]
            beat = now - min(ages) if ages else None  # its last heartbeat, our clock
            in_time = trust.seen_at <= trust.until
            if in_time and beat is not None and beat >= trust.seen_at:
                del self._trusting[label]  # it streamed until ours delivered: no gap
                self._settling[("Confirmed", label)] = Confirmed(label, trust.since_ms)
                continue
            overdue = now >= trust.seen_at + 3 * self.tick_interval and not self.in_grace(now)
            if in_time and not overdue:
                continue  # its next heartbeat will tell
            # it may have stopped before ours delivered: restart ours, reporting the gap
            # from the latest moment it was surely streaming (it handed over, or wrote)
            del self._trusting[label]
            why = "its promise ran out first" if not in_time else "it stopped heartbeating"
            local += _restart(
                label,
                own.fence,
                trust.since_ms,
                "restarting, to report a gap",
                f"worker {self.worker}: {label} was handed over by {trust.previous}, "
                f"which may have stopped streaming it before this worker delivered "
                f"({why}): its stream restarts, reporting the gap",
            )
            self._settling[("Confirmed", label)] = Confirmed(label, trust.since_ms, restarted=True)
        return local

    def _lost(self, now: float, label: str, why: str) -> list[Action]:
        message = (
            f"worker {self.worker} stops streaming {label}: {why}; the worker that holds "
            "or takes its lease streams it (with a gap report from the last event written, "
            "unless it was handed over)"
        )
        unconfirmed = self._unconfirmed(label)
        gap = self._wall(now) if unconfirmed is None else min(self._wall(now), unconfirmed)
        self._gap_from[label] = min(gap, self._gap_from.get(label, gap))
        if unconfirmed is not None:
            message += (
                f"; this worker took it over on trust and could not confirm that the "
                f"previous owner streamed until it delivered: events since {unconfirmed} "
                "(ms) may be missing"
            )
        return [Stop(label, why), Report(label, message, "lease_lost")]

    def _unsettled(self, label: str) -> bool:
        return ("Confirmed", label) in self._settling or ("Unpin", label) in self._settling

    def _unconfirmed(self, label: str) -> int | None:
        """Forget a takeover on trust that was not confirmed; the wall ms since which
        events may be missing if the previous owner stopped early (its record stays in
        Redis for whoever takes the account next)."""
        trust = self._trusting.pop(label, None)
        return None if trust is None else trust.since_ms

    def _wall(self, t: float) -> int:
        return round(t * 1000 + self._wall_offset)


def _restart(label: str, fence: int, since_ms: int, stop: str, report: str) -> list[Action]:
    """Restart an owned account's stream with a gap since ``since_ms`` (its resync reads
    it), and say why."""
    return [Stop(label, stop), Start(label, fence, since_ms), Report(label, report)]
