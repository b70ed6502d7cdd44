"""``benchbox sweep --resume RUN_DIR``: continue an interrupted run where it stopped.

What a run directory says about its progress: result.json (rewritten after every finished level)
holds ``progress``: the target x levels that finished and the targets that are done (every level
run, or stopped early on purpose: unreachable, stop_error_rate). A resume

- refuses (ResumeError, one line) when the scenario file or the selected eval set changed since
  the run began (their SHA-256 are in the manifest), or when the run is complete;
- keeps every record and appends the new ones; a level that an interrupt cut short runs again in
  full and its new records (``resume`` = n) supersede the old ones (``bench.records.read_records``);
- continues each target's walk over the eval set where its finished levels left it, so the items
  each level sees are those an uninterrupted run would have sent;
- adds an entry to the manifest's ``resumes`` (time and clock anchor of this attempt);
- ends like any run: result.json, quality, gates and report cover the whole run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import orjson

from bench.dataset import Dataset
from bench.records import read_records, repair_torn_tail
from bench.scenario import LoadedScenario


class ResumeError(Exception):
    """This run directory cannot be resumed with this scenario. ``str()`` is one line."""


@dataclass
class ResumeState:
    run_dir: Path
    manifest: dict[str, Any]
    resume: int                                    # this attempt's number (1 for the first resume)
    levels: list[dict[str, Any]]                   # summaries of the finished levels, as they were
    targets: dict[str, dict[str, Any]]
    notes: list[str]
    levels_done: list[list[Any]] = field(default_factory=list)   # [[target, level], ...]
    targets_done: list[str] = field(default_factory=list)
    cursors: dict[str, dict[str, int]] = field(default_factory=dict)  # target -> phase -> requests sent

    def level_done(self, target: str, level: float) -> bool:
        return [target, level] in self.levels_done


def _read_json(path: Path, what: str) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ResumeError(f"{path.parent}: not a benchbox run directory (no {path.name})") from None
    except (OSError, orjson.JSONDecodeError) as e:
        raise ResumeError(f"{path}: cannot read the {what}: {e}") from None


def scenario_of(run_dir: Path) -> str:
    """The scenario file the run began with (``--resume`` without FILE)."""
    manifest = _read_json(run_dir / "manifest.json", "manifest")
    try:
        return str(manifest["scenario"]["path"])
    except (KeyError, TypeError):
        raise ResumeError(f"{run_dir}/manifest.json: no scenario path in the manifest") from None


def load_resume(run_dir: Path, loaded: LoadedScenario, dataset: Dataset) -> ResumeState:
    """Check that ``run_dir`` can be resumed with this scenario and read its progress. Writes nothing."""
    manifest = _read_json(run_dir / "manifest.json", "manifest")
    if not (run_dir / "records.jsonl").is_file():
        raise ResumeError(f"{run_dir}: not a benchbox run directory (no records.jsonl)")
    began = manifest.get("scenario", {}).get("sha256")
    if began != loaded.sha256:
        raise ResumeError(f"{loaded.path}: the scenario changed since the run began (sha256 {loaded.sha256[:12]} "
                          f"!= {str(began)[:12]}); resuming would mix two benchmarks: start a new run")
    ds = manifest.get("dataset", {}).get("sha256")
    if ds != dataset.sha256:
        raise ResumeError(f"{dataset.path}: the eval set changed since the run began (sha256 "
                          f"{dataset.sha256[:12]} != {str(ds)[:12]}); start a new run")
    result: dict[str, Any] = {}
    if (run_dir / "result.json").exists():
        result = _read_json(run_dir / "result.json", "result")
    if result.get("complete"):
        raise ResumeError(f"{run_dir}: the run is complete; nothing to resume")
    progress = result.get("progress") or {}
    levels_done = [[t, lv] for t, lv in progress.get("levels_done", [])]
    resume = len(manifest.get("resumes", [])) + 1
    state = ResumeState(
        run_dir=run_dir, manifest=manifest, resume=resume,
        levels=[lv for lv in result.get("levels", []) if [lv.get("target"), lv.get("level")] in levels_done],
        targets=result.get("targets") or {}, notes=list(result.get("notes") or []),
        levels_done=levels_done, targets_done=list(progress.get("targets_done", [])),
    )
    state.cursors = _cursors(run_dir, levels_done)
    return state


def _cursors(run_dir: Path, levels_done: list[list[Any]]) -> dict[str, dict[str, int]]:
    """Requests each target sent per phase in its finished levels (cold: in every launch)."""
    done = {(t, lv) for t, lv in levels_done}
    counts: dict[str, Counter] = {}
    for r in read_records(run_dir / "records.jsonl"):
        if r.phase == "cold" or (r.target, r.level) in done:
            if r.attempt == 1:  # a retried request is one item, whatever its number of attempts
                counts.setdefault(r.target, Counter())[r.phase] += 1
    return {t: dict(c) for t, c in counts.items()}


def begin_resume(state: ResumeState) -> None:
    """Mark the run directory as resumed: torn last record line cut, manifest entry added."""
    torn = repair_torn_tail(state.run_dir / "records.jsonl")
    entry: dict[str, Any] = {
        "resume": state.resume, "unix": time.time(),
        "clock_anchor": {"perf_counter_ns": perf_counter_ns(), "unix_ns": time.time_ns()},
        "levels_done": state.levels_done, "targets_done": state.targets_done,
    }
    if torn:
        entry["torn_bytes_dropped"] = torn
    state.manifest.setdefault("resumes", []).append(entry)
