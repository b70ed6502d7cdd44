"""The blended system "small first, fall back to large", evaluated offline from one run.

Every item goes to ``router.small`` first; when the small model's response triggers one of the
router's policies the item is answered by ``router.large`` instead. Both targets' *canonical*
responses (bench.quality.canonical: lowest level, first repeat) are paired by item_id, so the
blend is computed from responses that were measured, never re-requested. Policies:

- ``parse_failure`` / ``schema_failure`` / ``refusal``: the small response's outcome;
- ``transport_error``: the small request failed (timeout, HTTP error, broken stream, ...);
- ``low_confidence``: ``scores["confidence"] < threshold``; a response without a confidence
  does not trigger it (counted in ``confidence_missing``: the router cannot see what is absent).

Correctness is end-to-end: a transport failure of the serving model counts as wrong; an item the
primary scorer cannot judge (None) is left out of accuracy. Latency is *sequential fallback*:
the small model's full response is needed to detect most failures, so a fallen-back request
costs small E2E + large E2E, and its TTFT is small E2E + large TTFT (the user sees the large
model's first token only after the small one failed). For ``low_confidence`` alone this is
pessimistic (the confidence is known at the first token). Latencies are those of the canonical
responses (their send time to first token / end); the large model would in reality see only the
fallback traffic, so its measured latency (at the canonical level) is an approximation.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from bench.cost import cost_per_request, percent_saved
from bench.histograms import LatencyHistogram
from bench.quality import ALL, ScoredResponse, canonical, metric_summary
from bench.records import RequestRecord
from bench.scenario import Pricing, Router
from bench.significance import wilson_interval

POLICIES = ("parse_failure", "schema_failure", "refusal", "low_confidence", "transport_error")
Latency = tuple[Optional[int], Optional[int]]  # (ttft_ns, e2e_ns)
Pair = tuple[str, ScoredResponse, ScoredResponse]  # (item_id, small's response, large's)
Records = Union[Mapping[str, Union[RequestRecord, Latency]], Iterable[RequestRecord]]


def router_problems(router: Router, targets: Mapping[str, str]) -> list[str]:
    """Problems with a router against the scenario's targets (name -> role)."""
    problems = [f"router.{side}: {getattr(router, side)!r} is not a target"
                for side in ("small", "large") if getattr(router, side) not in targets]
    if not problems and targets[router.small] == "baseline":
        problems.append(f"router.small: {router.small!r} is the baseline; the small model is a candidate")
    return problems


def triggered(resp: ScoredResponse, policies: Sequence[str], threshold: Optional[float]) -> list[str]:
    """The policies this (small-model) response triggers, in POLICIES order."""
    hits = []
    for policy in POLICIES:
        if policy not in policies:
            continue
        if policy == "transport_error":
            hit = not resp.transport_ok
        elif policy == "low_confidence":
            conf = resp.scores.get("confidence")
            hit = resp.transport_ok and conf is not None and threshold is not None and conf < threshold
        else:
            hit = resp.transport_ok and resp.outcome == policy
        if hit:
            hits.append(policy)
    return hits


def pair_items(scored: Iterable[ScoredResponse], router: Router) -> tuple[list[Pair], dict[str, int]]:
    """[(item_id, small's canonical response, large's)] sorted by item_id, plus unpaired counts."""
    canon = canonical(list(scored))
    small, large = canon.get(router.small, {}), canon.get(router.large, {})
    pairs = [(i, small[i], large[i]) for i in sorted(small.keys() & large.keys())]
    return pairs, {"small_only": len(small.keys() - large.keys()),
                   "large_only": len(large.keys() - small.keys())}


def _value(resp: ScoredResponse, primary: str) -> Any:
    """End-to-end primary outcome: a transport failure is wrong; None = the scorer cannot judge."""
    return resp.scores.get(primary) if resp.transport_ok else False


def _latency(x: Union[RequestRecord, Latency, None]) -> Latency:
    if x is None:
        return None, None
    if isinstance(x, RequestRecord):
        ttft = x.first_token_ns - x.sent_ns if x.first_token_ns is not None else None
        return ttft, (x.end_ns - x.sent_ns if x.end_ns else None)
    return x[0], x[1]


def _latency_map(records: Optional[Records]) -> Mapping[str, Any]:
    if records is None:
        return {}
    if isinstance(records, Mapping):
        return records
    return {r.request_id: r for r in records}


def _confidence_missing(pairs: list[Pair]) -> int:
    return sum(1 for _, s, _ in pairs if s.transport_ok and s.scores.get("confidence") is None)


def _decide(pairs: list[Pair], policies: Sequence[str],
            threshold: Optional[float]) -> list[list[str]]:
    return [triggered(s, policies, threshold) for _, s, _ in pairs]


def blend(scored: Iterable[ScoredResponse], records: Optional[Records], router: Router, primary: str, *,
          items: Optional[Mapping[str, Any]] = None, min_slice_n: int = 30, pricing: Optional[Pricing] = None,
          levels: Optional[list[dict[str, Any]]] = None,
          cost_levels: Optional[Mapping[str, float]] = None) -> dict[str, Any]:
    """Evaluate the router on one run. See the module docstring for the definitions.

    ``records``: request_id -> RequestRecord or (ttft_ns, e2e_ns), or an iterable of records.
    ``items``: item_id -> Item (or anything with ``.slices``, or a sequence of slice names);
    without it only the ``all`` slice is reported. Cost needs ``pricing`` and ``levels``
    (result.json's level summaries); each target is costed at ``cost_levels[target]``, by
    default its highest measured level (its best throughput, usually the cheapest per request):
    blended cost per request = small's cost + fallback rate * large's cost.

    Returns {"small", "large", "policies", "confidence_threshold", "primary", "n_items",
    "unpaired": {"small_only", "large_only"}, "confidence_missing",
    "fallback": {"count", "rate", "ci95", "by_policy": {policy: count}},
    "quality": {slice: {"n_items", "fallback_rate", "blended", "small_alone", "large_alone"}},
    "latency": {"n", "missing", "no_first_token", "ttft_ms", "e2e_ms",
                "small_alone": {"ttft_ms", "e2e_ms"}, "large_alone": {...}},
    "cost": None | {"currency", "small_level", "large_level", "small_cost_per_1k",
                    "large_cost_per_1k", "blended_cost_per_1k", "percent_saved_vs_large"}}.
    Quality summaries are {"kind": "rate"|"mean", "value", "n", "ci95", ...} or None.
    """
    pairs, unpaired = pair_items(scored, router)
    hits = _decide(pairs, router.policies, router.confidence_threshold)
    n = len(pairs)
    k = sum(1 for h in hits if h)
    by_policy = {p: sum(p in h for h in hits) for p in router.policies}
    slices: dict[str, list[int]] = defaultdict(list)
    for idx, (item_id, _, _) in enumerate(pairs):
        slices[ALL].append(idx)
        meta = (items or {}).get(item_id)
        for s in (getattr(meta, "slices", meta) or ()):
            slices[s].append(idx)
    quality = {}
    for name in sorted(slices, key=lambda s: (s != ALL, s)):
        idxs = slices[name]
        served = [pairs[i][2] if hits[i] else pairs[i][1] for i in idxs]
        quality[name] = {
            "n_items": len(idxs),
            "fallback_rate": sum(1 for i in idxs if hits[i]) / len(idxs),
            "blended": metric_summary([_value(r, primary) for r in served], min_slice_n),
            "small_alone": metric_summary([_value(pairs[i][1], primary) for i in idxs], min_slice_n),
            "large_alone": metric_summary([_value(pairs[i][2], primary) for i in idxs], min_slice_n),
        }
    low, high = wilson_interval(k, n)
    return {
        "small": router.small, "large": router.large, "policies": list(router.policies),
        "confidence_threshold": router.confidence_threshold, "primary": primary, "n_items": n,
        "unpaired": unpaired,
        "confidence_missing": _confidence_missing(pairs),
        "fallback": {"count": k, "rate": k / n if n else None, "ci95": [low, high], "by_policy": by_policy},
        "quality": quality,
        "latency": _blended_latency(pairs, hits, _latency_map(records)),
        "cost": _blended_cost(router, k / n if n else None, pricing, levels, cost_levels),
    }


def _blended_latency(pairs: list[Pair], hits: list[list[str]],
                     latencies: Mapping[str, Any]) -> dict[str, Any]:
    hist = {key: LatencyHistogram.empty() for key in ("ttft", "e2e", "s_ttft", "s_e2e", "l_ttft", "l_e2e")}
    n = missing = no_first = 0
    for (_, s, l), hit in zip(pairs, hits):
        s_ttft, s_e2e = _latency(latencies.get(s.request_id))
        l_ttft, l_e2e = _latency(latencies.get(l.request_id))
        if s_e2e is None or (hit and l_e2e is None):
            missing += 1
            continue
        n += 1
        for key, value in (("s_ttft", s_ttft), ("s_e2e", s_e2e), ("l_ttft", l_ttft), ("l_e2e", l_e2e)):
            if value is not None:
                hist[key].record_ns(value)
        if hit:  # sequential fallback: the large request starts when the small one has ended
            e2e, ttft = s_e2e + l_e2e, (s_e2e + l_ttft if l_ttft is not None else None)
        else:
            e2e, ttft = s_e2e, s_ttft
        hist["e2e"].record_ns(e2e)
        if ttft is None:
            no_first += 1
        else:
            hist["ttft"].record_ns(ttft)
    return {
        "n": n, "missing": missing, "no_first_token": no_first,
        "ttft_ms": hist["ttft"].summary_ms(), "e2e_ms": hist["e2e"].summary_ms(),
        "small_alone": {"ttft_ms": hist["s_ttft"].summary_ms(), "e2e_ms": hist["s_e2e"].summary_ms()},
        "large_alone": {"ttft_ms": hist["l_ttft"].summary_ms(), "e2e_ms": hist["l_e2e"].summary_ms()},
    }


def _blended_cost(router: Router, fallback_rate: Optional[float], pricing: Optional[Pricing],
                  levels: Optional[list[dict[str, Any]]],
                  cost_levels: Optional[Mapping[str, float]]) -> Optional[dict[str, Any]]:
    if pricing is None or not levels or fallback_rate is None:
        return None
    chosen: dict[str, Optional[dict[str, Any]]] = {}
    for name in (router.small, router.large):
        mine = [lv for lv in levels if lv["target"] == name]
        want = (cost_levels or {}).get(name)
        pick = [lv for lv in mine if lv["level"] == want] if want is not None else mine
        lv = max(pick, key=lambda lv: lv["level"]) if pick else None
        chosen[name] = cost_per_request(lv, pricing) if lv else None
    s, l = chosen[router.small], chosen[router.large]
    s1k = s["cost_per_1k_requests"] if s else None
    l1k = l["cost_per_1k_requests"] if l else None
    blended = s1k + fallback_rate * l1k if s1k is not None and l1k is not None else None
    return {"currency": pricing.currency, "small_level": s["level"] if s else None,
            "large_level": l["level"] if l else None, "small_cost_per_1k": s1k, "large_cost_per_1k": l1k,
            "blended_cost_per_1k": blended, "percent_saved_vs_large": percent_saved(l1k, blended)}


def threshold_sweep(scored: Iterable[ScoredResponse], router: Router, primary: str,
                    thresholds: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """The coverage-vs-accuracy curve of the low_confidence policy.

    For each threshold t (default ``router.thresholds``) the router's policies apply with
    ``low_confidence`` added at t: coverage = share of items served by the small model,
    fallback_rate = 1 - coverage, accuracy = blended end-to-end primary over the judged items
    (a mean for a numeric primary). Coverage never increases with t. Returns {"small", "large",
    "primary", "policies", "n_items", "confidence_missing", "small_alone_accuracy",
    "large_alone_accuracy", "points": [{"threshold", "coverage", "fallback_rate", "accuracy",
    "n_judged"}]}.
    """
    pairs, _ = pair_items(scored, router)
    policies = list(dict.fromkeys([*router.policies, "low_confidence"]))
    n = len(pairs)

    def accuracy(values: list[Any]) -> tuple[Optional[float], int]:
        judged = [float(v) for v in values if v is not None]
        return (sum(judged) / len(judged) if judged else None), len(judged)

    points = []
    for t in sorted(thresholds if thresholds is not None else router.thresholds):
        hits = _decide(pairs, policies, t)
        fallen = sum(1 for h in hits if h)
        acc, judged = accuracy([_value(l if h else s, primary) for (_, s, l), h in zip(pairs, hits)])
        points.append({"threshold": t, "coverage": (n - fallen) / n if n else None,
                       "fallback_rate": fallen / n if n else None, "accuracy": acc, "n_judged": judged})
    return {
        "small": router.small, "large": router.large, "primary": primary, "policies": policies, "n_items": n,
        "confidence_missing": _confidence_missing(pairs),
        "small_alone_accuracy": accuracy([_value(s, primary) for _, s, _ in pairs])[0],
        "large_alone_accuracy": accuracy([_value(l, primary) for _, _, l in pairs])[0],
        "points": points,
    }
