"""Evaluate parsed gates against a run's result (levels + quality) and its scored responses."""

from __future__ import annotations

from typing import Any, Optional

from bench.dataset import Item
from bench.gates import (
    ALPHA, Gate, GateError, GateResult, _better, _p_value, _rate_gate, apply_holm, fmt, paired_noninferiority,
)
from bench.quality import ALL, ScoredResponse

_STAT_KEYS = {"p99.9": "p99_9"}


class GateContext:
    """What the gates can see: the result dict, canonical responses per target, and items."""

    def __init__(self, result: dict[str, Any], canon: dict[str, dict[str, ScoredResponse]],
                 items: dict[str, Item], baseline: Optional[str], primary: Optional[str]):
        self.result = result
        self.canon = canon
        self.items = items
        self.baseline = baseline
        self.primary = primary
        self.quality = (result.get("quality") or {}).get("targets", {})

    def levels_of(self, target: str) -> list[dict[str, Any]]:
        return [lv for lv in self.result.get("levels", []) if lv["target"] == target]


def evaluate(gates: list[Gate], targets: list[str], ctx: GateContext) -> list[GateResult]:
    out: list[GateResult] = []
    router_small = (ctx.result.get("router") or {}).get("small")
    for target in targets:
        # A system gate (fallback_rate) describes the router, judged once, on its small model.
        mine = [_evaluate_one(g, target, ctx) for g in gates
                if g.family != "system" or target == router_small or router_small is None]
        apply_holm(mine)
        out.extend(mine)
    return out


def _evaluate_one(g: Gate, target: str, ctx: GateContext) -> GateResult:
    try:
        if g.family == "latency":
            return _latency(g, target, ctx)
        if g.family == "level":
            return _level(g, target, ctx)
        if g.family == "system":
            return _fallback(g, target, ctx)
        return _quality(g, target, ctx)
    except GateError as e:
        return GateResult(g.text, target, "inconclusive", None, g.budget, str(e), slice=g.selector)


# -- latency and throughput: point values per level ----------------------------------------------
def _latency_value(level: dict[str, Any], metric: str) -> tuple[Optional[float], int]:
    head, stat = metric.split(".", 1)
    summary = level["metrics"].get(f"{head}_ms") or {}
    return summary.get(_STAT_KEYS.get(stat, stat)), int(summary.get("count") or 0)


def _min_samples(stat: str) -> int:
    if stat.startswith("p"):
        p = float(stat[1:]) / 100.0
        return max(1, round(1 / (1 - p))) if p < 1 else 1
    return 1


def _levels_for(g: Gate, target: str, ctx: GateContext) -> list[dict[str, Any]]:
    levels = ctx.levels_of(target)
    if g.level is not None:
        levels = [lv for lv in levels if lv["level"] == g.level]
    if not levels:
        where = f"level {g.level:g}" if g.level is not None else "any level"
        raise GateError(f"{target} was not measured at {where}")
    return levels


def _baseline_level(g: Gate, level: float, ctx: GateContext, value_of: Any) -> float:
    if ctx.baseline is None:
        raise GateError("a relative gate needs a baseline target")
    for lv in ctx.levels_of(ctx.baseline):
        if lv["level"] == level:
            value = value_of(lv)
            if value is None:
                raise GateError(f"the baseline has no value at level {level:g}")
            return value
    raise GateError(f"the baseline was not measured at level {level:g}")


def _badness(op: str, value: float, budget: float) -> float:
    """How far a value is on the wrong side of its budget (negative: on the right side)."""
    return value - budget if op in ("<", "<=") else budget - value


def _latency(g: Gate, target: str, ctx: GateContext) -> GateResult:
    stat = g.metric.split(".", 1)[1]
    judged, short = [], []
    for lv in _levels_for(g, target, ctx):
        value, count = _latency_value(lv, g.metric)
        if value is None or count < _min_samples(stat):
            short.append((lv["level"], count, value))
            continue
        budget = g.budget
        if g.relative:
            budget += _baseline_level(g, lv["level"], ctx, lambda b: _latency_value(b, g.metric)[0])
        judged.append((_badness(g.op, value, budget), value, budget, lv["level"]))
    worst = max(judged) if judged else None
    if worst is not None and worst[0] >= 0 and not _better(g.op, worst[1], worst[2]):
        _, value, budget, level = worst
        return GateResult(g.text, target, "fail", value, budget,
                          f"{g.metric} {fmt(value, 'latency')} at level {level:g} (budget {g.op} "
                          f"{fmt(budget, 'latency')})")
    if short:
        level, count, value = short[0]
        return GateResult(g.text, target, "inconclusive", value, g.budget,
                          f"{count} samples at level {level:g}: too few for {stat} (need {_min_samples(stat)})",
                          items_needed=_min_samples(stat))
    _, value, budget, level = worst
    return GateResult(g.text, target, "pass", value, budget,
                      f"{g.metric} {fmt(value, 'latency')} at level {level:g} (budget {g.op} {fmt(budget, 'latency')})")


def _level(g: Gate, target: str, ctx: GateContext) -> GateResult:
    levels = _levels_for(g, target, ctx)
    if g.metric == "error_rate":
        k = sum(lv["requests"]["failed"] - lv["requests"]["errors"].get("cancelled", 0) for lv in levels)
        n = sum(lv["requests"]["measured"] - lv["requests"]["errors"].get("cancelled", 0) for lv in levels)
        if n == 0:
            raise GateError("no measured requests")
        verdict, bound, needed, p = _rate_gate(g.op, k, n, g.budget)
        return GateResult(g.text, target, verdict, k / n, g.budget,
                          f"{k}/{n} failed; one-sided 95% bound {bound:.2%} vs budget {g.op} {g.budget:.2%}",
                          bound=bound, items_needed=needed, p_value=p)
    key = "output_tokens_per_s" if g.metric == "throughput" else "requests_per_s"
    results = []
    for lv in levels:
        value = lv["throughput"].get(key)
        if value is None:
            raise GateError(f"no throughput at level {lv['level']:g}")
        budget = g.budget + (_baseline_level(g, lv["level"], ctx, lambda b: b["throughput"].get(key))
                             if g.relative else 0.0)
        results.append((_badness(g.op, value, budget), value, budget, lv["level"]))
    _, value, budget, level = max(results)
    ok = _better(g.op, value, budget)
    return GateResult(g.text, target, "pass" if ok else "fail", value, budget,
                      f"{g.metric} {value:,.1f}/s at level {level:g} (budget {g.op} {budget:,.1f})")


def _fallback(g: Gate, target: str, ctx: GateContext) -> GateResult:
    router = ctx.result.get("router")
    if not router:
        raise GateError("fallback_rate needs a `router:` section and a quality pass")
    if router["small"] != target:
        raise GateError(f"fallback_rate describes the router's small model ({router['small']}), not {target}")
    k, n = router["fallback"]["count"], router["n_items"]
    if not n:
        raise GateError("no paired items for the router")
    verdict, bound, needed, p = _rate_gate(g.op, k, n, g.budget)
    return GateResult(g.text, target, verdict, k / n, g.budget,
                      f"{k}/{n} items fall back; one-sided 95% bound {bound:.2%} vs budget {g.op} {g.budget:.2%}",
                      bound=bound, items_needed=needed, p_value=p)


# -- quality: rates with confidence bounds, paired tests against the baseline ------------------------
def _quality_key(g: Gate, ctx: GateContext) -> tuple[str, bool]:
    """The scorer key behind a quality metric, and whether the gate speaks of its failure rate."""
    if g.metric in ("accuracy", "recall"):
        if not ctx.primary:
            raise GateError("no primary outcome configured (quality.primary)")
        return ctx.primary, False
    if g.metric == "refusal_rate":
        return "refusal", False
    if g.metric in ("json_parse_failure_rate", "schema_failure_rate"):
        return {"json_parse_failure_rate": "json_strict_ok", "schema_failure_rate": "schema_valid"}[g.metric], True
    return g.metric, False


def _quality(g: Gate, target: str, ctx: GateContext) -> GateResult:
    if g.metric == "recall" and g.selector is not None and g.selector not in _slice_names(ctx):
        return _class_recall(g, target, ctx)
    key, inverted = _quality_key(g, ctx)
    slice_name = g.selector or ALL
    if g.relative:
        return _relative_quality(g, target, ctx, key, inverted, slice_name)
    entry = ((ctx.quality.get(target) or {}).get("slices") or {}).get(slice_name)
    if entry is None:
        raise GateError(f"no quality results for {target} on slice {slice_name!r}")
    m = entry["metrics"].get(key)
    if m is None:
        raise GateError(f"no scores for {key!r} on slice {slice_name!r}")
    if m["kind"] == "rate":
        k = m["successes"] if not inverted else m["n"] - m["successes"]
        verdict, bound, needed, p = _rate_gate(g.op, k, m["n"], g.budget)
        return GateResult(g.text, target, verdict, k / m["n"], g.budget,
                          f"{k}/{m['n']} items; one-sided 95% bound {bound:.2%} vs budget {g.op} {g.budget:.2%}",
                          bound=bound, items_needed=needed, p_value=p, slice=g.selector)
    low, high = m["ci95"] or (m["value"], m["value"])
    good, bad = (high, low) if g.op in ("<", "<=") else (low, high)
    verdict = "pass" if _better(g.op, good, g.budget) else ("fail" if not _better(g.op, bad, g.budget) else "inconclusive")
    return GateResult(g.text, target, verdict, m["value"], g.budget,
                      f"mean {m['value']:.3f} over {m['n']} items, 95% interval {low:.3f}..{high:.3f}",
                      bound=good, slice=g.selector)


def _slice_names(ctx: GateContext) -> set[str]:
    return {s for item in ctx.items.values() for s in item.slices}


def _class_recall(g: Gate, target: str, ctx: GateContext) -> GateResult:
    classes = ((ctx.quality.get(target) or {}).get("classes") or {}).get("classes") or {}
    c = classes.get(g.selector)
    if c is None:
        raise GateError(f"{target}: no items with label {g.selector!r}")
    k, n = round(c["recall"] * c["support"]), c["support"]
    if g.relative:
        return _relative_quality(g, target, ctx, ctx.primary or "label_correct", False, None, label=g.selector)
    verdict, bound, needed, p = _rate_gate(g.op, k, n, g.budget)
    return GateResult(g.text, target, verdict, k / n, g.budget, f"recall {k}/{n}; bound {bound:.2%}",
                      bound=bound, items_needed=needed, p_value=p, slice=g.selector)


def _relative_quality(g: Gate, target: str, ctx: GateContext, key: str, inverted: bool,
                      slice_name: Optional[str], label: Optional[str] = None) -> GateResult:
    if ctx.baseline is None or ctx.baseline == target:
        raise GateError("a relative gate compares a candidate with the baseline")
    base, cand = ctx.canon.get(ctx.baseline, {}), ctx.canon.get(target, {})
    ids = [i for i in sorted(base.keys() & cand.keys())
           if (slice_name in (None, ALL) or slice_name in ctx.items[i].slices)
           and (label is None or base[i].scores.get("reference_label") == label)]
    raw = [(base[i].scores.get(key), cand[i].scores.get(key)) for i in ids
           if base[i].transport_ok and cand[i].transport_ok]
    raw = [(x, y) for x, y in raw if x is not None and y is not None]
    if not raw:
        raise GateError(f"no items both targets answered for {key!r}")
    if not all(isinstance(x, bool) and isinstance(y, bool) for x, y in raw):
        return _relative_mean(g, target, [(float(x), float(y)) for x, y in raw])
    a = [x for x, _ in raw]
    b = [y for _, y in raw]
    if inverted:  # a failure-rate gate: compare failure booleans
        a, b = [not x for x in a], [not x for x in b]
    verdict, detail, res = paired_noninferiority(a, b, g.op, g.budget)
    p = _p_value(lambda conf: paired_noninferiority_verdict(a, b, g, conf))
    measured = sum(b) / len(b) - sum(a) / len(a)  # the gate's own metric: candidate minus baseline
    return GateResult(g.text, target, verdict, measured, g.budget, detail, items_needed=res.items_needed,
                      bound=res.lower if g.op in (">", ">=") else None, p_value=p, slice=g.selector)


def _relative_mean(g: Gate, target: str, pairs: list[tuple[float, float]]) -> GateResult:
    """A continuous score (e.g. field_f1) vs the baseline: paired bootstrap of the mean difference."""
    from bench.significance import paired_bootstrap

    res = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs], confidence=1 - 2 * ALPHA)
    # '>= baseline - d': the difference must stay above -d; '<= baseline + d': below +d.
    good, bad = (res.low, res.high) if g.op in (">", ">=") else (res.high, res.low)
    verdict = ("pass" if _better(g.op, good, g.budget)
               else "fail" if not _better(g.op, bad, g.budget) else "inconclusive")
    return GateResult(g.text, target, verdict, res.difference, g.budget,
                      f"paired on {res.n} items: mean difference {res.difference:+.3f} "
                      f"(one-sided 95% bounds {res.low:+.3f}..{res.high:+.3f}), budget {g.op} {g.budget:+.3f}",
                      slice=g.selector)


def paired_noninferiority_verdict(a: list[bool], b: list[bool], g: Gate, conf: float) -> bool:
    from bench.significance import noninferiority_paired

    if g.op in ("<", "<="):
        a, b, margin = [not x for x in a], [not x for x in b], g.budget
    else:
        margin = -g.budget
    return noninferiority_paired(a, b, margin, conf).verdict == "pass"


__all__ = ["GateContext", "evaluate", "ALPHA"]
