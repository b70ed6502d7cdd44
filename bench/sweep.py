"""Targets x levels: launch managed servers, run levels, stop early, write the run directory."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from bench.adapters import get_adapter
from bench.client import Endpoint
from bench.exchange import response_byte_cap
from bench.dataset import Dataset
from bench.grpc_endpoint import GrpcEndpoint
from bench.manifest import build_manifest
from bench.observe import Observers
from bench.patterns import LevelWindow, MonotonicClock, pattern_for
from bench.records import RecordWriter, RequestRecord
from bench.results import build_result, write_json_atomic
from bench.interrupt import signals_blocked
from bench.resume import ResumeState, begin_resume
from bench.runner import LevelRunner, LiveStats, TargetRuntime, cancel_and_wait
from bench.scenario import ENV_REF, LoadedScenario, ScenarioError, Target
from bench.client_health import ClientHealth, merge_health, saturation_note
from bench.server_info import describe_server
from bench.stats import LevelAccumulator, cold_summary

REPO_SERVERS = Path(__file__).resolve().parent.parent / "servers"


class SweepError(Exception):
    """A run-level failure (e.g. a managed server that will not start). One line + context."""


@dataclass
class SweepState:
    """Everything the sweep has produced so far; enough to finalize at any moment."""

    run_dir: Path
    manifest: dict[str, Any]
    writer: RecordWriter
    levels: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # e.g. a managed server died mid-run
    interrupted: Optional[str] = None
    current: Optional[LevelAccumulator] = None
    servers: list[Any] = field(default_factory=list)
    # What --resume may skip: [[target, level], ...] measured to the end, and targets with nothing left.
    levels_done: list[list[Any]] = field(default_factory=list)
    targets_done: list[str] = field(default_factory=list)


class _Accumulate:
    """Sink that feeds the current level's accumulator (and remembers cold records)."""

    def __init__(self, state: SweepState):
        self.state = state
        self.cold: list[RequestRecord] = []

    def on_record(self, record: RequestRecord) -> None:
        if record.phase == "cold":
            self.cold.append(record)
        elif self.state.current is not None:
            self.state.current.add(record)


class _StampResume:
    """First sink of a resumed run: its records carry the resume number (before the writer sees them)."""

    def __init__(self, resume: int):
        self.resume = resume

    def on_record(self, record: RequestRecord) -> None:
        record.resume = self.resume


def make_run_dir(base: Path, scenario_name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", scenario_name)
    run_dir = base / f"{stamp}-{safe}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = base / f"{stamp}-{safe}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir


def auth_headers(target: Target, environ: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Headers for the wire. The API key comes only from the environment variable named."""
    env = os.environ if environ is None else environ

    def from_env(var: str, what: str) -> str:
        value = env.get(var)
        if not value:
            raise ScenarioError(f"target {target.name}: environment variable {var} ({what}) is not set")
        if not value.isprintable() or any(ord(c) > 255 for c in value):  # never echoed: it is a secret
            raise ScenarioError(f"target {target.name}: environment variable {var} ({what}) holds a line break "
                                "or a character that cannot go in an HTTP header")
        return value

    headers = {name: ENV_REF.sub(lambda m, name=name: from_env(m[1], f"header {name}"), value)
               for name, value in target.headers.items()}
    if target.api_key_env:
        headers["Authorization"] = f"Bearer {from_env(target.api_key_env, 'api_key_env')}"
    return headers


def secret_values(target: Target, environ: Optional[dict[str, str]] = None) -> list[str]:
    """The values auth_headers takes from the environment (API key, ``${VAR}`` in headers)."""
    env = os.environ if environ is None else environ
    names = [m[1] for v in target.headers.values() for m in ENV_REF.finditer(v)]
    names += [target.api_key_env] if target.api_key_env else []
    return sorted({env[n] for n in names if env.get(n)}, key=len, reverse=True)


class Redact:
    """First sink of every target: a secret a server echoes back (a 401 body quoting the request's
    headers, a model repeating its prompt) is cut out of the record before anything stores or exports it.
    Values shorter than 6 characters are left alone (they would cut ordinary text)."""

    def __init__(self, secrets: list[str]):
        self.secrets = [s for s in secrets if len(s) >= 6]

    def on_record(self, record: RequestRecord) -> None:
        for secret in self.secrets:
            if record.error_detail and secret in record.error_detail:
                record.error_detail = record.error_detail.replace(secret, "[redacted]")
            if secret in record.output_text:
                record.output_text = record.output_text.replace(secret, "[redacted]")
            if secret in record.reasoning_text:
                record.reasoning_text = record.reasoning_text.replace(secret, "[redacted]")


def ordered_targets(targets: list[Target]) -> list[Target]:
    """Baseline first: its numbers are the reference the candidates are read against."""
    return sorted(targets, key=lambda t: 0 if t.role == "baseline" else 1)


class Sweep:
    def __init__(
        self,
        loaded: LoadedScenario,
        dataset: Dataset,
        run_dir: Path,
        progress: Any,
        say: Callable[[str], None],
        prometheus_port: Optional[int] = None,
        tls: Optional[dict[str, Any]] = None,
        resume: Optional[ResumeState] = None,
    ):
        """``tls``: target name -> ssl.SSLContext for https targets (default: verify with the system CAs).
        ``resume``: continue that interrupted run in ``run_dir`` (bench/resume.py)."""
        self.loaded = loaded
        self.sc = loaded.scenario
        self.dataset = dataset
        self.progress = progress
        self.say = say
        self.tls = tls or {}
        self.resume = resume
        # --workers N: requests go out from N worker processes (bench/workers.py); this process
        # coordinates and accumulates. Set by the CLI before run().
        self.workers = 1
        self.allow_paths: tuple[Any, ...] = ()
        self.tls_flags: dict[str, Any] = {}  # --insecure / --ca-file, for the workers' own TLS contexts
        self.pool: Any = None
        if resume is not None:
            begin_resume(resume)
            manifest = resume.manifest
        else:
            manifest = build_manifest(loaded, dataset, run_dir.name)
        self.state = SweepState(run_dir, manifest, RecordWriter(run_dir / "records.jsonl"))
        if resume is not None:
            st = self.state
            st.levels, st.targets, st.notes = list(resume.levels), dict(resume.targets), list(resume.notes)
            st.levels_done, st.targets_done = list(resume.levels_done), list(resume.targets_done)
        self.clock = MonotonicClock()
        self.observers = Observers(self.sc.name, self.sc.observability, run_dir, prometheus_port)
        write_json_atomic(run_dir / "manifest.json", manifest)
        self.checkpoint()  # a valid (incomplete) result.json exists from the start

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        with signals_blocked():  # the exporter's thread must not be the one a Ctrl-C lands in
            port = self.observers.start()
        if port is not None:
            self.say(f"live metrics: http://{self.sc.observability.prometheus_host}:{port}/metrics")
            self.state.manifest["prometheus_port"] = port
        if self.workers > 1:
            from bench.workers import WorkerError, WorkerPool  # lazy: single-process sweeps never need it

            self.pool = WorkerPool(self.workers, str(self.loaded.path), tuple(str(p) for p in self.allow_paths))
            try:
                await self.pool.start()
            except WorkerError as e:
                self.pool = None
                raise SweepError(f"--workers: {e}") from None
        try:
            for target in ordered_targets(self.sc.targets):
                if target.name in self.state.targets_done:  # --resume: measured already
                    continue
                try:
                    await self._run_target(target)
                except SweepError as e:
                    # One target's server failing does not void the others' measurements.
                    self.state.failures.append(str(e))
                    self.say(f"error: {e}")
                if self.state.interrupted:
                    break
        finally:
            if self.pool is not None:
                await self.pool.close()
            await self.observers.stop_sampling()

    def finalize(self, complete: bool) -> dict[str, Any]:
        """Write result.json from what has been measured. Safe to call after any failure."""
        st = self.state
        if st.current is not None:  # a level cut short before its own bookkeeping ran
            st.levels.append(st.current.summary())
            st.current = None
        st.writer.close()
        complete = complete and not st.failures
        result = self._result(complete)
        write_json_atomic(st.run_dir / "result.json", result)
        write_json_atomic(st.run_dir / "manifest.json", st.manifest)
        return result

    def _result(self, complete: bool) -> dict[str, Any]:
        st = self.state
        result = build_result(st.manifest, st.levels, st.targets, complete, st.interrupted, st.notes)
        result["failures"] = list(st.failures)
        result["progress"] = {"levels_done": st.levels_done, "targets_done": st.targets_done}
        return result

    def checkpoint(self) -> None:
        """An incomplete result.json of what is finished so far (what --resume starts from)."""
        write_json_atomic(self.state.run_dir / "result.json", self._result(False))

    def _done(self, target: str, level: Optional[float] = None) -> None:
        if level is None:
            self.state.targets_done.append(target)
        else:
            self.state.levels_done.append([target, level])
        self.checkpoint()

    # -- one target ----------------------------------------------------------------
    async def _run_target(self, target: Target) -> None:
        st = self.state
        entry = st.targets.setdefault(target.name, {"role": target.role})
        server = None
        base_url = target.url
        if target.server is not None:
            server = await self._start_server(target)
            base_url = server.base_url
            entry["server"] = {"launch_to_ready_s": server.launch_to_ready_s}
        headers = auth_headers(target)
        most_tokens = max([self.sc.sampling.max_tokens, *(i.max_tokens or 0 for i in self.dataset.items)])
        endpoint = Endpoint(base_url, headers,
                            max_response_bytes=target.max_response_bytes or response_byte_cap(most_tokens))
        if target.protocol == "triton-grpc":  # same seam, Triton's gRPC streaming inference
            endpoint = GrpcEndpoint(base_url, headers, endpoint.max_response_bytes)
        elif getattr(endpoint, "ssl_context", None) is not None and target.name in self.tls:
            endpoint.ssl_context = self.tls[target.name]  # --insecure, --ca-file, tls.ca_file
        try:
            reported = await asyncio.get_running_loop().run_in_executor(
                None, describe_server, target, base_url, headers, 10.0, self.tls.get(target.name))
            st.manifest["targets"][target.name].update(reported)  # reported_models | _triton | _tgi
            st.manifest["targets"][target.name]["base_url"] = base_url
            st.manifest["targets"][target.name]["max_response_bytes"] = endpoint.max_response_bytes
            if server is not None:
                st.manifest["targets"][target.name]["server"] = server.describe()
            write_json_atomic(st.run_dir / "manifest.json", st.manifest)
            runtime = TargetRuntime(target.name, target.model, endpoint, get_adapter(target.protocol, target), target.timeout_s)
            sink = _Accumulate(st)
            live = LiveStats()
            runner = LevelRunner(runtime, self.dataset, self.sc.sampling,
                                 [st.writer, sink, live, *self.observers.sinks()], self.clock,
                                 retries=self.sc.load.retries)
            runner.sinks.insert(0, Redact(secret_values(target)))
            if self.resume is not None:  # items continue where the finished levels left off
                runner.resume_from(self.resume.cursors.get(target.name, {}))
                runner.sinks.insert(0, _StampResume(self.resume.resume))
            if self.pool is not None:
                if target.protocol == "triton-grpc":
                    raise SweepError(f"target {target.name}: --workers supports HTTP targets only")
                cursors = self.resume.cursors.get(target.name, {}) if self.resume is not None else {}
                self.pool.set_target(target.name, base_url, headers, endpoint.max_response_bytes, self.tls_flags,
                                     cursors=cursors)
            metrics_url = target.metrics_url or (server.metrics_url if server is not None else None)
            self.observers.target_started(target.name, metrics_url)
            if server is not None and target.server.cold_requests:
                self.say(f"{target.name}: ready in {server.launch_to_ready_s:.2f} s; "
                         f"{target.server.cold_requests} cold request(s)")
                await runner.run_cold(target.server.cold_requests)
                entry["cold"] = cold_summary(sink.cold)
            await self._run_levels(target, runner, live, server)
        finally:
            await self.observers.target_finished(target.name)
            await endpoint.close()
            if server is not None:
                await server.stop()
                st.servers.remove(server)

    async def _start_server(self, target: Target) -> Any:
        from bench.serving import ManagedServer, ServerError  # lazy: only managed targets need it

        log_path = self.state.run_dir / f"server-{target.name}.log"
        dirs = [self.loaded.folder.parent / "servers", self.loaded.folder / "servers", REPO_SERVERS]
        try:
            server = ManagedServer(target.server, target.name, log_path, dirs, progress=self.say)
        except ServerError as e:
            raise SweepError(f"target {target.name}: {e}") from None
        self.state.servers.append(server)
        try:
            await server.start()
        except ServerError as e:
            self.state.servers.remove(server)
            await server.stop()
            raise SweepError(f"target {target.name}: {e}") from None
        return server

    async def _run_levels(self, target: Target, runner: LevelRunner, live: LiveStats, server: Any) -> None:
        st, load = self.state, self.sc.load
        for index, level in enumerate(load.levels):
            if [target.name, level] in st.levels_done:  # --resume: measured already
                continue
            window = LevelWindow(
                start_ns=self.clock.now_ns(),
                warmup_s=load.warmup.seconds,
                warmup_requests=load.warmup.requests,
                duration_s=load.duration_s,
                requests=load.requests,
            )
            st.current = LevelAccumulator(target.name, level, load.pattern)
            live.done = live.ok = live.errors = 0
            live.recent_ttft_ms.clear()
            self.progress.start_level(target.name, level, load, live)
            self.observers.level_started(target.name, level, live)
            watchdog = asyncio.ensure_future(self._watch_server(server, window, target)) if server else None
            health = ClientHealth()
            runner.sinks.append(health)
            health.start()
            worker_reports: list[dict[str, Any]] = []
            try:
                if self.pool is not None:
                    # All workers start the level at one instant on the shared monotonic clock.
                    window.start_ns = self.clock.now_ns() + 50_000_000
                    try:
                        worker_reports = await self.pool.run_level(level, index, window.start_ns, runner.sinks)
                    except RuntimeError as e:  # WorkerError: a worker died; its records so far are kept
                        raise SweepError(f"target {target.name} @ {level:g}: {e}") from None
                    runner.unreachable = any(r.get("unreachable") for r in worker_reports)
                else:
                    await runner.run_level(pattern_for(load, level, index), window, level, index, live)
            finally:
                runner.sinks.remove(health)
                summary = st.current.summary()
                summary["client"] = health.stop()
                if worker_reports:
                    summary["client"] = merge_health([r["health"] for r in worker_reports], summary["client"])
                if summary["client"]["saturated"]:
                    note = saturation_note(target.name, level, summary["client"])
                    st.notes.append(note)
                    self.say(f"warning: {note}")
                if watchdog is not None:
                    await cancel_and_wait(watchdog)
                observed = await self.observers.level_finished(target.name, level)
                if observed:
                    summary["observed"] = observed
                st.levels.append(summary)
                st.current = None
                self.progress.end_level(summary)
            if server is None or server.exited() is None:
                self._done(target.name, level)
            if server is not None and server.exited() is not None:
                failure = (f"{target.name}: managed server exited (code {server.exited()}) during level "
                           f"{level:g}; records so far are kept; last log lines:\n{server.log_tail(10)}")
                st.failures.append(failure)
                self.say(failure)
                return
            if runner.unreachable:
                note = f"{target.name} @ {level:g}: endpoint unreachable, stopped this target"
                st.notes.append(note)
                self.say(note)
                self._done(target.name)
                return
            rate = summary["error_rate"]
            if load.stop_error_rate is not None and rate is not None and rate > load.stop_error_rate:
                note = (f"{target.name} @ {level:g}: error rate {rate:.1%} > stop_error_rate "
                        f"{load.stop_error_rate:.1%}; higher levels skipped")
                st.notes.append(note)
                self.say(note)
                self._done(target.name)
                return
            if load.cooldown_s and index < len(load.levels) - 1:
                await asyncio.sleep(load.cooldown_s)
        self._done(target.name)

    @staticmethod
    async def _watch_server(server: Any, window: LevelWindow, target: Target) -> None:
        while True:
            await asyncio.sleep(0.2)
            if server.exited() is not None:
                window.stop()
                return
