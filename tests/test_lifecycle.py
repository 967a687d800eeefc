"""The lifecycle policy on a fake clock: a simulated week runs in milliseconds."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from bitmusa_plugin._core import machine as lc

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass
class FakeExchange:
    """Answers the policy's actions the way Bitmusa would, with the documented rules: keys
    valid 60 minutes, PUT extends, connections cut at 24 hours."""

    policy: lc.StreamPolicy
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

    def run(self, actions: list[lc.Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, lc.CreateKey):
                if self.key is None or self.now > self.key_expires:
                    self.key = f"key{self.keys_issued}"
                    self.keys_issued += 1
                self.key_expires = self.now + HOUR
                queue += self.policy.key_created(self.now, self.key)
            elif isinstance(action, lc.KeepAlive):
                if self.key is None or self.now > self.key_expires:
                    self.key = None
                    queue += self.policy.keepalive_failed(self.now, "gone", "3022")
                else:
                    self.key_expires = self.now + HOUR
                    self.puts.append(self.now)
                    queue += self.policy.keepalive_ok(self.now)
            elif isinstance(action, lc.Connect):
                if self.fail_connects:
                    self.fail_connects -= 1
                    queue += self.policy.connect_failed(self.now, action.conn, "refused")
                else:
                    self.open_conns[action.conn] = self.now
                    self.max_open = max(self.max_open, len(self.open_conns))
                    queue += self.policy.connected(self.now, action.conn)
            elif isinstance(action, lc.Resync):
                ok = self.fail_snapshots == 0
                self.snapshots.append((self.now, action.conn, ok))
                if ok:
                    queue += self.policy.resync_done(self.now, action.conn)
                else:
                    self.fail_snapshots -= 1
                    queue += self.policy.resync_failed(self.now, action.conn, "transient")
            elif isinstance(action, lc.Close):
                self.open_conns.pop(action.conn, None)
            elif isinstance(action, lc.EmitState):
                self.states.append(action)
            elif isinstance(action, lc.DeleteKey):
                self.deleted = True
            elif isinstance(action, lc.Finish):
                self.finish = action

    def advance(self, until: float, step: float = 60.0) -> None:
        """Move time forward, firing the policy's deadlines and the server's rules."""
        while self.now < until:
            deadline = self.policy.next_deadline()
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
                    self.run(self.policy.closed(self.now, conn, "24h", self.now))
            self.run(self.policy.tick(self.now))
            deadline = self.policy.next_deadline()
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
    policy = lc.StreamPolicy(
        timing=timing or lc.Timing(),
        rng=random.Random(seed),
        keep_listen_key=keep_listen_key,
        resync=resync,
    )
    ex = FakeExchange(policy)
    ex.run(policy.start(0.0))
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
    assert ex.policy.counters.reconnects == 0
    assert ex.policy.counters.gaps == 0
    assert ex.policy.counters.rotations == 7  # one per day, each before the cut
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
    ex.run(ex.policy.closed(ex.now, conn, "reset", last_alive=95.0))
    ex.advance(ex.now + 600, step=0.5)
    gaps = [s for s in ex.states if s.status == "gap"]
    assert len(gaps) == 1
    assert gaps[0].since == 95.0
    assert gaps[0].until is not None
    assert gaps[0].until > 100.0
    assert ex.policy.counters.reconnects == 7
    assert ex.statuses()[-2:] == ["connected", "gap"]  # gap right after the reconnect


def test_backoff_is_full_jitter_capped_and_never_gives_up() -> None:
    timing = lc.Timing(retry_initial=0.5, retry_max=30.0)
    policy = lc.StreamPolicy(timing=timing, rng=random.Random(3))
    delays = [policy._backoff(n) for n in range(200)]
    assert all(0.05 <= d <= 30.0 for d in delays)
    assert max(delays[:3]) <= 2.0  # small at first
    assert max(delays[10:]) > 15.0  # grows to the cap
    ex = start(timing)
    conn = next(iter(ex.open_conns))
    ex.fail_connects = 10**6
    del ex.open_conns[conn]
    ex.run(ex.policy.closed(ex.now, conn, "reset", 0.0))
    ex.advance(6 * HOUR, step=1.0)
    assert ex.policy.phase == "running"
    assert ex.policy.counters.reconnects > 6 * HOUR / 30  # still trying, no limit


def test_backoff_resets_after_a_stable_connection() -> None:
    ex = start(lc.Timing(retry_initial=1.0, retry_max=30.0, stable_after=60.0))
    for _ in range(8):  # flapping: each connection dies at once
        conn = next(iter(ex.open_conns))
        del ex.open_conns[conn]
        ex.run(ex.policy.closed(ex.now, conn, "reset", ex.now))
        ex.advance(ex.now + 40, step=0.25)
    assert ex.policy._reconnect_attempt >= 7
    ex.advance(ex.now + 120)  # stable for two minutes
    conn = next(iter(ex.open_conns))
    del ex.open_conns[conn]
    ex.run(ex.policy.closed(ex.now, conn, "reset", ex.now))
    assert ex.policy._reconnect_attempt == 1  # started over


def test_keepalive_failures_retry_within_the_validity() -> None:
    ex = start(lc.Timing(retry_initial=1.0, retry_max=30.0))
    ex.advance(29 * 60)
    ex.run(ex.policy.tick(40 * 60))  # force a due keep-alive
    ex.now = 40 * 60
    pending = [a for a in ex.policy.tick(ex.now)]
    assert pending == []  # already in flight
    # a PUT that fails transiently is retried quickly, many times, before the key lapses
    ex.run(ex.policy.keepalive_failed(ex.now, "transient", "HTTP 503"))
    deadline = ex.policy.next_deadline()
    assert deadline is not None
    assert deadline - ex.now <= 30.0
    assert ex.lapsed == []


def test_a_key_gone_is_replaced_and_a_new_key_means_reconnect_with_gap() -> None:
    ex = start()
    old = next(iter(ex.open_conns))
    ex.advance(600)
    ex.key = None  # the server forgot the key
    ex.key_expires = 0
    ex.run(ex.policy.keepalive_failed(ex.now, "gone", "3022"))
    assert ex.keys_issued == 2
    assert old not in ex.open_conns  # the old key's connection was replaced
    assert len(ex.open_conns) == 1
    assert ex.statuses()[-3:] == ["disconnected", "connected", "gap"]
    assert ex.policy.counters.key_changes == 1


def test_permanent_errors_fail_fast_without_retrying() -> None:
    policy = lc.StreamPolicy(rng=random.Random(1))
    actions = policy.start(0.0)
    assert lc.CreateKey() in actions
    actions = policy.key_failed(0.1, "permanent", "code 1001 (API KEY NOT FOUND)")
    assert lc.Finish(True, "code 1001 (API KEY NOT FOUND)") in actions
    assert lc.EmitState("failed", reason="code 1001 (API KEY NOT FOUND)") in actions
    assert policy.phase == "failed"
    assert policy.next_deadline() is None
    assert policy.tick(10**6) == []


def test_a_failed_rotation_stays_on_the_old_connection_and_retries() -> None:
    timing = lc.Timing(rotate_retry=60.0)
    ex = start(timing)
    old = next(iter(ex.open_conns))
    ex.fail_connects = 3  # the next three attempts to open a connection fail
    ex.advance(DAY - 20 * 60, step=10.0)
    assert old in ex.open_conns or ex.policy.counters.rotations == 1
    assert ex.policy.counters.gaps == 0
    ex.advance(DAY + HOUR)
    assert ex.policy.counters.gaps == 0  # the retries succeeded before the cut
    assert ex.policy.counters.rotations == 1


def test_a_rotation_that_never_succeeds_ends_in_a_normal_reconnect_at_the_cut() -> None:
    ex = start(lc.Timing(rotate_retry=60.0, retry_initial=1.0, retry_max=5.0))
    ex.advance(DAY - 20 * 60)
    ex.fail_connects = 10**6
    ex.advance(DAY + 30)
    assert "disconnected" in ex.statuses()
    ex.fail_connects = 0
    ex.advance(DAY + 120, step=1.0)
    assert ex.policy.counters.gaps == 1
    assert ex.statuses()[-1] == "gap"


@pytest.mark.parametrize("keep", [False, True])
def test_stop_closes_everything_and_deletes_the_key_unless_kept(keep: bool) -> None:
    ex = start(keep_listen_key=keep)
    ex.advance(3600)
    ex.run(ex.policy.stop(ex.now))
    assert ex.open_conns == {}
    assert ex.deleted is not keep
    assert ex.statuses()[-1] == "closed"
    assert ex.finish == lc.Finish(False, "stopped")
    assert ex.policy.next_deadline() is None


def test_scaled_timing_divides_every_interval_but_the_jitter_fraction() -> None:
    scaled = lc.Timing().scaled(3600)
    assert scaled.keepalive_interval == 0.5
    assert scaled.key_validity == 1.0
    assert scaled.keepalive_jitter == 0.1


def test_no_deadline_is_left_in_the_past_while_a_request_is_pending() -> None:
    policy = lc.StreamPolicy(rng=random.Random(2))
    policy.start(0.0)
    policy.key_created(0.0, "key")
    policy.connected(1.0, 1)
    # a reconnect's POST is sent and never answered...
    policy.closed(10.0, 1, "reset", 9.0)
    now = 10.0
    for _ in range(100):
        deadline = policy.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        policy.tick(now)
        after = policy.next_deadline()
        # ...the keep-alive and validity deadlines passing must not be offered again
        assert after is None or after > now, (after, now)
        if after is None:
            break
    assert policy._key_pending
    # waiting for the POST's answer (the REST client bounds every call), not spinning
    assert policy.next_deadline() is None


def test_a_failed_resync_is_retried_until_the_gap_is_closed() -> None:
    ex = start(resync=True)
    ex.advance(HOUR)
    assert ex.snapshots == [(0.0, 1, True)]  # the start-up snapshot
    ex.fail_snapshots = 4  # the REST side is down when the next gap comes
    ex.run(ex.policy.closed(ex.now, 1, "reset", ex.now))
    ex.advance(ex.now + HOUR)
    attempts = ex.snapshots[1:]
    assert [ok for _, _, ok in attempts] == [False, False, False, False, True]
    assert {conn for _, conn, _ in attempts} == {2}  # all on the new, live connection
    delays = [b[0] - a[0] for a, b in itertools.pairwise(attempts)]
    assert all(0 < d <= ex.policy.timing.retry_max for d in delays)  # backoff, capped
    assert ex.policy.counters.resyncs == 2
    assert ex.policy.counters.resync_failures == 4
    assert ex.statuses().count("gap") == 1  # the retries are no new outage


def test_no_rotation_starts_while_a_resync_is_in_flight() -> None:
    policy = lc.StreamPolicy(rng=random.Random(3), resync=True)
    policy.start(0.0)
    policy.key_created(0.0, "key")
    assert lc.Resync(1) in policy.connected(1.0, 1)  # ...and the snapshot never answers
    due = policy._rotate_at
    assert due is not None
    policy.keepalive_ok(due)  # keep the key fresh; only the rotation is due
    assert not any(isinstance(a, lc.Connect) for a in policy.tick(due + 1))
    deadline = policy.next_deadline()
    assert deadline is None or deadline > due + 1  # the rotation is not offered: no spin
    policy.resync_done(due + 2, 1)
    assert any(isinstance(a, lc.Connect) for a in policy.tick(due + 2))


def test_a_resync_answer_for_a_lost_connection_is_ignored() -> None:
    policy = lc.StreamPolicy(rng=random.Random(4), resync=True)
    policy.start(0.0)
    policy.key_created(0.0, "key")
    policy.connected(1.0, 1)
    policy.closed(2.0, 1, "reset", 2.0)  # lost while its snapshot was in flight
    policy.resync_failed(2.1, 1, "transient")  # the late answer
    assert policy._resync_at is None  # no retry aimed at a connection that is gone
    assert policy.counters.resync_failures == 0


def test_a_rotation_waits_for_a_paused_old_reader_and_no_new_one_starts_meanwhile() -> None:
    ex = start(lc.Timing(rotate_jitter=0.0))
    ex.advance(23 * HOUR + 50 * 60 + 1)  # the rotation's new connection is up
    assert sorted(ex.open_conns) == [1, 2]
    old = 1
    ex.run(ex.policy.reader_paused(ex.now, old))  # a lossless plugin holds the stream
    ex.advance(ex.now + 3 * 60)  # far beyond the 2 s overlap (the cut is 10 minutes away)
    assert sorted(ex.open_conns) == [1, 2]  # the old one holds unread frames: kept
    deadline = ex.policy.next_deadline()
    assert deadline is None or deadline > ex.now
    ex.run(ex.policy.reader_resumed(ex.now, old))
    ex.advance(ex.now + 1.0)
    assert sorted(ex.open_conns) == [1, 2]  # unpaused, but not yet for the whole overlap
    ex.advance(ex.now + 1.5)
    assert sorted(ex.open_conns) == [2]  # read unpaused for the overlap: closed
    assert ex.policy.counters.rotations == 1
    assert "gap" not in ex.statuses()


def test_a_joined_rotation_closes_the_old_connection_even_while_paused() -> None:
    ex = start(lc.Timing(rotate_jitter=0.0))
    ex.advance(23 * HOUR + 50 * 60 + 1)
    ex.run(ex.policy.reader_paused(ex.now, 1))
    ex.advance(ex.now + 0.5)
    ex.run(ex.policy.rotation_joined(ex.now, 2))  # a frame reached both: nothing is lost
    ex.advance(ex.now + 0.01)
    assert sorted(ex.open_conns) == [2]
    ex.run(ex.policy.reader_resumed(ex.now, 1))  # late news of a closed one: ignored
    assert ex.policy.counters.rotations == 1


def test_a_stop_while_the_first_post_is_under_way_still_deletes_the_key() -> None:
    policy = lc.StreamPolicy(timing=lc.Timing(), rng=random.Random(1))
    assert lc.CreateKey() in policy.start(0.0)  # the POST is under way, no key yet
    assert lc.DeleteKey() in policy.stop(0.1)  # it will create one: DELETE after it
    kept = lc.StreamPolicy(timing=lc.Timing(), rng=random.Random(1), keep_listen_key=True)
    kept.start(0.0)
    assert lc.DeleteKey() not in kept.stop(0.1)
