"""``benchbox sweep --workers N``: the built-in engine on N processes, one event loop each.

One Python process tops out at one core. With ``--workers N`` the sweep process becomes a
coordinator: it still launches managed servers, sends cold requests, writes ``records.jsonl``,
accumulates the level statistics (so HDR histograms are merged by construction: every record
from every worker goes into the one accumulator), drives progress, live metrics and reports —
the same files as a single process. The workers only send requests and stream finished records
back as JSON lines.

Load is split so that the workers together issue what one process would:
- concurrency: users divided as evenly as possible;
- rate: the one absolute seeded arrival plan, worker ``w`` taking arrivals ``w, w+N, ...``;
- measured/warm-up request budgets divided; items and request numbers interleaved by stride.
All processes share CLOCK_MONOTONIC (``perf_counter_ns``), so the level's start is one instant.

Protocol (private to this module): the coordinator writes one JSON job per line to a worker's
stdin (``target`` / ``level`` / ``end``); the worker answers each level with record lines
(``{"r": {...}}``) and then ``{"done": {...client health...}}``. Secrets (auth headers) travel
only through that pipe, never argv or the environment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import orjson

from bench.records import RequestRecord, record_from_dict

LINE_LIMIT = 256 * 1024 * 1024  # a record carries the response text: allow long lines
STOP_GRACE_S = 10.0


def split_evenly(total: int, parts: int, index: int) -> int:
    """Share ``index`` of ``total`` split into ``parts`` (the first shares get the remainder)."""
    return total // parts + (1 if index < total % parts else 0)


# --- coordinator side --------------------------------------------------------------


class WorkerError(RuntimeError):
    pass


class _Worker:
    def __init__(self, index: int, proc: asyncio.subprocess.Process):
        self.index = index
        self.proc = proc

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(message) + b"\n")


class WorkerPool:
    """N worker processes for the whole sweep; ``run_level`` feeds their records to ``sinks``."""

    def __init__(self, count: int, scenario_path: str, allow_paths: tuple[str, ...] = ()):
        self.count = count
        self.scenario_path = scenario_path
        self.allow_paths = allow_paths
        self.workers: list[_Worker] = []

    async def start(self) -> None:
        for w in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.workers", self.scenario_path, str(w), str(self.count),
                *self.allow_paths,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT,
                # Ctrl-C goes to the coordinator only; it stops the workers itself, in order.
                start_new_session=True,
            )
            self.workers.append(_Worker(w, proc))
        # Imports and the eval set take a while on a busy host; a level must not open before
        # every worker can send, or its first arrivals go out late in a burst.
        for w in self.workers:
            assert w.proc.stdout is not None
            line = await w.proc.stdout.readline()
            msg = orjson.loads(line) if line.startswith(b"{") else {"error": "no answer"}
            if "ready" not in msg:
                await self.close()
                raise WorkerError(f"worker {w.index} did not start: {msg.get('error')}")

    def set_target(self, name: str, base_url: str, headers: dict[str, str], max_response_bytes: int,
                   tls_flags: Optional[dict[str, Any]] = None, cursors: Optional[dict[str, int]] = None) -> None:
        """The scenario target ``name`` (workers read the rest of it from the scenario) at ``base_url``;
        ``tls_flags``: the run's --insecure / --ca-file, from which workers build the same TLS context."""
        for w in self.workers:
            w.send({"op": "target", "name": name, "base_url": base_url, "headers": headers,
                    "max_response_bytes": max_response_bytes, "tls": tls_flags or {}, "cursors": cursors or {}})

    async def run_level(self, level: float, index: int, start_ns: int, sinks: list[Any]) -> list[dict[str, Any]]:
        """Run one level on every worker; records go to ``sinks`` as they arrive. Returns the
        workers' reports (``health``, ``unreachable``). On cancellation the workers are told to stop, their
        remaining records (cancelled in-flight requests included) are still collected."""
        for w in self.workers:
            w.send({"op": "level", "level": level, "index": index, "start_ns": start_ns})
            await w.proc.stdin.drain()  # type: ignore[union-attr]
        readers = [asyncio.ensure_future(self._collect(w, sinks)) for w in self.workers]
        try:
            # asyncio.wait, not gather: cancelling us must not cancel the readers, which still
            # have the workers' last records (the cancelled in-flight requests) to collect.
            await asyncio.wait(readers, return_when=asyncio.FIRST_EXCEPTION)
            for r in readers:
                if r.done() and r.exception() is not None:
                    for other in readers:
                        other.cancel()
                    raise r.exception()  # type: ignore[misc]
            return [r.result() for r in readers]
        except asyncio.CancelledError:
            for w in self.workers:
                if w.proc.returncode is None:
                    w.proc.send_signal(signal.SIGINT)
            done, _ = await asyncio.wait(readers, timeout=STOP_GRACE_S)
            for r in readers:
                if r not in done:
                    r.cancel()
            raise

    async def _collect(self, worker: _Worker, sinks: list[Any]) -> dict[str, Any]:
        stdout = worker.proc.stdout
        assert stdout is not None
        while True:
            line = await stdout.readline()
            if not line:
                code = await worker.proc.wait()
                raise WorkerError(f"worker {worker.index} exited (code {code}) in the middle of a level")
            msg = orjson.loads(line)
            rec = msg.get("r")
            if rec is not None:
                record = record_from_dict(rec)
                for sink in sinks:
                    sink.on_record(record)
                continue
            if "done" in msg:
                return msg["done"]
            if "error" in msg:
                raise WorkerError(f"worker {worker.index}: {msg['error']}")

    async def close(self) -> None:
        for w in self.workers:
            if w.proc.returncode is None:
                try:
                    w.send({"op": "end"})
                    w.proc.stdin.close()  # type: ignore[union-attr]
                except (BrokenPipeError, ConnectionResetError, RuntimeError):
                    pass
        for w in self.workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 5)
            except asyncio.TimeoutError:
                w.proc.kill()
                await w.proc.wait()
        self.workers = []


# --- worker side -------------------------------------------------------------------


class _Emit:
    """Sink: one JSON line per finished record, written straight to stdout."""

    def __init__(self, out: Any):
        self.out = out

    def on_record(self, record: RequestRecord) -> None:
        self.out.write(b'{"r":' + record.to_json() + b"}\n")


async def _worker_main(scenario_path: str, index: int, count: int, allow_paths: tuple[str, ...]) -> None:
    from bench.adapters import get_adapter
    from bench.client import Endpoint
    from bench.client_health import ClientHealth
    from bench.dataset import load_dataset
    from bench.patterns import ConcurrencyPattern, LevelWindow, MonotonicClock, RatePattern
    from bench.runner import LevelRunner, TargetRuntime
    from bench.scenario import load_scenario

    loop = asyncio.get_running_loop()
    loaded = load_scenario(scenario_path, allow_paths)
    sc = loaded.scenario
    dataset = load_dataset(loaded.resolve(sc.dataset.path), sc.dataset)
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    # A non-blocking pipe transport: a slow coordinator buffers records here instead of
    # blocking this loop (which would delay every timestamp).
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(sys.stdout.fileno(), "wb", closefd=False))
    emit = _Emit(out)
    out.write(b'{"ready":true}\n')
    clock = MonotonicClock()
    runner: Optional[LevelRunner] = None
    endpoint: Optional[Endpoint] = None
    level_task: Optional[asyncio.Task] = None
    loop.add_signal_handler(signal.SIGINT, lambda: level_task.cancel() if level_task else None)
    load = sc.load
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            job = orjson.loads(line)
            if job["op"] == "end":
                return
            if job["op"] == "target":
                if endpoint is not None:
                    await endpoint.close()
                target = next(t for t in sc.targets if t.name == job["name"])
                endpoint = Endpoint(job["base_url"], job["headers"], max_response_bytes=job["max_response_bytes"])
                if endpoint.ssl_context is not None:
                    from bench.tls import target_contexts

                    flags = job.get("tls") or {}
                    contexts = target_contexts(loaded, bool(flags.get("insecure")),
                                               Path(flags["ca_file"]) if flags.get("ca_file") else None)
                    endpoint.ssl_context = contexts.get(target.name, endpoint.ssl_context)
                runtime = TargetRuntime(target.name, target.model, endpoint, get_adapter(target.protocol, target),
                                        target.timeout_s)
                runner = LevelRunner(runtime, dataset, sc.sampling, [emit], clock, retries=load.retries)
                runner.stride, runner.offset = count, index
                runner.resume_from(job.get("cursors") or {})  # --resume: continue the eval set where it stopped
                continue
            assert runner is not None
            level, level_index = job["level"], job["index"]
            window = LevelWindow(
                start_ns=job["start_ns"], warmup_s=load.warmup.seconds,
                warmup_requests=split_evenly(load.warmup.requests, count, index),
                duration_s=load.duration_s,
                requests=None if load.requests is None else split_evenly(load.requests, count, index),
            )
            if load.pattern == "concurrency":
                users = split_evenly(int(level), count, index)
                pattern: Any = ConcurrencyPattern(users) if users else None
            else:
                cap = load.max_in_flight and max(1, -(-load.max_in_flight // count))
                pattern = RatePattern(level, load.arrival, seed=load.seed * 1000 + level_index,
                                      max_in_flight=cap or None, shard=(index, count))
            await clock.sleep_until(window.start_ns)  # every worker opens the level at the same instant
            health = ClientHealth()
            runner.sinks = [emit, health]
            health.start()
            if pattern is not None and (window.requests is None or window.requests > 0):
                level_task = asyncio.ensure_future(runner.run_level(pattern, window, level, level_index))
                try:
                    await level_task
                except asyncio.CancelledError:
                    pass
                level_task = None
            out.write(orjson.dumps({"done": {"health": health.stop(), "unreachable": runner.unreachable}}) + b"\n")
    finally:
        if endpoint is not None:
            await endpoint.close()
        while out.get_write_buffer_size():
            await asyncio.sleep(0.01)
        out.close()


def main() -> None:
    scenario_path, index, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    allow_paths = tuple(sys.argv[4:])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_worker_main(scenario_path, index, count, allow_paths))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # reported to the coordinator as one line, never a traceback
        sys.stdout.write(orjson.dumps({"error": f"{type(e).__name__}: {e}"}).decode() + "\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
