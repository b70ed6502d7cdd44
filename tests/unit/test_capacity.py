"""Capacity, goodput and next-level suggestions from synthetic level summaries and records."""

from __future__ import annotations

from typing import Optional

import pytest

from bench.capacity import capacity, goodput, levels_by_target, slo_holds, suggest_next_levels
from bench.records import RequestRecord
from bench.scenario import Slo

MS = 1_000_000
S = 1_000_000_000


def lv(level: float, ttft95: Optional[float] = 100.0, *, ttft99: Optional[float] = 150.0, itl95: float = 10.0,
       e2e95: float = 500.0, error_rate: Optional[float] = 0.0, rps: float = 2.0, measured: int = 10,
       pattern: str = "concurrency", target: str = "t", sched: Optional[dict] = None) -> dict:
    metrics = {"ttft_ms": {"p95": ttft95, "p99": ttft99}, "itl_ms": {"p95": itl95}, "e2e_ms": {"p95": e2e95}}
    metrics.update(sched or {})
    return {"target": target, "level": level, "pattern": pattern, "requests": {"measured": measured},
            "error_rate": error_rate, "throughput": {"requests_per_s": rps}, "metrics": metrics}


SLO = Slo(ttft_p95_ms=200, error_rate=0.01)


def test_slo_holds_every_field_and_inclusive_bounds() -> None:
    slo = Slo(ttft_p95_ms=100, ttft_p99_ms=150, itl_p95_ms=10, e2e_p95_ms=500, error_rate=0.0)
    assert slo_holds(lv(1), slo) == (True, [])  # every value equals its bound: holds
    holds, reasons = slo_holds(lv(1, 120, ttft99=160, itl95=11, e2e95=501, error_rate=0.05), slo)
    assert not holds
    assert reasons == ["TTFT p95 120.0 ms > SLO 100 ms", "TTFT p99 160.0 ms > SLO 150 ms",
                       "ITL p95 11.0 ms > SLO 10 ms", "E2E p95 501.0 ms > SLO 500 ms",
                       "error rate 5.00% > SLO 0.00%"]


def test_slo_holds_unset_fields_ignored_and_missing_values_fail() -> None:
    assert slo_holds(lv(1, ttft95=10_000, error_rate=0.5), Slo(e2e_p95_ms=500)) == (True, [])
    holds, reasons = slo_holds(lv(1, ttft95=None), Slo(ttft_p95_ms=100))
    assert not holds and "not measured" in reasons[0]
    assert slo_holds(lv(1, error_rate=None), Slo(error_rate=0.1))[1] == ["error rate: no judged requests"]
    assert slo_holds(lv(1, measured=0), SLO) == (False, ["no measured requests at this level"])


def test_rate_mode_judges_latency_from_scheduled_time() -> None:
    sched = {"ttft_from_scheduled_ms": {"p95": 300.0}}
    assert slo_holds(lv(1, 100, sched=sched), SLO)[0]  # concurrency: the sent-time metric
    holds, reasons = slo_holds(lv(1, 100, pattern="rate", sched=sched), SLO)
    assert not holds and reasons == ["TTFT p95 300.0 ms > SLO 200 ms"]


def test_capacity_monotone_is_top_of_passing_prefix() -> None:
    levels = [lv(8, 900), lv(1, 50, rps=1.0), lv(4, 250), lv(2, 150, rps=1.8)]  # any order
    cap = capacity(levels, SLO)
    assert cap["capacity"] == 2 and cap["status"] == "reached" and cap["first_failing"] == 4
    assert cap["requests_per_s"] == 1.8
    assert [(x["level"], x["holds"]) for x in cap["levels"]] == [(1, True), (2, True), (4, False), (8, False)]
    assert cap["levels"][2]["reasons"] == ["TTFT p95 250.0 ms > SLO 200 ms"]
    assert cap["non_monotone"] == [] and cap["note"] == "capacity 2 (SLO fails at 4)"


def test_capacity_non_monotone_pass_above_a_failure_is_not_counted() -> None:
    levels = [lv(1, 50), lv(2, 250), lv(4, 150), lv(8, 900)]
    cap = capacity(levels, SLO)
    assert cap["capacity"] == 1 and cap["first_failing"] == 2 and cap["non_monotone"] == [4]
    assert "holds again at 4" in cap["note"]
    # An error-rate failure counts as much as a latency failure.
    cap = capacity([lv(1, 50), lv(2, 50, error_rate=0.02), lv(4, 50)], SLO)
    assert cap["capacity"] == 1 and cap["non_monotone"] == [4]


def test_capacity_not_reached_below_lowest_and_degenerate_inputs() -> None:
    cap = capacity([lv(1, 50), lv(2, 60), lv(8, 70)], SLO)
    assert cap["capacity"] == 8 and cap["status"] == "not_reached" and cap["first_failing"] is None
    assert cap["note"].startswith("capacity >= 8: not reached")
    cap = capacity([lv(1, 300), lv(2, 50)], SLO)
    assert cap["capacity"] is None and cap["status"] == "below_lowest" and cap["non_monotone"] == [2]
    assert capacity([lv(1)], Slo())["status"] == "no_slo"
    assert capacity([], SLO)["status"] == "no_levels"
    with pytest.raises(ValueError, match="one target"):
        capacity([lv(1, target="a"), lv(1, target="b")], SLO)


def test_levels_by_target_splits_result_levels() -> None:
    split = levels_by_target([lv(1, target="a"), lv(1, target="b"), lv(2, target="a")])
    assert list(split) == ["a", "b"] and [x["level"] for x in split["a"]] == [1, 2]


def rec(seq: int, sent: int, ttft: Optional[int], e2e: int, *, error: Optional[str] = None, level: float = 1,
        phase: str = "measure", target: str = "t", scheduled: Optional[int] = None) -> RequestRecord:
    return RequestRecord(target=target, level=level, phase=phase, seq=seq, item_id=f"i{seq}", repeat=0,
                         request_id=f"r{seq}", scheduled_ns=sent if scheduled is None else scheduled,
                         sent_ns=sent, first_token_ns=None if ttft is None else sent + ttft,
                         end_ns=sent + e2e, error=error)


RECORDS = [
    rec(90, -2 * S, 10 * MS, 20 * MS, phase="warmup"),         # outside the window, not counted
    rec(0, 0, 50 * MS, 400 * MS),                               # good
    rec(1, 1 * S, 150 * MS, 300 * MS),                          # TTFT too slow
    rec(2, 2 * S, 80 * MS, 600 * MS),                           # E2E too slow
    rec(3, 3 * S, None, 500 * MS, error="timeout"),             # failed: never good
    rec(4, 3_500 * MS, 100 * MS, 500 * MS),                     # exactly on both bounds: good
    rec(5, 0, 1 * MS, 9 * S, level=2),                          # another level
]


def test_goodput_counts_requests_meeting_per_request_bounds_over_the_window() -> None:
    g = goodput(RECORDS, Slo(ttft_p95_ms=100, e2e_p95_ms=500, itl_p95_ms=1, error_rate=0), 1)
    # window: first measured send (0) to last end (4.0 s); good: records 0 and 4.
    assert (g["good"], g["measured"], g["ok"], g["window_s"]) == (2, 5, 4, 4.0)
    assert g["goodput_per_s"] == pytest.approx(0.5) and g["share_good"] == pytest.approx(0.4)
    assert g["bounds_ms"] == {"ttft": 100, "e2e": 500} and g["target"] == "t"


def test_goodput_uses_tightest_ttft_bound_and_no_bound_means_throughput() -> None:
    g = goodput(RECORDS, Slo(ttft_p95_ms=100, ttft_p99_ms=80), 1)
    assert g["good"] == 2 and g["bounds_ms"]["ttft"] == 80  # records 0 (50 ms) and 2 (80 ms)
    g = goodput(RECORDS, Slo(error_rate=0.1), 1)
    assert g["good"] == 4 and g["goodput_per_s"] == pytest.approx(1.0)


def test_goodput_rate_mode_measures_from_scheduled_time() -> None:
    late = [rec(0, 100 * MS, 50 * MS, 200 * MS, scheduled=0), rec(1, 1 * S, 50 * MS, 200 * MS)]
    g = goodput(late, Slo(ttft_p95_ms=100), 1, pattern="rate")
    assert g["good"] == 1 and g["window_s"] == pytest.approx(1.2)  # 150 ms from scheduled: too slow
    assert goodput(late, Slo(ttft_p95_ms=100), 1)["good"] == 2


def test_goodput_several_targets_need_target_and_empty_level() -> None:
    mixed = [rec(0, 0, MS, 2 * MS, target="a"), rec(1, 0, MS, 2 * MS, target="b")]
    with pytest.raises(ValueError, match="target="):
        goodput(mixed, SLO, 1)
    assert goodput(mixed, SLO, 1, target="b")["good"] == 1
    empty = goodput(mixed, SLO, 3)
    assert empty["goodput_per_s"] is None and empty["measured"] == 0 and empty["share_good"] is None


def test_suggest_bisects_concurrency_with_whole_numbers() -> None:
    out = suggest_next_levels([lv(1, 50), lv(8, 900)], SLO)
    assert out == {"levels": [4], "bracket": [1, 8], "resolved": False,
                   "reason": "bisect between 1 (holds) and 8 (fails)"}
    assert isinstance(out["levels"][0], int)
    assert suggest_next_levels([lv(1, 50), lv(4, 50), lv(8, 900)], SLO)["levels"] == [6]
    done = suggest_next_levels([lv(2, 50), lv(3, 900)], SLO)
    assert done["levels"] == [] and done["resolved"] and done["bracket"] == [2, 3]


def test_suggest_rate_uses_floats_and_a_relative_tolerance() -> None:
    out = suggest_next_levels([lv(1.0, 50, pattern="rate"), lv(2.0, 900, pattern="rate")], SLO)
    assert out["levels"] == [1.5] and isinstance(out["levels"][0], float)
    close = suggest_next_levels([lv(1.0, 50, pattern="rate"), lv(1.04, 900, pattern="rate")], SLO)
    assert close["levels"] == [] and close["resolved"]


def test_suggest_outside_the_measured_range() -> None:
    assert suggest_next_levels([lv(1, 50), lv(2, 50)], SLO)["levels"] == [4]
    assert suggest_next_levels([lv(1, 50), lv(2, 50)], SLO, max_level=3)["levels"] == [3]
    capped = suggest_next_levels([lv(1, 50), lv(2, 50)], SLO, max_level=2)
    assert capped["levels"] == [] and not capped["resolved"]
    assert suggest_next_levels([lv(4, 900)], SLO)["levels"] == [2]
    lowest = suggest_next_levels([lv(1, 900)], SLO)
    assert lowest["levels"] == [] and lowest["resolved"]
    assert suggest_next_levels([lv(0.5, 900, pattern="rate")], SLO)["levels"] == [0.25]
    assert suggest_next_levels([lv(1)], Slo())["levels"] == []
