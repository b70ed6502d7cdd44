"""Load patterns in virtual time (FakeClock): who is sent when, and in which phase."""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from itertools import islice
from typing import Callable

import pytest

from bench.patterns import (
    ConcurrencyPattern, FakeClock, LevelWindow, MonotonicClock, RatePattern, arrival_offsets_ns, pattern_for,
)
from bench.scenario import Load

MS = 1_000_000
S = 1_000_000_000


@dataclass
class Sent:
    seq: int
    scheduled: int
    phase: str
    sent: int
    end: int = 0


def drive(pattern, window: LevelWindow, clock: FakeClock, duration_ns: Callable[[int], int]) -> list[Sent]:
    """Run ``pattern`` with a fake send that takes ``duration_ns(seq)`` of virtual time."""
    log: list[Sent] = []

    async def send(seq: int, scheduled: int, phase: str) -> None:
        s = Sent(seq, scheduled, phase, clock.now_ns())
        log.append(s)
        await clock.sleep(duration_ns(seq) / 1e9)
        s.end = clock.now_ns()

    asyncio.run(clock.run(pattern.drive(send, clock, window)))
    return log


def in_flight(log: list[Sent], t: int) -> int:
    return sum(1 for s in log if s.sent <= t < s.end)


# --- FakeClock ------------------------------------------------------------------


def test_fake_clock_orders_sleepers_by_deadline() -> None:
    clock = FakeClock(start_ns=0)
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now_ns()))

    async def main() -> None:
        await asyncio.gather(sleeper("c", 0.3), sleeper("a", 0.1), sleeper("b", 0.2), sleeper("now", 0))

    asyncio.run(clock.run(main()))
    assert woke == [("now", 0), ("a", 100 * MS), ("b", 200 * MS), ("c", 300 * MS)]


def test_monotonic_clock_is_ns_and_nondecreasing() -> None:
    c = MonotonicClock()
    a, b = c.now_ns(), c.now_ns()
    assert isinstance(a, int) and b >= a


# --- concurrency ------------------------------------------------------------------


def test_concurrency_keeps_exactly_n_in_flight() -> None:
    clock = FakeClock()
    window = LevelWindow(start_ns=clock.now_ns(), requests=40)
    # Uneven service times: users drift apart, the count in flight must not.
    log = drive(ConcurrencyPattern(4), window, clock, lambda seq: (50 + 37 * (seq % 5)) * MS)
    assert len(log) == 40
    assert [s.seq for s in log] == list(range(40))
    last_send = max(s.sent for s in log)
    t = window.start_ns
    while t < last_send:
        assert in_flight(log, t) == 4, t
        t += MS
    assert max(in_flight(log, s.sent) for s in log) == 4


def test_concurrency_closed_loop_scheduled_equals_sent() -> None:
    clock = FakeClock()
    window = LevelWindow(start_ns=clock.now_ns(), requests=9)
    log = drive(ConcurrencyPattern(3), window, clock, lambda seq: 100 * MS)
    assert all(s.scheduled == s.sent for s in log)
    starts = sorted(s.sent - window.start_ns for s in log)
    assert starts == [0, 0, 0, 100 * MS, 100 * MS, 100 * MS, 200 * MS, 200 * MS, 200 * MS]


@pytest.mark.parametrize("users,budget", [(1, 5), (3, 10), (8, 8), (10, 3)])
def test_concurrency_request_budget(users: int, budget: int) -> None:
    clock = FakeClock()
    window = LevelWindow(start_ns=clock.now_ns(), requests=budget)
    log = drive(ConcurrencyPattern(users), window, clock, lambda seq: 100 * MS)
    assert len(log) == budget
    assert all(s.phase == "measure" for s in log)
    assert window.measured_issued == budget and window.stopped


def test_concurrency_warmup_by_requests_not_counted() -> None:
    clock = FakeClock()
    window = LevelWindow(start_ns=clock.now_ns(), warmup_requests=5, requests=10)
    log = drive(ConcurrencyPattern(2), window, clock, lambda seq: 100 * MS)
    assert [s.phase for s in log] == ["warmup"] * 5 + ["measure"] * 10
    assert window.measured_issued == 10 and window.issued == 15
    # The measurement window opens with the first measured request.
    assert window.measure_start_ns == log[5].scheduled


def test_concurrency_warmup_by_seconds() -> None:
    clock = FakeClock()
    start = clock.now_ns()
    window = LevelWindow(start_ns=start, warmup_s=0.25, requests=6)
    log = drive(ConcurrencyPattern(2), window, clock, lambda seq: 100 * MS)
    warm = [s for s in log if s.phase == "warmup"]
    measured = [s for s in log if s.phase == "measure"]
    assert [s.scheduled - start for s in warm] == [0, 0, 100 * MS, 100 * MS, 200 * MS, 200 * MS]
    assert len(measured) == 6
    assert all(s.scheduled >= start + 250 * MS for s in measured)
    assert window.measure_start_ns == start + 300 * MS


def test_concurrency_duration_stop() -> None:
    clock = FakeClock()
    start = clock.now_ns()
    window = LevelWindow(start_ns=start, duration_s=1.0)
    log = drive(ConcurrencyPattern(2), window, clock, lambda seq: 100 * MS)
    # Starts at 0, 100, ..., 900 ms; a request scheduled at exactly 1 s is not issued.
    assert len(log) == 20
    assert max(s.scheduled for s in log) == start + 900 * MS
    assert window.deadline_ns() == start + S
    assert window.stopped


def test_concurrency_warmup_then_duration() -> None:
    clock = FakeClock()
    start = clock.now_ns()
    window = LevelWindow(start_ns=start, warmup_requests=2, duration_s=0.5)
    log = drive(ConcurrencyPattern(1), window, clock, lambda seq: 100 * MS)
    assert [s.phase for s in log] == ["warmup"] * 2 + ["measure"] * 5
    # Duration counts from the first measured request (200 ms), not from the level start.
    assert [s.scheduled - start for s in log if s.phase == "measure"] == [200 * MS, 300 * MS, 400 * MS,
                                                                          500 * MS, 600 * MS]


def test_window_stop_ends_issuing() -> None:
    clock = FakeClock()
    window = LevelWindow(start_ns=clock.now_ns(), requests=1000)

    def dur(seq: int) -> int:
        if seq == 6:
            window.stop()
        return 100 * MS

    log = drive(ConcurrencyPattern(2), window, clock, dur)
    assert len(log) == 7


def test_concurrency_rejects_zero_users() -> None:
    with pytest.raises(ValueError):
        ConcurrencyPattern(0)


# --- arrival offsets --------------------------------------------------------------


def test_constant_offsets_are_exact() -> None:
    assert list(islice(arrival_offsets_ns(4.0, "constant", 0), 5)) == [0, 250 * MS, 500 * MS, 750 * MS, S]
    offs = list(islice(arrival_offsets_ns(3.0, "constant", 0), 301))
    assert offs[300] == 100 * S  # no drift: k / R, not a running sum
    assert all(b - a in (333_333_333, 333_333_334) for a, b in zip(offs, offs[1:]))


def test_poisson_mean_gap_and_dispersion() -> None:
    rate = 50.0
    offs = list(islice(arrival_offsets_ns(rate, "poisson", 42), 20_001))
    gaps = [b - a for a, b in zip(offs, offs[1:])]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1e9 / rate, rel=0.03)
    # Exponential inter-arrivals: standard deviation ~= mean (coefficient of variation ~ 1).
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, rel=0.05)
    assert offs[0] == 0 and all(g >= 0 for g in gaps)


def test_poisson_seeded_and_deterministic() -> None:
    a = list(islice(arrival_offsets_ns(10.0, "poisson", 7), 100))
    b = list(islice(arrival_offsets_ns(10.0, "poisson", 7), 100))
    c = list(islice(arrival_offsets_ns(10.0, "poisson", 8), 100))
    assert a == b
    assert a != c


@pytest.mark.parametrize("rate,arrival", [(0, "constant"), (-1, "poisson"), (1, "bursty")])
def test_arrival_offsets_reject_bad_input(rate: float, arrival: str) -> None:
    with pytest.raises(ValueError):
        next(arrival_offsets_ns(rate, arrival, 0))


# --- rate pattern -----------------------------------------------------------------


@pytest.mark.parametrize("arrival,seed", [("constant", 0), ("poisson", 3), ("poisson", 11)])
def test_rate_scheduled_times_follow_the_plan_exactly(arrival: str, seed: int) -> None:
    rate, duration = 20.0, 2.0
    clock = FakeClock()
    start = clock.now_ns()
    window = LevelWindow(start_ns=start, duration_s=duration)
    log = drive(RatePattern(rate, arrival, seed=seed), window, clock, lambda seq: 30 * MS)
    plan = [start + o for o in islice(arrival_offsets_ns(rate, arrival, seed), 10_000)]
    expected = [t for t in plan if t < start + int(duration * S)]
    assert [s.scheduled for s in log] == expected
    assert [s.seq for s in log] == list(range(len(expected)))
    assert all(s.sent == s.scheduled for s in log)  # unconstrained: sent exactly on time
    if arrival == "constant":
        assert len(log) == 40
        assert {b.scheduled - a.scheduled for a, b in zip(log, log[1:])} == {50 * MS}


def test_rate_same_seed_same_plan_in_a_run() -> None:
    def run(seed: int) -> list[int]:
        clock = FakeClock()
        window = LevelWindow(start_ns=clock.now_ns(), requests=50)
        return [s.scheduled for s in drive(RatePattern(10.0, "poisson", seed=seed), window, clock,
                                           lambda seq: 200 * MS)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_rate_slow_server_does_not_slow_arrivals() -> None:
    # Each request takes 5 s; at 10/s, ~50 are in flight. No coordinated omission.
    clock = FakeClock()
    start = clock.now_ns()
    window = LevelWindow(start_ns=start, requests=30)
    log = drive(RatePattern(10.0, "constant"), window, clock, lambda seq: 5 * S)
    assert [s.sent - start for s in log] == [k * 100 * MS for k in range(30)]
    assert max(in_flight(log, s.sent) for s in log) == 30


def test_rate_max_in_flight_delays_sends_not_schedule() -> None:
    clock = FakeClock()
    start = clock.now_ns()
    window = LevelWindow(start_ns=start, duration_s=1.0)
    log = drive(RatePattern(10.0, "constant", max_in_flight=1), window, clock, lambda seq: 250 * MS)
    assert [s.scheduled - start for s in log] == [k * 100 * MS for k in range(10)]
    assert [s.sent - start for s in log] == [k * 250 * MS for k in range(10)]
    assert all(s.sent >= s.scheduled for s in log)
    assert sum(s.sent > s.scheduled for s in log) == 9
    assert max(in_flight(log, s.sent) for s in log) == 1


def test_rate_max_in_flight_cap_respected() -> None:
    clock = FakeClock()
    window = LevelWindow(start_ns=clock.now_ns(), requests=60)
    log = drive(RatePattern(100.0, "poisson", seed=1, max_in_flight=3), window, clock, lambda seq: 80 * MS)
    assert len(log) == 60
    t, last = window.start_ns, max(s.end for s in log)
    while t < last:
        assert in_flight(log, t) <= 3
        t += MS
    assert max(in_flight(log, s.sent) for s in log) == 3


def test_rate_warmup_by_seconds_and_requests_budget() -> None:
    clock = FakeClock()
    start = clock.now_ns()
    window = LevelWindow(start_ns=start, warmup_s=0.5, requests=10)
    log = drive(RatePattern(10.0, "constant"), window, clock, lambda seq: 20 * MS)
    assert [s.phase for s in log] == ["warmup"] * 5 + ["measure"] * 10
    assert window.measure_start_ns == start + 500 * MS
    assert [s.scheduled - start for s in log] == [k * 100 * MS for k in range(15)]


def test_pattern_for_builds_from_load() -> None:
    conc = Load(pattern="concurrency", levels=[4], requests=10)
    p = pattern_for(conc, 4.0, 0)
    assert isinstance(p, ConcurrencyPattern) and p.users == 4
    rate = Load(pattern="rate", levels=[2, 4], requests=10, arrival="constant", max_in_flight=8, seed=3)
    r0, r1 = pattern_for(rate, 2.0, 0), pattern_for(rate, 4.0, 1)
    assert isinstance(r0, RatePattern)
    assert (r0.rate, r0.arrival, r0.max_in_flight) == (2.0, "constant", 8)
    assert r0.seed != r1.seed  # levels do not share arrival sequences
    assert pattern_for(rate, 2.0, 0).seed == r0.seed  # reproducible
