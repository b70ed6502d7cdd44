"""The ``benchbox`` command. Thin: parse, call, map outcomes to exit codes.

Exit codes: 0 success · 1 a gate failed · 2 usage error (bad scenario, bad arguments)
· 3 gates inconclusive · 4 the run failed (e.g. a managed server never became ready)
· 130 interrupted (records and an incomplete result.json are kept).
Heavy modules are imported inside commands so ``benchbox --help`` stays instant.
"""

from __future__ import annotations

import importlib
import os
import sys

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "benchbox":
    # First thing, before the slower imports: a Ctrl-C from here on is one line, never a traceback.
    from bench.interrupt import install_early_exit

    install_early_exit()
from pathlib import Path
from typing import Any, Optional

import click

EXIT_USAGE = 2
EXIT_RUN_FAILED = 4
EXIT_INTERRUPTED = 130


class LazyGroup(click.Group):
    """Subcommands that live in their own modules, imported only when invoked."""

    lazy = {
        "sim": ("bench.sim", "sim_command", "Serve a deterministic OpenAI-compatible streaming simulator."),
        "server": ("bench.server_cli", "server_group", "Install llama.cpp and bundled models; manage servers."),
        "compare": ("bench.compare", "compare_command",
                    "Compare runs on the same eval set: latency side by side, quality paired by item."),
        "academic": ("bench.academic.cli", "academic_command",
                     "Perplexity, KL divergence and lm-eval tasks beside the product numbers (informational)."),
        "locust-worker": ("bench.distributed.worker_cli", "locust_worker_command",
                          "Send a sweep's requests for a Locust master (sweep --engine locust)."),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name in self.lazy:
            module, attr, _ = self.lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text for lazy commands comes from the table above: `--help` imports nothing heavy.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][2]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=80)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"benchbox: error: {message}", err=True)
    sys.exit(code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="benchbox")
def main() -> None:
    """Decide whether a compressed LLM can replace its baseline: load, latency and quality in one run."""


def _load(path: str, allow_paths: tuple[Path, ...] = ()) -> tuple[Any, Any]:
    from bench.dataset import load_dataset
    from bench.scenario import ScenarioError, load_scenario

    try:
        loaded = load_scenario(path, allow_paths)
        dataset = load_dataset(loaded.resolve(loaded.scenario.dataset.path), loaded.scenario.dataset)
        _check_scorers(loaded)
        from bench.decision import check_decision_config
        from bench.gate_run import parse_gates

        check_decision_config(loaded)
        parse_gates(loaded, dataset)
    except ScenarioError as e:
        fail(str(e))
    return loaded, dataset


def _check_scorers(loaded: Any) -> None:
    """Build every configured scorer once, so a bad scorer config fails before any request."""
    from bench.scenario import ScenarioError

    if not loaded.scenario.quality.scorers:
        return
    from bench.scoring import ScorerConfigError, build_scorer

    for i, spec in enumerate(loaded.scenario.quality.scorers):
        try:
            build_scorer(spec, loaded.folder)
        except ScorerConfigError as e:
            raise ScenarioError(f"{loaded.path}: quality.scorers.{i}: {e}") from None


_ALLOW_PATH = click.option(
    "--allow-path", "allow_paths", multiple=True, type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
    help="also let the scenario read data files (dataset, rubric, schema) below DIR; default: its project folder")


@main.command()
@click.argument("scenario_file", metavar="FILE")
@_ALLOW_PATH
def validate(scenario_file: str, allow_paths: tuple[Path, ...]) -> None:
    """Check a scenario (and its dataset) without sending a request."""
    loaded, dataset = _load(scenario_file, allow_paths)
    sc = loaded.scenario
    targets = ", ".join(f"{t.name} ({t.role})" for t in sc.targets)
    click.echo(f"{scenario_file}: ok — {len(dataset.items)} items (sha256 {dataset.sha256[:12]}), "
               f"targets: {targets}; {sc.load.pattern} levels {[f'{x:g}' for x in sc.load.levels]}")


@main.command()
@click.argument("scenario_file", metavar="FILE", required=False)
@click.option("--out", "out_dir", default="runs", show_default=True, help="parent folder of run directories")
@click.option("--quiet", is_flag=True, help="no live progress display")
@click.option("--prometheus-port", type=click.IntRange(0, 65535), default=None,
              help="serve live metrics for Prometheus/Grafana on this port (0: any free port)")
@click.option("--gates-only", "gates_only", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, metavar="RUN_DIR", help="re-evaluate the scenario's gates on an existing run")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="RUN_DIR", help="continue an interrupted run from its first unfinished target x level")
@click.option("--insecure", is_flag=True, help="do not verify TLS certificates of https targets")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PEM",
              help="trust the CA certificates in this file for every https target")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="send from N processes (one per core); records and histograms are merged")
@click.option("--engine", type=click.Choice(["asyncio", "locust"]), default="asyncio", show_default=True,
              help="locust: a Locust master and --workers Locust worker processes (bench/distributed)")
@click.option("--locust-bind", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="--engine locust: where the master listens for workers (port 0: any free port)")
@click.option("--remote-workers", type=click.IntRange(0, 1024), default=0, show_default=True,
              help="--engine locust: also wait for this many `benchbox locust-worker --master HOST:PORT`")
@_ALLOW_PATH
def sweep(scenario_file: Optional[str], out_dir: str, quiet: bool, prometheus_port: Optional[int],
          gates_only: Optional[Path], resume_dir: Optional[Path], insecure: bool, ca_file: Optional[Path],
          workers: int, engine: str, locust_bind: str, remote_workers: int, allow_paths: tuple[Path, ...]) -> None:
    """Run a scenario: every target through every load level; score, gate, write a run directory.

    With --resume RUN_DIR, FILE defaults to the scenario the run began with (it must be unchanged)."""
    from bench.interrupt import exit_on_signal

    exit_on_signal(click.get_current_context())  # Ctrl-C now: exit 130, nothing is written yet
    if resume_dir is not None:
        from bench.resume import ResumeError, scenario_of

        try:
            scenario_file = scenario_file or scenario_of(resume_dir)
        except ResumeError as e:
            fail(str(e))
    if not scenario_file:
        fail("sweep needs a scenario FILE (or --resume RUN_DIR)")
    if ca_file is not None and not ca_file.is_file():
        fail(f"--ca-file: no such file {ca_file}")
    loaded, dataset = _load(scenario_file, allow_paths)
    from bench.sweep_cli import gates_only_command, run_sweep_command

    if gates_only is not None:
        sys.exit(gates_only_command(loaded, dataset, gates_only))
    extra: dict[str, Any] = {}
    if engine == "locust":
        from bench.distributed.engine import locust_sweep_class

        try:
            extra["sweep_class"] = locust_sweep_class(workers, remote_workers, locust_bind)
        except ValueError as e:
            fail(str(e))
    sys.exit(run_sweep_command(loaded, dataset, Path(out_dir), quiet, prometheus_port,
                               insecure=insecure, ca_file=ca_file, resume=resume_dir, workers=workers,
                               allow_paths=allow_paths, **extra))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rebuild", is_flag=True, help="recompute result.json from records.jsonl")
def report(run_dir: Path, rebuild: bool) -> None:
    """Re-render a run's summary and report.html from its files alone."""
    from rich.console import Console

    from bench.report.terminal import render_result
    from bench.results import rebuild_from_records, write_json_atomic

    if not (run_dir / "manifest.json").exists() or not (run_dir / "records.jsonl").exists():
        fail(f"{run_dir}: not a benchbox run directory (manifest.json and records.jsonl expected)")
    result = rebuild_from_records(run_dir)
    if rebuild:
        write_json_atomic(run_dir / "result.json", result)
    console = Console()
    render_result(result, console if console.is_terminal else Console(width=170))
    from bench.report.html import write_report

    click.echo(f"report: {write_report(run_dir)}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--scenario", "scenario_file", default=None,
              help="scenario to take the scorers from (default: the one the run used, if unchanged)")
def score(run_dir: Path, scenario_file: Optional[str]) -> None:
    """Re-run the quality pass on an existing run, without sending a request."""
    import orjson
    from rich.console import Console

    from bench.report.quality_table import render_quality
    from bench.results import write_json_atomic

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists() or not (run_dir / "records.jsonl").exists():
        fail(f"{run_dir}: not a benchbox run directory (manifest.json and records.jsonl expected)")
    manifest = orjson.loads(manifest_path.read_bytes())
    loaded, dataset = _load(scenario_file or manifest["scenario"]["path"])
    if dataset.sha256 != manifest["dataset"]["sha256"]:
        fail(f"{run_dir}: the eval set changed since the run (sha256 {dataset.sha256[:12]} != "
             f"{manifest['dataset']['sha256'][:12]}); scores would not describe these responses")
    if not loaded.scenario.quality.scorers:
        fail(f"{loaded.path}: quality.scorers is empty: nothing to score")
    from bench.score_run import quality_section

    result_path = run_dir / "result.json"
    result = orjson.loads(result_path.read_bytes()) if result_path.exists() else {}
    result["quality"] = quality_section(loaded, dataset, run_dir)
    write_json_atomic(result_path, result)
    console = Console()
    render_quality(result["quality"], console if console.is_terminal else Console(width=170))


if __name__ == "__main__":
    main()
