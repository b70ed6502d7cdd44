"""The sweep side of the locust engine (asyncio; never imports locust or gevent).

``LocustSweep`` is the normal ``Sweep`` (managed servers, observers, sinks, finalize, client
health) with ``LocustPool`` in the seam the asyncio engine's ``--workers`` uses: instead of
sending requests, each level goes to the Locust master (``bench.distributed.master``, a child
process), and the records workers send back are fed, as they arrive, to the same sinks as
the asyncio engine: records.jsonl (flushed per record), the level accumulator (every record
into one set of HDR histograms), the live display and the Prometheus exporter. Cold requests
after a managed server starts are still sent by this process (one at a time; not load).

Processes: the master and the N local workers are started in their own sessions (a Ctrl-C
in the terminal reaches only this process, which stops the level, records the in-flight
requests as ``cancelled`` and then ends the cluster); they end with this process however it
ends (the master on stdin EOF, local workers when their parent is gone).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import orjson

from bench.dataset import Dataset
from bench.distributed import protocol as p
from bench.patterns import ConcurrencyPattern, LevelWindow, Pattern, RatePattern, pattern_for
from bench.procs import tail_file
from bench.records import RequestRecord, record_from_dict
from bench.results import write_json_atomic
from bench.runner import UNREACHABLE_AFTER, UNREACHABLE_AFTER_S, Sink
from bench.scenario import Load, Target
from bench.sweep import Sweep, SweepError

READY_TIMEOUT_S = 90.0        # workers import locust and connect (seconds each on a busy 2-core box)
LINE_LIMIT = 256 * 1024 * 1024
STOP_WAIT_S = 20.0            # after a cancel: how long to wait for the workers' last records
POLL_S = 0.05


@dataclass(frozen=True)
class LocustOptions:
    """``workers`` local worker processes; ``remote_workers`` more expected to connect with
    ``benchbox locust-worker --master HOST:PORT``; the master listens on ``bind_host:port``
    (port 0: a free one, printed)."""

    workers: int = 1
    remote_workers: int = 0
    bind_host: str = "127.0.0.1"
    port: int = 0


class ClusterError(Exception):
    """The Locust master or its workers could not be started or stopped working."""


class LocustCluster:
    """The master child process and the local workers; commands in, records and events out."""

    def __init__(self, run_dir: Path, options: LocustOptions, pattern: str, say: Callable[[str], None]):
        self.run_dir = run_dir
        self.options = options
        self.pattern = pattern
        self.say = say
        self.master: Optional[asyncio.subprocess.Process] = None
        self.workers: list[asyncio.subprocess.Process] = []
        self.port: Optional[int] = None
        self.events: asyncio.Queue = asyncio.Queue()
        self.on_record: Optional[Callable[[RequestRecord], None]] = None
        self.on_event: Optional[Callable[[dict[str, Any]], None]] = None  # worker, worker_lost, warning
        self.worker_info: dict[str, dict[str, Any]] = {}
        self._reader: Optional[asyncio.Task] = None
        self._logs: list[Any] = []
        self.master_log = run_dir / "locust-master.log"

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        o = self.options
        expect = o.workers + o.remote_workers
        if expect < 1:
            raise ClusterError("the locust engine needs at least one worker (--workers / --remote-workers)")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(self.master_log, "ab")
        self._logs.append(log)
        self.master = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.distributed.master", "--bind-host", o.bind_host, "--port", str(o.port),
            "--expect-workers", str(expect), "--pattern", self.pattern,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
            start_new_session=True, limit=LINE_LIMIT,
        )
        self._reader = asyncio.ensure_future(self._read())
        first = await self._expect(("listening",), 60.0, "the Locust master did not start")
        self.port = int(first["port"])
        connect = "127.0.0.1" if o.bind_host in ("0.0.0.0", "*", "", "::") else o.bind_host
        for k in range(o.workers):
            wlog = open(self.run_dir / f"locust-worker-{k}.log", "ab")
            self._logs.append(wlog)
            self.workers.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.cli", "locust-worker", "--master", f"{connect}:{self.port}",
                "--parent-pid", str(os.getpid()),
                stdin=asyncio.subprocess.DEVNULL, stdout=wlog, stderr=wlog, env=env, start_new_session=True,
            ))
        if o.remote_workers:
            self.say(f"locust master on {o.bind_host}:{self.port}: waiting for {o.remote_workers} remote worker(s) "
                     f"(benchbox locust-worker --master HOST:{self.port})")
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        while True:
            try:
                await self.wait_event(lambda e: e["ev"] == "ready", 0.5)
                return
            except asyncio.TimeoutError:
                pass
            for k, w in enumerate(self.workers):
                if w.returncode is not None:
                    log = self.run_dir / f"locust-worker-{k}.log"
                    raise ClusterError(f"Locust worker {k} exited (code {w.returncode}); last log lines:\n"
                                       f"{tail_file(log, 8)}")
            if asyncio.get_running_loop().time() > deadline:
                raise ClusterError(f"{expect} Locust worker(s) did not connect within {READY_TIMEOUT_S:g} s "
                                   f"(log: {self.master_log})")

    async def _expect(self, kinds: tuple[str, ...], timeout_s: float, what: str) -> dict[str, Any]:
        try:
            return await self.wait_event(lambda e: e["ev"] in kinds, timeout_s)
        except asyncio.TimeoutError:
            raise ClusterError(f"{what} within {timeout_s:g} s (log: {self.master_log})") from None

    async def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: Optional[float]) -> dict[str, Any]:
        """The next queued event that matches (others are dropped); ClusterError if the master died."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            ev = await asyncio.wait_for(self.events.get(), remaining)
            if ev["ev"] == "master_exited":
                self.events.put_nowait(ev)  # every later waiter must see it too
                tail = tail_file(self.master_log, 8)
                raise ClusterError(f"the Locust master exited (code {ev.get('code')}); last log lines:\n{tail}")
            if predicate(ev):
                return ev

    async def send(self, cmd: dict[str, Any]) -> None:
        if self.master is None or self.master.stdin is None or self.master.returncode is not None:
            raise ClusterError("the Locust master is not running")
        self.master.stdin.write(orjson.dumps(cmd) + b"\n")
        try:
            await self.master.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise ClusterError("the Locust master is not running") from None

    async def _read(self) -> None:
        assert self.master is not None and self.master.stdout is not None
        stdout = self.master.stdout
        try:
            while True:
                line = await stdout.readline()
                if not line:
                    break
                if line.startswith(p.RECORD_PREFIX):
                    record = record_from_dict(orjson.loads(line[2:]))
                    if self.on_record is not None:
                        self.on_record(record)
                elif line.startswith(p.EVENT_PREFIX):
                    self._on_event(orjson.loads(line[2:]))
        finally:
            code = await self.master.wait()
            self.events.put_nowait({"ev": "master_exited", "code": code})

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev["ev"]
        if kind == "worker":
            self.worker_info[ev["id"]] = ev
        if kind in ("worker", "worker_lost", "warning"):
            if self.on_event is not None:
                self.on_event(ev)
            return
        self.events.put_nowait(ev)

    async def close(self) -> None:
        """Quit the master (it tells the workers), then make sure every child has ended."""
        if self.master is not None and self.master.returncode is None:
            try:
                await self.send({"cmd": "quit"})
                self.master.stdin.close()  # type: ignore[union-attr]
            except (ClusterError, OSError):
                pass
        procs = [pr for pr in [self.master, *self.workers] if pr is not None]
        await _end_all(procs, grace_s=10.0)
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                self._reader.cancel()
        for fh in self._logs:
            fh.close()
        self._logs.clear()


async def _end_all(procs: list[asyncio.subprocess.Process], grace_s: float) -> None:
    """Wait for processes to exit; then SIGTERM, then SIGKILL their process groups."""
    async def waited(timeout: float) -> None:
        pending = [pr.wait() for pr in procs if pr.returncode is None]
        if pending:
            await asyncio.wait([asyncio.ensure_future(w) for w in pending], timeout=timeout)

    await waited(grace_s)
    for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        alive = [pr for pr in procs if pr.returncode is None]
        if not alive:
            return
        for pr in alive:
            try:
                os.killpg(pr.pid, sig)  # each child leads its own session
            except ProcessLookupError:
                pass
        await waited(wait_s)


def level_command(serial: int, pattern: Pattern, window: LevelWindow, level: float, level_index: int,
                  bases: dict[str, int]) -> dict[str, Any]:
    """What the master needs to run one level: the pattern, the window's limits and where the
    target's item cursors stand."""
    cmd: dict[str, Any] = {
        "cmd": "level", "index": serial, "level_index": level_index, "level": level, "bases": bases,
        "window": {"warmup_s": window.warmup_s, "warmup_requests": window.warmup_requests,
                   "duration_s": window.duration_s, "requests": window.requests},
    }
    if isinstance(pattern, ConcurrencyPattern):
        cmd.update(pattern="concurrency", users=pattern.users)
    elif isinstance(pattern, RatePattern):
        cmd.update(pattern="rate", rate=pattern.rate, arrival=pattern.arrival, seed=pattern.seed,
                   max_in_flight=pattern.max_in_flight)
    else:
        raise SweepError(f"the locust engine cannot run a {type(pattern).__name__}")
    return cmd


def tls_setup(context: Optional[ssl.SSLContext]) -> dict[str, Any]:
    """A target's TLS settings as a worker can rebuild them: verification on or off, and the extra
    CA certificates (``tls.ca_file``, ``--ca-file``) as PEM; the system's CAs are the worker's own."""
    if context is None:
        return {"tls_verify": True, "tls_cadata": []}
    return {"tls_verify": context.verify_mode != ssl.CERT_NONE,
            "tls_cadata": [ssl.DER_cert_to_PEM_cert(c) for c in context.get_ca_certs(binary_form=True)]}


class LocustPool:
    """The Locust cluster behind the sweep's worker-pool seam (as ``bench.workers.WorkerPool``):
    ``set_target`` then ``run_level`` per level, records to the sweep's sinks as they arrive.

    Unreachable targets are judged here, from the records of all workers together, with the
    asyncio runner's rule (``UNREACHABLE_AFTER`` consecutive refused connections spanning
    ``UNREACHABLE_AFTER_S``); the level is then stopped on every worker."""

    def __init__(self, cluster: LocustCluster, load: Load, targets: dict[str, Target], dataset: Dataset,
                 sampling: Any, tls: dict[str, ssl.SSLContext]):
        self.cluster = cluster
        self.load = load
        self.targets = targets
        self.dataset = dataset
        self.sampling = sampling
        self.tls = tls
        self.warn: Callable[[str], None] = lambda text: None
        self._setup: Optional[dict[str, Any]] = None
        self._target_sent = False
        self._serial = 0
        self.cursor = {"measure": 0, "warmup": 0}
        self._sinks: list[Sink] = []
        self._stop = False
        self._connect_errors = 0
        self._connect_since_ns = 0
        self.unreachable = False

    async def start(self) -> None:
        await self.cluster.start()

    def set_target(self, name: str, base_url: str, headers: dict[str, str], max_response_bytes: int,
                   tls_flags: Optional[dict[str, Any]] = None, cursors: Optional[dict[str, int]] = None) -> None:
        """The target for the next levels. TLS comes from the sweep's own context for the target
        (which already applies --insecure / --ca-file), so ``tls_flags`` is not needed here.
        ``cursors``: where the target's item walk stands per phase (a resumed run continues it)."""
        target = self.targets[name]
        host = urlsplit(base_url).hostname or ""
        if self.cluster.options.remote_workers and (host == "localhost" or host.startswith("127.") or host == "::1"):
            what = "its managed server listens" if target.server is not None else "its URL points"
            self.warn(f"target {name}: {what} on loopback ({base_url}): workers on other hosts will reach "
                      "their own loopback, not this one")
        self._setup = {
            "name": name, "target": target.model_dump(mode="json"), "base_url": base_url, "headers": headers,
            "max_response_bytes": max_response_bytes, "sampling": self.sampling.model_dump(mode="json"),
            "retries": self.load.retries.model_dump(mode="json") if self.load.retries else None,
            "items": [p.item_to_dict(i) for i in self.dataset.items], **tls_setup(self.tls.get(name)),
        }
        self._target_sent = False
        cursors = cursors or {}
        self.cursor = {"measure": cursors.get("measure", 0), "warmup": cursors.get("warmup", 0)}

    async def _send_target(self) -> None:
        if self._target_sent:
            return
        assert self._setup is not None, "run_level before set_target"
        name = self._setup["name"]
        await self.cluster.send({"cmd": "target", "setup": self._setup})
        ev = await self.cluster.wait_event(
            lambda e: e["ev"] in ("target_ready", "target_error") and e.get("name") == name, 120.0)
        if ev["ev"] == "target_error":
            raise SweepError(f"target {name}: {ev['text']}")
        self._target_sent = True

    def _on_record(self, record: RequestRecord) -> None:
        if record.phase in self.cursor and record.attempt == 1:
            self.cursor[record.phase] += 1
        for sink in self._sinks:
            sink.on_record(record)
        if record.error != "connect":
            self._connect_errors = 0
            return
        now = time.perf_counter_ns()
        if self._connect_errors == 0:
            self._connect_since_ns = now
        self._connect_errors += 1
        if self._connect_errors >= UNREACHABLE_AFTER and (now - self._connect_since_ns) / 1e9 >= UNREACHABLE_AFTER_S:
            self.unreachable = self._stop = True

    async def run_level(self, level: float, index: int, start_ns: int, sinks: list[Sink]) -> list[dict[str, Any]]:
        """Run one level on the cluster. Returns one report per worker that finished it
        (``health``, ``unreachable``). Cancelled: in-flight requests end as ``cancelled`` records,
        collected before the CancelledError goes on."""
        try:
            await self._send_target()
        except ClusterError as e:
            raise SweepError(str(e)) from None
        load = self.load
        window = LevelWindow(start_ns=start_ns, warmup_s=load.warmup.seconds, warmup_requests=load.warmup.requests,
                             duration_s=load.duration_s, requests=load.requests)
        self._serial += 1
        serial = self._serial
        cmd = level_command(serial, pattern_for(load, level, index), window, level, index, dict(self.cursor))
        self._sinks, self._stop, self.unreachable, self._connect_errors = sinks, False, False, 0
        self.cluster.on_record = self._on_record
        stop_sent = False

        def level_done(e: dict[str, Any]) -> bool:
            return e["ev"] == "level_done" and e["index"] == serial

        try:
            await self.cluster.send(cmd)
            while True:
                try:
                    ev = await self.cluster.wait_event(level_done, POLL_S)
                    break
                except asyncio.TimeoutError:
                    pass
                if self._stop and not stop_sent:
                    await self.cluster.send({"cmd": "stop", "index": serial, "cancel": False})
                    stop_sent = True
        except asyncio.CancelledError:
            try:
                await self.cluster.send({"cmd": "stop", "index": serial, "cancel": True})
                await self.cluster.wait_event(level_done, STOP_WAIT_S)
            except (ClusterError, asyncio.TimeoutError):
                pass
            raise
        except ClusterError as e:
            raise SweepError(str(e)) from None
        finally:
            self.cluster.on_record = None
        if ev.get("error"):
            raise SweepError(f"{self._setup['name'] if self._setup else ''} @ {level:g}: {ev['error']}")
        if ev.get("short"):
            raise SweepError(f"@ {level:g}: records lost between workers and the master: {ev['short']}")
        return [{"health": h, "unreachable": self.unreachable} for h in ev.get("health", [])]

    async def close(self) -> None:
        await self.cluster.close()


class LocustSweep(Sweep):
    """A ``Sweep`` whose levels run on Locust master/worker processes (through the worker-pool seam)."""

    def __init__(self, *args: Any, locust: LocustOptions, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.options = locust
        self.engine: dict[str, Any] = {
            "name": "locust", "local_workers": locust.workers, "remote_workers": locust.remote_workers,
            "workers": [], "lost_workers": [],
        }
        self.state.manifest["engine"] = self.engine

    async def run(self) -> None:
        cluster = LocustCluster(self.state.run_dir, self.options, self.sc.load.pattern, self.say)
        cluster.on_event = self._on_cluster_event
        pool = LocustPool(cluster, self.sc.load, {t.name: t for t in self.sc.targets}, self.dataset,
                          self.sc.sampling, self.tls)
        pool.warn = lambda text: self._on_cluster_event({"ev": "warning", "text": text})
        try:
            await pool.start()
        except ClusterError as e:
            await pool.close()
            self.state.failures.append(f"locust engine: {e}")
            self.say(f"error: locust engine: {e}")
            return
        except BaseException:
            await pool.close()
            raise
        self.say(f"locust engine: master on {self.options.bind_host}:{cluster.port}, "
                 f"{len(cluster.worker_info)} worker(s)")
        self.workers = 1  # the asyncio engine's own pool stays off: this one takes its place
        self.pool = pool  # Sweep.run closes it
        await super().run()

    def _on_cluster_event(self, ev: dict[str, Any]) -> None:
        kind = ev["ev"]
        if kind == "worker":
            self.engine["workers"].append({k: ev.get(k) for k in ("id", "index", "host", "pid", "offset_ns", "rtt_ns")})
        elif kind == "worker_lost":
            cur = self.state.current
            where = f" during {cur.target} @ {cur.level:g}" if cur is not None and ev.get("level_serial") else ""
            note = (f"locust worker {ev['index']} ({ev.get('host')}, pid {ev.get('pid')}) was lost{where}; "
                    f"the {ev.get('received', 0)} record(s) it sent before are kept, its unsent requests are missing")
            self.engine["lost_workers"].append({k: ev.get(k) for k in ("id", "index", "host", "pid", "received")})
            self.state.notes.append(note)
            self.say(f"warning: {note}")
        elif kind == "warning":
            self.state.notes.append(ev["text"])
            self.say(f"warning: {ev['text']}")

    def finalize(self, complete: bool) -> dict[str, Any]:
        result = super().finalize(complete)
        result["engine"] = self.engine
        write_json_atomic(self.state.run_dir / "result.json", result)
        return result


def locust_sweep_class(workers: int, remote_workers: int, bind: str) -> Callable[..., LocustSweep]:
    """``Sweep``'s constructor for ``--engine locust``; ValueError (one line) for a bad ``bind`` or
    when locust is not installed."""
    import importlib.util

    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--locust-bind: expected HOST:PORT (port 0: any free port), got {bind!r}")
    if importlib.util.find_spec("locust") is None:
        raise ValueError("--engine locust needs Locust: pip install 'benchbox[locust]'")
    options = LocustOptions(workers=workers, remote_workers=remote_workers, bind_host=host.strip("[]"),
                            port=int(port))
    return functools.partial(LocustSweep, locust=options)
