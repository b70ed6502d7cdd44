"""bench/gates.py and bench/gate_eval.py: the gate grammar, rate / relative / latency verdicts, Holm, exit codes.

Synthetic inputs only (no network). Expected numbers are worked out by hand from the Wilson formula
(one-sided 95 % = two-sided 90 %, z = 1.6449, z^2 = 2.7055) or taken from bench.significance itself.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Optional

import pytest

from bench.dataset import Item
from bench.gate_eval import GateContext, evaluate
from bench.gates import (
    ALPHA, Gate, GateError, GateResult, _p_value, _rate_gate, apply_holm, exit_code, paired_noninferiority,
    parse_gate,
)
from bench.quality import ALL, ScoredResponse
from bench.significance import holm_adjust, noninferiority_paired, wilson_interval

LEVELS = [1.0, 4.0, 16.0]
SLICES = {"hard", "easy", "rare_label"}
KEYS = {"label_correct", "label_parsed", "json_strict_ok", "schema_valid", "field_f1", "refusal"}
LABELS = {"set_timer", "weather_query"}
Z2 = statistics.NormalDist().inv_cdf(0.95) ** 2  # one-sided 95 %: 2.7055


def parse(text: str) -> Gate:
    return parse_gate(text, LEVELS, SLICES, KEYS, LABELS)


def parse_error(text: str) -> str:
    with pytest.raises(GateError) as info:
        parse(text)
    msg = str(info.value)
    assert "\n" not in msg
    assert text.strip() in msg  # every error names the gate it is about
    return msg


# -- 1. grammar ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, metric, selector, op, budget, relative, level, family", [
    ("ttft.p95 < 400ms at concurrency 16", "ttft.p95", None, "<", 400.0, False, 16.0, "latency"),
    ("ttft.p95 < 400ms", "ttft.p95", None, "<", 400.0, False, None, "latency"),
    ("itl.p50 < 30", "itl.p50", None, "<", 30.0, False, None, "latency"),                 # bare number: ms
    ("e2e.p99.9 <= 2.5s", "e2e.p99.9", None, "<=", 2500.0, False, None, "latency"),
    ("tpot.mean < 20ms at level 4", "tpot.mean", None, "<", 20.0, False, 4.0, "latency"),
    ("e2e.max < 1s at rate 1", "e2e.max", None, "<", 1000.0, False, 1.0, "latency"),
    ("ttft.p90 < 250 at 4", "ttft.p90", None, "<", 250.0, False, 4.0, "latency"),
    ("TTFT.P99 < 400MS AT CONCURRENCY 1", "ttft.p99", None, "<", 400.0, False, 1.0, "latency"),
    ("ttft.p95 < baseline + 50ms", "ttft.p95", None, "<", 50.0, True, None, "latency"),
    ("ttft.p95 < baseline+0.05s at concurrency 4", "ttft.p95", None, "<", 50.0, True, 4.0, "latency"),
    ("e2e.p50 <= Baseline - 10ms", "e2e.p50", None, "<=", -10.0, True, None, "latency"),
    ("error_rate < 0.5%", "error_rate", None, "<", 0.005, False, None, "level"),
    ("error_rate <= 1pt at concurrency 4", "error_rate", None, "<=", 0.01, False, 4.0, "level"),
    ("throughput > 1500", "throughput", None, ">", 1500.0, False, None, "level"),
    ("requests_per_s >= baseline - 2 at 16", "requests_per_s", None, ">=", -2.0, True, 16.0, "level"),
    ("accuracy >= baseline - 5pt", "accuracy", None, ">=", -0.05, True, None, "quality"),
    ("accuracy > 0.9", "accuracy", None, ">", 0.9, False, None, "quality"),
    ("json_parse_failure_rate <= baseline + 2pts", "json_parse_failure_rate", None, "<=", 0.02, True, None,
     "quality"),
    ("json_parse_failure_rate < 0.5%", "json_parse_failure_rate", None, "<", 0.005, False, None, "quality"),
    ("schema_failure_rate < 2%", "schema_failure_rate", None, "<", 0.02, False, None, "quality"),
    ("refusal_rate < 1%", "refusal_rate", None, "<", 0.01, False, None, "quality"),
    ("label_correct[hard] >= 90%", "label_correct", "hard", ">=", 0.9, False, None, "quality"),
    ("label_correct [ hard ] >= 90%", "label_correct", "hard", ">=", 0.9, False, None, "quality"),
    ("recall[rare_label] >= baseline - 10pt", "recall", "rare_label", ">=", -0.1, True, None, "quality"),
    ("recall[set_timer] > 0.8", "recall", "set_timer", ">", 0.8, False, None, "quality"),
    ("field_f1 >= 0.75", "field_f1", None, ">=", 0.75, False, None, "quality"),
    ("label_correct@e2e >= 85%", "label_correct@e2e", None, ">=", 0.85, False, None, "quality"),
    ("  label_parsed >= 90%  ", "label_parsed", None, ">=", 0.9, False, None, "quality"),
])
def test_parse_gate_forms(text, metric, selector, op, budget, relative, level, family):
    g = parse(text)
    assert g == Gate(text.strip(), metric, selector, op, pytest.approx(budget), relative, level, family)
    assert g.text == text.strip()


def test_parse_unknown_metric_lists_the_known_ones():
    msg = parse_error("bleu > 0.3")
    assert "unknown metric 'bleu'" in msg
    for known in ("ttft", "error_rate", "throughput", "requests_per_s", "label_correct", "accuracy",
                  "refusal_rate", "recall", "field_f1"):
        assert known in msg


def test_parse_failure_alias_needs_its_scorer():
    with pytest.raises(GateError, match="unknown metric 'json_parse_failure_rate'"):
        parse_gate("json_parse_failure_rate < 1%", LEVELS, SLICES, {"label_correct"})


def test_parse_unknown_slice_lists_slices():
    msg = parse_error("label_correct[nope] >= 90%")
    assert "unknown slice 'nope'" in msg and "easy, hard, rare_label" in msg


def test_parse_recall_unknown_selector_lists_labels_too():
    msg = parse_error("recall[nope] >= 90%")
    assert "unknown slice 'nope'" in msg and "labels: set_timer, weather_query" in msg


def test_parse_label_selector_only_for_recall():
    assert "unknown slice 'set_timer'" in parse_error("label_correct[set_timer] >= 90%")


def test_parse_unknown_level_lists_levels():
    msg = parse_error("ttft.p95 < 400ms at concurrency 32")
    assert "level 32 is not measured" in msg and "levels: 1, 4, 16" in msg


def test_parse_percent_on_latency():
    assert "latency budgets are in ms or s, not '%'" in parse_error("ttft.p95 < 5%")
    assert "not 'pt'" in parse_error("ttft.p95 < baseline + 5pt")


def test_parse_ms_on_a_rate_is_rejected():
    assert "not 'ms'" in parse_error("error_rate < 5ms")
    assert "not 's'" in parse_error("accuracy >= 1s")


def test_parse_ms_on_a_rate_message_does_not_recommend_ms():
    msg = parse_error("error_rate < 5ms")
    assert "ms or s" not in msg


def test_parse_selector_on_latency_or_level_metric():
    assert "[hard] selects a slice" in parse_error("ttft.p95[hard] < 400ms")
    assert "[hard] selects a slice" in parse_error("error_rate[hard] < 1%")


def test_parse_quality_gate_with_at():
    assert "quality gates are over all items" in parse_error("accuracy >= 90% at concurrency 4")


def test_parse_recall_without_selector():
    assert "recall needs a label or slice" in parse_error("recall >= 90%")


def test_parse_bad_latency_statistic():
    assert "latency statistic must be one of" in parse_error("ttft.p42 < 400ms")
    assert "latency statistic must be one of" in parse_error("ttft < 400ms")


@pytest.mark.parametrize("text", ["", "hello", "ttft.p95 400ms", "ttft.p95 < fast", "accuracy == 90%",
                                  "ttft.p95 < 400ms at", "ttft.p95 < 400ms at concurrency", "< 5%",
                                  "accuracy >= baseline * 2", "ttft.p95 < 400ms and more"])
def test_parse_garbage(text):
    with pytest.raises(GateError) as info:
        parse(text)
    assert "\n" not in str(info.value)
    assert "expected '<metric>[slice] <op> <budget> [at <level>]'" in str(info.value)


@pytest.mark.parametrize("text", ["ttft.p95 < 1.2.3ms", "ttft.p95 < 400ms at 1.2.3"])
def test_parse_malformed_number_is_a_gate_error(text):
    with pytest.raises(Exception) as info:
        parse(text)
    assert type(info.value) is GateError


# -- 2. rate gates --------------------------------------------------------------------------------------
def _upper(k: int, n: int) -> float:
    return wilson_interval(k, n, 1 - 2 * ALPHA)[1]


def test_rate_gate_pass_zero_of_1000():
    verdict, bound, needed, p = _rate_gate("<", 0, 1000, 0.005)
    assert verdict == "pass" and needed is None
    # k = 0: upper = (z^2/n) / (1 + z^2/n)
    assert bound == pytest.approx((Z2 / 1000) / (1 + Z2 / 1000), rel=1e-12)
    assert bound == pytest.approx(0.002698, abs=1e-6)
    # p: the one-sided bound touches 0.005 when z^2 = 0.005 * 1000 / 0.995
    z = math.sqrt(0.005 * 1000 / 0.995)
    assert p == pytest.approx(1 - statistics.NormalDist().cdf(z), rel=1e-6)
    assert p < ALPHA


def test_rate_gate_fail_clearly_over():
    verdict, bound, needed, p = _rate_gate("<", 50, 100, 0.05)
    assert verdict == "fail" and needed is None and p == 1.0
    assert wilson_interval(50, 100, 0.9)[0] > 0.05


def test_rate_gate_inconclusive_with_items_needed():
    verdict, bound, needed, p = _rate_gate("<", 0, 100, 0.005)
    assert verdict == "inconclusive"
    assert bound == pytest.approx(Z2 / 100 / (1 + Z2 / 100))
    assert 0.025 < bound < 0.03
    # z^2 / N / (1 + z^2 / N) < 0.005  <=>  N > z^2 * 0.995 / 0.005 = 538.4
    assert needed == 539 == math.floor(Z2 * 0.995 / 0.005) + 1
    assert _upper(0, needed) < 0.005 <= _upper(0, needed - 1)
    assert ALPHA < p < 1.0


def test_rate_gate_inconclusive_wrong_side_has_no_items_needed():
    # 1 % observed against < 0.5 %: more items at that rate would never pass
    verdict, _, needed, _ = _rate_gate("<", 1, 100, 0.005)
    assert verdict == "inconclusive" and needed is None


def test_rate_gate_greater_mirrors():
    assert _rate_gate(">", 1000, 1000, 0.9)[0] == "pass"
    assert _rate_gate(">", 50, 100, 0.9)[0] == "fail"
    verdict, bound, needed, p = _rate_gate(">", 100, 100, 0.995)
    assert verdict == "inconclusive"
    assert bound == pytest.approx(1 - _upper(0, 100))
    assert needed == 539
    assert p == pytest.approx(_rate_gate("<", 0, 100, 0.005)[3], rel=1e-9)


def test_rate_gate_no_items_is_inconclusive():
    verdict, bound, needed, _ = _rate_gate("<", 0, 0, 0.01)
    assert (verdict, bound, needed) == ("inconclusive", 1.0, None)


def test_p_value_bisection():
    assert _p_value(lambda conf: False) == 1.0
    assert _p_value(lambda conf: True) == 1e-12
    assert _p_value(lambda conf: conf <= 0.97) == pytest.approx(0.03, abs=1e-9)


# -- synthetic run results --------------------------------------------------------------------------------
def lat(count: int, **stats: float) -> dict[str, Any]:
    return {"count": count, **stats}


def level(target: str, lvl: float, *, measured: int = 100, failed: int = 0, cancelled: int = 0,
          ttft: Optional[dict] = None, e2e: Optional[dict] = None, tps: Optional[float] = 1000.0,
          rps: Optional[float] = 10.0) -> dict[str, Any]:
    errors = {}
    if failed - cancelled:
        errors["http_5xx"] = failed - cancelled
    if cancelled:
        errors["cancelled"] = cancelled
    return {
        "target": target, "level": lvl, "pattern": "concurrency",
        "requests": {"measured": measured, "ok": measured - failed, "failed": failed, "warmup": 0, "cold": 0,
                     "errors": errors},
        "throughput": {"requests_per_s": rps, "output_tokens_per_s": tps, "achieved_rate_per_s": None},
        "metrics": {"ttft_ms": ttft or {"count": 0}, "itl_ms": {"count": 0}, "tpot_ms": {"count": 0},
                    "e2e_ms": e2e or {"count": 0}},
    }


def rate(k: int, n: int) -> dict[str, Any]:
    return {"kind": "rate", "value": k / n, "n": n, "successes": k, "ci95": list(wilson_interval(k, n))}


def mean(value: float, low: float, high: float, n: int = 100) -> dict[str, Any]:
    return {"kind": "mean", "value": value, "n": n, "ci95": [low, high]}


def result(levels: list[dict], quality: Optional[dict[str, dict[str, dict]]] = None) -> dict[str, Any]:
    """quality: target -> slice -> metric -> summary."""
    q = {"primary": "label_correct", "targets": {
        t: {"slices": {s: {"n_items": 0, "outcomes": {}, "metrics": m} for s, m in slices.items()}}
        for t, slices in (quality or {}).items()}}
    return {"levels": levels, "quality": q}


def ctx_of(res: dict, canon: Optional[dict] = None, items: Optional[dict] = None,
           baseline: Optional[str] = "base", primary: Optional[str] = "label_correct") -> GateContext:
    return GateContext(res, canon or {}, items or {}, baseline, primary)


def one(text: str, ctx: GateContext, target: str = "cand") -> GateResult:
    [r] = evaluate([parse(text)], [target], ctx)
    assert r.target == target and r.gate == text.strip()
    return r


# -- 2b. rate gates through evaluate ---------------------------------------------------------------------
def test_error_rate_over_all_levels_pass():
    ctx = ctx_of(result([level("cand", 1.0, measured=600), level("cand", 4.0, measured=400),
                         level("base", 1.0, measured=100, failed=100)]))
    r = one("error_rate < 0.5%", ctx)
    assert r.verdict == "pass" and r.measured == 0.0 and r.budget == pytest.approx(0.005)
    assert r.bound == pytest.approx(_upper(0, 1000))
    assert "0/1000 failed" in r.detail and r.slice is None


def test_error_rate_excludes_cancelled():
    # 10 cancelled and 0 real failures of 1000: 0/990
    ctx = ctx_of(result([level("cand", 1.0, measured=1000, failed=10, cancelled=10)]))
    r = one("error_rate < 0.5%", ctx)
    assert r.verdict == "pass" and "0/990 failed" in r.detail
    assert r.bound == pytest.approx(_upper(0, 990))


def test_error_rate_at_one_level():
    ctx = ctx_of(result([level("cand", 1.0, measured=100, failed=50), level("cand", 4.0, measured=1000)]))
    assert one("error_rate < 5% at concurrency 1", ctx).verdict == "fail"
    assert one("error_rate < 0.5% at concurrency 4", ctx).verdict == "pass"
    r = one("error_rate < 0.5% at concurrency 16", ctx)
    assert r.verdict == "inconclusive" and "not measured at level 16" in r.detail


def test_error_rate_inconclusive_reports_items_needed():
    ctx = ctx_of(result([level("cand", 1.0, measured=100)]))
    r = one("error_rate < 0.5%", ctx)
    assert r.verdict == "inconclusive" and r.items_needed == 539
    assert r.bound == pytest.approx(_upper(0, 100))


def test_error_rate_relative_is_rejected_at_parse_time():
    # An error budget is a product fact, not a comparison: a relative one would pass a
    # candidate that fails as often as a broken baseline.
    assert "fixed budget" in parse_error("error_rate <= baseline + 1pt")


def test_relative_quality_gate_must_state_an_allowed_drop():
    assert "allowed drop" in parse_error("accuracy >= baseline + 1pt")
    assert "allowed drop" in parse_error("json_parse_failure_rate <= baseline - 1pt")


def test_quality_rate_gate_pass_fail_inconclusive():
    q = {"cand": {ALL: {"label_parsed": rate(1000, 1000), "label_correct": rate(50, 100),
                        "json_strict_ok": rate(100, 100)}}}
    ctx = ctx_of(result([], q))
    r = one("label_parsed >= 99%", ctx)
    assert r.verdict == "pass" and r.measured == 1.0 and r.p_value < ALPHA
    assert one("label_correct >= 90%", ctx).verdict == "fail"
    r = one("json_parse_failure_rate < 0.5%", ctx)  # 0 failures of 100: 1 - json_strict_ok
    assert r.verdict == "inconclusive" and r.measured == 0.0 and r.items_needed == 539
    assert "0/100 items" in r.detail


def test_failure_alias_counts_failures():
    ctx = ctx_of(result([], {"cand": {ALL: {"json_strict_ok": rate(50, 100), "schema_valid": rate(1000, 1000)}}}))
    r = one("json_parse_failure_rate < 5%", ctx)
    assert r.verdict == "fail" and r.measured == 0.5
    assert one("schema_failure_rate < 0.5%", ctx).verdict == "pass"


def test_refusal_rate_and_slice_rate():
    q = {"cand": {ALL: {"refusal": rate(0, 1000)}, "hard": {"label_correct": rate(45, 50)}}}
    ctx = ctx_of(result([], q))
    assert one("refusal_rate < 0.5%", ctx).verdict == "pass"
    r = one("label_correct[hard] >= 95%", ctx)
    assert r.slice == "hard" and r.measured == 0.9 and r.verdict == "inconclusive"


def test_quality_gate_missing_data_is_inconclusive():
    ctx = ctx_of(result([], {"cand": {ALL: {"label_correct": rate(9, 10)}}}))
    r = one("label_parsed >= 90%", ctx)
    assert r.verdict == "inconclusive" and "no scores for 'label_parsed'" in r.detail
    r = one("label_correct[hard] >= 90%", ctx)
    assert r.verdict == "inconclusive" and "no quality results for cand on slice 'hard'" in r.detail
    r = one("accuracy >= 90%", ctx_of(result([], {"cand": {ALL: {"label_correct": rate(9, 10)}}}), primary=None))
    assert r.verdict == "inconclusive" and "no primary outcome" in r.detail


def test_mean_gate_uses_the_interval():
    for (low, high), want in {(0.6, 0.8): "pass", (0.3, 0.45): "fail", (0.4, 0.7): "inconclusive"}.items():
        ctx = ctx_of(result([], {"cand": {ALL: {"field_f1": mean((low + high) / 2, low, high)}}}))
        r = one("field_f1 >= 0.5", ctx)
        assert r.verdict == want and r.bound == low


def test_accuracy_alias_uses_primary():
    ctx = ctx_of(result([], {"cand": {ALL: {"label_correct": rate(1000, 1000)}}}))
    assert one("accuracy > 99%", ctx).verdict == "pass"


def test_class_recall():
    q = {"cand": {ALL: {}}}
    res = result([], q)
    res["quality"]["targets"]["cand"]["classes"] = {"classes": {
        "set_timer": {"support": 200, "recall": 1.0}, "weather_query": {"support": 10, "recall": 0.5}}}
    ctx = ctx_of(res)
    r = one("recall[set_timer] >= 95%", ctx)
    assert r.verdict == "pass" and r.measured == 1.0 and r.slice == "set_timer"
    assert one("recall[weather_query] >= 95%", ctx).verdict == "fail"


# -- 3. relative quality gates ---------------------------------------------------------------------------
def sr(target: str, item: str, seq: int, transport_ok: bool = True, **scores: Any) -> ScoredResponse:
    return ScoredResponse(f"{target}-{item}", target, 1.0, item, 0, seq, "ok" if transport_ok else "timeout",
                          transport_ok, None, dict(scores) if transport_ok else {})


def canon_of(key: str, base: list[Any], cand: list[Any], transport: Optional[list[bool]] = None):
    transport = transport or [True] * len(base)
    ids = [f"i{i:04d}" for i in range(len(base))]
    canon = {"base": {i: sr("base", i, n, **{key: v}) for n, (i, v) in enumerate(zip(ids, base))},
             "cand": {i: sr("cand", i, n, ok, **{key: v}) for n, (i, v, ok) in enumerate(zip(ids, cand, transport))}}
    items = {i: Item(i, None, "p", None, ("hard",) if n % 2 else ()) for n, i in enumerate(ids)}
    return canon, items


@pytest.mark.parametrize("cand_right, want", [(196, "pass"), (185, "inconclusive"), (170, "fail")])
def test_accuracy_relative_matches_noninferiority(cand_right, want):
    base = [True] * 200
    cand = [True] * cand_right + [False] * (200 - cand_right)
    canon, items = canon_of("label_correct", base, cand)
    r = one("accuracy >= baseline - 5pt", ctx_of(result([]), canon, items))
    ref = noninferiority_paired(base, cand, 0.05)
    assert r.verdict == ref.verdict == want
    assert r.measured == pytest.approx(ref.difference)
    assert r.bound == pytest.approx(ref.lower)
    assert r.items_needed == ref.items_needed
    assert "paired on 200 items" in r.detail


def test_accuracy_relative_on_a_slice_uses_only_its_items():
    # odd items are 'hard': the candidate is wrong on every hard item, right on the others
    base = [True] * 200
    cand = [n % 2 == 0 for n in range(200)]
    canon, items = canon_of("label_correct", base, cand)
    ctx = ctx_of(result([]), canon, items)
    r = one("label_correct[hard] >= baseline - 5pt", ctx)
    ref = noninferiority_paired([True] * 100, [False] * 100, 0.05)
    assert r.verdict == ref.verdict == "fail" and r.slice == "hard" and "paired on 100 items" in r.detail
    assert one("accuracy >= baseline - 5pt", ctx).verdict == "fail"


def test_relative_skips_transport_failures():
    base = [True] * 200
    cand = [True] * 196 + [False] * 4
    transport = [True] * 196 + [False] * 4  # the 4 wrong ones never arrived: not paired
    canon, items = canon_of("label_correct", base, cand, transport)
    r = one("accuracy >= baseline - 5pt", ctx_of(result([]), canon, items))
    ref = noninferiority_paired([True] * 196, [True] * 196, 0.05)
    assert r.verdict == ref.verdict and "paired on 196 items" in r.detail


def test_json_failure_relative_uses_failure_booleans():
    base_ok = [True] * 200
    cand_ok = [True] * 160 + [False] * 40  # 20 % more parse failures than the baseline
    canon, items = canon_of("json_strict_ok", base_ok, cand_ok)
    r = one("json_parse_failure_rate <= baseline + 2pt", ctx_of(result([]), canon, items))
    ref = noninferiority_paired(base_ok, cand_ok, 0.02)  # fewer-failures == more-ok, same margin
    assert r.verdict == ref.verdict == "fail"
    assert r.p_value == 1.0


def test_json_failure_relative_candidate_with_fewer_failures_passes():
    base_ok = [True] * 190 + [False] * 10
    cand_ok = [True] * 200
    canon, items = canon_of("json_strict_ok", base_ok, cand_ok)
    r = one("json_parse_failure_rate <= baseline + 2pt", ctx_of(result([]), canon, items))
    assert r.verdict == noninferiority_paired(base_ok, cand_ok, 0.02).verdict == "pass"
    assert r.p_value < ALPHA


def test_json_failure_relative_measured_is_the_failure_rate_difference():
    base_ok = [True] * 200
    cand_ok = [True] * 160 + [False] * 40
    canon, items = canon_of("json_strict_ok", base_ok, cand_ok)
    r = one("json_parse_failure_rate <= baseline + 2pt", ctx_of(result([]), canon, items))
    assert r.measured == pytest.approx(0.20)  # candidate fails 20 %, baseline 0 %


def test_relative_gate_on_a_mean_metric():
    canon, items = canon_of("field_f1", [1.0] * 200, [0.1] * 200)
    r = one("field_f1 >= baseline - 5pt", ctx_of(result([]), canon, items))
    assert r.verdict == "fail"  # mean f1 dropped from 1.0 to 0.1


def test_relative_gate_needs_a_candidate_and_pairs():
    canon, items = canon_of("label_correct", [True] * 10, [True] * 10)
    r = one("accuracy >= baseline - 5pt", ctx_of(result([]), canon, items), target="base")
    assert r.verdict == "inconclusive" and "compares a candidate with the baseline" in r.detail
    r = one("accuracy >= baseline - 5pt", ctx_of(result([]), canon, items, baseline=None))
    assert r.verdict == "inconclusive"
    r = one("accuracy >= baseline - 5pt", ctx_of(result([]), {"base": {}, "cand": {}}, items))
    assert r.verdict == "inconclusive" and "no items both targets answered" in r.detail


def test_paired_noninferiority_direct():
    base = [True] * 100
    cand = [True] * 100
    v, detail, res = paired_noninferiority(base, cand, ">=", -0.05)
    assert v == noninferiority_paired(base, cand, 0.05).verdict and res.margin == 0.05
    # on a failure rate: failures are inverted into successes, same margin
    fb, fc = [False] * 90 + [True] * 10, [False] * 100
    v, _, res = paired_noninferiority(fb, fc, "<=", 0.02)
    ref = noninferiority_paired([not x for x in fb], [not x for x in fc], 0.02)
    assert v == ref.verdict and res.base_rate == pytest.approx(0.9)
    with pytest.raises(GateError, match="non-negative margin"):
        paired_noninferiority(base, cand, ">=", 0.01)


# -- 4. latency gates -------------------------------------------------------------------------------------
def test_latency_pass_and_fail_at_a_level():
    ctx = ctx_of(result([level("cand", 1.0, ttft=lat(100, p95=350.0)), level("cand", 16.0, ttft=lat(100, p95=900.0))]))
    r = one("ttft.p95 < 400ms at concurrency 1", ctx)
    assert (r.verdict, r.measured, r.budget) == ("pass", 350.0, 400.0) and "at level 1" in r.detail
    r = one("ttft.p95 < 400ms at concurrency 16", ctx)
    assert (r.verdict, r.measured) == ("fail", 900.0)
    assert one("ttft.p95 < 0.9s at 16", ctx).verdict == "fail"  # strict '<'
    assert one("ttft.p95 <= 0.9s at 16", ctx).verdict == "pass"


def test_latency_all_levels_reports_the_worst():
    ctx = ctx_of(result([level("cand", 1.0, ttft=lat(100, p95=300.0)), level("cand", 4.0, ttft=lat(100, p95=380.0)),
                         level("cand", 16.0, ttft=lat(100, p95=350.0))]))
    r = one("ttft.p95 < 400ms", ctx)
    assert (r.verdict, r.measured) == ("pass", 380.0) and "at level 4" in r.detail
    ctx = ctx_of(result([level("cand", 1.0, ttft=lat(100, p95=300.0)), level("cand", 4.0, ttft=lat(100, p95=500.0))]))
    r = one("ttft.p95 < 400ms", ctx)
    assert (r.verdict, r.measured) == ("fail", 500.0) and "at level 4" in r.detail


def test_latency_worst_of_several_failing_levels():
    ctx = ctx_of(result([level("cand", 1.0, ttft=lat(100, p95=900.0)), level("cand", 4.0, ttft=lat(100, p95=450.0))]))
    r = one("ttft.p95 < 400ms", ctx)
    assert r.verdict == "fail"
    assert r.measured == 900.0


@pytest.mark.parametrize("stat, key, need", [("p95", "p95", 20), ("p50", "p50", 2), ("p90", "p90", 10),
                                            ("p99", "p99", 100), ("p99.9", "p99_9", 1000), ("max", "max", 1)])
def test_latency_too_few_samples_for_the_percentile(stat, key, need):
    few = ctx_of(result([level("cand", 1.0, ttft=lat(need - 1, **{key: 100.0}))]))
    enough = ctx_of(result([level("cand", 1.0, ttft=lat(need, **{key: 100.0}))]))
    if need > 1:
        r = one(f"ttft.{stat} < 400ms", few)
        assert r.verdict == "inconclusive" and r.items_needed == need
        assert f"{need - 1} samples at level 1: too few for {stat} (need {need})" in r.detail
    assert one(f"ttft.{stat} < 400ms", enough).verdict == "pass"


def test_latency_missing_level_or_value():
    ctx = ctx_of(result([level("cand", 1.0, ttft=lat(100, p95=300.0))]))
    r = one("ttft.p95 < 400ms at concurrency 16", ctx)
    assert r.verdict == "inconclusive" and r.detail == "cand was not measured at level 16"
    r = one("ttft.p95 < 400ms", ctx_of(result([])))
    assert r.verdict == "inconclusive" and r.detail == "cand was not measured at any level"
    r = one("e2e.p95 < 400ms", ctx)  # e2e summary empty
    assert r.verdict == "inconclusive" and "0 samples at level 1" in r.detail


def test_latency_clear_failure_is_not_masked_by_a_thin_level():
    ctx = ctx_of(result([level("cand", 1.0, ttft=lat(5, p95=100.0)), level("cand", 16.0, ttft=lat(1000, p95=5000.0))]))
    assert one("ttft.p95 < 400ms", ctx).verdict == "fail"


def test_latency_relative():
    levels = [level("base", 1.0, ttft=lat(100, p95=300.0)), level("base", 4.0, ttft=lat(100, p95=400.0)),
              level("cand", 1.0, ttft=lat(100, p95=340.0)), level("cand", 4.0, ttft=lat(100, p95=460.0))]
    ctx = ctx_of(result(levels))
    r = one("ttft.p95 < baseline + 50ms at concurrency 1", ctx)
    assert (r.verdict, r.measured, r.budget) == ("pass", 340.0, 350.0)
    r = one("ttft.p95 < baseline + 50ms", ctx)
    assert (r.verdict, r.measured, r.budget) == ("fail", 460.0, 450.0) and "at level 4" in r.detail
    r = one("ttft.p95 < baseline + 50ms", ctx_of(result(levels[2:])))
    assert r.verdict == "inconclusive" and "baseline was not measured at level 1" in r.detail
    r = one("ttft.p95 < baseline + 50ms", ctx_of(result(levels), baseline=None))
    assert r.verdict == "inconclusive" and "needs a baseline" in r.detail


def test_throughput_gates():
    levels = [level("base", 1.0, tps=100.0), level("base", 4.0, tps=400.0),
              level("cand", 1.0, tps=120.0), level("cand", 4.0, tps=350.0)]
    ctx = ctx_of(result(levels))
    r = one("throughput > 100", ctx)
    assert (r.verdict, r.measured) == ("pass", 120.0) and "at level 1" in r.detail  # worst = lowest
    r = one("throughput >= baseline - 20 at concurrency 4", ctx)
    assert (r.verdict, r.measured, r.budget) == ("fail", 350.0, 380.0)
    assert one("throughput >= baseline - 20 at concurrency 1", ctx).verdict == "pass"
    assert one("requests_per_s >= 10", ctx).verdict == "pass"
    r = one("throughput > 1", ctx_of(result([level("cand", 1.0, tps=None)])))
    assert r.verdict == "inconclusive" and "no throughput at level 1" in r.detail


# -- 5. Holm ----------------------------------------------------------------------------------------------
def test_holm_weakest_slice_gates_become_inconclusive():
    # '> 80 %' on 100 items: 100/100 p ~ 3e-7, 89/100 p ~ 0.012, 87/100 p ~ 0.040 (each pass alone)
    q = {"cand": {"a": {"label_correct": rate(100, 100)}, "b": {"label_correct": rate(89, 100)},
                  "c": {"label_correct": rate(87, 100)}, "d": {"label_correct": rate(87, 100)},
                  ALL: {"label_correct": rate(10, 100)}}}
    slices = {"a", "b", "c", "d"}
    gates = [parse_gate(f"label_correct[{s}] > 80%", LEVELS, slices, KEYS) for s in "abcd"]
    gates.append(parse_gate("label_correct < 50%", LEVELS, slices, KEYS))  # not a slice gate: not in the family
    ctx = ctx_of(result([], q))
    raw = [_rate_gate(">", k, 100, 0.8)[3] for k in (100, 89, 87, 87)]
    assert all(p < ALPHA for p in raw)
    adjusted = holm_adjust(raw)
    assert adjusted[0] < ALPHA and adjusted[1] < ALPHA and adjusted[2] > ALPHA and adjusted[3] > ALPHA
    results = evaluate(gates, ["cand"], ctx)
    assert [r.verdict for r in results] == ["pass", "pass", "inconclusive", "inconclusive", "pass"]
    for r in results[2:4]:
        assert "not significant after Holm correction over 4 slice gates" in r.detail
    assert "Holm" not in results[0].detail and "Holm" not in results[4].detail
    # alone, every one of them passes
    for g, want in zip(gates, ["pass"] * 4):
        assert evaluate([g], ["cand"], ctx)[0].verdict == want


def test_holm_never_turns_into_fail_and_single_gate_untouched():
    rs = [GateResult("g1", "t", "pass", 0.9, 0.8, "d", p_value=0.04, slice="a"),
          GateResult("g2", "t", "pass", 0.9, 0.8, "d", p_value=0.04, slice="b"),
          GateResult("g3", "t", "fail", 0.1, 0.8, "d", p_value=1.0, slice="c"),
          GateResult("g4", "t", "inconclusive", 0.7, 0.8, "d", p_value=0.3, slice="d")]
    apply_holm(rs)
    assert [r.verdict for r in rs] == ["inconclusive", "inconclusive", "fail", "inconclusive"]
    single = [GateResult("g1", "t", "pass", 0.9, 0.8, "d", p_value=0.04, slice="a"),
              GateResult("g2", "t", "pass", 0.9, 0.8, "d", p_value=0.04)]  # no slice
    apply_holm(single)
    assert [r.verdict for r in single] == ["pass", "pass"] and single[0].detail == "d"


def test_holm_is_per_target():
    q = {t: {"c": {"label_correct": rate(87, 100)}, "d": {"label_correct": rate(87, 100)}} for t in ("cand", "cand2")}
    gates = [parse_gate(f"label_correct[{s}] > 80%", LEVELS, {"c", "d"}, KEYS) for s in "cd"]
    results = evaluate(gates, ["cand", "cand2"], ctx_of(result([], q)))
    assert [r.target for r in results] == ["cand", "cand", "cand2", "cand2"]
    assert all("over 2 slice gates" in r.detail for r in results)


# -- 6. exit codes ----------------------------------------------------------------------------------------
def _r(verdict: str) -> GateResult:
    return GateResult("g", "t", verdict, None, None, "")


@pytest.mark.parametrize("verdicts, code", [
    ([], 0), (["pass"], 0), (["pass", "pass"], 0), (["pass", "inconclusive"], 3), (["inconclusive"], 3),
    (["fail"], 1), (["pass", "fail"], 1), (["inconclusive", "fail", "pass"], 1),
])
def test_exit_code(verdicts, code):
    assert exit_code([_r(v) for v in verdicts]) == code
