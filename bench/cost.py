"""Cost per request from measured throughput and the scenario's ``pricing``.

cost per request = per_instance_hour / (requests_per_s * 3600)
                 + per_million_output_tokens * (output tokens per successful request) / 1e6

Assumptions (also returned in every table, so a report can print them):
- one instance serves exactly the measured throughput of the level (successful requests per
  second over the level's window); idle time, autoscaling headroom and redundancy are not charged;
- cost is per *successful* request (failed requests are paid for but deliver nothing);
- token prices use the server-reported output tokens of successful requests;
- a price is looked up by target name, falling back to the ``default`` key; a target with
  neither kind of price has no cost (None), never zero.
"""

from __future__ import annotations

from typing import Any, Optional

from bench.scenario import Pricing

ASSUMPTIONS = [
    "one instance serves the measured throughput of the level; idle time is not charged",
    "cost is per successful request; failed requests deliver nothing",
    "token prices use the server-reported output tokens of successful requests",
    "at capacity: the level at which the SLO holds (see bench/capacity.py); when capacity is "
    "not reached the true cost at capacity is lower than shown",
]


def price_of(pricing: Pricing, target: str) -> dict[str, Optional[float]]:
    """The target's prices, falling back to the ``default`` key (None where no price applies)."""
    hour = pricing.per_instance_hour.get(target, pricing.per_instance_hour.get("default"))
    tokens = pricing.per_million_output_tokens.get(target, pricing.per_million_output_tokens.get("default"))
    return {"per_instance_hour": hour, "per_million_output_tokens": tokens}


def pricing_problems(pricing: Pricing, target_names: list[str]) -> list[str]:
    """Keys naming no target (a misspelt key would silently price nothing) and unpriced targets."""
    problems = []
    for kind in ("per_instance_hour", "per_million_output_tokens"):
        for key in getattr(pricing, kind):
            if key != "default" and key not in target_names:
                known = ", ".join(target_names)
                problems.append(f"pricing.{kind}: {key!r} is not a target (targets: {known})")
    for name in target_names:
        if all(v is None for v in price_of(pricing, name).values()):
            problems.append(f"pricing: target {name!r} has no price (and there is no 'default')")
    return problems


def cost_per_request(level_summary: dict[str, Any], pricing: Pricing) -> Optional[dict[str, Any]]:
    """Cost of one successful request at this level; None when the target has no price.

    Returns {"level", "requests_per_s", "output_tokens_per_request", "instance_part",
    "token_part", "cost_per_request", "cost_per_1k_requests"}; the cost is None when a price
    applies but the level gives nothing to divide by (no successful request).
    """
    price = price_of(pricing, level_summary["target"])
    if all(v is None for v in price.values()):
        return None
    rps = (level_summary.get("throughput") or {}).get("requests_per_s")
    ok = (level_summary.get("requests") or {}).get("ok") or 0
    tokens = (level_summary.get("tokens") or {}).get("output_total")
    per_req_tokens = tokens / ok if ok and tokens is not None else None
    instance = token = 0.0
    missing = False
    if price["per_instance_hour"] is not None:
        if rps:
            instance = price["per_instance_hour"] / (rps * 3600.0)
        else:
            missing = True
    if price["per_million_output_tokens"] is not None:
        if per_req_tokens is not None:
            token = price["per_million_output_tokens"] * per_req_tokens / 1e6
        else:
            missing = True
    cost = None if missing else instance + token
    return {
        "level": level_summary["level"], "requests_per_s": rps, "output_tokens_per_request": per_req_tokens,
        "instance_part": None if missing else instance, "token_part": None if missing else token,
        "cost_per_request": cost, "cost_per_1k_requests": None if cost is None else cost * 1000.0,
    }


def percent_saved(baseline_cost: Optional[float], candidate_cost: Optional[float]) -> Optional[float]:
    """(baseline - candidate) / baseline * 100; negative when the candidate costs more."""
    if baseline_cost is None or candidate_cost is None or baseline_cost <= 0:
        return None
    return (baseline_cost - candidate_cost) / baseline_cost * 100.0


def cost_table(levels: list[dict[str, Any]], pricing: Pricing,
               capacities: Optional[dict[str, dict[str, Any]]] = None,
               baseline: Optional[str] = None) -> dict[str, Any]:
    """Cost per request / per 1,000 requests at every level and at each target's capacity.

    ``levels``: result.json's level summaries (all targets); ``capacities``: target ->
    ``bench.capacity.capacity()`` dict. Returns::

        {"currency", "assumptions", "baseline",
         "targets": {name: {"price": {...}, "levels": [cost_per_request dicts],
                            "at_capacity": {"capacity", "status", "lower_bound_only", ...cost dict} | None,
                            "vs_baseline": {"at_capacity": {"baseline_cost_per_1k", "cost_per_1k",
                                                            "percent_saved"},
                                            "matched_levels": [{"level", "baseline_cost_per_1k",
                                                                "cost_per_1k", "percent_saved"}]}}}}

    ``vs_baseline`` is present for every target other than the baseline (when one is given).
    """
    by_target: dict[str, dict[float, dict[str, Any]]] = {}
    for lv in levels:
        by_target.setdefault(lv["target"], {})[lv["level"]] = lv
    targets: dict[str, Any] = {}
    for name, lvs in by_target.items():
        rows = [row for lv in sorted(lvs) if (row := cost_per_request(lvs[lv], pricing)) is not None]
        entry: dict[str, Any] = {"price": price_of(pricing, name), "levels": rows, "at_capacity": None}
        cap = (capacities or {}).get(name)
        if cap and cap.get("capacity") is not None and cap["capacity"] in lvs:
            row = cost_per_request(lvs[cap["capacity"]], pricing)
            if row is not None:
                entry["at_capacity"] = {"capacity": cap["capacity"], "status": cap.get("status"),
                                        "lower_bound_only": cap.get("status") == "not_reached", **row}
        targets[name] = entry
    if baseline is not None and baseline in targets:
        base = targets[baseline]
        base_levels = {row["level"]: row for row in base["levels"]}
        for name, entry in targets.items():
            if name == baseline:
                continue
            b_cap, c_cap = base["at_capacity"], entry["at_capacity"]
            b1k = b_cap["cost_per_1k_requests"] if b_cap else None
            c1k = c_cap["cost_per_1k_requests"] if c_cap else None
            matched = []
            for row in entry["levels"]:
                brow = base_levels.get(row["level"])
                if brow is None:
                    continue
                b, c = brow["cost_per_1k_requests"], row["cost_per_1k_requests"]
                matched.append({"level": row["level"], "baseline_cost_per_1k": b, "cost_per_1k": c,
                                "percent_saved": percent_saved(b, c)})
            entry["vs_baseline"] = {
                "at_capacity": {"baseline_cost_per_1k": b1k, "cost_per_1k": c1k,
                                "percent_saved": percent_saved(b1k, c1k)},
                "matched_levels": matched,
            }
    return {"currency": pricing.currency, "assumptions": list(ASSUMPTIONS), "baseline": baseline,
            "targets": targets}
