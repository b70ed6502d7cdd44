"""The "small first, fall back to large" blend: fallback rate, accuracy, latency mixture, cost, sweep.

Latencies are below 2.048 ms, where the HDR histogram is exact (1 us buckets).
"""

from __future__ import annotations

from typing import Optional

import pytest
from pydantic import ValidationError

from bench.quality import ScoredResponse
from bench.records import RequestRecord
from bench.router import blend, router_problems, threshold_sweep, triggered
from bench.scenario import Pricing, Router
from bench.significance import wilson_interval

US = 1_000


def sr(target: str, item: int, correct: Optional[bool], outcome: str = "ok", *, conf: Optional[float] = None,
       level: float = 1, transport_ok: bool = True) -> ScoredResponse:
    scores: dict = {} if not transport_ok else {"label_correct": correct}
    if conf is not None:
        scores["confidence"] = conf
    return ScoredResponse(f"{target}-{item}-{level:g}", target, level, f"i{item}", 0, item, outcome,
                          transport_ok, None, scores)


# Small: i0-i2 right, i3 wrong (conf 0.6), i4/i5 right, i6 parse failure, i7 refusal, i8 timeout,
# i9 wrong without a confidence. Large: right everywhere except i9.
CONF = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.6, 4: 0.5, 5: 0.4, 6: 0.95, 7: 0.3}
SMALL = [sr("small", i, i not in (3, 9), conf=CONF.get(i)) for i in (0, 1, 2, 3, 4, 5, 9)] + [
    sr("small", 6, False, "parse_failure", conf=0.95), sr("small", 7, False, "refusal", conf=0.3),
    sr("small", 8, None, "timeout", transport_ok=False),
    sr("small", 6, True, level=4),   # a later response to i6: not canonical, ignored
    sr("small", 10, True),           # no large response to pair with
]
LARGE = [sr("large", i, i != 9) for i in range(10)]
SCORED = SMALL + LARGE
ROUTER = Router(small="small", large="large")
SLICES = {f"i{i}": ("easy",) if i < 5 else ("hard",) for i in range(10)}


def records(small_ttft: int = 100 * US, small_e2e: int = 800 * US, large_ttft: int = 300 * US,
            large_e2e: int = 1200 * US) -> list[RequestRecord]:
    out = []
    for r in SCORED:
        ttft, e2e = (small_ttft, small_e2e) if r.target == "small" else (large_ttft, large_e2e)
        first = None if not r.transport_ok else 10**9 + ttft
        out.append(RequestRecord(target=r.target, level=r.level, phase="measure", seq=r.seq,
                                 item_id=r.item_id, repeat=0, request_id=r.request_id,
                                 scheduled_ns=10**9, sent_ns=10**9,
                                 first_token_ns=first, end_ns=10**9 + e2e,
                                 error=None if r.transport_ok else "timeout"))
    return out


def test_triggered_policies() -> None:
    assert triggered(SMALL[7], ROUTER.policies, None) == ["parse_failure"]
    assert triggered(SMALL[9], ROUTER.policies, None) == ["transport_error"]
    assert triggered(SMALL[0], ["low_confidence"], 0.95) == ["low_confidence"]   # 0.9 < 0.95
    assert triggered(SMALL[0], ["low_confidence"], 0.9) == []                    # not below
    assert triggered(SMALL[6], ["low_confidence"], 1.0) == []                    # i9: no confidence


def test_blend_fallback_rate_and_accuracy() -> None:
    out = blend(SCORED, None, ROUTER, "label_correct", items=SLICES, min_slice_n=5)
    assert out["n_items"] == 10 and out["unpaired"] == {"small_only": 1, "large_only": 0}
    fb = out["fallback"]
    assert (fb["count"], fb["rate"]) == (3, 0.3) and fb["ci95"] == list(wilson_interval(3, 10))
    assert fb["by_policy"] == {"parse_failure": 1, "schema_failure": 0, "refusal": 1, "transport_error": 1}
    q = out["quality"]
    assert list(q) == ["all", "easy", "hard"]
    # served by small: i0-i5, i9 (i3, i9 wrong); by large: i6, i7, i8 (right) -> 8/10.
    assert q["all"]["blended"]["value"] == 0.8 and q["all"]["blended"]["ci95"] == list(wilson_interval(8, 10))
    assert q["all"]["small_alone"]["value"] == 0.5   # the timeout counts as wrong
    assert q["all"]["large_alone"]["value"] == 0.9
    assert (q["easy"]["n_items"], q["easy"]["fallback_rate"], q["easy"]["blended"]["value"]) == (5, 0.0, 0.8)
    assert (q["hard"]["fallback_rate"], q["hard"]["blended"]["value"]) == (0.6, 0.8)
    assert "warning" not in q["hard"]["blended"]
    assert out["confidence_missing"] == 1 and out["cost"] is None and out["latency"]["n"] == 0


def test_blend_low_confidence_policy() -> None:
    router = Router(small="small", large="large", policies=["low_confidence"], confidence_threshold=0.65)
    out = blend(SCORED, None, router, "label_correct")
    # below 0.65: i3 (0.6), i4 (0.5), i5 (0.4), i7 (0.3) -> all answered right by the large model.
    assert out["fallback"]["count"] == 4 and out["fallback"]["by_policy"] == {"low_confidence": 4}
    # small keeps i6 (parse failure, wrong), i8 (timeout, wrong), i9 (wrong): 7/10.
    assert out["quality"]["all"]["blended"]["value"] == 0.7


def test_blend_latency_mixture_sequential_fallback_pays_both() -> None:
    out = blend(SCORED, records(), ROUTER, "label_correct")
    lat = out["latency"]
    assert (lat["n"], lat["missing"], lat["no_first_token"]) == (10, 0, 0)
    e2e, ttft = lat["e2e_ms"], lat["ttft_ms"]
    # 7 served by small: E2E 0.8, TTFT 0.1; 3 fallbacks: E2E 0.8 + 1.2 = 2.0, TTFT 0.8 + 0.3 = 1.1.
    assert (e2e["count"], e2e["min"], e2e["p50"], e2e["p90"], e2e["max"]) == (10, 0.8, 0.8, 2.0, 2.0)
    assert e2e["mean"] == pytest.approx(0.7 * 0.8 + 0.3 * 2.0)
    assert (ttft["count"], ttft["p50"], ttft["p90"], ttft["max"]) == (10, 0.1, 1.1, 1.1)
    assert lat["small_alone"]["ttft_ms"]["count"] == 9  # the timed-out request had no first token
    assert lat["small_alone"]["e2e_ms"]["max"] == 0.8 and lat["large_alone"]["e2e_ms"]["max"] == 1.2


def test_blend_latency_accepts_a_mapping_of_tuples_and_counts_missing() -> None:
    lat = {r.request_id: (r.first_token_ns - r.sent_ns if r.first_token_ns else None, r.end_ns - r.sent_ns)
           for r in records()}
    assert blend(SCORED, lat, ROUTER, "label_correct")["latency"]["e2e_ms"]["max"] == 2.0
    del lat["large-6-1"]  # i6 falls back, but the large request's latency is unknown
    out = blend(SCORED, lat, ROUTER, "label_correct")["latency"]
    assert (out["n"], out["missing"], out["e2e_ms"]["count"]) == (9, 1, 9)


def level(target: str, lvl: float, rps: float) -> dict:
    return {"target": target, "level": lvl, "throughput": {"requests_per_s": rps}, "requests": {"ok": 10},
            "tokens": {"output_total": 100}}


def test_blend_cost_small_always_plus_large_on_fallback() -> None:
    levels = [level("small", 1, 2.0), level("small", 4, 4.0), level("large", 1, 1.0), level("large", 4, 2.0)]
    pricing = Pricing(per_instance_hour={"default": 3.6})  # 0.001 / rps per request
    cost = blend(SCORED, None, ROUTER, "label_correct", pricing=pricing, levels=levels)["cost"]
    # default: highest level: small 0.25 / 1k, large 0.5 / 1k -> 0.25 + 0.3 * 0.5 = 0.40.
    assert (cost["small_level"], cost["large_level"]) == (4, 4)
    assert cost["blended_cost_per_1k"] == pytest.approx(0.40)
    assert cost["percent_saved_vs_large"] == pytest.approx(20.0)
    cost = blend(SCORED, None, ROUTER, "label_correct", pricing=pricing, levels=levels,
                 cost_levels={"small": 4, "large": 1})["cost"]
    assert cost["blended_cost_per_1k"] == pytest.approx(0.25 + 0.3 * 1.0)
    assert cost["percent_saved_vs_large"] == pytest.approx(45.0)


def test_threshold_sweep_coverage_vs_accuracy() -> None:
    sweep = threshold_sweep(SCORED, ROUTER, "label_correct")
    points = {p["threshold"]: p for p in sweep["points"]}
    assert len(points) == 21 and sweep["confidence_missing"] == 1
    assert sweep["policies"][-1] == "low_confidence"
    coverage = [p["coverage"] for p in sweep["points"]]
    assert coverage == sorted(coverage, reverse=True)  # never grows with the threshold
    assert (points[0.0]["coverage"], points[0.0]["accuracy"]) == (0.7, 0.8)   # the policy fallbacks only
    assert (points[0.55]["coverage"], points[0.55]["accuracy"]) == (0.5, 0.8)  # + i4, i5 (both right)
    assert (points[0.65]["coverage"], points[0.65]["accuracy"]) == (0.4, 0.9)  # + i3: the large fixes it
    assert (points[1.0]["coverage"], points[1.0]["fallback_rate"]) == (0.1, 0.9)  # i9 has no confidence
    assert (sweep["small_alone_accuracy"], sweep["large_alone_accuracy"]) == (0.5, 0.9)
    custom = threshold_sweep(SCORED, ROUTER, "label_correct", thresholds=[0.85, 0.2])
    assert [p["threshold"] for p in custom["points"]] == [0.2, 0.85]


def test_router_validation_and_problems() -> None:
    assert ROUTER.thresholds[0] == 0.0 and ROUTER.thresholds[-1] == 1.0 and len(ROUTER.thresholds) == 21
    with pytest.raises(ValidationError, match="confidence_threshold"):
        Router(small="a", large="b", policies=["low_confidence"])
    with pytest.raises(ValidationError, match="different"):
        Router(small="a", large="a")
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        Router(small="a", large="b", thresholds=[1.5])
    with pytest.raises(ValidationError):
        Router(small="a", large="b", policies=["typo"])
    assert router_problems(ROUTER, {"small": "candidate", "large": "baseline"}) == []
    assert router_problems(ROUTER, {"small": "candidate"}) == ["router.large: 'large' is not a target"]
    swapped = Router(small="large", large="small")
    assert router_problems(swapped, {"small": "candidate", "large": "baseline"}) == [
        "router.small: 'large' is the baseline; the small model is a candidate"]
