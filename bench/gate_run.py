"""Gates over a run directory: parse (at scenario load), evaluate, and write CI outputs.

Outputs: the ``gates`` section of result.json, ``gates.md`` (a markdown summary for pipelines)
and ``gates.xml`` (JUnit: one test case per gate and target; inconclusive = skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional
from xml.sax.saxutils import escape as xml_escape

import orjson

from bench.dataset import Dataset
from bench.gate_eval import GateContext, evaluate
from bench.gates import Gate, GateError, GateResult, exit_code, fmt, parse_gate
from bench.quality import ScoredResponse, canonical
from bench.scenario import LoadedScenario, ScenarioError


def quality_keys(loaded: LoadedScenario) -> set[str]:
    from bench.scoring import build_scorer

    keys: set[str] = set()
    for spec in loaded.scenario.quality.scorers if loaded is not None else []:
        scorer = build_scorer(spec, loaded.folder)
        keys.update(getattr(scorer, "keys", {}) or {})
    if loaded.scenario.sampling.logprobs is not None:
        keys.add("confidence")
    return keys


def labels_of(dataset: Dataset, loaded: Optional[LoadedScenario] = None) -> set[str]:
    """Labels a `recall[<label>]` gate may name: label sets in scorer configs and item metadata,
    and the string references of items (a label scorer's references are labels)."""
    out: set[str] = set()
    meta_keys = {"labels"}
    for spec in loaded.scenario.quality.scorers if loaded is not None else []:
        out.update(x for x in spec.get("labels") or [] if isinstance(x, str))
        if isinstance(spec.get("labels_from_meta"), str):
            meta_keys.add(spec["labels_from_meta"])
    for item in dataset.items:
        for key in meta_keys:
            if isinstance(item.meta.get(key), list):
                out.update(x for x in item.meta[key] if isinstance(x, str))
        if isinstance(item.reference, str) and len(item.reference) <= 64:
            out.add(item.reference)
    return out


def parse_gates(loaded: LoadedScenario, dataset: Dataset) -> list[Gate]:
    """All of the scenario's gates, checked against what it can measure. Raises ScenarioError."""
    sc = loaded.scenario
    if not sc.gates:
        return []
    slices = {s for item in dataset.items for s in item.slices}
    keys = quality_keys(loaded)
    gates = []
    for i, text in enumerate(sc.gates):
        try:
            gates.append(parse_gate(text, list(sc.load.levels), slices, keys, labels_of(dataset, loaded)))
        except GateError as e:
            raise ScenarioError(f"{loaded.path}: gates.{i}: {e}") from None
    return gates


def read_scores(path: Path) -> list[ScoredResponse]:
    out = []
    if not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        if line.strip():
            out.append(ScoredResponse(**orjson.loads(line)))
    return out


def run_gates(loaded: LoadedScenario, dataset: Dataset, run_dir: Path,
              result: dict[str, Any]) -> tuple[list[GateResult], int]:
    gates = parse_gates(loaded, dataset)
    if not gates:
        return [], 0
    sc = loaded.scenario
    baseline = next((t.name for t in sc.targets if t.role == "baseline"), None)
    candidates = [t.name for t in sc.targets if t.role == "candidate"] or ([baseline] if baseline else [])
    canon = canonical(read_scores(run_dir / "scores.jsonl"))
    primary = (result.get("quality") or {}).get("primary") or sc.quality.primary
    ctx = GateContext(result, canon, {i.id: i for i in dataset.items}, baseline, primary)
    results = evaluate(gates, candidates, ctx)
    code = exit_code(results)
    result["gates"] = {"exit_code": code, "results": [r.as_dict() for r in results]}
    (run_dir / "gates.md").write_text(markdown(results, code))
    (run_dir / "gates.xml").write_text(junit(results, sc.name))
    return results, code


_ICON = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}


def markdown(results: list[GateResult], code: int) -> str:
    lines = [f"## benchbox gates: {_summary(results)} (exit {code})", "",
             "| verdict | target | gate | measured | detail |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {_ICON[r.verdict]} | {r.target} | `{r.gate}` | {_measured(r)} | "
                     f"{r.detail.replace('|', '/')}{_needed(r)} |")
    return "\n".join(lines) + "\n"


def junit(results: list[GateResult], suite: str) -> str:
    fails = sum(r.verdict == "fail" for r in results)
    skipped = sum(r.verdict == "inconclusive" for r in results)
    out = [f'<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="benchbox gates: {xml_escape(suite)}" tests="{len(results)}" failures="{fails}" '
           f'skipped="{skipped}">']
    for r in results:
        name = xml_escape(f"{r.target}: {r.gate}", {'"': "&quot;"})
        out.append(f'  <testcase classname="benchbox.{xml_escape(r.target)}" name="{name}">')
        if r.verdict == "fail":
            out.append(f'    <failure message="{xml_escape(r.detail, {chr(34): "&quot;"})}"/>')
        elif r.verdict == "inconclusive":
            out.append(f'    <skipped message="inconclusive: {xml_escape(r.detail + _needed(r), {chr(34): "&quot;"})}"/>')
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"


def _summary(results: list[GateResult]) -> str:
    counts = {v: sum(r.verdict == v for r in results) for v in ("pass", "fail", "inconclusive")}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def _measured(r: GateResult) -> str:
    family = "latency" if r.gate.split(".")[0].strip().lower() in ("ttft", "itl", "tpot", "e2e") else "rate"
    return fmt(r.measured, family)


def _needed(r: GateResult) -> str:
    return f"; about {r.items_needed} items would settle it" if r.verdict == "inconclusive" and r.items_needed else ""


def render_gates(results: list[GateResult], code: int, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"acceptance gates: {_summary(results)} → exit {code}")
    for col in ("verdict", "target", "gate", "measured", "detail"):
        table.add_column(col)
    colour = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
    for r in results:
        table.add_row(f"[{colour[r.verdict]}]{_ICON[r.verdict]}[/]", escape(r.target), escape(r.gate),
                      escape(_measured(r)), escape(r.detail + _needed(r)))
    console.print(table)
