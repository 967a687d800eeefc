"""The chaos soak: simulated days of trading on several accounts, with seeded random faults,
over real loopback sockets, checked against the simulator's ground truth.

The simulator runs on its own thread and loop (as an exchange would), the engine under test
on this one. Time is scaled (``SCALE`` simulated seconds per real second) for everything the
exchange and the policy count in hours: key validity, keep-alives, the 24-hour cut,
rotation. Network-level timing (pings, stalls, REST timeouts) stays in real seconds.

A profile alternates *storms* (a fault every ``mean_gap_h`` simulated hours on average,
drawn from :data:`FAULTS`) and calm windows long enough for a connection to reach its daily
rotation. :func:`run` returns a :class:`Report`; :func:`check` asserts every guarantee and
returns the figures for docs/reliability.md. ``python tests/chaos/chaos_soak.py --profile
week`` (``make soak``) runs the full week; every failure names the seed, and
``--seed N`` runs the same fault schedule and trading session again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import itertools
import logging
import os
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._core import machine as lc
from bitmusa_plugin._engine.pipeline import Pipeline
from bitmusa_plugin._engine.plugins import PluginRegistry
from bitmusa_plugin._engine.secrets import Credentials
from bitmusa_plugin._engine.stream import AccountConfig, AccountStream, Heartbeat
from bitmusa_plugin.simulator import Simulator, SimulatorThread

SCALE = 3600.0  # a simulated hour per real second
HOUR_MS = 3600 * 1000

#: fault name -> copies per deck. Faults are dealt from a shuffled deck, so that every kind
#: comes up once a deck is dealt (the CI profile deals one); every name is handled in
#: :meth:`Chaos.inject`.
FAULTS: dict[str, int] = {
    "reset": 3,  # TCP reset
    "reset_mid_frame": 2,  # a reset after half a frame
    "refused": 2,  # a reset, then the next handshakes refused (HTTP 503)
    "handshake_reset": 2,  # a reset, then the next handshake reset mid-way
    "stall": 2,  # no data, no pongs
    "rest_5xx": 1,  # the next REST calls fail: 500 / 503
    "rest_429": 1,
    "rest_timeout": 1,  # the next REST call never answers
    "keepalive_failure": 2,  # the next keep-alive PUTs fail
    "snapshot_failure": 1,  # a reset, and the resync's snapshot fails
    "key_expiry": 1,  # the exchange expires the key
    "cut": 1,  # the 24-hour cut, early
    "server_delete": 1,  # a DELETE from elsewhere
    "garbage": 1,  # frames no decoder accepts, between the good ones
}
#: faults that end the account's live connections
KILLING = {
    "reset",
    "reset_mid_frame",
    "refused",
    "handshake_reset",
    "stall",
    "snapshot_failure",
    "key_expiry",
    "cut",
    "server_delete",
}


@dataclass(frozen=True)
class Profile:
    name: str
    hours: float  # simulated
    storms: tuple[tuple[float, float], ...]  # simulated hours [start, end)
    accounts: int = 2
    mean_gap_h: float = 0.6  # mean time between faults in a storm, per account (~21/deck)
    min_rotations: int = 1
    event_interval: float = 0.02  # real seconds between trading events per account
    reconnect_cycles: int = 400  # for the memory test


PROFILES = {
    # one storm, then a calm day: every fault kind, and a daily rotation
    "ci": Profile("ci", hours=34.0, storms=((0.3, 9.0),), min_rotations=1),
    # a week: storms on days 1, 3, 5 and 7, calm days between them (three rotations)
    "week": Profile(
        "week",
        hours=168.0,
        storms=tuple((24.0 * d + 0.3, 24.0 * d + 18.0) for d in (0, 2, 4, 6)),
        min_rotations=3,
        reconnect_cycles=1000,
    ),
}


@dataclass
class FaultRecord:
    kind: str
    account: str  # label
    sim_hour: float
    wall_ms: int
    killed: list[int]  # simulator connection ids it ended
    young: bool  # it hit a connection opened moments ago (the client may not know it yet)


class Recorder:
    """A well-behaved plugin: every live payload per account in delivery order, the states,
    the errors, and the latest state of every object (as a bot would keep it). Lossless
    (delivery policy ``all``): the soak compares what it got with every frame sent."""

    bitmusa_delivery = "all"

    def __init__(self) -> None:
        self.data: dict[str, list[bytes]] = defaultdict(list)
        self.states: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.errors: list[dict[str, Any]] = []
        self.orders: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.positions: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.balance: dict[str, dict[str, Any]] = {}
        self.resync_events = 0

    def _live(self, event: dict[str, Any]) -> bool:
        if event["stream"] == "resync":
            self.resync_events += 1
            return False
        self.data[event["account"]].append(orjson.dumps(event["data"]))
        return True

    @hookimpl
    async def on_order(self, order: dict[str, Any], event: dict[str, Any]) -> None:
        self._live(event)
        self.orders[event["account"]][order["id"]] = order

    @hookimpl
    async def on_position(self, position: dict[str, Any], event: dict[str, Any]) -> None:
        self._live(event)
        self.positions[event["account"]][position["symbol"]] = position

    @hookimpl
    async def on_wallet(self, balance: dict[str, Any], event: dict[str, Any]) -> None:
        self._live(event)
        self.balance[event["account"]] = balance

    @hookimpl
    async def on_stream_state(self, state: dict[str, Any]) -> None:
        self.states[state["account"]].append(state)

    @hookimpl
    async def on_error(self, error: dict[str, Any]) -> None:
        self.errors.append(error)


@dataclass
class Resources:
    tasks: int
    fds: int


@dataclass
class Report:
    profile: Profile
    seed: int
    faults: list[FaultRecord]
    recorder: Recorder
    streams: dict[str, AccountStream]
    sim: Simulator
    labels: dict[str, str]  # api key -> label
    calm_samples: list[Resources]
    before: Resources
    after: Resources
    seconds: float
    reconnect_ms: list[float] = field(default_factory=list)


def _resources() -> Resources:
    tasks = len(asyncio.all_tasks())
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1
    return Resources(tasks, fds)


def soak_timing() -> lc.Timing:
    """The real intervals, scaled, with real-time floors where a network is involved."""
    return replace(
        lc.Timing().scaled(SCALE),
        retry_initial=0.02,  # 72 simulated seconds, doubling...
        retry_max=0.25,  # ...to 15 simulated minutes
        stable_after=0.2,
        rotate_retry=0.05,
    )


class Chaos:
    def __init__(self, profile: Profile, seed: int, handle: SimulatorThread) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.handle = handle
        self.faults: list[FaultRecord] = []
        self.start = time.monotonic()

    def sim_hour(self) -> float:
        return (time.monotonic() - self.start) * SCALE / 3600

    async def sleep_until(self, hour: float) -> None:
        delay = (hour - self.sim_hour()) * 3600 / SCALE
        if delay > 0:
            await asyncio.sleep(delay)

    async def run(self, labels: dict[str, str], on_calm: Any) -> None:
        deck: list[str] = []
        api_keys = sorted(labels)
        for begin, end in self.profile.storms:
            await self.sleep_until(begin)
            at = begin
            while True:
                at += self.rng.expovariate(len(api_keys) / self.profile.mean_gap_h)
                if at >= end:
                    break
                await self.sleep_until(at)
                if not deck:
                    deck = [kind for kind, copies in FAULTS.items() for _ in range(copies)]
                    self.rng.shuffle(deck)
                kind = deck.pop()
                api_key = self.rng.choice(api_keys)
                await self.inject(kind, api_key, labels[api_key])
            # settle into the calm, then sample resources (one connection per account)
            await self.sleep_until(end + 2.0)
            await on_calm()

    async def inject(self, kind: str, api_key: str, label: str) -> None:
        rng = self.rng
        n = rng.randint(1, 2)
        stall_for = rng.uniform(0.8, 1.5)  # real seconds: longer than a dead-link verdict
        young_ms = 0.05 * SCALE * 1000  # 50 real ms, in simulated ms

        def act(sim: Simulator) -> tuple[list[int], bool]:
            account = sim.accounts[api_key]
            live = [c for c in sim.live(account)]
            now = sim.now_ms()
            killed = [c.conn_id for c in live] if kind in KILLING else []
            young = any(now - c.opened_ms < young_ms for c in live)
            if kind in ("reset", "snapshot_failure"):
                sim.drop(account)
                if kind == "snapshot_failure":
                    sim.fail_rest(rng.choice(["503", "1011"]), n, method="GET")
            elif kind == "reset_mid_frame":
                sim.drop(account, mid_frame=True)
            elif kind == "refused":
                sim.refuse(n)
                sim.drop(account)
            elif kind == "handshake_reset":
                sim.refuse(1, how="reset")
                sim.drop(account)
            elif kind == "stall":
                sim.stall(stall_for, account)
            elif kind == "rest_5xx":
                sim.fail_rest(rng.choice(["500", "503"]), n)
            elif kind == "rest_429":
                sim.fail_rest("429", n)
            elif kind == "rest_timeout":
                sim.fail_rest("timeout", 1)
            elif kind == "keepalive_failure":
                sim.fail_rest(rng.choice(["503", "1011", "timeout"]), n, method="PUT")
            elif kind == "key_expiry":
                sim.expire_key(account)
            elif kind == "server_delete":
                sim.close_key(account)
            return killed, young

        async def act_async(sim: Simulator) -> tuple[list[int], bool]:
            if kind == "cut":
                account = sim.accounts[api_key]
                live = sim.live(account)
                now = sim.now_ms()
                young = any(now - c.opened_ms < young_ms for c in live)
                killed = [c.conn_id for c in live]
                await sim.cut(account)
                return killed, young
            if kind == "garbage":
                await sim.garbage(rng.randint(1, 6), sim.accounts[api_key])
                return [], False
            return act(sim)

        killed, young = await self.handle.call_async(act_async)
        wall_ms = int(time.time() * 1000)
        self.faults.append(FaultRecord(kind, label, self.sim_hour(), wall_ms, killed, young))


@contextlib.contextmanager
def debug_capture() -> Iterator[io.StringIO]:
    """Every log record of the run, at DEBUG, formatted with tracebacks, into one buffer
    (no redaction filter installed: a library user's own logging setup must be safe)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def run(profile: Profile, seed: int) -> Report:
    labels = {f"chaos-api-key-{i:04d}": f"acct{i}" for i in range(profile.accounts)}
    accounts = {api: f"chaos-auth-key-{i:04d}" for i, api in enumerate(labels)}
    gc.collect()
    before = _resources()
    started = time.monotonic()
    handle = SimulatorThread(
        time_scale=SCALE,
        event_interval=profile.event_interval,
        seed=seed,
        accounts=accounts,
    )
    sim = handle.start()
    try:
        recorder = Recorder()
        plugins = PluginRegistry()
        plugins.register(recorder, "recorder")
        host = Pipeline(plugins, command="chaos")
        host.start(list(labels.values()))
        streams: dict[str, AccountStream] = {}
        for api, label in labels.items():
            config = AccountConfig(label, Credentials(api, accounts[api]), sim.rest_url, sim.ws_url)
            streams[label] = AccountStream(
                config,
                host,
                timing=soak_timing(),
                heartbeat=Heartbeat(0.15, 0.3),
                rng=random.Random(f"{seed}:{label}"),
                rest_timeout=0.15,
                open_timeout=0.5,
                # the scenario's orders are another client's: learning their sides
                # (test_sides.py, the property test) holds each one's frames while the
                # others flow on, and this soak checks every account's whole sequence
                side_wait=0,
            )
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(s.run()) for s in streams.values()]
        chaos = Chaos(profile, seed, handle)
        calm: list[Resources] = []

        async def on_calm() -> None:
            # the least over a few samples: a keep-alive PUT in flight is not a leak
            samples = []
            for _ in range(5):
                gc.collect()
                samples.append(_resources())
                await asyncio.sleep(0.05)
            calm.append(Resources(min(r.tasks for r in samples), min(r.fds for r in samples)))

        await chaos.run(labels, on_calm)
        await chaos.sleep_until(profile.hours)
        # quiesce: a frame in flight while we close is neither delivered nor lost
        await handle.call(lambda s: setattr(s, "paused", True))
        await asyncio.sleep(0.3)
        await host.dispatcher.drain(10)
        for stream in streams.values():
            stream.stop()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert all(not r.failed for r in results), results
        await host.stop()
    finally:
        handle.stop()
    gc.collect()
    await asyncio.sleep(0)
    return Report(
        profile,
        seed,
        chaos.faults,
        recorder,
        streams,
        sim,
        {api: label for api, label in labels.items()},
        calm,
        before,
        _resources(),
        time.monotonic() - started,
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def check(report: Report) -> dict[str, Any]:
    """Assert every guarantee; return the figures."""
    sim, rec = report.sim, report.recorder
    faults = Counter(f.kind for f in report.faults)
    assert set(faults) == set(FAULTS), f"not every fault kind was injected: {faults}"
    figures: dict[str, Any] = {"faults": dict(sorted(faults.items())), "accounts": {}}
    reconnect_ms: list[float] = []
    total_delivered = total_lost = total_dupes = 0
    for api, label in report.labels.items():
        account = sim.accounts[api]
        stream = report.streams[label]
        counters = stream.machine.counters
        # 1. exactly once, in order, per stream: every good frame written to a live
        #    connection of this account, and nothing else
        sent = [
            orjson.dumps(orjson.loads(f.text)["data"])
            for f in sim.sent
            if f.account == api and f.conns and not f.garbage
        ]
        got = rec.data[label]
        sent_count, got_count = Counter(sent), Counter(got)
        lost = sum((sent_count - got_count).values())
        dupes = sum((got_count - sent_count).values())
        total_delivered += len(got)
        total_lost += lost
        total_dupes += dupes
        assert (lost, dupes) == (0, 0), f"{label}: {lost} lost, {dupes} duplicated"
        assert got == sent, f"{label}: every frame once, but out of order"
        # 2. one gap per outage. An outage is a set of connections ended by faults (a
        #    stall then a reset of the same connection is one outage).
        groups: list[set[int]] = []
        young = 0
        for f in report.faults:
            if f.account != label or not f.killed:
                continue
            hit = set(f.killed)
            merged = [g for g in groups if g & hit]
            for g in merged:
                groups.remove(g)
                hit |= g
            groups.append(hit)
            young += f.young
        states = rec.states[label]
        statuses = [s["status"] for s in states]
        gaps = [s for s in states if s["status"] == "gap"]
        assert len(gaps) == counters.gaps
        # a fault on a connection opened moments ago may end it before the client
        # knows it was up: that attempt failed, the outage goes on, no new gap
        assert len(groups) - young <= len(gaps) <= len(groups), (len(groups), young, len(gaps))
        pairs = [s for s in statuses if s in ("disconnected", "gap")]
        assert pairs == ["disconnected", "gap"] * len(gaps), "a gap without an outage"
        for gap in gaps:
            assert gap["since"] <= gap["until"]
            reconnect_ms.append(gap["until"] - gap["since"])
        # 3. the resync closes each gap: the count of completed snapshots grows after
        #    every gap, unless a newer gap superseded it; the last one is closed
        resyncs_at_gap = [g["stats"]["resyncs"] for g in gaps]
        superseded = sum(1 for a, b in itertools.pairwise(resyncs_at_gap) if b <= a)
        if gaps:
            assert counters.resyncs > resyncs_at_gap[-1], "the last gap was never resynced"
        _check_picture(report, api, label)
        # 4. the key never lapsed because of us; rotations overlapped (two at once, never
        #    more)
        assert account.expiries == 0, f"{label}: the key lapsed {account.expiries} times"
        assert account.max_concurrent <= 2
        figures["accounts"][label] = {
            "delivered": len(got),
            "gaps": len(gaps),
            "outages": len(groups),
            "superseded_resyncs": superseded,
            "resyncs": counters.resyncs,
            "resync_failures": counters.resync_failures,
            "rotations": counters.rotations,
            "reconnects": counters.reconnects,
            "keepalives": counters.keepalives,
            "keepalive_failures": counters.keepalive_failures,
            "key_changes": counters.key_changes,
            "forced_expiries": account.forced_expiries,
        }
    rotations = sum(s.machine.counters.rotations for s in report.streams.values())
    assert rotations >= report.profile.min_rotations * len(report.streams), rotations
    assert any(a.max_concurrent == 2 for a in sim.accounts.values())
    # 5. every bad frame reported with its kind; nothing else went wrong
    garbage = sum(1 for f in sim.sent if f.garbage and f.conns)
    kinds = Counter(e["kind"] for e in rec.errors)
    frame_errors = sum(1 for e in rec.errors if e["raw"] is not None)
    assert frame_errors == garbage, (frame_errors, garbage)
    assert not {k for k in kinds if k.startswith("plugin")}, kinds
    # 6. resources: flat from one calm window to the next, and back to the start after
    calm = report.calm_samples
    assert len({c.tasks for c in calm}) == 1, calm
    assert max(c.fds for c in calm) - calm[0].fds <= 2, calm
    assert report.after.tasks == report.before.tasks, (report.before, report.after)
    assert report.after.fds <= report.before.fds + 1, (report.before, report.after)
    figures.update(
        seed=report.seed,
        profile=report.profile.name,
        simulated_hours=report.profile.hours,
        real_seconds=round(report.seconds, 1),
        faults_injected=len(report.faults),
        delivered=total_delivered,
        lost=total_lost,
        duplicates=total_dupes,
        bad_frames_reported=frame_errors,
        rotations=rotations,
        reconnect_ms_p50=_percentile(reconnect_ms, 0.5),
        reconnect_ms_p99=_percentile(reconnect_ms, 0.99),
        reconnect_ms_mean=round(statistics.fmean(reconnect_ms), 1) if reconnect_ms else 0,
        tasks_calm=calm[0].tasks,
        fds_calm=[c.fds for c in calm],
        errors_by_kind=dict(sorted(kinds.items())),
    )
    return figures


def _check_picture(report: Report, api: str, label: str) -> None:
    """The bot's picture equals the exchange's: open orders, positions, USDT balance."""
    scenario = report.sim.accounts[api].scenario
    rec = report.recorder
    orders = rec.orders[label]
    open_ids = {o for o, order in orders.items() if order["status"] == "open"}
    assert open_ids == set(scenario.orders), f"{label}: open orders differ"
    for order_id, order in scenario.orders.items():
        assert orders[order_id]["filled"] == float(order.traded), f"{label}: {order_id}"
    positions = rec.positions[label]
    held = {s for s, p in positions.items() if p["contracts"]}
    assert held == {t[:-4] + "/USDT:USDT" for t in scenario.positions}, f"{label}: positions"
    for ticker, position in scenario.positions.items():
        symbol = ticker[:-4] + "/USDT:USDT"
        assert positions[symbol]["contracts"] == float(position.amount), f"{label}: {symbol}"
    balance = rec.balance[label]["USDT"]
    assert balance["free"] == float(scenario.free), f"{label}: free balance"
    assert balance["total"] == float(scenario.free + scenario.locked), f"{label}: total"


def check_secrets(report: Report, logged: str) -> int:
    """No API key, auth key or listenKey in any log line, error report, repr or state.
    Returns the number of secrets looked for."""
    sim = report.sim
    secrets = [*sim.accounts]  # API keys
    secrets += [a.auth_key for a in sim.accounts.values()]
    secrets += [key for a in sim.accounts.values() for key in a.issued_keys]
    text = logged
    text += orjson.dumps(report.recorder.errors).decode()
    text += orjson.dumps(report.recorder.states, default=str).decode()
    for stream in report.streams.values():
        text += (
            repr(stream)
            + repr(stream.listen_key)
            + repr(stream.snapshots)
            + repr(stream.config)
            + str(stream.stats())
        )
        text += repr(stream.config.credentials) + str(stream.last_error or "")
    # the simulator (the exchange's side, sharing this process) logs as bitmusa_plugin.simulator
    # and aiohttp; everything else is ours or our libraries'
    ours = "\n".join(
        line
        for line in text.splitlines()
        if " bitmusa_plugin.simulator " not in line and " aiohttp." not in line
    )
    assert "websockets.client DEBUG" in ours  # the libraries' debug logs were on...
    assert "httpx DEBUG" in ours or "httpcore" in ours
    leaked = [s for s in secrets if s in ours]
    assert not leaked, f"{len(leaked)} secret(s) in the output"
    return len(secrets)


async def soak(profile: Profile, seed: int) -> dict[str, Any]:
    """Run and check; a failure names its seed, and the same seed reproduces it."""
    with debug_capture() as logged:
        report = await run(profile, seed)
    try:
        figures = check(report)
        figures["secrets_checked"] = check_secrets(report, logged.getvalue())
        figures["log_bytes_scanned"] = len(logged.getvalue())
        return figures
    except AssertionError as exc:
        raise AssertionError(
            f"chaos soak failed (profile {profile.name}, seed {seed}; rerun with "
            f"`python tests/chaos/chaos_soak.py --profile {profile.name} --seed {seed}`): "
            f"{exc}"
        ) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="week")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    profile = PROFILES[args.profile]
    print(f"chaos soak: profile {profile.name}, seed {seed}, {profile.hours:g} simulated h")
    sys.stdout.flush()
    figures = asyncio.run(soak(profile, seed))
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
