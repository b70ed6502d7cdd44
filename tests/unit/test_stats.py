"""Statistics from synthetic records, checked against the definitions in bench/stats.py.

Latencies below 2.048 ms are exact in the HDR histogram (1 us buckets), so those tests
compare exact values; larger ones are checked within the histogram's 0.1 %.
"""

from __future__ import annotations

import pytest

from bench.records import RequestRecord
from bench.stats import LevelAccumulator, cold_summary, summarize_records

US = 1_000
MS = 1_000_000
S = 1_000_000_000
BASE = 100 * S


def rec(*, sent: int, first: int | None = None, chunks: list[int] | None = None, end: int,
        out: int | None = None, prompt: int | None = 10, phase: str = "measure", error: str | None = None,
        scheduled: int | None = None, target: str = "t", level: float = 1, finish: str | None = "stop",
        seq: int = 0) -> RequestRecord:
    chunks = list(chunks or ([] if first is None else [first]))
    return RequestRecord(
        target=target, level=level, phase=phase, seq=seq, item_id=f"i{seq}", repeat=0, request_id=f"r{seq}",
        scheduled_ns=sent if scheduled is None else scheduled, sent_ns=sent, first_token_ns=first,
        end_ns=end, chunk_ns=chunks, error=error, finish_reason=None if error else finish,
        prompt_tokens=prompt, output_tokens=out,
    )


def values(summary: dict) -> tuple:
    return summary["count"], summary["min"], summary["max"]


# Record A: TTFT 1.2 ms; chunks +1.2, +1.4, +1.7, +1.8 ms; end +2.0 ms; 5 output tokens.
#   ITL = 0.2, 0.3, 0.1 ms; TPOT = (2.0 - 1.2) / (5 - 1) = 0.2 ms; E2E = 2.0 ms
# Record B: TTFT 1.0 ms; chunks +1.0, +1.4 ms; end +1.4 ms; 3 output tokens.
#   ITL = 0.4 ms; TPOT = 0.4 / 2 = 0.2 ms; E2E = 1.4 ms
A = dict(sent=BASE, first=BASE + 1_200 * US, end=BASE + 2_000 * US, out=5,
         chunks=[BASE + 1_200 * US, BASE + 1_400 * US, BASE + 1_700 * US, BASE + 1_800 * US])
B0 = BASE + 10 * MS
B = dict(sent=B0, first=B0 + 1_000 * US, end=B0 + 1_400 * US, out=3,
         chunks=[B0 + 1_000 * US, B0 + 1_400 * US])


def test_metric_definitions_exact() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(**A, seq=0))
    acc.add(rec(**B, seq=1))
    m = acc.summary()["metrics"]
    assert set(m) == {"ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"}
    assert values(m["ttft_ms"]) == (2, 1.0, 1.2)
    assert values(m["itl_ms"]) == (4, 0.1, 0.4)
    assert values(m["tpot_ms"]) == (2, 0.2, 0.2)
    assert values(m["e2e_ms"]) == (2, 1.4, 2.0)
    assert m["ttft_ms"]["mean"] == 1.1
    assert m["itl_ms"]["p50"] == 0.2  # {0.1, 0.2, 0.3, 0.4}: nearest rank 2
    assert m["e2e_ms"]["p99"] == 2.0


def test_tpot_uses_usage_tokens_not_chunks() -> None:
    # One multi-token chunk then the end: 2 chunks, but 41 tokens per usage.
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(sent=BASE, first=BASE + 1_000 * US, chunks=[BASE + 1_000 * US, BASE + 1_800 * US],
                end=BASE + 1_800 * US, out=41))
    s = acc.summary()
    assert values(s["metrics"]["tpot_ms"]) == (1, 0.02, 0.02)  # 800 us / 40
    assert values(s["metrics"]["itl_ms"]) == (1, 0.8, 0.8)
    assert s["tokens"]["output_total"] == 41 and s["tokens"]["usage_missing"] == 0


def test_tpot_skipped_for_single_token() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(sent=BASE, first=BASE + 1 * MS, end=BASE + 1 * MS, out=1))
    m = acc.summary()["metrics"]
    assert m["tpot_ms"]["count"] == 0 and m["tpot_ms"]["p50"] is None
    assert m["itl_ms"]["count"] == 0
    assert m["ttft_ms"]["count"] == 1


def test_larger_latencies_within_histogram_precision() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    first = BASE + 250 * MS
    chunks = [first + k * 20 * MS for k in range(11)]
    acc.add(rec(sent=BASE, first=first, chunks=chunks, end=chunks[-1] + 5 * MS, out=101))
    m = acc.summary()["metrics"]
    assert m["ttft_ms"]["p50"] == pytest.approx(250, rel=1e-3)
    assert m["itl_ms"]["p50"] == pytest.approx(20, rel=1e-3) and m["itl_ms"]["count"] == 10
    assert m["tpot_ms"]["p50"] == pytest.approx(205 / 100, rel=1e-3)
    assert m["e2e_ms"]["p50"] == pytest.approx(455, rel=1e-3)


def test_usage_missing_counted_and_chunk_fallback() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(**{**A, "out": None}))  # no usage: 4 chunks used as a fallback
    acc.add(rec(**B))
    s = acc.summary()
    assert s["tokens"] == {"output_total": 4 + 3, "prompt_total": 20, "usage_missing": 1}
    # TPOT with the fallback: (2.0 - 1.2) / (4 - 1) ms = 266_666 ns -> 267 us
    assert s["metrics"]["tpot_ms"]["max"] == 0.267


def test_warmup_and_cold_excluded() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(**A))
    acc.add(rec(sent=BASE, first=BASE + 900 * US, end=BASE + 1_900 * US, out=2, phase="warmup"))
    acc.add(rec(sent=BASE, first=BASE + 1_900 * US, end=BASE + 2_000 * US, out=2, phase="cold"))
    acc.add(rec(sent=BASE, end=BASE + 5 * MS, phase="warmup", error="timeout"))
    s = acc.summary()
    assert s["requests"]["measured"] == 1 and s["requests"]["warmup"] == 2 and s["requests"]["cold"] == 1
    assert s["requests"]["failed"] == 0 and s["error_rate"] == 0.0
    assert values(s["metrics"]["ttft_ms"]) == (1, 1.2, 1.2)
    assert s["tokens"]["output_total"] == 5
    assert s["window_s"] == pytest.approx(2.0e-3)


def test_error_rate_excludes_cancelled_from_denominator() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    for i in range(6):
        acc.add(rec(**B, seq=i))
    for i, err in enumerate(["http_5xx", "http_5xx", "timeout", "cancelled"], start=6):
        acc.add(rec(sent=B0, end=B0 + 3 * MS, error=err, seq=i))
    s = acc.summary()
    assert s["requests"]["measured"] == 10 and s["requests"]["ok"] == 6 and s["requests"]["failed"] == 4
    assert s["requests"]["errors"] == {"timeout": 1, "http_5xx": 2, "cancelled": 1}
    assert list(s["requests"]["errors"]) == ["timeout", "http_5xx", "cancelled"]  # ERROR_CLASSES order
    assert s["error_rate"] == pytest.approx(3 / 9)
    # Failed requests contribute no latency samples.
    assert s["metrics"]["e2e_ms"]["count"] == 6


def test_error_rate_none_when_everything_cancelled() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(sent=BASE, end=BASE + MS, error="cancelled"))
    s = acc.summary()
    assert s["error_rate"] is None and s["requests"]["ok"] == 0
    assert s["throughput"]["requests_per_s"] == 0.0


def test_error_with_first_token_not_in_latencies() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(**{**A, "error": "broken_stream"}))
    s = acc.summary()
    assert s["metrics"]["ttft_ms"]["count"] == 0 and s["metrics"]["itl_ms"]["count"] == 0
    assert s["error_rate"] == 1.0 and s["tokens"]["output_total"] == 0


def test_finish_reasons_counted_for_ok_only() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(**A, finish="length"))
    acc.add(rec(**B, finish="stop"))
    acc.add(rec(**B, finish="length"))
    acc.add(rec(**B, error="truncated"))
    assert acc.summary()["finish_reasons"] == {"length": 2, "stop": 1}


def test_concurrency_throughput_window() -> None:
    acc = LevelAccumulator("t", 4, "concurrency")
    # Window: first measured send (BASE + 1 s) .. last end (BASE + 5 s) = 4 s.
    acc.add(rec(sent=BASE + 1 * S, first=BASE + 2 * S, end=BASE + 3 * S, out=100, scheduled=BASE))
    acc.add(rec(sent=BASE + 2 * S, first=BASE + 3 * S, end=BASE + 5 * S, out=60, scheduled=BASE))
    acc.add(rec(sent=BASE + 3 * S, end=BASE + 4 * S, error="http_5xx"))
    acc.add(rec(sent=BASE, first=BASE + S, end=BASE + 9 * S, out=500, phase="warmup"))
    s = acc.summary()
    assert s["window_s"] == 4.0
    # ok / window, output tokens / window; achieved rate: 3 sends span 2 intervals over 2 s.
    assert s["throughput"] == {"requests_per_s": 0.5, "output_tokens_per_s": 40.0, "achieved_rate_per_s": 1.0}
    assert "client_lag_ms" not in s["metrics"]


def test_achieved_rate_needs_two_sends() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec(**B))
    assert acc.summary()["throughput"]["achieved_rate_per_s"] is None
    acc.add(rec(sent=B0 + 250 * MS, first=B0 + 251 * MS, end=B0 + 252 * MS, out=2))
    assert acc.summary()["throughput"]["achieved_rate_per_s"] == pytest.approx(4.0)


def test_rate_mode_from_scheduled_and_client_lag() -> None:
    acc = LevelAccumulator("t", 2.0, "rate")
    sched = BASE
    acc.add(rec(scheduled=sched, sent=sched + 500 * US, first=sched + 1_500 * US, end=sched + 1_900 * US,
                out=3,
                chunks=[sched + 1_500 * US, sched + 1_700 * US]))
    acc.add(rec(scheduled=sched + 10 * MS, sent=sched + 10 * MS, first=sched + 11 * MS,
                end=sched + 11 * MS + 200 * US,
                out=2))
    s = acc.summary()
    m = s["metrics"]
    assert set(m) == {"ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "ttft_from_scheduled_ms",
                      "e2e_from_scheduled_ms", "client_lag_ms"}
    assert values(m["client_lag_ms"]) == (2, 0.001, 0.5)  # zero lag is clamped to the 1 us floor
    assert values(m["ttft_ms"]) == (2, 1.0, 1.0)                 # from sent
    assert values(m["ttft_from_scheduled_ms"]) == (2, 1.0, 1.5)  # from scheduled
    assert values(m["e2e_ms"]) == (2, 1.2, 1.4)
    assert values(m["e2e_from_scheduled_ms"]) == (2, 1.2, 1.9)
    # Rate-mode window opens at the first *scheduled* time.
    assert s["window_s"] == pytest.approx((11.2 * MS) / S)


def test_rate_mode_lag_never_negative() -> None:
    acc = LevelAccumulator("t", 2.0, "rate")
    acc.add(rec(scheduled=BASE + MS, sent=BASE, first=BASE + MS, end=BASE + 2 * MS, out=2))
    # max(0, sent - scheduled), then the histogram's 1 us floor
    assert values(acc.summary()["metrics"]["client_lag_ms"]) == (1, 0.001, 0.001)


def test_empty_level_summary() -> None:
    s = LevelAccumulator("t", 1, "concurrency").summary()
    assert s["window_s"] is None and s["error_rate"] is None
    assert s["throughput"] == {"requests_per_s": None, "output_tokens_per_s": None,
                               "achieved_rate_per_s": None}
    assert s["metrics"]["ttft_ms"]["p50"] is None


def test_summarize_records_groups_and_skips_cold() -> None:
    records = [
        rec(**A, target="base", level=1),
        rec(**B, target="cand", level=1),
        rec(**B, target="base", level=4),
        rec(**B, target="base", level=1, phase="cold"),
        rec(**A, target="base", level=1, phase="warmup"),
    ]
    out = summarize_records(records, {"base": "concurrency", "cand": "rate"})
    assert [(s["target"], s["level"], s["pattern"]) for s in out] == [
        ("base", 1, "concurrency"), ("cand", 1, "rate"), ("base", 4, "concurrency")]
    assert out[0]["requests"]["measured"] == 1 and out[0]["requests"]["warmup"] == 1
    assert out[0]["requests"]["cold"] == 0  # cold records are reported by cold_summary
    assert "client_lag_ms" in out[1]["metrics"]


def test_cold_summary() -> None:
    records = [rec(**A, phase="cold"), rec(**B, phase="measure"),
               rec(sent=BASE, end=BASE + 3 * MS, phase="cold", error="http_5xx", out=None)]
    out = cold_summary(records)["requests"]
    assert out == [
        {"item_id": "i0", "error": None, "ttft_ms": 1.2, "e2e_ms": 2.0, "output_tokens": 5},
        {"item_id": "i0", "error": "http_5xx", "ttft_ms": None, "e2e_ms": 3.0, "output_tokens": None},
    ]
