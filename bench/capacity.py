"""Capacity and goodput: how much load a target carries while it keeps its SLO.

Computed from level summaries (bench/stats.py) and records alone. Definitions:

- **SLO holds at a level** when every *set* field of ``Slo`` is met by that level's summary:
  ``ttft_p95_ms >= metrics.ttft_ms.p95``, ``ttft_p99_ms >= ...p99``, ``itl_p95_ms >= itl_ms.p95``,
  ``e2e_p95_ms >= e2e_ms.p95`` and ``error_rate >= error_rate`` (all inclusive). In rate mode
  (open loop) TTFT and E2E are taken from the *scheduled* send time when the summary has them,
  so a client that fell behind cannot hide queueing (coordinated omission). A level with no
  measured value for a set field (nothing arrived) fails that field.
- **Capacity** is the highest measured level at which the SLO holds *and* holds at every lower
  measured level: the top of the passing prefix. A pass above a failure (non-monotone, usually
  noise) is reported but not counted, so capacity is never claimed across a level that failed.
  When the highest measured level still holds, capacity is only a lower bound ("not reached").
- **Goodput** is requests per second that individually met the per-request SLO; see ``goodput``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from bench.records import RequestRecord
from bench.scenario import Slo

_LATENCY_FIELDS = (  # (Slo field, metric, percentile key, label)
    ("ttft_p95_ms", "ttft_ms", "p95", "TTFT p95"),
    ("ttft_p99_ms", "ttft_ms", "p99", "TTFT p99"),
    ("itl_p95_ms", "itl_ms", "p95", "ITL p95"),
    ("e2e_p95_ms", "e2e_ms", "p95", "E2E p95"),
)
_FROM_SCHEDULED = {"ttft_ms": "ttft_from_scheduled_ms", "e2e_ms": "e2e_from_scheduled_ms"}


def slo_is_set(slo: Slo) -> bool:
    return any(getattr(slo, f) is not None for f, *_ in _LATENCY_FIELDS) or slo.error_rate is not None


def _metric(level_summary: dict[str, Any], metric: str) -> dict[str, Any]:
    metrics = level_summary.get("metrics") or {}
    if level_summary.get("pattern") == "rate" and _FROM_SCHEDULED.get(metric) in metrics:
        return metrics[_FROM_SCHEDULED[metric]] or {}
    return metrics.get(metric) or {}


def slo_holds(level_summary: dict[str, Any], slo: Slo) -> tuple[bool, list[str]]:
    """(holds, reasons it does not): one human-readable reason per failed SLO field."""
    reasons: list[str] = []
    measured = (level_summary.get("requests") or {}).get("measured", 0)
    if not measured:
        return False, ["no measured requests at this level"]
    for field, metric, key, label in _LATENCY_FIELDS:
        limit = getattr(slo, field)
        if limit is None:
            continue
        value = _metric(level_summary, metric).get(key)
        if value is None:
            reasons.append(f"{label}: not measured (no successful response), SLO {limit:g} ms")
        elif value > limit:
            reasons.append(f"{label} {value:.1f} ms > SLO {limit:g} ms")
    if slo.error_rate is not None:
        rate = level_summary.get("error_rate")
        if rate is None:
            reasons.append("error rate: no judged requests")
        elif rate > slo.error_rate:
            reasons.append(f"error rate {rate:.2%} > SLO {slo.error_rate:.2%}")
    return not reasons, reasons


def capacity(levels_of_target: list[dict[str, Any]], slo: Slo) -> dict[str, Any]:
    """Capacity of one target from its level summaries (any order). Returns::

        {"target", "pattern", "capacity": level | None,
         "status": "reached" | "not_reached" | "below_lowest" | "no_slo" | "no_levels",
         "first_failing": the lowest failing level above capacity (None if none),
         "requests_per_s": throughput at capacity | None,
         "non_monotone": [levels that hold above a failing level (not counted)],
         "levels": [{"level", "holds", "reasons"}], "note": one line}
    """
    targets = {lv.get("target") for lv in levels_of_target}
    if len(targets) > 1:
        raise ValueError(f"capacity() takes one target's levels, got {sorted(map(str, targets))}")
    ordered = sorted(levels_of_target, key=lambda lv: lv["level"])
    out: dict[str, Any] = {
        "target": next(iter(targets), None), "pattern": ordered[0].get("pattern") if ordered else None,
        "capacity": None, "status": "no_levels", "first_failing": None, "requests_per_s": None,
        "non_monotone": [], "levels": [], "note": "no measured levels",
    }
    if not ordered:
        return out
    if not slo_is_set(slo):
        out.update(status="no_slo", note="no SLO field is set: capacity is undefined")
        return out
    cap: Optional[dict[str, Any]] = None
    failed_below = False
    for lv in ordered:
        holds, reasons = slo_holds(lv, slo)
        out["levels"].append({"level": lv["level"], "holds": holds, "reasons": reasons})
        if holds and not failed_below:
            cap = lv
        elif holds:
            out["non_monotone"].append(lv["level"])
        elif not failed_below:
            failed_below = True
            out["first_failing"] = lv["level"]
    top = ordered[-1]["level"]
    if cap is None:
        lowest = ordered[0]["level"]
        out.update(status="below_lowest", note=f"SLO fails already at the lowest level {lowest:g}")
        return out
    out["capacity"] = cap["level"]
    out["requests_per_s"] = (cap.get("throughput") or {}).get("requests_per_s")
    if not failed_below:
        out.update(status="not_reached",
                   note=f"capacity >= {top:g}: not reached (SLO holds at every measured level)")
    else:
        out.update(status="reached",
                   note=f"capacity {cap['level']:g} (SLO fails at {out['first_failing']:g})")
    if out["non_monotone"]:
        out["note"] += ("; SLO holds again at " + ", ".join(f"{x:g}" for x in out["non_monotone"])
                        + " above a failing level (not counted: noise or an unstable server)")
    return out


def levels_by_target(levels: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Split result.json's ``levels`` into target -> its level summaries (first-seen order)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for lv in levels:
        out.setdefault(lv["target"], []).append(lv)
    return out


def goodput(records: Iterable[RequestRecord], slo: Slo, level: float, *, target: Optional[str] = None,
            pattern: str = "concurrency") -> dict[str, Any]:
    """Requests per second that each met the per-request SLO, at one target x level.

    A request is *good* when it is measured (phase "measure"), successful (no error) and meets
    every per-request bound: TTFT <= the tightest of ``ttft_p95_ms``/``ttft_p99_ms`` (a request
    without a first token fails it) and E2E <= ``e2e_p95_ms``. A percentile target read as a
    per-request bound is the usual goodput convention (DistServe). ``itl_p95_ms`` and
    ``error_rate`` are properties of a level, not of a request, and are not applied here (failed
    requests are never good anyway). Rate mode measures TTFT/E2E from the scheduled time.
    goodput = good / window_s, where the window is the level's measured window exactly as in
    bench/stats.py (first measured start - scheduled in rate mode, sent otherwise - to last end).
    With no per-request bound set, goodput equals the throughput of successful requests.

    Returns {"level", "target", "goodput_per_s", "good", "measured", "ok", "share_good",
    "window_s", "bounds_ms": {"ttft": .., "e2e": ..}}; goodput_per_s is None without a window.
    """
    ttft_limits = [x for x in (slo.ttft_p95_ms, slo.ttft_p99_ms) if x is not None]
    ttft_ns = min(ttft_limits) * 1e6 if ttft_limits else None
    e2e_ns = slo.e2e_p95_ms * 1e6 if slo.e2e_p95_ms is not None else None
    seen_targets: set[str] = set()
    good = measured = ok = 0
    start: Optional[int] = None
    end: Optional[int] = None
    for r in records:
        if r.level != level or r.phase != "measure" or (target is not None and r.target != target):
            continue
        if r.retried:  # replaced by a later attempt of the same request
            continue
        seen_targets.add(r.target)
        measured += 1
        origin = r.scheduled_ns if pattern == "rate" else r.sent_ns
        start = origin if start is None else min(start, origin)
        if r.end_ns:
            end = r.end_ns if end is None else max(end, r.end_ns)
        if r.error is not None:
            continue
        ok += 1
        if ttft_ns is not None and (r.first_token_ns is None or r.first_token_ns - origin > ttft_ns):
            continue
        if e2e_ns is not None and r.end_ns - origin > e2e_ns:
            continue
        good += 1
    if len(seen_targets) > 1:
        raise ValueError(f"records of several targets at level {level:g}: pass target=")
    window_s = max(1e-9, (end - start) / 1e9) if start is not None and end is not None else None
    return {
        "level": level, "target": target if target is not None else next(iter(seen_targets), None),
        "goodput_per_s": good / window_s if window_s else None,
        "good": good, "measured": measured, "ok": ok,
        "share_good": good / measured if measured else None, "window_s": window_s,
        "bounds_ms": {"ttft": ttft_ns / 1e6 if ttft_ns is not None else None, "e2e": slo.e2e_p95_ms},
    }


def suggest_next_levels(levels_of_target: list[dict[str, Any]], slo: Slo, *, rel_tol: float = 0.05,
                        max_level: Optional[float] = None) -> dict[str, Any]:
    """Where to measure next to pin capacity down (bisection), for an optional capacity search.

    - reached: the midpoint of (capacity, first failing level); concurrency midpoints are whole
      numbers, and the bracket is resolved when the levels are adjacent integers (rate: when the
      gap is below ``rel_tol`` of the capacity).
    - below_lowest: half the lowest level (concurrency: floor, at least 1; nothing if that is 1).
    - not_reached: double the highest level (capped at ``max_level`` when given).
    Returns {"levels": [next levels], "bracket": [low, high] | None, "resolved": bool, "reason"}.
    """
    cap = capacity(levels_of_target, slo)
    integer = cap["pattern"] != "rate"
    measured = sorted(lv["level"] for lv in levels_of_target)

    def done(reason: str, bracket: Optional[list[float]] = None, resolved: bool = True) -> dict[str, Any]:
        return {"levels": [], "bracket": bracket, "resolved": resolved, "reason": reason}

    def result(level: float, bracket: Optional[list[float]], reason: str) -> dict[str, Any]:
        level = int(level) if integer else float(level)
        if level in measured or (max_level is not None and level > max_level):
            return done(f"next level {level:g} is already measured or above max_level", bracket, False)
        return {"levels": [level], "bracket": bracket, "resolved": False, "reason": reason}

    status = cap["status"]
    if status in ("no_levels", "no_slo"):
        return done(cap["note"], resolved=False)
    if status == "below_lowest":
        low = measured[0]
        nxt = math.floor(low / 2) if integer else low / 2
        if nxt < 1 and integer:
            return done(f"SLO fails at the lowest possible concurrency {low:g}", [0, low])
        return result(nxt, [0, low], f"SLO fails at the lowest level {low:g}: try lower")
    if status == "not_reached":
        top = measured[-1]
        nxt = top * 2 if max_level is None else min(top * 2, max_level)
        if nxt <= top:
            return done(f"SLO holds up to max_level {top:g}", [top, top], False)
        return result(nxt, [top, None], f"SLO holds at every level up to {top:g}: try higher")
    low, high = cap["capacity"], cap["first_failing"]
    why = f"bisect between {low:g} (holds) and {high:g} (fails)"
    if integer:
        if high - low <= 1:
            return done(f"capacity {low:g} is exact (fails at {high:g})", [low, high])
        return result((int(low) + int(high)) // 2, [low, high], why)
    if (high - low) <= rel_tol * low:
        return done(f"capacity within {rel_tol:.0%}: between {low:g} and {high:g}", [low, high])
    return result((low + high) / 2, [low, high], why)
