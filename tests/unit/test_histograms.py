"""LatencyHistogram: accuracy, out-of-range accounting, merging and encoding."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.histograms import HIGHEST_US, PERCENTILES, LatencyHistogram

US = 1_000
MS = 1_000_000


def exact_percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile (what HDR reports, up to its bucket precision)."""
    rank = max(1, math.ceil(Fraction(str(p)) / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@pytest.mark.parametrize("name", ["uniform", "exponential", "lognormal", "bimodal"])
def test_percentiles_of_known_distributions_within_0_1_percent(name: str) -> None:
    rng = random.Random(1234)
    gen = {
        "uniform": lambda: rng.uniform(1, 2_000),             # ms
        "exponential": lambda: rng.expovariate(1 / 150),
        "lognormal": lambda: rng.lognormvariate(4.0, 1.0),
        "bimodal": lambda: rng.choice([rng.gauss(20, 2), rng.gauss(900, 50)]),
    }[name]
    values_ns = [max(1, round(gen() * 1000)) * US for _ in range(50_000)]  # whole microseconds
    h = LatencyHistogram.from_ns(values_ns)
    s = h.summary_ms()
    ordered = sorted(values_ns)
    assert s["count"] == len(values_ns) and s["out_of_range"] == 0
    for p in PERCENTILES:
        want_ms = exact_percentile(ordered, p) / MS
        got = s["p" + f"{p:g}".replace(".", "_")]
        assert got == pytest.approx(want_ms, rel=1e-3), (p, got, want_ms)
    assert s["max"] == pytest.approx(ordered[-1] / MS, rel=1e-3)
    assert s["min"] == pytest.approx(ordered[0] / MS, rel=1e-3)
    assert s["mean"] == pytest.approx(sum(values_ns) / len(values_ns) / MS, rel=1e-3)


def test_summary_keys_and_single_value() -> None:
    h = LatencyHistogram.from_ns([1_500 * US])  # below 2048 us: exact
    s = h.summary_ms()
    assert set(s) == {"count", "out_of_range", "p50", "p90", "p95", "p99", "p99_9",
                      "mean", "max", "min", "hdr"}
    assert (s["p50"], s["p99_9"], s["min"], s["max"], s["mean"]) == (1.5, 1.5, 1.5, 1.5, 1.5)


def test_rounds_to_nearest_microsecond() -> None:
    h = LatencyHistogram.from_ns([1_499, 1_500])
    assert (h.hist.get_min_value(), h.hist.get_max_value()) == (1, 2)


def test_sub_microsecond_clamped_not_lost() -> None:
    h = LatencyHistogram.from_ns([0, 1, 499])
    assert h.count == 3 and h.out_of_range == 0
    assert h.hist.get_max_value() == 1


def test_out_of_range_counted_not_dropped() -> None:
    h = LatencyHistogram.from_ns([-1, -5 * MS, 10 * 3_600 * 1_000 * MS, 5 * MS])  # negative, 10 hours, ok
    assert h.count == 1
    assert h.out_of_range == 3
    s = h.summary_ms()
    assert s["out_of_range"] == 3 and s["count"] == 1


def test_one_hour_is_in_range() -> None:
    h = LatencyHistogram.from_ns([HIGHEST_US * US])
    assert h.count == 1 and h.out_of_range == 0
    assert h.summary_ms()["max"] == pytest.approx(3_600_000, rel=1e-3)


def test_empty_summary_has_none() -> None:
    s = LatencyHistogram.empty().summary_ms()
    assert s["count"] == 0 and s["out_of_range"] == 0 and s["hdr"] == ""
    for key in ("p50", "p90", "p95", "p99", "p99_9", "mean", "max", "min"):
        assert s[key] is None, key


def test_only_out_of_range_summary_has_none_but_counts() -> None:
    s = LatencyHistogram.from_ns([-1]).summary_ms()
    assert s["p50"] is None and s["out_of_range"] == 1 and s["count"] == 0


HOUR_NS = 3_600 * 10**9
_in_range = st.one_of(st.integers(min_value=0, max_value=HOUR_NS), st.integers(min_value=1, max_value=10**10))
_out_of_range = st.one_of(st.integers(max_value=-1),
                          st.integers(min_value=2 * HOUR_NS, max_value=100 * HOUR_NS))


@settings(max_examples=40, deadline=None)
@given(a=st.lists(_in_range, min_size=1, max_size=60), b=st.lists(_in_range, min_size=1, max_size=60),
       a_bad=st.lists(_out_of_range, max_size=3), b_bad=st.lists(_out_of_range, max_size=3))
def test_merge_equals_recording_all(a: list[int], b: list[int], a_bad: list[int], b_bad: list[int]) -> None:
    ha, hb = LatencyHistogram.from_ns(a + a_bad), LatencyHistogram.from_ns(b + b_bad)
    ha.merge(hb)
    both = LatencyHistogram.from_ns(a + b + a_bad + b_bad)
    assert ha.count == both.count == len(a) + len(b)
    assert ha.out_of_range == both.out_of_range == len(a_bad) + len(b_bad)
    assert ha.encode() == both.encode()
    assert ha.hist.get_max_value() == both.hist.get_max_value()
    assert ha.hist.get_min_value() == both.hist.get_min_value()
    assert ha.hist.get_value_at_percentile(90) == both.hist.get_value_at_percentile(90)


def test_merge_with_empty_keeps_min() -> None:
    h = LatencyHistogram.from_ns([5 * MS, 7 * MS])
    h.merge(LatencyHistogram.empty())
    assert h.summary_ms()["min"] == pytest.approx(5.0, rel=1e-3)


def test_merge_into_empty() -> None:
    h = LatencyHistogram.empty()
    h.merge(LatencyHistogram.from_ns([3 * MS, -1]))
    assert (h.count, h.out_of_range) == (1, 1)


@settings(max_examples=15, deadline=None)
@given(values=st.lists(st.integers(min_value=1, max_value=HOUR_NS), min_size=1, max_size=80),
       oor=st.integers(min_value=0, max_value=5))
def test_encode_decode_round_trip(values: list[int], oor: int) -> None:
    h = LatencyHistogram.from_ns(values)
    enc = h.encode()
    assert isinstance(enc, str) and enc.isascii() and enc
    back = LatencyHistogram.decode(enc, out_of_range=h.out_of_range + oor)
    assert back.count == h.count
    assert back.out_of_range == h.out_of_range + oor
    s1, s2 = h.summary_ms(), back.summary_ms()
    s1.pop("out_of_range"), s2.pop("out_of_range")
    assert s1 == s2


def test_decode_empty_string() -> None:
    h = LatencyHistogram.decode("", out_of_range=2)
    assert h.count == 0 and h.out_of_range == 2
    assert h.encode() == ""
    h.record_ns(1 * MS)  # a decoded empty histogram is usable
    assert h.count == 1


def test_batched_recording_equals_one_by_one_recording():
    """record_many_ns quantizes in numpy; percentiles, counts, min/max, out-of-range and the
    HDR encoding must be exactly what per-value record_ns gives, across every bucket."""
    import random

    rng = random.Random(3)
    for _ in range(150):
        values = [rng.choice([rng.randint(-5, 3000), rng.randint(0, 50_000_000), int(rng.expovariate(1 / 2e7)),
                              rng.randint(0, 5 * 3_600_000_000_000), 2 ** rng.randint(0, 40) * 1000 - rng.randint(0, 1)])
                  for _ in range(rng.randint(1, 2000))]
        one, many = LatencyHistogram.empty(), LatencyHistogram.empty()
        for v in values:
            one.record_ns(v)
        many.record_many_ns(values)
        assert many.summary_ms() == one.summary_ms()


def test_level_accumulator_batches_itl_and_flushes_on_summary():
    from bench.records import RequestRecord
    from bench.stats import LevelAccumulator

    acc = LevelAccumulator("t", 1, "concurrency")
    rec = RequestRecord(target="t", level=1, phase="measure", seq=0, item_id="i", repeat=0, request_id="r",
                        scheduled_ns=0, sent_ns=0, first_token_ns=1_000_000, end_ns=5_000_000,
                        chunk_ns=[1_000_000, 2_000_000, 4_000_000], output_tokens=3)
    acc.add(rec)
    itl = acc.summary()["metrics"]["itl_ms"]
    assert itl["count"] == 2 and itl["min"] == 1.0 and abs(itl["max"] - 2.0) < 0.01
