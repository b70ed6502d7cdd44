"""Run the quality pass over a run directory: scores.jsonl + the `quality` section of result.json."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from bench.dataset import Dataset
from bench.fidelity import class_metrics, compare_pair, diagnose
from bench.quality import (
    QualityPass, calibration, canonical, instability, repeat_variance, slice_table, write_scores,
)
from bench.records import read_records
from bench.scenario import LoadedScenario


def quality_section(loaded: LoadedScenario, dataset: Dataset, run_dir: Path) -> Optional[dict[str, Any]]:
    """Score every measured response of the run; None when the scenario configures no scorer."""
    sc = loaded.scenario
    spec = sc.quality
    if not spec.scorers:
        return None
    qp = QualityPass(spec, loaded.folder, dataset)
    responses = qp.score_all(read_records(run_dir / "records.jsonl"))
    write_scores(run_dir / "scores.jsonl", responses)
    canon = canonical(responses)
    by_target: dict[str, list] = defaultdict(list)
    for r in responses:
        by_target[r.target].append(r)
    baseline = next((t.name for t in sc.targets if t.role == "baseline"), None)
    targets: dict[str, Any] = {}
    for t in sc.targets:
        per_item = canon.get(t.name, {})
        if not per_item:
            continue
        slices = slice_table(qp.items, per_item, qp.primary, spec.min_slice_n)
        entry: dict[str, Any] = {
            "role": t.role,
            "responses_scored": len(by_target[t.name]),
            "slices": slices,
            "classes": class_metrics(per_item, spec.rare_label_share),
            "stability": {**instability(by_target[t.name]),
                          "repeat_variance": repeat_variance(by_target[t.name], qp.primary)},
            "calibration": calibration(per_item, qp.primary),
        }
        if spec.by_level:
            entry["by_level"] = _by_level(qp, by_target[t.name], spec.min_slice_n)
        fidelity = None
        if baseline and t.name != baseline and canon.get(baseline):
            fidelity = compare_pair(qp.items, canon[baseline], per_item, qp.primary, spec.min_slice_n)
            entry["vs_baseline"] = fidelity
        entry["diagnosis"] = diagnose(t.name, slices, fidelity, qp.primary, spec.min_slice_n, entry["calibration"])
        targets[t.name] = entry
    return {
        "schema_version": 1,
        "primary": qp.primary,
        "scorers": [s["name"] for s in spec.scorers],
        "baseline": baseline,
        "unit": "items (each target's first measured response per item)",
        "judges": qp.trust(),
        "targets": targets,
    }


def _by_level(qp: QualityPass, responses: list, min_n: int) -> dict[str, Any]:
    levels: dict[float, dict[str, Any]] = defaultdict(dict)
    for r in sorted(responses, key=lambda r: (r.repeat, r.seq)):
        levels[r.level].setdefault(r.item_id, r)
    return {f"{level:g}": slice_table(qp.items, per_item, qp.primary, min_n) for level, per_item in sorted(levels.items())}
