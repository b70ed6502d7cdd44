"""Acceptance gates: product-language budgets, decided before the results, judged with statistics.

Grammar (one gate per string; case-insensitive keywords):

    gate    := metric ["[" selector "]"] op budget ["at" ["concurrency"|"rate"|"level"] NUMBER]
    op      := "<" | "<=" | ">" | ">="
    budget  := NUMBER [unit] | "baseline" ("+"|"-") NUMBER [unit]
    unit    := "ms" | "s" | "%" | "pt" | "pts"      (rates: 0.5% == 0.005; 1pt == 0.01)

Metrics:
- latency: ``ttft|itl|tpot|e2e`` "." ``p50|p90|p95|p99|p99.9|max|mean`` (ms) — per level; without
  ``at`` the gate must hold at every measured level (the worst level is reported).
- ``error_rate`` — per level, or over all levels without ``at``.
- ``throughput`` (output tokens/s), ``requests_per_s`` — per level (higher is better).
- quality rates and means from the quality pass: any scorer key (``label_correct``,
  ``json_strict_ok``, ``schema_valid``, ``field_exact``, ``code_pass``, ``field_f1`` ...) and
  the aliases ``accuracy`` (the primary outcome), ``json_parse_failure_rate`` (1 − json_strict_ok),
  ``schema_failure_rate``, ``refusal_rate``, ``recall[<label>]`` (per-class recall), and
  ``recall[<slice>]`` (primary outcome on that slice). ``metric[<slice>]`` restricts to a slice.
- ``fallback_rate`` — share of items the blended router sends to the large model (needs ``router:``).

Verdicts (per candidate; the baseline when there is none):
- rate vs a fixed budget: **pass** when the one-sided 95 % Wilson bound is on the right side of the
  budget, **fail** when the opposite bound is on the wrong side, else **inconclusive** (with the
  number of items that would be needed at the observed rate);
- rate vs ``baseline ± δ``: a paired non-inferiority test on the items both answered (Newcombe);
- mean vs a budget: the bootstrap 95 % interval decides the same way;
- latency and throughput: the measured percentile decides; inconclusive when the level has too
  few samples for that percentile (fewer than 1 / (1 − p)) or was not measured.
Many slice gates per candidate are corrected with Holm's step-down procedure (family-wise 5 %).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from bench.significance import holm_adjust, noninferiority_paired, wilson_interval

ALPHA = 0.05
LATENCY_METRICS = ("ttft", "itl", "tpot", "e2e")
STATS = ("p50", "p90", "p95", "p99", "p99.9", "max", "mean")
LEVEL_METRICS = ("error_rate", "throughput", "requests_per_s")
SYSTEM_METRICS = ("fallback_rate",)  # the blended router system (scenario `router:`)
FAILURE_ALIASES = {
    "json_parse_failure_rate": "json_strict_ok",
    "schema_failure_rate": "schema_valid",
}

_GATE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.@]*)\s*(?:\[(?P<sel>[^\]]+)\])?\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<rhs>baseline\s*[+-]\s*\d+(?:\.\d+)?\s*[a-z%]*|\d+(?:\.\d+)?\s*[a-z%]*)"
    r"(?:\s+at\s+(?:(?P<kind>concurrency|rate|level)\s+)?(?P<level>\d+(?:\.\d+)?))?\s*$",
    re.IGNORECASE,
)


class GateError(ValueError):
    """A gate that cannot be parsed or names something unknown. ``str()`` is one line."""


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    selector: Optional[str]
    op: str
    budget: float            # fraction for rates, ms for latency, units/s for throughput
    relative: bool           # budget is a delta from the baseline
    level: Optional[float]
    family: str              # latency | level | quality


def _number(text: str, family: str, relative: bool, gate: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z%]*)", text.strip(), re.IGNORECASE)
    if not m:
        raise GateError(f"gate {gate!r}: cannot read the budget {text!r}")
    value, unit = float(m.group(1)), m.group(2).lower()
    if family == "latency":
        if unit in ("", "ms"):
            return value
        if unit == "s":
            return value * 1000.0
        raise GateError(f"gate {gate!r}: latency budgets are in ms or s, not {unit!r}")
    if family == "throughput":
        if unit:
            raise GateError(f"gate {gate!r}: throughput budgets are plain numbers per second, not {unit!r}")
        return value
    if unit in ("%", "pt", "pts"):
        return value / 100.0
    if unit:
        raise GateError(f"gate {gate!r}: rates take %, pt or a fraction, not {unit!r}")
    return value


def parse_gate(text: str, levels: list[float], slices: set[str], quality_keys: set[str],
               labels: set[str] = frozenset()) -> Gate:
    """Parse and check one gate against what the scenario can measure. Raises GateError."""
    m = _GATE.match(text)
    if not m:
        raise GateError(f"gate {text!r}: expected '<metric>[slice] <op> <budget> [at <level>]', "
                        "e.g. 'ttft.p95 < 400ms at concurrency 16'")
    metric, sel, op, rhs = m.group("metric").lower(), m.group("sel"), m.group("op"), m.group("rhs")
    head = metric.split(".")[0]
    if head in LATENCY_METRICS:
        stat = metric[len(head) + 1:]
        if stat not in STATS:
            raise GateError(f"gate {text!r}: latency statistic must be one of {', '.join(STATS)}")
        family = "latency"
    elif metric in LEVEL_METRICS:
        family = "level"
    elif metric in SYSTEM_METRICS:
        family = "system"
    else:
        family = "quality"
        base = FAILURE_ALIASES.get(metric, metric)
        known = quality_keys | {"accuracy", "recall", "refusal_rate"} | {k + "@e2e" for k in quality_keys}
        if base not in known and metric not in known:
            raise GateError(f"gate {text!r}: unknown metric {metric!r}; latency: "
                            f"{'/'.join(LATENCY_METRICS)}.<stat>, level: {', '.join(LEVEL_METRICS)}, quality: "
                            f"{', '.join(sorted(known)) or '(no scorer configured)'}")
    if sel is not None:
        sel = sel.strip()
        if family != "quality":
            raise GateError(f"gate {text!r}: [{sel}] selects a slice; latency and level metrics are per level")
        if sel not in slices and not (metric == "recall" and sel in labels):
            raise GateError(f"gate {text!r}: unknown slice {sel!r}; slices: {', '.join(sorted(slices))}"
                            + (f"; labels: {', '.join(sorted(labels))}" if metric == "recall" else ""))
    if metric == "recall" and sel is None:
        raise GateError(f"gate {text!r}: recall needs a label or slice, e.g. recall[rare_label]")
    relative = rhs.lower().startswith("baseline")
    unit_family = "throughput" if metric in ("throughput", "requests_per_s") else family
    if relative:
        sign = -1.0 if "-" in rhs else 1.0
        budget = sign * _number(re.split(r"[+-]", rhs, maxsplit=1)[1], unit_family, True, text)
        if metric == "error_rate":
            raise GateError(f"gate {text!r}: error_rate takes a fixed budget (e.g. 'error_rate < 1%')")
        if family == "quality" and ((op in (">", ">=") and budget > 0) or (op in ("<", "<=") and budget < 0)):
            raise GateError(f"gate {text!r}: a relative quality gate states the allowed drop, e.g. "
                            "'accuracy >= baseline - 1pt' or 'json_parse_failure_rate <= baseline + 1pt'")
    else:
        budget = _number(rhs, unit_family, False, text)
    level = float(m.group("level")) if m.group("level") else None
    if level is not None and level not in levels:
        raise GateError(f"gate {text!r}: level {level:g} is not measured; levels: "
                        f"{', '.join(f'{x:g}' for x in levels)}")
    if level is not None and family == "quality":
        raise GateError(f"gate {text!r}: quality gates are over all items ('at' applies to latency and errors)")
    return Gate(text.strip(), metric, sel, op, budget, relative, level, family)


@dataclass
class GateResult:
    gate: str
    target: str
    verdict: str                 # pass | fail | inconclusive
    measured: Optional[float]
    budget: Optional[float]
    detail: str
    bound: Optional[float] = None
    items_needed: Optional[int] = None
    p_value: Optional[float] = None   # for Holm: evidence that the gate passes
    slice: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _better(op: str, value: float, budget: float) -> bool:
    return {"<": value < budget, "<=": value <= budget, ">": value > budget, ">=": value >= budget}[op]


def _rate_gate(op: str, k: int, n: int, budget: float) -> tuple[str, float, Optional[int], float]:
    """Verdict of 'rate <op> budget' from k of n, the deciding bound, items needed, and a p-value
    for 'the gate passes' (the smallest alpha at which the one-sided bound clears the budget)."""
    def bound(conf: float) -> float:
        low, high = wilson_interval(k, n, 2 * conf - 1)
        return high if op in ("<", "<=") else low

    b = bound(1 - ALPHA)
    other = wilson_interval(k, n, 1 - 2 * ALPHA)[0 if op in ("<", "<=") else 1]
    if _better(op, b, budget):
        verdict = "pass"
    elif not _better(op, other, budget):
        verdict = "fail"
    else:
        verdict = "inconclusive"
    p = _p_value(lambda conf: _better(op, bound(conf), budget))
    needed = None
    if verdict == "inconclusive" and n and _better(op, k / n, budget):
        # Items needed at the observed rate for the bound to clear the budget (doubling + bisection).
        def clears(total: int) -> bool:
            return _better(op, wilson_interval(round(k / n * total), total, 1 - 2 * ALPHA)[
                1 if op in ("<", "<=") else 0], budget)
        lo, hi = n, 2 * n
        while hi < 10**8 and not clears(hi):
            lo, hi = hi, 2 * hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if clears(mid) else (mid, hi)
        needed = hi if hi < 10**8 else None
    return verdict, b, needed, p


def _p_value(passes_at: Callable[[float], bool]) -> float:
    """Smallest alpha such that the test passes at confidence 1 - alpha (bisection); 1.0 if never."""
    if not passes_at(0.5 + 1e-9):
        return 1.0
    lo, hi = 0.5, 1 - 1e-12  # passes at lo, maybe not at hi
    if passes_at(hi):
        return 1e-12
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if passes_at(mid) else (lo, mid)
    return 1 - lo


def apply_holm(results: list[GateResult]) -> None:
    """Holm step-down over the slice gates of one target: a slice gate keeps 'pass' only if it
    survives the family-wise correction; otherwise it becomes inconclusive (never 'fail')."""
    family = [r for r in results if r.slice is not None and r.p_value is not None]
    if len(family) < 2:
        return
    adjusted = holm_adjust([r.p_value for r in family])
    for r, p in zip(family, adjusted):
        if r.verdict == "pass" and p > ALPHA:
            r.verdict = "inconclusive"
            r.detail += f"; not significant after Holm correction over {len(family)} slice gates (p={p:.3g})"


def exit_code(results: list[GateResult]) -> int:
    """0 all pass, 1 any gate failed, 3 no failure but some inconclusive."""
    verdicts = {r.verdict for r in results}
    if "fail" in verdicts:
        return 1
    if "inconclusive" in verdicts:
        return 3
    return 0


def paired_noninferiority(base: list[bool], cand: list[bool], op: str, delta: float) -> tuple[str, str, Any]:
    """'cand >= baseline - delta' (higher is better) or 'cand <= baseline + delta' on a failure rate
    (lower is better: the booleans are inverted so both become a non-inferiority test)."""
    if op in ("<", "<="):
        base, cand, margin = [not x for x in base], [not x for x in cand], delta
    else:
        margin = -delta
    if margin < 0:
        raise GateError("a relative gate must allow a non-negative margin (e.g. '>= baseline - 1pt')")
    res = noninferiority_paired(base, cand, margin)
    detail = (f"paired on {res.n} items: candidate {res.cand_rate:.1%} vs baseline {res.base_rate:.1%}, "
              f"difference {res.difference:+.1%} (one-sided 95% bounds {res.lower:+.1%}..{res.upper:+.1%}), "
              f"margin {margin:.1%}")
    return res.verdict, detail, res


def fmt(value: Optional[float], family: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f} ms" if family == "latency" else (f"{value:.2%}" if abs(value) <= 1 else f"{value:,.1f}")
