"""The account machine on a fake clock: a simulated week runs in milliseconds, and every
frame's fate over rotations, resyncs and outages is checked one by one."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitmusa_plugin._core import machine as lc

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass
class FakeExchange:
    """Answers the machine's actions the way Bitmusa would, with the documented rules: keys
    valid 60 minutes, PUT extends, connections cut at 24 hours."""

    machine: lc.AccountMachine
    now: float = 0.0
    key: str | None = None
    key_expires: float = 0.0
    keys_issued: int = 0
    open_conns: dict[int, float] = field(default_factory=dict)  # conn -> opened at
    puts: list[float] = field(default_factory=list)
    states: list[lc.EmitState] = field(default_factory=list)
    max_open: int = 0
    deleted: bool = False
    finish: lc.Finish | None = None
    fail_connects: int = 0
    fail_snapshots: int = 0
    snapshots: list[tuple[float, int, bool]] = field(default_factory=list)  # (t, conn, ok)
    lapsed: list[float] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)

    def run(self, actions: list[lc.Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, lc.CreateKey):
                if self.key is None or self.now > self.key_expires:
                    self.key = f"key{self.keys_issued}"
                    self.keys_issued += 1
                self.key_expires = self.now + HOUR
                queue += self.machine.key_created(self.now, self.key)
            elif isinstance(action, lc.KeepAlive):
                if self.key is None or self.now > self.key_expires:
                    self.key = None
                    queue += self.machine.keepalive_failed(self.now, "gone", "3022")
                else:
                    self.key_expires = self.now + HOUR
                    self.puts.append(self.now)
                    queue += self.machine.keepalive_ok(self.now)
            elif isinstance(action, lc.Connect):
                if self.fail_connects:
                    self.fail_connects -= 1
                    queue += self.machine.connect_failed(self.now, action.conn, "refused")
                else:
                    self.open_conns[action.conn] = self.now
                    self.max_open = max(self.max_open, len(self.open_conns))
                    queue += self.machine.connected(self.now, action.conn)
            elif isinstance(action, lc.Fetch):
                ok = self.fail_snapshots == 0
                self.snapshots.append((self.now, action.conn, ok))
                queue += self.machine.hold(self.now, action.conn)
                if ok:
                    queue += self.machine.snapshot_done(self.now, action.conn)
                else:
                    self.fail_snapshots -= 1
                    queue += self.machine.snapshot_failed(self.now, action.conn, "transient")
            elif isinstance(action, lc.Close):
                self.open_conns.pop(action.conn, None)
            elif isinstance(action, lc.EmitState):
                self.states.append(action)
            elif isinstance(action, lc.DeleteKey):
                self.deleted = True
            elif isinstance(action, lc.Finish):
                self.finish = action
            elif isinstance(action, lc.Deliver):
                self.delivered += action.frames

    def advance(self, until: float, step: float = 60.0) -> None:
        """Move time forward, firing the machine's deadlines and the server's rules."""
        while self.now < until:
            deadline = self.machine.next_deadline()
            target = min(until, self.now + step)
            if deadline is not None and deadline < target:
                target = max(deadline, self.now)
            self.now = target
            if self.key is not None and self.now > self.key_expires:
                self.lapsed.append(self.now)
                self.key = None
            for conn, opened in list(self.open_conns.items()):
                if self.now - opened >= DAY:  # the 24-hour cut
                    del self.open_conns[conn]
                    self.run(self.machine.closed(self.now, conn, "24h", self.now))
            self.run(self.machine.tick(self.now))
            deadline = self.machine.next_deadline()
            # a deadline that tick() has just passed over would make the shell spin
            assert deadline is None or deadline > self.now, (deadline, self.now)

    def statuses(self) -> list[str]:
        return [s.status for s in self.states]


def start(
    timing: lc.Timing | None = None,
    seed: int = 1,
    keep_listen_key: bool = False,
    resync: bool = False,
) -> FakeExchange:
    machine = lc.AccountMachine(
        timing=timing or lc.Timing(),
        rng=random.Random(seed),
        keep_listen_key=keep_listen_key,
        resync=resync,
    )
    ex = FakeExchange(machine)
    ex.run(machine.start(0.0))
    return ex


def test_a_quiet_week_keeps_the_key_and_rotates_before_every_cut() -> None:
    ex = start()
    ex.advance(7 * DAY)
    assert ex.lapsed == []  # the key never lapsed
    assert ex.keys_issued == 1
    gaps = [p for p in zip(ex.puts, ex.puts[1:], strict=False)]
    intervals = [b - a for a, b in gaps]
    assert 7 * DAY / (33 * 60) < len(ex.puts) < 7 * DAY / (27 * 60) + 2
    assert all(27 * 60 <= i <= 33 * 60 for i in intervals)  # 30 min ± 10 %
    assert intervals[0] != intervals[1]  # jittered, so accounts do not stampede
    assert ex.machine.counters.reconnects == 0
    assert ex.machine.counters.gaps == 0
    assert ex.machine.counters.rotations == 7  # one per day, each before the cut
    assert "gap" not in ex.statuses()
    assert ex.max_open == 2  # make-before-break, and never more than two


def test_rotation_opens_the_new_connection_before_the_old_closes() -> None:
    ex = start(lc.Timing(rotate_overlap=2.0))
    first = next(iter(ex.open_conns))
    ex.advance(DAY - 60)  # a minute before the cut: the rotation is done
    assert first not in ex.open_conns
    assert ex.statuses().count("rotating") == 1
    assert ex.statuses().count("rotated") == 1
    new = next(iter(ex.open_conns))
    assert ex.open_conns[new] <= DAY - 10 * 60  # opened at 23h50 minus jitter at the latest


def test_one_gap_per_outage_whatever_the_number_of_failed_attempts() -> None:
    ex = start(lc.Timing(retry_initial=1.0, retry_max=30.0))
    conn = next(iter(ex.open_conns))
    ex.advance(100.0)
    ex.fail_connects = 6
    del ex.open_conns[conn]
    ex.run(ex.machine.closed(ex.now, conn, "reset", last_alive=95.0))
    ex.advance(ex.now + 600, step=0.5)
    gaps = [s for s in ex.states if s.status == "gap"]
    assert len(gaps) == 1
    assert gaps[0].since == 95.0
    assert gaps[0].until is not None
    assert gaps[0].until > 100.0
    assert ex.machine.counters.reconnects == 7
    assert ex.statuses()[-2:] == ["connected", "gap"]  # gap right after the reconnect


def test_backoff_is_full_jitter_capped_and_never_gives_up() -> None:
    timing = lc.Timing(retry_initial=0.5, retry_max=30.0)
    machine = lc.AccountMachine(timing=timing, rng=random.Random(3))
    delays = [machine._backoff(n) for n in range(200)]
    assert all(0.05 <= d <= 30.0 for d in delays)
    assert max(delays[:3]) <= 2.0  # small at first
    assert max(delays[10:]) > 15.0  # grows to the cap
    ex = start(timing)
    conn = next(iter(ex.open_conns))
    ex.fail_connects = 10**6
    del ex.open_conns[conn]
    ex.run(ex.machine.closed(ex.now, conn, "reset", 0.0))
    ex.advance(6 * HOUR, step=1.0)
    assert ex.machine.phase == "running"
    assert ex.machine.counters.reconnects > 6 * HOUR / 30  # still trying, no limit


def test_backoff_resets_after_a_stable_connection() -> None:
    ex = start(lc.Timing(retry_initial=1.0, retry_max=30.0, stable_after=60.0))
    for _ in range(8):  # flapping: each connection dies at once
        conn = next(iter(ex.open_conns))
        del ex.open_conns[conn]
        ex.run(ex.machine.closed(ex.now, conn, "reset", ex.now))
        ex.advance(ex.now + 40, step=0.25)
    assert ex.machine._reconnect_attempt >= 7
    ex.advance(ex.now + 120)  # stable for two minutes
    conn = next(iter(ex.open_conns))
    del ex.open_conns[conn]
    ex.run(ex.machine.closed(ex.now, conn, "reset", ex.now))
    assert ex.machine._reconnect_attempt == 1  # started over


def test_keepalive_failures_retry_within_the_validity() -> None:
    ex = start(lc.Timing(retry_initial=1.0, retry_max=30.0))
    ex.advance(29 * 60)
    ex.run(ex.machine.tick(40 * 60))  # force a due keep-alive
    ex.now = 40 * 60
    pending = [a for a in ex.machine.tick(ex.now)]
    assert pending == []  # already in flight
    # a PUT that fails transiently is retried quickly, many times, before the key lapses
    ex.run(ex.machine.keepalive_failed(ex.now, "transient", "HTTP 503"))
    deadline = ex.machine.next_deadline()
    assert deadline is not None
    assert deadline - ex.now <= 30.0
    assert ex.lapsed == []


def test_a_key_gone_is_replaced_and_a_new_key_means_reconnect_with_gap() -> None:
    ex = start()
    old = next(iter(ex.open_conns))
    ex.advance(600)
    ex.key = None  # the server forgot the key
    ex.key_expires = 0
    ex.run(ex.machine.keepalive_failed(ex.now, "gone", "3022"))
    assert ex.keys_issued == 2
    assert old not in ex.open_conns  # the old key's connection was replaced
    assert len(ex.open_conns) == 1
    assert ex.statuses()[-3:] == ["disconnected", "connected", "gap"]
    assert ex.machine.counters.key_changes == 1


def test_permanent_errors_fail_fast_without_retrying() -> None:
    machine = lc.AccountMachine(rng=random.Random(1))
    actions = machine.start(0.0)
    assert lc.CreateKey() in actions
    actions = machine.key_failed(0.1, "permanent", "code 1001 (API KEY NOT FOUND)")
    assert lc.Finish(True, "code 1001 (API KEY NOT FOUND)") in actions
    assert lc.EmitState("failed", reason="code 1001 (API KEY NOT FOUND)") in actions
    assert machine.phase == "failed"
    assert machine.next_deadline() is None
    assert machine.tick(10**6) == []


def until_action(machine: lc.AccountMachine, kind: type) -> float:
    """Tick from deadline to deadline until the machine asks for ``kind``; when it did."""
    for _ in range(1000):
        deadline = machine.next_deadline()
        assert deadline is not None
        if any(isinstance(a, kind) for a in machine.tick(deadline)):
            return deadline
    raise AssertionError(f"no {kind.__name__}")


def test_a_misconfiguration_fails_at_once_until_that_call_has_worked() -> None:
    machine = lc.AccountMachine(rng=random.Random(1))
    machine.start(0.0)
    actions = machine.key_failed(0.1, "misconfigured", "POST ...: HTTP 404")
    assert lc.Finish(True, "POST ...: HTTP 404") in actions
    # the same answers after each call has worked are the server's trouble: retried
    machine = lc.AccountMachine(timing=lc.Timing(retry_initial=1.0), rng=random.Random(1))
    machine.start(0.0)
    first = next(a for a in machine.key_created(0.1, "k") if isinstance(a, lc.Connect))
    machine.connected(0.2, first.conn)
    machine.keepalive_ok(0.3)
    assert machine.keepalive_failed(1.0, "misconfigured", "PUT ...: HTTP 404") == []
    machine.closed(2.0, first.conn, "reset", last_alive=2.0)
    deadline = until_action(machine, lc.CreateKey)
    machine.key_failed(deadline, "misconfigured", "POST ...: HTTP 404")
    later = until_action(machine, lc.CreateKey)
    again = next(a for a in machine.key_created(later, "k") if isinstance(a, lc.Connect))
    actions = machine.connect_failed(later, again.conn, "handshake: HTTP 404", "misconfigured")
    assert not any(isinstance(a, lc.Finish) for a in actions)
    assert machine.phase == "running"


def test_a_handshake_refused_as_misconfigured_before_any_connection_fails_the_stream() -> None:
    machine = lc.AccountMachine(rng=random.Random(1))
    machine.start(0.0)
    connect = next(a for a in machine.key_created(0.1, "k") if isinstance(a, lc.Connect))
    actions = machine.connect_failed(
        0.2, connect.conn, "handshake: HTTP 404 at ...", "misconfigured"
    )
    assert lc.Finish(True, "handshake: HTTP 404 at ...") in actions
    # a refusal that is not (503) is retried, and says so
    machine = lc.AccountMachine(rng=random.Random(1))
    machine.start(0.0)
    connect = next(a for a in machine.key_created(0.1, "k") if isinstance(a, lc.Connect))
    actions = machine.connect_failed(0.2, connect.conn, "handshake: HTTP 503", "transient")
    [state] = actions
    assert isinstance(state, lc.EmitState)
    assert state.status == "connecting"
    assert state.reason is not None
    assert state.reason.startswith("handshake: HTTP 503; retrying in ")


@pytest.mark.parametrize("where", ["rest", "ws"])
def test_unreachable_before_the_first_connection_fails_at_the_window_not_after(
    where: str,
) -> None:
    timing = lc.Timing(retry_initial=0.5, retry_max=30.0, startup_window=30.0)
    machine = lc.AccountMachine(timing=timing, rng=random.Random(3))
    now, attempts, states = 0.0, 0, []
    actions: list[lc.Action] = machine.start(now)
    finish = None
    while finish is None:
        for action in actions:
            if isinstance(action, lc.EmitState):
                states.append(action)
            if isinstance(action, lc.Finish):
                finish = action
        if finish is not None:
            break
        if any(isinstance(a, lc.CreateKey) for a in actions):
            attempts += 1
            if where == "rest":
                actions = machine.key_failed(now, "unreachable", "POST x: connection refused")
                continue
            actions = machine.key_created(now, "k")
            continue
        connect = next((a for a in actions if isinstance(a, lc.Connect)), None)
        if connect is not None:
            actions = machine.connect_failed(now, connect.conn, "ws x: refused", "unreachable")
            continue
        deadline = machine.next_deadline()
        assert deadline is not None
        now = deadline
        actions = machine.tick(now)
    assert finish.failed
    assert "start-up window, 30 s" in finish.reason
    assert now == pytest.approx(30.0)  # the last try is at the window's end, not after it
    assert attempts >= 5  # retried meanwhile (backoff 0.5 s doubling)
    retries = [
        s for s in states if s.status == "connecting" and s.reason and "retrying" in s.reason
    ]
    assert len(retries) == attempts - 1  # every failed attempt but the last said so


def test_unreachable_after_a_first_connection_is_retried_for_ever() -> None:
    ex = start(lc.Timing(retry_initial=1.0, retry_max=30.0, startup_window=30.0))
    conn = next(iter(ex.open_conns))
    del ex.open_conns[conn]
    ex.run(ex.machine.closed(100.0, conn, "reset", last_alive=100.0))
    ex.now = 100.0
    for _ in range(200):  # far past the window: every attempt unreachable
        deadline = ex.machine.next_deadline()
        assert deadline is not None
        ex.now = deadline
        actions = ex.machine.tick(ex.now)
        if any(isinstance(a, lc.CreateKey) for a in actions):
            actions = ex.machine.key_failed(ex.now, "unreachable", "POST x: refused")
        ex.states += [a for a in actions if isinstance(a, lc.EmitState)]
    assert ex.now > 100.0 + 30 * 60
    assert ex.machine.phase == "running"
    assert "failed" not in ex.statuses()


def test_a_failed_rotation_stays_on_the_old_connection_and_retries() -> None:
    timing = lc.Timing(rotate_retry=60.0)
    ex = start(timing)
    old = next(iter(ex.open_conns))
    ex.fail_connects = 3  # the next three attempts to open a connection fail
    ex.advance(DAY - 20 * 60, step=10.0)
    assert old in ex.open_conns or ex.machine.counters.rotations == 1
    assert ex.machine.counters.gaps == 0
    ex.advance(DAY + HOUR)
    assert ex.machine.counters.gaps == 0  # the retries succeeded before the cut
    assert ex.machine.counters.rotations == 1


def test_a_rotation_that_never_succeeds_ends_in_a_normal_reconnect_at_the_cut() -> None:
    ex = start(lc.Timing(rotate_retry=60.0, retry_initial=1.0, retry_max=5.0))
    ex.advance(DAY - 20 * 60)
    ex.fail_connects = 10**6
    ex.advance(DAY + 30)
    assert "disconnected" in ex.statuses()
    ex.fail_connects = 0
    ex.advance(DAY + 120, step=1.0)
    assert ex.machine.counters.gaps == 1
    assert ex.statuses()[-1] == "gap"


@pytest.mark.parametrize("keep", [False, True])
def test_stop_closes_everything_and_deletes_the_key_unless_kept(keep: bool) -> None:
    ex = start(keep_listen_key=keep)
    ex.advance(3600)
    ex.run(ex.machine.stop(ex.now))
    assert ex.open_conns == {}
    assert ex.deleted is not keep
    assert ex.statuses()[-1] == "closed"
    assert ex.finish == lc.Finish(False, "stopped")
    assert ex.machine.next_deadline() is None


def test_scaled_timing_divides_every_interval_but_the_jitter_fraction() -> None:
    scaled = lc.Timing().scaled(3600)
    assert scaled.keepalive_interval == 0.5
    assert scaled.key_validity == 1.0
    assert scaled.keepalive_jitter == 0.1


def test_no_deadline_is_left_in_the_past_while_a_request_is_pending() -> None:
    machine = lc.AccountMachine(rng=random.Random(2))
    machine.start(0.0)
    machine.key_created(0.0, "key")
    machine.connected(1.0, 1)
    # a reconnect's POST is sent and never answered...
    machine.closed(10.0, 1, "reset", 9.0)
    now = 10.0
    for _ in range(100):
        deadline = machine.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        machine.tick(now)
        after = machine.next_deadline()
        # ...the keep-alive and validity deadlines passing must not be offered again
        assert after is None or after > now, (after, now)
        if after is None:
            break
    assert machine._key_pending
    # waiting for the POST's answer (the REST client bounds every call), not spinning
    assert machine.next_deadline() is None


def test_a_failed_resync_is_retried_until_the_gap_is_closed() -> None:
    ex = start(resync=True)
    ex.advance(HOUR)
    assert ex.snapshots == [(0.0, 1, True)]  # the start-up snapshot
    ex.fail_snapshots = 4  # the REST side is down when the next gap comes
    ex.run(ex.machine.closed(ex.now, 1, "reset", ex.now))
    ex.advance(ex.now + HOUR)
    attempts = ex.snapshots[1:]
    assert [ok for _, _, ok in attempts] == [False, False, False, False, True]
    assert {conn for _, conn, _ in attempts} == {2}  # all on the new, live connection
    delays = [b[0] - a[0] for a, b in itertools.pairwise(attempts)]
    assert all(0 < d <= ex.machine.timing.retry_max for d in delays)  # backoff, capped
    assert ex.machine.counters.resyncs == 2
    assert ex.machine.counters.resync_failures == 4
    assert ex.statuses().count("gap") == 1  # the retries are no new outage


def test_no_rotation_starts_while_a_resync_is_in_flight() -> None:
    machine = lc.AccountMachine(rng=random.Random(3), resync=True)
    machine.start(0.0)
    machine.key_created(0.0, "key")
    assert lc.Fetch(1) in machine.connected(1.0, 1)  # ...and the snapshot never answers
    due = machine._rotate_at
    assert due is not None
    machine.keepalive_ok(due)  # keep the key fresh; only the rotation is due
    assert not any(isinstance(a, lc.Connect) for a in machine.tick(due + 1))
    deadline = machine.next_deadline()
    assert deadline is None or deadline > due + 1  # the rotation is not offered: no spin
    machine.snapshot_done(due + 2, 1)
    assert any(isinstance(a, lc.Connect) for a in machine.tick(due + 2))


def test_a_resync_answer_for_a_lost_connection_is_ignored() -> None:
    machine = lc.AccountMachine(rng=random.Random(4), resync=True)
    machine.start(0.0)
    machine.key_created(0.0, "key")
    machine.connected(1.0, 1)
    machine.closed(2.0, 1, "reset", 2.0)  # lost while its snapshot was in flight
    machine.snapshot_failed(2.1, 1, "transient")  # the late answer
    assert machine._resync_at is None  # no retry aimed at a connection that is gone
    assert machine.counters.resync_failures == 0


def test_a_rotation_waits_for_a_paused_old_reader_and_no_new_one_starts_meanwhile() -> None:
    ex = start(lc.Timing(rotate_jitter=0.0))
    ex.advance(23 * HOUR + 50 * 60 + 1)  # the rotation's new connection is up
    assert sorted(ex.open_conns) == [1, 2]
    old = 1
    ex.run(ex.machine.reader_paused(ex.now, old))  # a lossless plugin holds the stream
    ex.advance(ex.now + 3 * 60)  # far beyond the 2 s overlap (the cut is 10 minutes away)
    assert sorted(ex.open_conns) == [1, 2]  # the old one holds unread frames: kept
    deadline = ex.machine.next_deadline()
    assert deadline is None or deadline > ex.now
    ex.run(ex.machine.reader_resumed(ex.now, old))
    ex.advance(ex.now + 1.0)
    assert sorted(ex.open_conns) == [1, 2]  # unpaused, but not yet for the whole overlap
    ex.advance(ex.now + 1.5)
    assert sorted(ex.open_conns) == [2]  # read unpaused for the overlap: closed
    assert ex.machine.counters.rotations == 1
    assert "gap" not in ex.statuses()


def test_a_joined_rotation_closes_the_old_connection_even_while_paused() -> None:
    ex = start(lc.Timing(rotate_jitter=0.0))
    ex.advance(23 * HOUR + 50 * 60 + 1)
    ex.run(ex.machine.reader_paused(ex.now, 1))
    ex.advance(ex.now + 0.5)
    assert ex.machine.frame(2, "x") is False  # the new one buffers it...
    assert ex.machine.frame(1, "x") is True  # ...the old one delivers it: they joined
    assert ex.machine.urgent  # the shell ticks at once
    ex.run(ex.machine.tick(ex.now))
    assert sorted(ex.open_conns) == [2]  # nothing only the old one holds: closed, paused
    ex.run(ex.machine.reader_resumed(ex.now, 1))  # late news of a closed one: ignored
    assert ex.machine.counters.rotations == 1


def test_a_stop_while_the_first_post_is_under_way_still_deletes_the_key() -> None:
    machine = lc.AccountMachine(timing=lc.Timing(), rng=random.Random(1))
    assert lc.CreateKey() in machine.start(0.0)  # the POST is under way, no key yet
    assert lc.DeleteKey() in machine.stop(0.1)  # it will create one: DELETE after it
    kept = lc.AccountMachine(timing=lc.Timing(), rng=random.Random(1), keep_listen_key=True)
    kept.start(0.0)
    assert lc.DeleteKey() not in kept.stop(0.1)


# -- the delivery gate, frame by frame --------------------------------------------------


class FrameRig:
    """A server broadcasting frames to an account's open connections, a machine deciding
    their fate, and a record of what it delivered: frames count once each, in order."""

    def __init__(self, timing: lc.Timing) -> None:
        self.machine = lc.AccountMachine(timing=timing, rng=random.Random(1))
        self.now = 0.0
        self.sent: list[str] = []
        self.delivered: list[str] = []
        self.sockets: dict[int, list[str]] = {}  # open connections: frames not read yet
        self.paused: set[int] = set()
        self.closed: set[int] = set()
        self.run(self.machine.start(0.0))

    def run(self, actions: list[lc.Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, lc.CreateKey):
                queue += self.machine.key_created(self.now, "key")
            elif isinstance(action, lc.KeepAlive):
                queue += self.machine.keepalive_ok(self.now)
            elif isinstance(action, lc.Connect) and action.conn == 1:
                self.sockets[1] = []
                queue += self.machine.connected(self.now, 1)
            elif isinstance(action, lc.Deliver):
                self.delivered += action.frames
            elif isinstance(action, lc.Close):
                self.closed.add(action.conn)
                self.sockets.pop(action.conn, None)  # what it had not read goes with it

    def send(self) -> None:
        text = f'{{"n":{len(self.sent)}}}'
        self.sent.append(text)
        for frames in self.sockets.values():
            frames.append(text)

    def read(self, conn: int) -> None:
        frames = self.sockets.get(conn)
        if frames and conn not in self.paused:
            text = frames.pop(0)
            if self.machine.frame(conn, text):
                self.delivered.append(text)
            if self.machine.urgent:
                self.run(self.machine.tick(self.now))

    def tick(self, seconds: float) -> None:
        # An unpaused reader reads what reaches it within far less than a tick (0.7 s)
        # or the overlap (2 s): the machine's assumption for a switch by the timer (the
        # paused reader, whose lag is real, is handled explicitly).
        for conn in (1, 2):
            while self.sockets.get(conn) and conn not in self.paused:
                self.read(conn)
        self.now += seconds
        self.run(self.machine.tick(self.now))


@given(
    steps=st.lists(
        st.sampled_from(
            ["send", "send", "send", "read1", "read1", "read2", "read2", "tick", "pause", "resume"]
        ),
        max_size=120,
    ),
    open_after=st.integers(0, 6),
    ack_after=st.integers(0, 6),
    cut_old=st.booleans(),
)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_rotation_delivers_every_frame_once_in_order_whatever_the_interleaving(
    steps: list[str], open_after: int, ack_after: int, cut_old: bool
) -> None:
    rig = FrameRig(lc.Timing(rotate_after=10.0, rotate_jitter=0.0, rotate_overlap=2.0))
    for _ in range(3):  # live traffic before the rotation
        rig.send()
        rig.read(1)
    rig.tick(10.0)  # the rotation's connection (2) is asked for
    assert rig.machine._rotation == 2
    sends = 0
    for step in steps:
        if step == "send":
            rig.send()
            sends += 1
            if sends == open_after:
                rig.sockets.setdefault(2, [])  # its socket opens: frames reach it from now
            if sends == open_after + ack_after and 2 in rig.sockets:
                rig.run(rig.machine.connected(rig.now, 2))  # the shell handles it later
        elif step == "read1":
            rig.read(1)
        elif step == "read2":
            rig.read(2)
        elif step == "tick":
            rig.tick(0.7)
        elif step == "pause":
            rig.paused.add(1)
            rig.run(rig.machine.reader_paused(rig.now, 1))
        elif step == "resume" and 1 in rig.paused:
            rig.paused.discard(1)
            rig.run(rig.machine.reader_resumed(rig.now, 1))
    # the end of the schedule: connection 2 is up and acknowledged; maybe the old is cut
    rig.sockets.setdefault(2, [])
    if rig.machine._standby is not None and not rig.machine._standby.open:
        rig.run(rig.machine.connected(rig.now, 2))
    # a cut loses what the old one had not read: only safe when all of it reached the new
    unread = rig.sockets.get(1, [])
    covered = set(unread) <= set(rig.sockets[2]) | set(rig.delivered)
    if cut_old and 1 in rig.sockets and covered:
        rig.sockets.pop(1)
        rig.run(rig.machine.closed(rig.now, 1, "cut", rig.now))
    if 1 in rig.paused:
        rig.paused.discard(1)
        rig.run(rig.machine.reader_resumed(rig.now, 1))
    for _ in range(3):  # the readers catch up, time passes: the switch happens
        for conn in (1, 2):
            while rig.sockets.get(conn):
                rig.read(conn)
        rig.tick(2.5)
    for _ in range(3):
        rig.send()
        while rig.sockets.get(2):
            rig.read(2)
    assert rig.machine.counters.rotations == 1
    assert rig.closed == {1} or 1 not in rig.sockets
    # every frame sent, once, in order: none lost over the rotation, none twice
    assert rig.delivered == rig.sent


def test_frames_before_the_gap_state_wait_for_it() -> None:
    machine = lc.AccountMachine(rng=random.Random(1))
    machine.start(0.0)
    [connect] = [a for a in machine.key_created(0.0, "key") if isinstance(a, lc.Connect)]
    assert machine.frame(connect.conn, "a") is False  # the shell has not handled connected
    assert machine.frame(connect.conn, "b") is False
    actions = machine.connected(1.0, connect.conn)
    assert actions == [lc.EmitState("connected"), lc.Deliver(("a", "b"))]
    assert machine.frame(connect.conn, "c") is True


def test_a_resync_holds_frames_only_for_the_snapshot_and_releases_them_in_order() -> None:
    machine = lc.AccountMachine(rng=random.Random(1), resync=True)
    machine.start(0.0)
    machine.key_created(0.0, "key")
    actions = machine.connected(1.0, 1)
    assert lc.Fetch(1) in actions
    assert machine.frame(1, "early") is False  # held for the snapshot to come first...
    assert machine.unhold(1.0, 1) == [lc.Deliver(("early",))]  # ...which waits for its turns
    assert machine.frame(1, "waiting") is True  # the snapshot waits for its turns: flow
    machine.hold(1.1, 1)  # its turns came: it is fetched now
    assert machine.frame(1, "held-1") is False
    assert machine.frame(1, "held-2") is False
    assert machine.held(1) == ["held-1", "held-2"]  # the resync leaves these objects to them
    assert machine.snapshot_done(1.2, 1) == [lc.Deliver(("held-1", "held-2"))]
    assert machine.frame(1, "after") is True
    assert machine.counters.resyncs == 1


def test_frames_read_before_the_shell_handled_connected_come_after_the_gaps_snapshot() -> None:
    # The reader runs ahead of the supervisor: frames the new connection read before
    # ``connected`` was handled are the new connection's, and the resync's snapshot comes
    # before them (docs/stream.md, resync), not just before the ones read after.
    machine = lc.AccountMachine(rng=random.Random(1), resync=True)
    machine.start(0.0)
    machine.key_created(0.0, "key")
    machine.connected(1.0, 1)
    machine.snapshot_done(1.1, 1)  # the start-up's resync
    actions = machine.closed(2.0, 1, "reset", 1.9)
    assert lc.CreateKey() in machine.tick(2.5)  # the reconnect, after its backoff
    [connect] = [a for a in machine.key_created(2.6, "key2") if isinstance(a, lc.Connect)]
    assert machine.frame(connect.conn, "early") is False
    actions = machine.connected(3.0, connect.conn)
    assert [type(a) for a in actions] == [lc.EmitState, lc.EmitState, lc.Fetch]
    assert actions[1] == lc.EmitState("gap", since=1.9, until=3.0, reason="outage")
    machine.hold(3.0, connect.conn)  # the allowance is there: nothing changes
    assert machine.frame(connect.conn, "later") is False
    assert machine.held(connect.conn) == ["early", "later"]
    assert machine.snapshot_done(3.2, connect.conn) == [lc.Deliver(("early", "later"))]
    assert machine.frame(connect.conn, "live") is True


def test_held_frames_of_a_connection_lost_mid_resync_are_delivered_not_lost() -> None:
    machine = lc.AccountMachine(rng=random.Random(1), resync=True)
    machine.start(0.0)
    machine.key_created(0.0, "key")
    machine.connected(1.0, 1)
    machine.hold(1.1, 1)
    machine.frame(1, "real-event")
    actions = machine.closed(2.0, 1, "reset", 1.9)
    assert actions[0] == lc.Deliver(("real-event",))  # they were events: out they go
    assert lc.EmitState("disconnected", since=1.9, reason="reset") in actions
    assert machine.snapshot_done(2.1, 1) == []  # the late answer changes nothing


def test_a_failed_snapshot_releases_its_held_frames() -> None:
    machine = lc.AccountMachine(rng=random.Random(1), resync=True)
    machine.start(0.0)
    machine.key_created(0.0, "key")
    machine.connected(1.0, 1)
    machine.hold(1.1, 1)
    machine.frame(1, "x")
    assert machine.snapshot_failed(1.5, 1, "transient") == [lc.Deliver(("x",))]
    assert machine.frame(1, "y") is True
