"""The decision inputs beyond gates: capacity and goodput under the SLO, cost, and the blended
"small first, fall back to large" system — computed from the run directory alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from bench.capacity import capacity, goodput, levels_by_target, slo_is_set, suggest_next_levels
from bench.cost import cost_table, pricing_problems
from bench.dataset import Dataset
from bench.records import read_records
from bench.router import blend, router_problems, threshold_sweep
from bench.scenario import LoadedScenario, ScenarioError


def check_decision_config(loaded: LoadedScenario) -> None:
    """Target names in `pricing` and `router` must exist. Raises ScenarioError (one line)."""
    sc = loaded.scenario
    names = [t.name for t in sc.targets]
    problems = []
    if sc.pricing is not None:
        problems += [f"pricing: {p}" for p in pricing_problems(sc.pricing, names)]
    if sc.router is not None:
        problems += [f"router: {p}" for p in router_problems(sc.router, {t.name: t.role for t in sc.targets})]
    if problems:
        raise ScenarioError(f"{loaded.path}: {problems[0]}")


def decision_section(loaded: LoadedScenario, dataset: Dataset, run_dir: Path,
                     result: dict[str, Any]) -> dict[str, Any]:
    """Capacity (+ goodput and the next levels worth measuring), cost, and the router blend."""
    sc = loaded.scenario
    by_target = levels_by_target(result.get("levels", []))
    out: dict[str, Any] = {}
    capacities: dict[str, Any] = {}
    if slo_is_set(sc.slo):
        records = list(read_records(run_dir / "records.jsonl"))
        for name, levels in by_target.items():
            cap = capacity(levels, sc.slo)
            cap["goodput"] = [goodput(records, sc.slo, lv["level"], target=name, pattern=lv["pattern"])
                              for lv in levels]
            cap["suggest_next"] = suggest_next_levels(levels, sc.slo)
            capacities[name] = cap
        out["capacity"] = capacities
    baseline = next((t.name for t in sc.targets if t.role == "baseline"), None)
    if sc.pricing is not None:
        out["cost"] = cost_table(result.get("levels", []), sc.pricing, capacities or None, baseline)
    primary = (result.get("quality") or {}).get("primary")
    if sc.router is not None and primary and (run_dir / "scores.jsonl").exists():
        from bench.gate_run import read_scores

        scored = read_scores(run_dir / "scores.jsonl")
        records = {r.request_id: r for r in read_records(run_dir / "records.jsonl")}
        items = {i.id: i for i in dataset.items}
        cost_levels = {name: cap["capacity"] for name, cap in capacities.items() if cap.get("capacity")}
        out["router"] = blend(scored, records, sc.router, primary, items=items, pricing=sc.pricing,
                              levels=result.get("levels", []), cost_levels=cost_levels or None)
        out["router"]["threshold_sweep"] = threshold_sweep(scored, sc.router, primary)
    return out


def render_decision(decision: dict[str, Any], console: Any) -> None:
    from rich.markup import escape

    for name, cap in (decision.get("capacity") or {}).items():
        level = cap.get("capacity")
        goodputs = ", ".join(f"{g['level']:g}: {g['goodput_per_s']:.2f}/s" for g in cap.get("goodput", [])
                             if g.get("goodput_per_s") is not None)
        text = (f"capacity {escape(name)}: {level:g} ({cap['status']})" if level is not None
                else f"capacity {escape(name)}: the SLO fails at every measured level")
        nxt = (cap.get("suggest_next") or {}).get("levels")
        console.print(text + (f"; goodput by level {goodputs}" if goodputs else "")
                      + (f"; measure next: {', '.join(f'{x:g}' for x in nxt)}" if nxt else ""))
        for lv in cap.get("levels", []):
            if not lv["holds"]:
                console.print(f"  {escape(name)} @ {lv['level']:g}: SLO fails: {escape('; '.join(lv['reasons']))}")
    cost = decision.get("cost")
    if cost:
        for name, entry in cost["targets"].items():
            at = entry.get("at_capacity") or {}
            vs = (entry.get("vs_baseline") or {}).get("at_capacity") or {}
            if at.get("cost_per_1k_requests") is not None:
                saved = vs.get("percent_saved")
                versus = ""
                if saved is not None:
                    versus = (f" ({saved:.1f}% cheaper than the baseline)" if saved >= 0
                              else f" ({-saved:.1f}% more expensive than the baseline)")
                console.print(f"cost {escape(name)}: {at['cost_per_1k_requests']:.4f} {cost['currency']} per 1,000 "
                              f"requests at capacity{versus}")
    router: Optional[dict[str, Any]] = decision.get("router")
    if router:
        fb = router["fallback"]
        blended = (router["quality"].get("all") or {}).get("blended") or {}
        console.print(f"router {escape(router['small'])} → {escape(router['large'])}: fallback "
                      f"{100 * (fb['rate'] or 0):.1f}% of {router['n_items']} items; blended {router['primary']} "
                      f"{100 * (blended.get('value') or 0):.1f}%")
