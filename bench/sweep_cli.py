"""``benchbox sweep``: event loop, signals, and the final table around a Sweep.

First Ctrl-C (or SIGTERM), at any moment: stop issuing, cancel in-flight requests (recorded as
``cancelled``), stop managed servers, write an incomplete result.json (``benchbox sweep --resume
RUN_DIR`` continues it). Second Ctrl-C: kill managed servers and exit 130 at once. Outside the
event loop (start-up, quality pass, report) bench/interrupt.py's guard applies the same policy.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bench.dataset import Dataset
from bench.interrupt import SIGNALS, Interrupted, SignalGuard
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


async def _main(sweep: Sweep, console: Console, guard: SignalGuard) -> tuple[int, str | None]:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(sweep.run())

    def on_signal(signame: str) -> None:
        if sweep.state.interrupted:
            console.print("[red]second interrupt: exiting now[/]")
            guard.second(signame)
        sweep.state.interrupted = guard.signame = signame
        console.print(f"[yellow]{signame}: cancelling in-flight requests, keeping records "
                      "(press Ctrl-C again to exit at once)[/]")
        task.cancel()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, signal.Signals(sig).name)
    if guard.signame is not None:  # it arrived before the loop took the signals over
        on_signal(guard.signame)
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
        # Closing the loop resets SIGINT/SIGTERM to their defaults (SIGTERM would kill us outright):
        # hold them pending until the guard is back (run_sweep_command unblocks).
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


def _abort_now(sweep: Sweep) -> None:
    """A second Ctrl-C: stop every managed server (targets', a judge's) within ~0.5 s, flush records."""
    for server in list(sweep.state.servers):
        server.stop_sync(grace_s=0.5)
    serving = sys.modules.get("bench.serving")
    if serving is not None:
        serving.stop_all_servers(grace_s=0.5)
    sweep.state.writer.close()


def _check_port(loaded: LoadedScenario, port: int | None) -> None:
    """A live-metrics port that cannot be bound is a usage error, found before anything is written."""
    cfg = loaded.scenario.observability
    port = port if port is not None else cfg.prometheus_port
    if not port:
        return
    try:
        with socket.create_server((cfg.prometheus_host, port)):
            pass
    except OSError as e:
        raise ScenarioError(f"live metrics: cannot listen on {cfg.prometheus_host}:{port}: "
                            f"{e.strerror or e}") from None


def run_sweep_command(loaded: LoadedScenario, dataset: Dataset, out_dir: Path, quiet: bool,
                      prometheus_port: int | None = None, *, insecure: bool = False,
                      ca_file: Path | None = None, resume: Path | None = None, workers: int = 1,
                      allow_paths: tuple[Path, ...] = (), sweep_class: Any = Sweep) -> int:
    """The whole command, Ctrl-C-safe from start to end (bench/interrupt.py). ``resume``: a run
    directory to continue (bench/resume.py) instead of a new one under ``out_dir``."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # logs and CI: wide enough for the results table
    with SignalGuard() as guard:
        try:
            return _sweep_command(loaded, dataset, out_dir, quiet, prometheus_port, console, guard,
                                  insecure, ca_file, resume, workers, allow_paths, sweep_class)
        except Interrupted as e:  # raised only before the run directory exists
            console.print(f"benchbox: {e.signame}: interrupted before the run began; nothing was written",
                          markup=False)
            return EXIT_INTERRUPTED


def _sweep_command(loaded: LoadedScenario, dataset: Dataset, out_dir: Path, quiet: bool,
                   prometheus_port: int | None, console: Console, guard: SignalGuard, insecure: bool,
                   ca_file: Path | None, resume: Path | None, workers: int = 1,
                   allow_paths: tuple[Path, ...] = (), sweep_class: Any = Sweep) -> int:
    from bench.resume import ResumeError, load_resume
    from bench.tls import target_contexts, unverified

    try:  # secrets, TLS files, the metrics port, a resumable run: all checked before anything is written
        for target in loaded.scenario.targets:
            auth_headers(target)
        tls = target_contexts(loaded, insecure, ca_file)
        _check_port(loaded, prometheus_port)
        state = load_resume(resume, loaded, dataset) if resume is not None else None
    except (ScenarioError, ResumeError) as e:
        print(f"benchbox: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    with guard.flagging():  # creating the run directory and its first files is never torn
        run_dir = resume if resume is not None else make_run_dir(out_dir, loaded.scenario.name)
        progress = Progress(Console(quiet=True) if quiet else console)
        # sweep_class: another engine on the same pipeline (bench/distributed/engine.py: --engine locust)
        sweep = sweep_class(loaded, dataset, run_dir, progress,
                            say=lambda msg: console.print(msg, markup=False, highlight=False, soft_wrap=True),
                            prometheus_port=prometheus_port, tls=tls, resume=state)
        sweep.workers, sweep.allow_paths = workers, allow_paths
        sweep.tls_flags = {"insecure": insecure, "ca_file": str(ca_file) if ca_file else None}
        guard.on_second = lambda: _abort_now(sweep)
    for name in unverified(loaded, insecure):
        console.print(f"benchbox: warning: TLS certificates of {name} are not verified", markup=False)
    again = f" (resume {state.resume}: {len(state.levels_done)} level(s) done)" if state else ""
    console.print(f"benchbox: {loaded.scenario.name}: {len(dataset.items)} items, run directory {run_dir}{again}",
                  markup=False)
    code, error = EXIT_RUN_FAILED, None
    try:
        with guard.flagging():  # the loop's own handlers take over inside _main
            code, error = _run(_main(sweep, console, guard))
    finally:
        with guard.flagging():
            guard.install()  # the closed loop reset the handlers; signals were blocked meanwhile
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
            if guard.signame is not None and not sweep.state.interrupted:
                sweep.state.interrupted = guard.signame  # between the loop's end and here
            if sweep.state.interrupted:
                code = EXIT_INTERRUPTED
            progress.close()
            result = sweep.finalize(complete=(code in (EXIT_OK, EXIT_RUN_FAILED)))
            if code == EXIT_INTERRUPTED:
                sweep.observers.close(wait_grace=False)
    if error:
        console.print(f"[red]benchbox: error: {escape(error)}[/]")
    try:
        if code != EXIT_INTERRUPTED:
            guard.check()  # a signal while result.json was being written
        render_result(result, console)
        if code != EXIT_INTERRUPTED:
            code = _score_and_decide(loaded, dataset, run_dir, result, console, code)
        from bench.report.html import write_report

        console.print(f"report: {write_report(run_dir)}")
    except Interrupted as e:
        with guard.flagging():
            code = _interrupted_after_levels(run_dir, result, e.signame, console)
            sweep.observers.close(wait_grace=False)
    if sweep.observers.exporter is not None and code != EXIT_INTERRUPTED:
        try:
            if (run_dir / "scores.jsonl").exists():
                from bench.gate_run import read_scores

                sweep.observers.parse_failures(read_scores(run_dir / "scores.jsonl"))
            console.print(f"live metrics stay up {loaded.scenario.observability.grace_s:g} s for a last scrape")
            sweep.observers.close(wait_grace=True)
        except Interrupted:  # the run is complete: a Ctrl-C now only cuts the grace period short
            sweep.observers.close(wait_grace=False)
    console.print(f"records: {run_dir / 'records.jsonl'}  result: {run_dir / 'result.json'}")
    return code


def _score_and_decide(loaded: LoadedScenario, dataset: Dataset, run_dir: Path, result: dict[str, Any],
                      console: Console, code: int) -> int:
    """Quality pass, capacity/cost/router decision and gates, each stored in result.json."""
    if loaded.scenario.quality.scorers:
        console.print("benchbox: quality pass over the captured responses...")
        quality = attach_quality(loaded, dataset, run_dir, result)
        if quality is not None:
            render_quality(quality, console)
    attach_decision(loaded, dataset, run_dir, result, console)
    if loaded.scenario.gates and code == EXIT_OK:
        code = apply_gates(loaded, dataset, run_dir, result, console)
    return code


def _interrupted_after_levels(run_dir: Path, result: dict[str, Any], signame: str, console: Console) -> int:
    """Ctrl-C during the quality pass or the report: the run is incomplete; --resume finishes it."""
    from bench.results import write_json_atomic

    result["complete"] = False
    result["interrupted"] = signame
    note = f"interrupted after the levels (quality, gates or report); `benchbox sweep --resume {run_dir}` finishes it"
    result.setdefault("notes", []).append(note)
    write_json_atomic(run_dir / "result.json", result)
    console.print(f"benchbox: {signame}: {note}", markup=False)
    return EXIT_INTERRUPTED


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
