"""The locust engine's pure rules: level splits, item cursors, arrival slices, clocks, imports."""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.dataset import Item
from bench.distributed import protocol as p
from bench.patterns import ConcurrencyPattern, LevelWindow, RatePattern, arrival_offsets_ns
from bench.records import RequestRecord
from tests.conftest import REPO


def _positions(share: dict, phase: str) -> list[int]:
    spec = p.CursorSpec.from_list(share["cursor"][phase])
    quota = share["window"]["requests" if phase == "measure" else "warmup_requests"]
    return [spec.at(i) for i in range(quota)] if spec.width else []


@given(users=st.lists(st.integers(0, 9), min_size=1, max_size=6).filter(lambda u: sum(u) > 0),
       requests=st.integers(1, 300), warmup=st.integers(0, 40), base=st.integers(0, 1000))
def test_closed_loop_shares_cover_exactly_what_one_process_would(users: list[int], requests: int, warmup: int,
                                                                base: int) -> None:
    window = {"warmup_s": 0.0, "warmup_requests": warmup, "duration_s": None, "requests": requests}
    shares = p.concurrency_shares(users, window, {"measure": base, "warmup": 7})
    assert [s["users"] for s in shares] == users
    assert sum(s["window"]["requests"] for s in shares) == requests
    assert sum(s["window"]["warmup_requests"] for s in shares) == warmup
    measured = sorted(x for s in shares for x in _positions(s, "measure"))
    assert measured == list(range(base, base + requests))  # no gap, no overlap
    assert sorted(x for s in shares for x in _positions(s, "warmup")) == list(range(7, 7 + warmup))
    # Request numbers are unique across workers, whatever mix of phases each one sends.
    seqs = [p.CursorSpec.from_list(s["cursor"]["seq"]).at(i) for s in shares if s["users"] for i in range(50)]
    assert len(seqs) == len(set(seqs))


def test_duration_only_levels_have_no_count_quota_and_interleave_users() -> None:
    window = {"warmup_s": 2.0, "warmup_requests": 0, "duration_s": 10.0, "requests": None}
    a, b = p.concurrency_shares([2, 1], window, {"measure": 30, "warmup": 0})
    assert a["window"]["requests"] is None and b["window"]["requests"] is None
    assert a["window"]["duration_s"] == 10.0 and a["window"]["warmup_s"] == 2.0
    assert [p.CursorSpec.from_list(a["cursor"]["measure"]).at(i) for i in range(4)] == [30, 31, 33, 34]
    assert [p.CursorSpec.from_list(b["cursor"]["measure"]).at(i) for i in range(2)] == [32, 35]


def test_split_quota_is_proportional_and_exact() -> None:
    assert p.split_quota(10, [2, 1]) == [7, 3]
    assert p.split_quota(None, [1, 1]) == [None, None]
    assert p.split_quota(5, [0, 0]) == [0, 0]
    assert sum(p.split_quota(101, [3, 3, 3])) == 101


def _single_process_admissions(rate: float, arrival: str, seed: int, window: LevelWindow) -> list[tuple[int, int, str]]:
    """What RatePattern.drive admits, without the sleeping: (seq, scheduled, phase)."""
    out = []
    for seq, offset in enumerate(arrival_offsets_ns(rate, arrival, seed)):
        phase = window.admit(window.start_ns + offset)
        if phase is None:
            return out
        out.append((seq, window.start_ns + offset, phase))
    return out


def _window(**kw) -> LevelWindow:
    return LevelWindow(start_ns=5_000_000_000, **kw)


@pytest.mark.parametrize("kw", [
    {"warmup_s": 1.0, "duration_s": 4.0},
    {"warmup_requests": 13, "requests": 200},
    {"warmup_s": 0.5, "warmup_requests": 3, "duration_s": 3.0, "requests": 120},
])
@pytest.mark.parametrize("slots", [1, 2, 3])
def test_rate_slices_partition_the_single_process_plan(kw: dict, slots: int) -> None:
    expected = _single_process_admissions(50.0, "poisson", 7, _window(**kw))
    got = []
    for slot in range(slots):
        got += list(p.rate_arrivals(50.0, "poisson", 7, _window(**kw), slot, slots, {"measure": 40, "warmup": 2}))
    got.sort()
    assert [(s, t, ph) for s, t, ph, _ in got] == expected
    # Cursors are the single-process ones: per phase, in plan order, from the target's bases.
    for phase, base in (("measure", 40), ("warmup", 2)):
        cursors = [c for _, _, ph, c in got if ph == phase]
        assert cursors == list(range(base, base + len(cursors)))
    for slot in range(slots):
        assert all(s % slots == slot for s, *_ in p.rate_arrivals(50.0, "poisson", 7, _window(**kw), slot, slots, {}))


def test_a_stopped_window_ends_the_rate_slice() -> None:
    window = _window(duration_s=100.0)
    arrivals = p.rate_arrivals(10.0, "constant", 0, window, 0, 2, {})
    first = next(arrivals)
    assert first[0] == 0 and first[2] == "measure"
    window.stop()
    assert list(arrivals) == []


def test_rate_shares_split_the_in_flight_cap() -> None:
    shares = p.rate_shares(3, 64)
    assert [s["slot"] for s in shares] == [0, 1, 2] and {s["slots"] for s in shares} == {3}
    assert sum(s["max_in_flight"] for s in shares) == 64
    assert [s["max_in_flight"] for s in p.rate_shares(3, 2)] == [1, 1, 1]  # never 0: that would be no cap
    assert p.rate_shares(2, None)[0]["max_in_flight"] is None


def test_items_walk_as_in_the_runner() -> None:
    items = tuple(Item(str(i), None, f"p{i}") for i in range(5))
    assert p.item_for(items, "measure", 7) == (items[2], 1)
    assert p.item_for(items, "warmup", 0) == (items[4], 0)
    assert p.item_for(items, "warmup", 6) == (items[3], 1)
    item = Item("x", [{"role": "user", "content": "hi"}], None, {"a": 1}, ("hard",), 12, {"labels": ["q"]})
    assert p.item_from_dict(p.item_to_dict(item)) == item
    assert p.request_id("sim", 2, "measure", 41) == "sim-L2-m41"


def test_clock_offset_takes_the_shortest_round_trip() -> None:
    # Worker clock = master + 1_000_000; the second ping had the shortest round trip (symmetric).
    samples = [(100, 1_000_900, 1_300), (2_000, 1_002_050, 2_100), (3_000, 1_003_400, 3_900)]
    offset, rtt = p.clock_offset(samples)
    assert rtt == 100 and offset == 1_000_000


def test_records_move_into_the_master_clock() -> None:
    r = RequestRecord("t", 1, "measure", 0, "a", 0, "id", scheduled_ns=1_000, sent_ns=1_010, first_byte_ns=1_020,
                      first_token_ns=1_030, end_ns=1_100, chunk_ns=[1_030, 1_060])
    p.shift_record(r, 1_000)
    assert (r.scheduled_ns, r.sent_ns, r.first_byte_ns, r.first_token_ns, r.end_ns) == (0, 10, 20, 30, 100)
    assert r.chunk_ns == [30, 60]
    r2 = RequestRecord("t", 1, "measure", 0, "a", 0, "id", scheduled_ns=5, first_token_ns=None)
    p.shift_record(r2, 3)
    assert r2.first_token_ns is None and r2.sent_ns == 0  # "did not happen" stays so
    assert p.record_line(r).startswith(b"R {") and p.record_line(r).endswith(b"}\n")


@pytest.mark.parametrize("text,expected", [("10.0.0.5:5557", ("10.0.0.5", 5557)), ("[::1]:80", ("::1", 80)),
                                           ("host.example:1", ("host.example", 1))])
def test_parse_master(text: str, expected: tuple[str, int]) -> None:
    assert p.parse_master(text) == expected


@pytest.mark.parametrize("text", ["nohost", ":5557", "h:0", "h:99999", "h:x"])
def test_parse_master_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        p.parse_master(text)


def test_level_command_carries_the_pattern_and_window() -> None:
    from bench.distributed.engine import level_command, locust_sweep_class

    window = LevelWindow(start_ns=0, warmup_s=1.5, warmup_requests=4, duration_s=None, requests=90)
    cmd = level_command(7, ConcurrencyPattern(12), window, 12.0, 2, {"measure": 10, "warmup": 3})
    assert (cmd["index"], cmd["level_index"], cmd["pattern"], cmd["users"]) == (7, 2, "concurrency", 12)
    assert cmd["window"] == {"warmup_s": 1.5, "warmup_requests": 4, "duration_s": None, "requests": 90}
    rate = level_command(8, RatePattern(40.0, "constant", seed=3001, max_in_flight=16), window, 40.0, 1, {})
    assert (rate["pattern"], rate["rate"], rate["arrival"], rate["seed"], rate["max_in_flight"]) == (
        "rate", 40.0, "constant", 3001, 16)
    with pytest.raises(ValueError, match="HOST:PORT"):
        locust_sweep_class(2, 0, "nowhere")
    assert locust_sweep_class(2, 1, "0.0.0.0:5557").keywords["locust"].port == 5557


def test_tls_setup_sends_verification_and_extra_cas_only() -> None:
    from bench.distributed.engine import tls_setup

    assert tls_setup(None) == {"tls_verify": True, "tls_cadata": []}
    off = ssl.create_default_context()
    off.check_hostname = False
    off.verify_mode = ssl.CERT_NONE
    assert tls_setup(off)["tls_verify"] is False


def test_the_asyncio_side_never_imports_locust_or_gevent() -> None:
    code = ("import sys, bench.cli, bench.sweep_cli, bench.distributed.engine; "
            "from click.testing import CliRunner; r = CliRunner().invoke(bench.cli.main, ['--help']); "
            "assert 'locust-worker' in r.output, r.output; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent', 'zmq')]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
