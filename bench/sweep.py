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
from bench.client import Endpoint, response_byte_cap
from bench.dataset import Dataset
from bench.grpc_endpoint import GrpcEndpoint
from bench.manifest import build_manifest
from bench.observe import Observers
from bench.patterns import LevelWindow, MonotonicClock, pattern_for
from bench.records import RecordWriter, RequestRecord
from bench.results import build_result, write_json_atomic
from bench.runner import LevelRunner, LiveStats, TargetRuntime, cancel_and_wait
from bench.scenario import LoadedScenario, ScenarioError, Target
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
    headers = dict(target.headers)
    if target.api_key_env:
        key = env.get(target.api_key_env)
        if not key:
            raise ScenarioError(
                f"target {target.name}: environment variable {target.api_key_env} (api_key_env) is not set"
            )
        headers["Authorization"] = f"Bearer {key}"
    return headers


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
    ):
        self.loaded = loaded
        self.sc = loaded.scenario
        self.dataset = dataset
        self.progress = progress
        self.say = say
        run_id = run_dir.name
        manifest = build_manifest(loaded, dataset, run_id)
        self.state = SweepState(run_dir, manifest, RecordWriter(run_dir / "records.jsonl"))
        self.clock = MonotonicClock()
        self.observers = Observers(self.sc.name, self.sc.observability, run_dir, prometheus_port)
        write_json_atomic(run_dir / "manifest.json", manifest)

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        port = self.observers.start()
        if port is not None:
            self.say(f"live metrics: http://{self.sc.observability.prometheus_host}:{port}/metrics")
            self.state.manifest["prometheus_port"] = port
        try:
            for target in ordered_targets(self.sc.targets):
                try:
                    await self._run_target(target)
                except SweepError as e:
                    # One target's server failing does not void the others' measurements.
                    self.state.failures.append(str(e))
                    self.say(f"error: {e}")
                if self.state.interrupted:
                    break
        finally:
            await self.observers.stop_sampling()

    def finalize(self, complete: bool) -> dict[str, Any]:
        """Write result.json from what has been measured. Safe to call after any failure."""
        st = self.state
        if st.current is not None:  # a level cut short before its own bookkeeping ran
            st.levels.append(st.current.summary())
            st.current = None
        st.writer.close()
        complete = complete and not st.failures
        result = build_result(st.manifest, st.levels, st.targets, complete, st.interrupted, st.notes)
        result["failures"] = list(st.failures)
        write_json_atomic(st.run_dir / "result.json", result)
        write_json_atomic(st.run_dir / "manifest.json", st.manifest)
        return result

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
        try:
            reported = await asyncio.get_running_loop().run_in_executor(
                None, describe_server, target, base_url, headers, 10.0)
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
            try:
                await runner.run_level(pattern_for(load, level, index), window, level, index, live)
            finally:
                if watchdog is not None:
                    await cancel_and_wait(watchdog)
                summary = st.current.summary()
                observed = await self.observers.level_finished(target.name, level)
                if observed:
                    summary["observed"] = observed
                st.levels.append(summary)
                st.current = None
                self.progress.end_level(summary)
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
                return
            rate = summary["error_rate"]
            if load.stop_error_rate is not None and rate is not None and rate > load.stop_error_rate:
                note = (f"{target.name} @ {level:g}: error rate {rate:.1%} > stop_error_rate "
                        f"{load.stop_error_rate:.1%}; higher levels skipped")
                st.notes.append(note)
                self.say(note)
                return
            if load.cooldown_s and index < len(load.levels) - 1:
                await asyncio.sleep(load.cooldown_s)

    @staticmethod
    async def _watch_server(server: Any, window: LevelWindow, target: Target) -> None:
        while True:
            await asyncio.sleep(0.2)
            if server.exited() is not None:
                window.stop()
                return
