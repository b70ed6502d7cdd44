"""``benchbox compare``: runs on the same frozen eval set, side by side.

Version over version (the same target name in several runs) or candidate vs baseline from separate
runs (``--target BASE=CAND``). The first run is the reference: every change is relative to it
(for a target it lacks, the first run that has the target). Different dataset hashes refuse the
comparison; different sampling settings, scenario files or load patterns only warn.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import click
import orjson

EXIT_USAGE = 2
MIN_N = 30  # QualitySpec.min_slice_n's default: fewer pairs get a stability warning

# (key, label, path into a level summary, better: "lower" | "higher")
METRICS: list[tuple[str, str, tuple[str, ...], str]] = [
    ("ttft_p50_ms", "TTFT p50 (ms)", ("metrics", "ttft_ms", "p50"), "lower"),
    ("ttft_p95_ms", "TTFT p95 (ms)", ("metrics", "ttft_ms", "p95"), "lower"),
    ("ttft_p99_ms", "TTFT p99 (ms)", ("metrics", "ttft_ms", "p99"), "lower"),
    ("e2e_p95_ms", "E2E p95 (ms)", ("metrics", "e2e_ms", "p95"), "lower"),
    ("itl_p50_ms", "ITL p50 (ms)", ("metrics", "itl_ms", "p50"), "lower"),
    ("output_tok_s", "output tok/s", ("throughput", "output_tokens_per_s"), "higher"),
    ("error_rate", "error rate", ("error_rate",), "lower"),
]


class CompareError(Exception):
    """A comparison that cannot be made (usage error): the message is one line for people."""


# -- loading ---------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise CompareError(f"{path}: not valid JSON ({e})") from None


def load_run(run_dir: Path) -> dict[str, Any]:
    """manifest.json + result.json (rebuilt from records.jsonl when absent) + scores.jsonl if any."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CompareError(f"{run_dir}: no such run directory")
    if not (run_dir / "manifest.json").exists():
        raise CompareError(f"{run_dir}: not a benchbox run directory (manifest.json expected)")
    manifest = _read_json(run_dir / "manifest.json")
    notes: list[str] = []
    if (run_dir / "result.json").exists():
        result = _read_json(run_dir / "result.json")
    elif (run_dir / "records.jsonl").exists():
        from bench.results import rebuild_from_records

        try:
            result = rebuild_from_records(run_dir)
        except (ValueError, KeyError, TypeError) as e:
            raise CompareError(f"{run_dir}: cannot rebuild the result from records.jsonl ({e})") from None
        notes.append("no result.json: latency rebuilt from records.jsonl")
    else:
        raise CompareError(f"{run_dir}: neither result.json nor records.jsonl: nothing to compare")
    scores = None
    if (run_dir / "scores.jsonl").exists():
        from bench.gate_run import read_scores
        from bench.quality import canonical

        try:
            scores = dict(canonical(read_scores(run_dir / "scores.jsonl"))) or None
        except (orjson.JSONDecodeError, TypeError) as e:
            raise CompareError(f"{run_dir / 'scores.jsonl'}: unreadable ({e})") from None
    try:
        dataset_sha = (manifest.get("dataset") or {}).get("sha256") or result.get("dataset_sha256")
        scenario = manifest.get("scenario") or {}
        targets = list(manifest.get("targets") or {}) or sorted({lv["target"] for lv in result.get("levels", [])})
    except (AttributeError, KeyError, TypeError):
        raise CompareError(f"{run_dir}: manifest.json or result.json is not shaped like a benchbox run") from None
    if not dataset_sha:
        raise CompareError(f"{run_dir}: the manifest names no dataset sha256: cannot tell what was evaluated")
    if result.get("complete") is False and not notes:
        why = result.get("interrupted")
        notes.append(f"incomplete run ({why})" if why else "incomplete run")
    return {
        "dir": str(run_dir), "run_id": manifest.get("run_id") or result.get("run_id") or run_dir.name,
        "scenario": scenario.get("name"), "scenario_sha256": scenario.get("sha256"),
        "pattern": (scenario.get("load") or {}).get("pattern"), "dataset_sha256": dataset_sha,
        "sampling": manifest.get("sampling") or {}, "targets": targets, "notes": notes,
        "primary": (result.get("quality") or {}).get("primary"),
        "_levels": result.get("levels") or [], "_scores": scores,
    }


# -- comparing -------------------------------------------------------------------------------------
def _get(d: Any, path: tuple[str, ...]) -> Optional[float]:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def relative_change(ref: Optional[float], value: Optional[float]) -> Optional[float]:
    """(value - ref) / ref in percent; None when either is missing or ref is 0 (0 when both are)."""
    if ref is None or value is None:
        return None
    if ref == 0:
        return 0.0 if value == 0 else None
    return (value - ref) / abs(ref) * 100.0


def _levels_of(run: dict[str, Any], target: str) -> dict[tuple[str, float], dict[str, Any]]:
    return {(lv.get("pattern") or run["pattern"] or "?", float(lv["level"])): lv
            for lv in run["_levels"] if lv.get("target") == target and lv.get("level") is not None}


def compare_latency(ref: dict[str, Any], ref_target: str, run: dict[str, Any], target: str) -> dict[str, Any]:
    a, b = _levels_of(ref, ref_target), _levels_of(run, target)
    levels = []
    for key in sorted(a.keys() & b.keys()):
        metrics = {}
        for name, _, path, better in METRICS:
            x, y = _get(a[key], path), _get(b[key], path)
            metrics[name] = {"reference": x, "value": y, "delta": None if x is None or y is None else y - x,
                             "change_pct": relative_change(x, y), "better": better}
        levels.append({"pattern": key[0], "level": key[1], "metrics": metrics,
                       "requests": [_get(x[key], ("requests", "measured")) for x in (a, b)]})
    return {"levels": levels,
            "only_in_reference": [{"pattern": p, "level": lv} for p, lv in sorted(a.keys() - b.keys())],
            "only_in_run": [{"pattern": p, "level": lv} for p, lv in sorted(b.keys() - a.keys())]}


def compare_quality(ref: dict[str, Any], ref_target: str, run: dict[str, Any], target: str,
                    primary: Optional[str]) -> dict[str, Any]:
    """Paired by item id on canonical responses; the reference run's responses are the base."""
    from bench.fidelity import compare_pair
    from bench.quality import ALL

    if not ref["_scores"] or not run["_scores"]:
        missing = [r["run_id"] for r in (ref, run) if not r["_scores"]]
        return {"available": False, "note": f"no scores.jsonl in {', '.join(missing)}"}
    base, cand = ref["_scores"].get(ref_target), run["_scores"].get(target)
    if not base or not cand:
        return {"available": False, "note": "no scored responses for this target in one of the runs"}
    stub = SimpleNamespace(slices=())  # per-slice views need the dataset: the overall view does not
    items = {i: stub for i in base.keys() | cand.keys()}
    entry = compare_pair(items, base, cand, primary, MIN_N).get(ALL, {})
    failed = sum(1 for i in base.keys() & cand.keys() if not (base[i].transport_ok and cand[i].transport_ok))
    return {"available": True, "primary": primary, **entry,
            "items_only_in_reference": len(base.keys() - cand.keys()),
            "items_only_in_run": len(cand.keys() - base.keys()), "pairs_with_transport_failure": failed}


def _warnings(runs: list[dict[str, Any]]) -> list[str]:
    ref, out = runs[0], []
    for run in runs[1:]:
        keys = sorted(k for k in ref["sampling"].keys() | run["sampling"].keys()
                      if ref["sampling"].get(k) != run["sampling"].get(k))
        if keys:
            diffs = ", ".join(f"{k}: {ref['sampling'].get(k)!r} vs {run['sampling'].get(k)!r}" for k in keys)
            out.append(f"sampling settings differ between {ref['run_id']} and {run['run_id']} ({diffs}): "
                       "responses and latencies may differ for that reason alone")
        if ref["scenario_sha256"] != run["scenario_sha256"]:
            out.append(f"scenario file differs between {ref['run_id']} ({str(ref['scenario_sha256'])[:12]}) and "
                       f"{run['run_id']} ({str(run['scenario_sha256'])[:12]}): check load and targets")
        if ref["pattern"] != run["pattern"]:
            out.append(f"load pattern differs ({ref['run_id']}: {ref['pattern']}, "
                       f"{run['run_id']}: {run['pattern']}): levels are matched only within the same pattern")
        if ref["primary"] and run["primary"] and ref["primary"] != run["primary"]:
            out.append(f"primary outcome differs ({ref['primary']} vs {run['primary']}): using {ref['primary']}")
    for run in runs:
        out.extend(f"{run['run_id']}: {note}" for note in run["notes"])
    return list(dict.fromkeys(out))


def _pairs(runs: list[dict[str, Any]], targets: Optional[list[str]]) -> list[tuple[str, str]]:
    if not targets:
        names = list(dict.fromkeys(t for run in runs for t in run["targets"]))
        return [(n, n) for n in names]
    known = {t for run in runs for t in run["targets"]}
    out = []
    for spec in targets:
        ref_name, _, name = spec.partition("=")
        ref_name, name = ref_name.strip(), (name or ref_name).strip()
        for n in (ref_name, name):
            if n not in known:
                raise CompareError(f"--target {spec}: no run has a target named {n!r} "
                                   f"(known: {', '.join(sorted(known)) or 'none'})")
        out.append((ref_name, name))
    return out


def compare_runs(run_dirs: list[Path], targets: Optional[list[str]] = None) -> dict[str, Any]:
    """The comparison report (a JSON-ready dict). Raises CompareError on a usage error.

    ``targets``: names to compare (default: every target), or ``REF=OTHER`` to compare target REF of
    the reference run with target OTHER of the later runs (candidate vs baseline from separate runs).
    """
    if len(run_dirs) < 2:
        raise CompareError("compare needs at least two run directories")
    runs = [load_run(Path(d)) for d in run_dirs]
    ref = runs[0]
    for run in runs[1:]:
        if run["dataset_sha256"] != ref["dataset_sha256"]:
            raise CompareError(
                f"different eval sets: {ref['run_id']} ({ref['dir']}) has dataset sha256 "
                f"{ref['dataset_sha256']}, {run['run_id']} ({run['dir']}) has {run['dataset_sha256']}; "
                "runs compare only on the same frozen set")
    primary = next((r["primary"] for r in runs if r["primary"]), None)
    comparisons, missing = [], []
    for ref_name, name in _pairs(runs, targets):
        holders = [i for i, r in enumerate(runs) if ref_name in r["targets"]]
        others = [i for i, r in enumerate(runs) if name in r["targets"] and (not holders or i > holders[0])]
        if ref_name == name:
            absent = [r["run_id"] for r in runs if name not in r["targets"]]
            if absent:
                missing.append({"target": name, "present_in": [r["run_id"] for r in runs if name in r["targets"]],
                                "absent_from": absent})
        if not holders or not others:
            if ref_name != name:
                missing.append({"target": f"{ref_name}={name}", "present_in": [], "absent_from": [],
                                "note": f"no run after the one holding {ref_name} has {name}"})
            continue
        base = runs[holders[0]]
        for i in others:
            run = runs[i]
            comparisons.append({
                "reference_run": base["run_id"], "run": run["run_id"],
                "reference_target": ref_name, "target": name,
                "latency": compare_latency(base, ref_name, run, name),
                "quality": compare_quality(base, ref_name, run, name, primary),
            })
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    return {"schema_version": 1, "reference": ref["run_id"], "dataset_sha256": ref["dataset_sha256"],
            "primary": primary, "runs": public, "warnings": _warnings(runs), "comparisons": comparisons,
            "missing_targets": missing}


# -- rendering -------------------------------------------------------------------------------------
def _fmt(name: str, v: Optional[float]) -> str:
    if v is None:
        return "—"
    return f"{v:.2%}" if name == "error_rate" else f"{v:,.1f}"


def _change(m: dict[str, Any], name: str) -> str:
    pct, delta = m["change_pct"], m["delta"]
    if pct is None:
        return f"{delta * 100:+.2f}pt" if name == "error_rate" and delta is not None else "—"
    text = f"{pct:+.1f}%"
    if abs(pct) < 5:
        return text
    worse = pct > 0 if m["better"] == "lower" else pct < 0
    return f"[{'red' if worse else 'green'}]{text}[/]"


def _count(v: Optional[float]) -> str:
    return "—" if v is None else f"{int(v):,}"


def _p(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3g}"


def render_compare(report: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    e = escape
    console.print(f"[bold]benchbox compare[/] — reference {e(report['reference'])}, "
                  f"dataset sha256 {e(report['dataset_sha256'][:12])}, runs: "
                  + ", ".join(e(r["run_id"]) for r in report["runs"]))
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {e(w)}")
    for m in report["missing_targets"]:
        text = m.get("note") or (f"present in {', '.join(m['present_in'])}; "
                                 f"absent from {', '.join(m['absent_from'])}")
        console.print(f"[yellow]target {e(m['target'])}:[/] {e(text)}")
    if not report["comparisons"]:
        console.print("[yellow]nothing to compare:[/] no target appears in two of these runs")
        return
    for c in report["comparisons"]:
        lat = c["latency"]
        who = c["target"] if c["target"] == c["reference_target"] else f"{c['reference_target']} → {c['target']}"
        table = Table(title=e(f"latency · {who} · {c['reference_run']} → {c['run']}"))
        for col, justify in (("level", "left"), ("metric", "left"), (c["reference_run"], "right"),
                             (c["run"], "right"), ("change", "right")):
            table.add_column(e(col), justify=justify)  # type: ignore[arg-type]
        for lv in lat["levels"]:
            n_a, n_b = lv["requests"]
            table.add_row(e(f"{lv['pattern']} {lv['level']:g}"), "requests", _count(n_a), _count(n_b), "")
            for name, label, _, _ in METRICS:
                m = lv["metrics"][name]
                table.add_row("", e(label), _fmt(name, m["reference"]), _fmt(name, m["value"]), _change(m, name))
            table.add_section()
        if lat["levels"]:
            console.print(table)
        for side, run, name in (("only_in_reference", c["reference_run"], c["reference_target"]),
                                ("only_in_run", c["run"], c["target"])):
            if lat[side]:
                levels = ", ".join(f"{x['pattern']} {x['level']:g}" for x in lat[side])
                console.print(f"[dim]levels only in {e(run)} ({e(name)}): {e(levels)}[/]")
    qual = [c for c in report["comparisons"] if c["quality"].get("available")]
    for c in report["comparisons"]:
        if not c["quality"].get("available"):
            console.print(f"[dim]quality {e(c['target'])} ({e(c['run'])}): {e(c['quality']['note'])}[/]")
    if not qual:
        return
    table = Table(title=e(f"quality (paired by item, canonical responses; primary {report['primary'] or '—'})"))
    for col in ("target", "runs", "pairs", "ref rate", "rate", "difference (95% CI)", "flips R→W / W→R",
                "McNemar p", "agreement"):
        table.add_column(col, justify="left" if col in ("target", "runs") else "right")
    for c in qual:
        q = c["quality"]
        flips = q.get("flips")
        ci = q.get("difference_ci95")
        diff = "—" if q.get("difference") is None else f"{q['difference']:+.1%} [{ci[0]:+.1%}, {ci[1]:+.1%}]"
        p = q.get("mcnemar_p")
        p_text = _p(p) if p is None or p >= 0.05 else f"[bold]{_p(p)}[/]"
        agree = (q.get("agreement") or {}).get("value")
        rate = (lambda k: "—" if q.get(k) is None else f"{q[k]:.1%}")
        who = c["target"] if c["target"] == c["reference_target"] else f"{c['reference_target']}→{c['target']}"
        table.add_row(e(who),
                      e(f"{c['reference_run']} → {c['run']}"), str(q.get("n_pairs", 0)), rate("baseline_rate"),
                      rate("candidate_rate"), diff,
                      f"{flips['right_to_wrong']} / {flips['wrong_to_right']}" if flips else "—", p_text,
                      "—" if agree is None else f"{agree:.1%}")
    console.print(table)
    for c in qual:
        if c["quality"].get("warning"):
            console.print(f"[yellow]{e(c['target'])}:[/] {e(c['quality']['warning'])}")


# -- command ---------------------------------------------------------------------------------------
@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN_A RUN_B [RUN...]")
@click.option("--target", "targets", multiple=True, metavar="NAME|REF=OTHER",
              help="compare only this target (repeatable); REF=OTHER pairs differently named targets across runs")
@click.option("--json", "json_out", default=None, metavar="OUT",
              help="also write the comparison as JSON ('-': stdout, no table)")
def compare_command(run_dirs: tuple[Path, ...], targets: tuple[str, ...], json_out: Optional[str]) -> None:
    """Compare runs on the same frozen eval set: latency side by side, quality paired by item."""
    from rich.console import Console

    try:
        report = compare_runs(list(run_dirs), list(targets) or None)
    except CompareError as exc:
        click.echo(f"benchbox: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if json_out == "-":
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        for w in report["warnings"]:
            click.echo(f"benchbox: warning: {w}", err=True)
        return
    if json_out:
        try:
            Path(json_out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            click.echo(f"benchbox: error: cannot write {json_out}: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_USAGE)
    console = Console()
    render_compare(report, console if console.is_terminal else Console(width=170))
