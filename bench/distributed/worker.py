"""A Locust worker that runs benchbox levels: ``benchbox locust-worker --master HOST:PORT``.

Importing this module imports locust, which monkeypatches the standard library with gevent:
import it only in a worker process (the CLI command imports it lazily).

What a worker does, all on Locust's messaging (``register_message`` / ``send_message``):
- on ``bb_target``: keep the target's items, sampling, retry policy and endpoint (its headers as
  the sweep process resolved them, API key included: run remote workers on a trusted network,
  Locust's ZeroMQ channel is not encrypted);
- on ``bb_level``: its share of a level. Closed loop: its Locust users (``ClosedLoopUser``, as
  many as the master's LoadTestShape placed here) each send one request after another, phases
  from a per-worker ``LevelWindow``. Open loop: its ``PacerUser`` sends its slice of the one
  absolute arrival plan at the planned instants (latency also from the intended send time);
- every finished request is a ``RequestRecord`` filled by the same adapters and response code
  as the asyncio engine; records go to the master in batches (``bb_records``) and a ``bb_done``
  follows the last one of the level.
"""

from __future__ import annotations

import locust  # noqa: F401  (monkeypatches with gevent: must come before anything networked)

import logging
import os
import sys
import time
from time import perf_counter_ns
from typing import Any, Optional

import gevent
import gevent.event
import gevent.lock
import orjson
from locust import User, constant, task
from locust.env import Environment

from pathlib import Path

from bench.adapters import get_adapter
from bench.adapters.base import Adapter
from bench.client_health import TICK_S, summarize
from bench.dataset import Dataset
from bench.distributed import protocol as p
from bench.distributed.gevent_client import GeventEndpoint
from bench.histograms import LatencyHistogram
from bench.patterns.window import LevelWindow
from bench.records import RequestRecord
from bench.runner import CONNECT_PAUSE_S, LevelRunner, TargetRuntime
from bench.scenario import Retries, Sampling, Target
from bench.tls import client_context

log = logging.getLogger("benchbox.worker")

FLUSH_INTERVAL_S = 0.05
FLUSH_RECORDS = 200


class TargetSetup:
    """What the hot path needs for one target, rebuilt from the master's ``bb_target``.

    Bodies and retry decisions come from a ``LevelRunner`` (its pure ``body_for`` and
    ``retry_wait_s``), so both engines build the same requests and retry the same way."""

    def __init__(self, data: dict[str, Any]):
        target = Target.model_validate(data["target"])
        if target.protocol == "triton-grpc":
            raise ValueError("the locust engine supports HTTP targets only (not triton-grpc)")
        self.name = target.name
        self.timeout_s = target.timeout_s
        self.adapter: Adapter = get_adapter(target.protocol, target)
        self.items = tuple(p.item_from_dict(d) for d in data["items"])
        ssl_context = None
        if data["base_url"].startswith("https://"):
            ssl_context = client_context(verify=data.get("tls_verify", True))
            for pem in data.get("tls_cadata") or []:
                ssl_context.load_verify_locations(cadata=pem)
        self.endpoint = GeventEndpoint(data["base_url"], data.get("headers") or {},
                                       max_response_bytes=data["max_response_bytes"], ssl_context=ssl_context)
        retries = data.get("retries")
        self.helper = LevelRunner(
            TargetRuntime(target.name, target.model or "", self.endpoint, self.adapter, target.timeout_s),  # type: ignore[arg-type]
            Dataset(Path("-"), self.items, ""), Sampling.model_validate(data["sampling"]), [], None,  # type: ignore[arg-type]
            retries=Retries.model_validate(retries) if retries else None,
        )
        self._bodies: dict[tuple[str, int], bytes] = {}

    def body(self, phase: str, cursor: int) -> tuple[str, int, bytes]:
        item, repeat = p.item_for(self.items, phase, cursor)
        key = (item.id, repeat)
        body = self._bodies.get(key)
        if body is None:
            if len(self._bodies) >= 4 * len(self.items):  # long runs: repeats would grow it forever
                self._bodies.clear()
            body = self._bodies[key] = self.helper.body_for(item, repeat)
        return item.id, repeat, body


class WorkerLevel:
    """This worker's share of one level."""

    def __init__(self, data: dict[str, Any], start_ns: int):
        self.index: int = data["index"]              # the cluster's level serial (grows across targets)
        self.level_index: int = data["level_index"]  # the level's position in its target's sweep
        self.level: float = data["level"]
        self.pattern: str = data["pattern"]
        self.data = data
        self.start_ns = start_ns
        self.window: LevelWindow = p.new_window(start_ns, data["window"])
        self.in_flight: set[gevent.Greenlet] = set()
        self.issued = 0
        self.sent = 0  # records handed to the batcher
        self.claimed = False  # open loop: one pacer runs the plan slice
        self.done = False
        self.halted = False   # told to stop early (unreachable target, interrupt): no more retries
        self.health = LevelHealth()
        cursors = data.get("cursor") or {}
        self.cursors = {k: p.CursorSpec.from_list(v) for k, v in cursors.items()}
        self.phase_counts = {"measure": 0, "warmup": 0}


class WorkerState:
    """Everything a worker process knows; attached to the Locust environment as ``bench``."""

    def __init__(self, runner: Any):
        self.runner = runner
        self.target: Optional[TargetSetup] = None
        self.level: Optional[WorkerLevel] = None
        self.offset_ns = 0
        self.level_event = gevent.event.Event()
        self._batch: list[bytes] = []
        self._batch_index = -1
        runner.register_message(p.MSG_TARGET, self._on_target)
        runner.register_message(p.MSG_LEVEL, self._on_level)
        runner.register_message(p.MSG_STOP, self._on_stop)
        runner.register_message(p.MSG_CLOCK, self._on_clock)
        self._flusher = gevent.spawn(self._flush_loop)

    # -- messages from the master (run in Locust's receiving greenlet: never block) --------
    def hello(self) -> None:
        self.runner.send_message(p.MSG_HELLO, {"boot_id": p.boot_id(), "host": os.uname().nodename,
                                               "pid": os.getpid()})

    def _on_clock(self, environment: Any, msg: Any) -> None:
        self.runner.send_message(p.MSG_CLOCK, {"t0": msg.data["t0"], "tw": perf_counter_ns()})

    def _on_target(self, environment: Any, msg: Any) -> None:
        if self.target is not None:
            self.target.endpoint.close()
            self.target = None
        try:
            self.target = TargetSetup(msg.data)
        except Exception as e:  # a bad setup is reported to the master, not a crash
            self.runner.send_message(p.MSG_TARGET_OK, {"name": msg.data.get("name"), "error": str(e)})
            return
        self.runner.send_message(p.MSG_TARGET_OK, {"name": self.target.name})

    def _on_level(self, environment: Any, msg: Any) -> None:
        data = msg.data
        self.offset_ns = data.get("offset_ns", 0)
        start = data["start_at"] + self.offset_ns  # master clock -> this host's clock
        self.level = WorkerLevel(data, start)
        self.level_event.set()
        self.level_event = gevent.event.Event()
        if data["pattern"] == "concurrency" and not data.get("users"):
            self._finish(self.level)

    def _on_stop(self, environment: Any, msg: Any) -> None:
        lvl = self.level
        if lvl is None or lvl.index != msg.data["index"]:
            return
        lvl.window.stop()
        lvl.halted = True
        if msg.data.get("cancel"):
            gevent.killall(list(lvl.in_flight), block=False)
        self._maybe_finish(lvl)

    # -- the users' loops --------------------------------------------------------------
    def _wait_level(self, pattern: str, seen: int) -> WorkerLevel:
        while True:
            lvl = self.level
            if lvl is not None and lvl.index > seen and lvl.pattern == pattern and not lvl.done:
                return lvl
            if lvl is not None and lvl.index > seen and lvl.done:
                seen = lvl.index
            self.level_event.wait()

    def closed_loop(self) -> None:
        """One closed-loop user: a request, then the next, while the level admits them."""
        seen = -1
        while True:
            lvl = self._wait_level("concurrency", seen)
            seen = lvl.index
            _sleep_until(lvl.start_ns)
            while True:
                phase = lvl.window.admit(perf_counter_ns())
                if phase is None:
                    self._maybe_finish(lvl)
                    break
                i = lvl.phase_counts[phase]
                lvl.phase_counts[phase] = i + 1
                cursor = lvl.cursors[phase].at(i)
                seq = lvl.cursors["seq"].at(lvl.issued)
                lvl.issued += 1
                g = gevent.spawn(self._request, lvl, seq, perf_counter_ns(), phase, cursor)
                lvl.in_flight.add(g)
                g.join()
                if g.value is not None and g.value.error == "connect":
                    gevent.sleep(CONNECT_PAUSE_S)  # as the asyncio runner: no busy loop during an outage

    def pace(self) -> None:
        """The open-loop pacer: this worker's slice of the absolute arrival plan."""
        seen = -1
        while True:
            lvl = self._wait_level("rate", seen)
            seen = lvl.index
            if lvl.claimed:
                continue
            lvl.claimed = True
            d = lvl.data
            cap = gevent.lock.BoundedSemaphore(d["max_in_flight"]) if d.get("max_in_flight") else None
            try:
                for seq, scheduled, phase, cursor in p.rate_arrivals(
                        d["rate"], d["arrival"], d["seed"], lvl.window, d["slot"], d["slots"], d["bases"]):
                    _sleep_until(scheduled)
                    if lvl.window.stopped:
                        break
                    if cap is not None:
                        cap.acquire()  # at the cap the arrival waits; its lag is recorded
                        if lvl.window.stopped:
                            cap.release()
                            break
                    g = gevent.spawn(self._request, lvl, seq, scheduled, phase, cursor, cap)
                    lvl.in_flight.add(g)
                    lvl.issued += 1
            finally:
                lvl.window.stop()
                self._maybe_finish(lvl)

    def _request(self, lvl: WorkerLevel, seq: int, scheduled_ns: int, phase: str, cursor: int,
                 cap: Optional[gevent.lock.BoundedSemaphore] = None) -> Optional[RequestRecord]:
        """One request (and its retries, under the scenario's policy): every attempt is a record,
        as in ``LevelRunner.send``. Returns the last attempt's record."""
        t = self.target
        record: Optional[RequestRecord] = None
        try:
            assert t is not None, "a level arrived before its target"
            item_id, repeat, body = t.body(phase, cursor)
            rid = p.request_id(t.name, lvl.level_index, phase, seq)
            attempt = 1
            while True:
                record = RequestRecord(
                    target=t.name, level=lvl.level, phase=phase, seq=seq, item_id=item_id, repeat=repeat,
                    request_id=rid if attempt == 1 else f"{rid}-a{attempt}", scheduled_ns=scheduled_ns,
                    attempt=attempt,
                )
                try:
                    t.endpoint.stream(t.adapter.path, body, record, t.adapter, t.timeout_s)
                except gevent.GreenletExit:
                    self._emit(lvl, record)
                    record = None
                    raise
                wait_s = t.helper.retry_wait_s(record)
                record.retried = wait_s is not None and not lvl.halted
                self._emit(lvl, record)
                if not record.retried:
                    return record
                attempt += 1
                try:
                    gevent.sleep(wait_s)
                except gevent.GreenletExit:  # interrupted between attempts: still a record
                    now = perf_counter_ns()
                    record = RequestRecord(
                        target=t.name, level=lvl.level, phase=phase, seq=seq, item_id=item_id, repeat=repeat,
                        request_id=f"{rid}-a{attempt}", scheduled_ns=scheduled_ns, sent_ns=now, end_ns=now,
                        error="cancelled", error_detail="run interrupted while waiting to retry", attempt=attempt)
                    self._emit(lvl, record)
                    record = None
                    raise
        finally:
            if cap is not None:
                cap.release()
            lvl.in_flight.discard(gevent.getcurrent())  # type: ignore[arg-type]
            self._maybe_finish(lvl)

    # -- records to the master -----------------------------------------------------------
    def _emit(self, lvl: WorkerLevel, record: RequestRecord) -> None:
        lvl.health.on_record(record)
        p.shift_record(record, self.offset_ns)
        if self._batch and self._batch_index != lvl.index:
            self._flush()
        self._batch_index = lvl.index
        self._batch.append(p.record_line(record))
        lvl.sent += 1
        if len(self._batch) >= FLUSH_RECORDS:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        lines, self._batch = self._batch, []
        self.runner.send_message(p.MSG_RECORDS, {"index": self._batch_index, "n": len(lines),
                                                 "lines": b"".join(lines)})

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            try:
                self._flush()
            except Exception:  # the master may be gone; Locust's own heartbeat handles that
                log.exception("sending records failed")

    def _maybe_finish(self, lvl: WorkerLevel) -> None:
        if not lvl.done and lvl.window.stopped and not lvl.in_flight:
            self._finish(lvl)

    def _finish(self, lvl: WorkerLevel) -> None:
        lvl.done = True
        self._flush()  # records first: the master must see them before the done message
        self.runner.send_message(p.MSG_DONE, {"index": lvl.index, "sent": lvl.sent, "health": lvl.health.stop()})


class LevelHealth:
    """``bench.client_health.ClientHealth`` for a gevent worker: how late a 10 ms hub timer fires
    (any stamp can wait that long), send lag of measured requests, CPU share of the level."""

    def __init__(self) -> None:
        self.loop_delay = LatencyHistogram.empty()
        self.send_lag = LatencyHistogram.empty()
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self._ticker = gevent.spawn(self._tick)
        self._summary: Optional[dict[str, Any]] = None

    def _tick(self) -> None:
        while True:
            due = perf_counter_ns() + int(TICK_S * 1e9)
            gevent.sleep(TICK_S)
            self.loop_delay.record_ns(max(0, perf_counter_ns() - due))

    def on_record(self, record: RequestRecord) -> None:
        if record.phase == "measure" and record.sent_ns and record.scheduled_ns:
            self.send_lag.record_ns(max(0, record.sent_ns - record.scheduled_ns))

    def stop(self) -> dict[str, Any]:
        if self._summary is None:
            self._ticker.kill(block=False)
            wall = max(1e-9, time.perf_counter() - self._wall0)
            cpu = (time.process_time() - self._cpu0) / wall
            self._summary = summarize(self.loop_delay.summary_ms(), self.send_lag.summary_ms(), cpu)
        return self._summary


def _sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - perf_counter_ns()) / 1e9
    if delay > 0:
        gevent.sleep(delay)


class ClosedLoopUser(User):
    """A closed-loop benchbox user: concurrency levels are counts of these (the LoadTestShape)."""

    wait_time = constant(0)

    @task
    def run_levels(self) -> None:
        self.environment.bench.closed_loop()  # type: ignore[attr-defined]


class PacerUser(User):
    """One per worker in rate mode: sends this worker's slice of the arrival plan."""

    wait_time = constant(0)

    @task
    def run_levels(self) -> None:
        self.environment.bench.pace()  # type: ignore[attr-defined]


USER_CLASSES = {p.CLOSED_LOOP_USER: ClosedLoopUser, p.PACER_USER: PacerUser}


def _watch_parent(parent_pid: int, runner: Any) -> None:
    """A worker spawned by ``benchbox sweep`` exits with its parent, however the parent ended."""
    while True:
        gevent.sleep(0.5)
        if os.getppid() != parent_pid:
            log.warning("parent %d is gone: quitting", parent_pid)
            runner.quit()
            return


def run_worker(master: str, parent_pid: Optional[int] = None, loglevel: str = "INFO") -> int:
    """Connect to a master and serve levels until it says quit. Returns an exit code."""
    from locust.log import setup_logging

    setup_logging(loglevel)
    host, port = p.parse_master(master)
    env = Environment(user_classes=list(USER_CLASSES.values()), catch_exceptions=True)
    try:
        runner = env.create_worker_runner(host, port)
    except ConnectionError:
        print(f"benchbox: error: no Locust master at {master}", file=sys.stderr)
        return 4
    env.bench = WorkerState(runner)  # type: ignore[attr-defined]
    env.bench.hello()  # type: ignore[attr-defined]
    if parent_pid:
        gevent.spawn(_watch_parent, parent_pid, runner)
    log.info("benchbox worker %s connected to %s", runner.client_id, master)
    runner.greenlet.join()
    return 0
