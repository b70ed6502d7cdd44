"""``benchbox sweep``: event loop, signals, and the final table around a Sweep.

First Ctrl-C (or SIGTERM): stop issuing, cancel in-flight requests (recorded as
``cancelled``), stop managed servers, write an incomplete result.json. Second Ctrl-C:
kill managed servers and exit at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bench.dataset import Dataset
from bench.report.progress import Progress
from bench.report.quality_table import render_quality
from bench.report.terminal import render_result
from bench.scenario import LoadedScenario, ScenarioError
from bench.sweep import Sweep, SweepError, auth_headers, make_run_dir

EXIT_OK, EXIT_USAGE, EXIT_RUN_FAILED, EXIT_INTERRUPTED = 0, 2, 4, 130


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def _main(sweep: Sweep, console: Console) -> tuple[int, str | None]:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(sweep.run())

    def on_signal(signame: str) -> None:
        if sweep.state.interrupted:
            console.print("[red]second interrupt: exiting now[/]")
            for server in list(sweep.state.servers):
                server.stop_sync(grace_s=0.5)
            sweep.state.writer.close()
            os._exit(EXIT_INTERRUPTED)
        sweep.state.interrupted = signame
        console.print(f"[yellow]{signame}: cancelling in-flight requests, keeping records "
                      "(press Ctrl-C again to exit at once)[/]")
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, signal.Signals(sig).name)
    try:
        await task
        if sweep.state.failures:
            return EXIT_RUN_FAILED, sweep.state.failures[0].splitlines()[0]
        return EXIT_OK, None
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED, None
    except SweepError as e:
        return EXIT_RUN_FAILED, str(e)
    except ScenarioError as e:
        return EXIT_USAGE, str(e)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_sweep_command(loaded: LoadedScenario, dataset: Dataset, out_dir: Path, quiet: bool,
                      prometheus_port: int | None = None) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # logs and CI: wide enough for the results table
    try:  # secrets come from the environment: check before anything is written
        for target in loaded.scenario.targets:
            auth_headers(target)
    except ScenarioError as e:
        print(f"benchbox: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    run_dir = make_run_dir(out_dir, loaded.scenario.name)
    progress = Progress(Console(quiet=True) if quiet else console)
    sweep = Sweep(loaded, dataset, run_dir, progress,
                  say=lambda msg: console.print(msg, markup=False, highlight=False, soft_wrap=True),
                  prometheus_port=prometheus_port)
    console.print(f"benchbox: {loaded.scenario.name}: {len(dataset.items)} items, run directory {run_dir}")
    code, error = EXIT_RUN_FAILED, None
    try:
        code, error = _run(_main(sweep, console))
    finally:
        progress.close()
        result = sweep.finalize(complete=(code in (EXIT_OK, EXIT_RUN_FAILED)))
        if code == EXIT_INTERRUPTED:
            sweep.observers.close(wait_grace=False)
    if error:
        console.print(f"[red]benchbox: error: {escape(error)}[/]")
    render_result(result, console)
    if loaded.scenario.quality.scorers and code != EXIT_INTERRUPTED:
        console.print("benchbox: quality pass over the captured responses...")
        quality = attach_quality(loaded, dataset, run_dir, result)
        if quality is not None:
            render_quality(quality, console)
    if code != EXIT_INTERRUPTED:
        attach_decision(loaded, dataset, run_dir, result, console)
    if loaded.scenario.gates and code == EXIT_OK:
        code = apply_gates(loaded, dataset, run_dir, result, console)
    from bench.report.html import write_report

    console.print(f"report: {write_report(run_dir)}")
    if sweep.observers.exporter is not None:
        if (run_dir / "scores.jsonl").exists():
            from bench.gate_run import read_scores

            sweep.observers.parse_failures(read_scores(run_dir / "scores.jsonl"))
        console.print(f"live metrics stay up {loaded.scenario.observability.grace_s:g} s for a last scrape")
        sweep.observers.close(wait_grace=True)
    console.print(f"records: {run_dir / 'records.jsonl'}  result: {run_dir / 'result.json'}")
    return code


def attach_quality(loaded: LoadedScenario, dataset: Dataset, run_dir: Path, result: dict[str, Any]) -> Any:
    """Score the run and store the quality section in result.json."""
    from bench.results import write_json_atomic
    from bench.score_run import quality_section

    quality = quality_section(loaded, dataset, run_dir)
    result["quality"] = quality
    write_json_atomic(run_dir / "result.json", result)
    return quality


def apply_gates(loaded: LoadedScenario, dataset: Dataset, run_dir: Path, result: dict[str, Any],
                console: Console) -> int:
    """Evaluate the gates, store them in result.json, print the verdicts; the gate exit code."""
    from bench.gate_run import render_gates, run_gates
    from bench.results import write_json_atomic

    results, code = run_gates(loaded, dataset, run_dir, result)
    write_json_atomic(run_dir / "result.json", result)
    render_gates(results, code, console)
    console.print(f"gates: {run_dir / 'gates.md'}  {run_dir / 'gates.xml'}")
    return code


def gates_only_command(loaded: LoadedScenario, dataset: Dataset, run_dir: Path) -> int:
    """Re-evaluate gates on an existing run (its records and scores), without sending a request."""
    import orjson

    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    if manifest["dataset"]["sha256"] != dataset.sha256:
        console.print(f"benchbox: error: {run_dir}: the eval set differs from the run's (sha256)", markup=False)
        return EXIT_USAGE
    if not loaded.scenario.gates:
        console.print(f"benchbox: error: {loaded.path}: the scenario has no gates", markup=False)
        return EXIT_USAGE
    result = orjson.loads((run_dir / "result.json").read_bytes())
    if loaded.scenario.quality.scorers and not (run_dir / "scores.jsonl").exists():
        attach_quality(loaded, dataset, run_dir, result)
    code = apply_gates(loaded, dataset, run_dir, result, console)
    from bench.report.html import write_report

    write_report(run_dir)
    return code


def attach_decision(loaded: LoadedScenario, dataset: Dataset, run_dir: Path, result: dict[str, Any],
                    console: Console) -> None:
    """Capacity, goodput, cost and the router blend, stored in result.json and printed."""
    from bench.decision import decision_section, render_decision
    from bench.results import write_json_atomic

    decision = decision_section(loaded, dataset, run_dir, result)
    if decision:
        result.update(decision)
        write_json_atomic(run_dir / "result.json", result)
        render_decision(decision, console)
