"""``benchbox academic FILE``: perplexity, KL divergence and lm-eval tasks on the scenario's targets.

With ``--run RUN_DIR`` the results join that run's result.json (``academic``) and report.html, next to its
quality pass; without, a new run directory holds them. Informational only: the exit code never says a
model passed (0 done · 2 usage error or a required measurement refused · 4 a measurement failed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import click

PARTS = ("llamacpp", "endpoint", "lmeval")


@click.command("academic")
@click.argument("scenario_file", metavar="FILE")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              metavar="RUN_DIR", help="join the results into this run (its result.json and report.html)")
@click.option("--out", "out_dir", default="runs", show_default=True,
              help="parent folder of the new run directory (without --run)")
@click.option("--skip", "skip", multiple=True, type=click.Choice(PARTS),
              help="leave a part out: llamacpp (perplexity/KLD), endpoint (probe, endpoint perplexity), "
                   "lmeval")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="llama-perplexity threads")
def academic_command(scenario_file: str, run_dir: Optional[Path], out_dir: str, skip: tuple[str, ...],
                     threads: Optional[int]) -> None:
    """Perplexity, KL divergence and lm-eval tasks beside the product numbers (informational)."""
    sys.exit(academic_main(scenario_file, run_dir, Path(out_dir), frozenset(skip), threads))


def academic_main(scenario_file: str, run_dir: Optional[Path], out_dir: Path, skip: frozenset[str],
                  threads: Optional[int] = None, say: Any = None) -> int:
    import orjson

    from bench.academic import lmeval
    from bench.academic.perplexity import AcademicError
    from bench.academic.run import run_academic
    from bench.academic.spec import AcademicSpec
    from bench.cli import _load, fail
    from bench.results import build_result, write_json_atomic
    from bench.scenario import ScenarioError

    say = say or (lambda msg: click.echo(msg, err=True))
    loaded, dataset = _load(scenario_file)
    spec = getattr(loaded.scenario, "academic", None) or AcademicSpec()
    if spec.lmeval and "lmeval" not in skip and (why := lmeval.missing()):
        fail(f"{loaded.path}: academic.lmeval: {why}; or run with --skip lmeval")
    result: dict[str, Any] = {}
    created = run_dir is None
    if run_dir is not None:
        if not (run_dir / "manifest.json").is_file():
            fail(f"{run_dir}: not a benchbox run directory (manifest.json expected)")
        if (run_dir / "result.json").is_file():
            result = orjson.loads((run_dir / "result.json").read_bytes())
        manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
        if manifest.get("scenario", {}).get("name") != loaded.scenario.name:
            say(f"benchbox: note: {run_dir} ran scenario {manifest.get('scenario', {}).get('name')!r}, "
                f"not {loaded.scenario.name!r}; targets are matched by name")
    else:
        run_dir = new_run_dir(loaded, dataset, out_dir)
        manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
        result = build_result(manifest, [], {}, complete=True, notes=["academic pass only: no load was run"])
    say(f"benchbox: academic pass of {loaded.scenario.name} -> {run_dir}")
    try:
        outcome = run_academic(loaded, spec, run_dir, result.get("quality") or {}, say, skip, threads)
    except (AcademicError, ScenarioError) as e:
        fail(str(e))
    result["academic"] = outcome.section
    write_json_atomic(run_dir / "result.json", result)
    if created:  # the report's size and facts columns read the manifest's model facts
        for name, e in ((outcome.section.get("llamacpp") or {}).get("targets") or {}).items():
            if name in manifest.get("targets", {}) and e.get("size_bytes"):
                manifest["targets"][name]["server"] = {"model_facts": {
                    "file": e.get("model"), "size_bytes": e["size_bytes"], "sha256": e.get("model_sha256"),
                    "quantization": e.get("quantization")}}
        write_json_atomic(run_dir / "manifest.json", manifest)
    from bench.academic.report import render_terminal
    from bench.report.html import write_report

    render_terminal(outcome.section)
    for line in outcome.refusals:
        click.echo(f"benchbox: refused: {line}", err=True)
    for line in outcome.errors:
        click.echo(f"benchbox: error: {line}", err=True)
    click.echo(f"report: {write_report(run_dir)}")
    click.echo(f"result: {run_dir / 'result.json'} (academic)")
    return outcome.code


def new_run_dir(loaded: Any, dataset: Any, out_dir: Path) -> Path:
    """A run directory holding a manifest (with each llama.cpp target's model facts) and no records."""
    from bench.manifest import build_manifest
    from bench.results import write_json_atomic
    from bench.sweep import make_run_dir

    run_dir = make_run_dir(out_dir, f"{loaded.scenario.name}-academic")
    manifest = build_manifest(loaded, dataset, run_dir.name)
    manifest["kind"] = "academic"
    write_json_atomic(run_dir / "manifest.json", manifest)
    return run_dir
