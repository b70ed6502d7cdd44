"""``result.json``: the versioned summary of a run, rebuilt from records when needed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import orjson
from pydantic import BaseModel, ConfigDict

from bench.records import read_records
from bench.stats import cold_summary, summarize_records

RESULT_SCHEMA_VERSION = 1


class ResultFile(BaseModel):
    """The outer shape of result.json, validated when read back (inner dicts are free-form)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int
    run_id: str
    complete: bool
    interrupted: Optional[str] = None
    levels: list[dict[str, Any]]
    targets: dict[str, dict[str, Any]]
    notes: list[str] = []


def write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temp file + rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build_result(
    manifest: dict[str, Any],
    levels: list[dict[str, Any]],
    targets: dict[str, dict[str, Any]],
    complete: bool,
    interrupted: Optional[str] = None,
    notes: Optional[list[str]] = None,
) -> dict[str, Any]:
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "run_id": manifest["run_id"],
        "scenario": manifest["scenario"]["name"],
        "dataset_sha256": manifest["dataset"]["sha256"],
        "complete": complete,
        "interrupted": interrupted,
        "levels": levels,
        "targets": targets,
        "notes": notes or [],
        "failures": [],
    }


def patterns_of(manifest: dict[str, Any]) -> dict[str, str]:
    pattern = manifest["scenario"]["load"]["pattern"]
    return {name: pattern for name in manifest["targets"]}


def rebuild_from_records(run_dir: Path) -> dict[str, Any]:
    """Recompute the result from manifest.json + records.jsonl alone."""
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    records = list(read_records(run_dir / "records.jsonl"))
    levels = summarize_records(records, patterns_of(manifest))
    previous: dict[str, Any] = {}
    if (run_dir / "result.json").exists():
        try:
            previous = orjson.loads((run_dir / "result.json").read_bytes())
        except orjson.JSONDecodeError:
            previous = {}
    targets = previous.get("targets") or {}
    # Server/GPU metrics observed during a level are not in the records: carry them over.
    # So is the load generator's own health (bench/client_health.py).
    carried = {(lv["target"], lv["level"]): lv for lv in previous.get("levels", [])}
    for lv in levels:
        before = carried.get((lv["target"], lv["level"]), {})
        for key in ("observed", "client"):
            if key in before:
                lv[key] = before[key]
    for name in manifest["targets"]:
        entry = targets.setdefault(name, {})
        entry["cold"] = cold_summary(r for r in records if r.target == name)
    result = build_result(
        manifest, levels, targets,
        complete=bool(previous.get("complete", False)),
        interrupted=previous.get("interrupted"),
        notes=previous.get("notes"),
    )
    result["failures"] = previous.get("failures", [])
    # Sections computed from records by later passes (score, gates, decision) are kept as they are.
    for key in ("quality", "gates", "capacity", "cost", "router", "academic"):
        if key in previous:
            result[key] = previous[key]
    return result


def load_result(path: Path) -> ResultFile:
    return ResultFile.model_validate(orjson.loads(path.read_bytes()))
