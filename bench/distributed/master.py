"""The Locust master of the locust engine: ``python -m bench.distributed.master``.

A child process of ``benchbox sweep --engine locust`` (the *sweep process*). It speaks two
channels:
- to the sweep process, JSON-lines commands on stdin (``target``, ``level``, ``stop``,
  ``quit``) and, on stdout, events (``E {json}``) and record lines (``R {record}``) relayed as
  they arrive from workers, so the sweep process writes the one records.jsonl and feeds the
  same sinks as the asyncio engine;
- to workers, Locust's ZeroMQ messaging (custom ``bb_*`` messages, see ``protocol``).

The scenario's levels become a Locust ``LoadTestShape``: each level is a stage of N
``ClosedLoopUser`` (concurrency) or one ``PacerUser`` per worker (rate). Once Locust has
placed the users, the master sends each worker its share of the level (quotas, item cursors,
its slice of the arrival plan) with one start instant. A worker that misses Locust heartbeats
(or quits) mid-run is reported as lost (``worker_lost``); its records received so far stay.

Stdin EOF (the sweep process died) quits the master and, through Locust, its workers.
"""

from __future__ import annotations

import locust  # noqa: F401  (monkeypatches with gevent)

import argparse
import logging
import os
import sys
from time import perf_counter_ns
from typing import Any, Iterator, Optional

import gevent
import gevent.lock
import orjson
from gevent.fileobject import FileObjectPosix
from locust import LoadTestShape
from locust.env import Environment
from locust.runners import STATE_INIT, STATE_MISSING, STATE_RUNNING, STATE_SPAWNING

from bench.distributed import protocol as p
from bench.distributed.worker import USER_CLASSES

log = logging.getLogger("benchbox.master")

START_LEAD_NS = 200_000_000       # every worker gets its level message before the shared start
SPAWN_RATE = 1e9                  # place a stage's users at once (a level is not a ramp)
USERS_TIMEOUT_S = 30.0
TARGET_TIMEOUT_S = 30.0
CLOCK_PINGS = 8
WATCH_INTERVAL_S = 0.25


class Bridge:
    """stdin commands in, stdout events and record lines out (cooperative under gevent)."""

    def __init__(self) -> None:
        self._in = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
        self._out = FileObjectPosix(sys.stdout.fileno(), "wb", close=False)
        self._lock = gevent.lock.Semaphore()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def event(self, ev: str, **fields: Any) -> None:
        self.write(p.event_line({"ev": ev, **fields}))

    def commands(self) -> Iterator[dict[str, Any]]:
        while True:
            line = self._in.readline()
            if not line:
                return
            if line.strip():
                yield orjson.loads(line)


class BenchShape(LoadTestShape):
    """The level being run, as a Locust stage: ``(users, spawn_rate)``. The controller sets
    ``stage``; Locust's shape greenlet turns changes into user placements on the workers."""

    def __init__(self) -> None:
        super().__init__()
        self.stage: Optional[tuple[int, float]] = None

    def tick(self) -> Optional[tuple[int, float]]:
        return self.stage


class MasterLevel:
    def __init__(self, index: int, assigned: dict[str, int]):
        self.index = index
        self.assigned = assigned  # worker id -> users (concurrency) or slot (rate)
        self.done: dict[str, int] = {}
        self.health: dict[str, dict[str, Any]] = {}
        self.received: dict[str, int] = {}
        self.lost: set[str] = set()
        self.finished = False


class Controller:
    def __init__(self, runner: Any, shape: BenchShape, bridge: Bridge, expect: int, user_class: str):
        self.runner = runner
        self.shape = shape
        self.bridge = bridge
        self.expect = expect
        self.user_class = user_class
        self.boot_id = p.boot_id()
        self.hello: dict[str, dict[str, Any]] = {}
        self.offsets: dict[str, int] = {}
        self.pings: dict[str, list[tuple[int, int, int]]] = {}
        self.lost: set[str] = set()
        self.target: Optional[dict[str, Any]] = None
        self.target_acks: dict[str, Optional[str]] = {}
        self.level: Optional[MasterLevel] = None
        self.ready_sent = False
        self.quitting = False
        for name, handler in ((p.MSG_HELLO, self._on_hello), (p.MSG_CLOCK, self._on_clock),
                              (p.MSG_TARGET_OK, self._on_target_ok), (p.MSG_RECORDS, self._on_records),
                              (p.MSG_DONE, self._on_done)):
            runner.register_message(name, handler)
        gevent.spawn(self._watch)

    # -- workers ---------------------------------------------------------------------
    def active(self) -> list[str]:
        """Connected, synced workers in Locust's worker-index order."""
        ids = [c.id for c in self.runner.clients.all
               if c.state in (STATE_INIT, STATE_SPAWNING, STATE_RUNNING) and c.id in self.offsets]
        return sorted(ids, key=self.runner.get_worker_index)

    def _describe(self, cid: str) -> dict[str, Any]:
        info = self.hello.get(cid, {})
        return {"id": cid, "index": self.runner.get_worker_index(cid), "host": info.get("host"),
                "pid": info.get("pid")}

    def _on_hello(self, environment: Any, msg: Any) -> None:
        cid = msg.node_id
        self.hello[cid] = msg.data
        if msg.data.get("boot_id") == self.boot_id:
            self._synced(cid, 0, None)
        else:
            self.pings[cid] = []
            gevent.spawn(self._ping, cid)

    def _ping(self, cid: str) -> None:
        for _ in range(CLOCK_PINGS):
            self.runner.send_message(p.MSG_CLOCK, {"t0": perf_counter_ns()}, client_id=cid)
            gevent.sleep(0.02)
        gevent.sleep(0.2)
        samples = self.pings.pop(cid, [])
        if not samples:
            self.bridge.event("warning", text=f"worker {cid}: no clock reply; records kept in its own clock")
            self._synced(cid, 0, None)
            return
        offset, rtt = p.clock_offset(samples)
        self._synced(cid, offset, rtt)

    def _on_clock(self, environment: Any, msg: Any) -> None:
        if msg.node_id in self.pings:
            self.pings[msg.node_id].append((msg.data["t0"], msg.data["tw"], perf_counter_ns()))

    def _synced(self, cid: str, offset: int, rtt: Optional[int]) -> None:
        self.offsets[cid] = offset
        self.bridge.event("worker", **self._describe(cid), offset_ns=offset, rtt_ns=rtt)
        if self.target is not None:  # joined mid-sweep: it needs the current target too
            self.runner.send_message(p.MSG_TARGET, self.target, client_id=cid)
        if not self.ready_sent and len(self.active()) >= self.expect:
            self.ready_sent = True
            self.bridge.event("ready", workers=[self._describe(c) for c in self.active()])

    def _watch(self) -> None:
        """Lost workers: Locust marks a worker missing after HEARTBEAT_LIVENESS missed heartbeats
        (about 3 s), and removes one that quit."""
        while not self.quitting:
            gevent.sleep(WATCH_INTERVAL_S)
            for cid in list(self.offsets):
                if cid in self.lost:
                    continue
                node = self.runner.clients.get(cid)
                if node is None or node.state == STATE_MISSING:
                    self._lose(cid)

    def _lose(self, cid: str) -> None:
        self.lost.add(cid)
        lvl = self.level
        during = lvl is not None and not lvl.finished and cid in lvl.assigned and cid not in lvl.done
        received = lvl.received.get(cid, 0) if lvl is not None else 0
        self.bridge.event("worker_lost", **self._describe(cid), level_serial=lvl.index if during else None,
                          received=received)
        if during:
            lvl.lost.add(cid)
            self._check_level()

    # -- targets -------------------------------------------------------------------
    def set_target(self, setup: dict[str, Any]) -> None:
        self.target = setup
        self.target_acks = {}
        workers = self.active()
        for cid in workers:
            self.runner.send_message(p.MSG_TARGET, setup, client_id=cid)
        deadline = perf_counter_ns() + int(TARGET_TIMEOUT_S * 1e9)
        while perf_counter_ns() < deadline:
            pending = [c for c in self.active() if c not in self.target_acks]
            if not pending:
                break
            gevent.sleep(0.02)
        errors = {c: e for c, e in self.target_acks.items() if e}
        if errors:
            cid, err = next(iter(errors.items()))
            self.bridge.event("target_error", name=setup["name"], text=f"worker {cid}: {err}")
        elif not self.active():
            self.bridge.event("target_error", name=setup["name"], text="no workers connected")
        else:
            self.bridge.event("target_ready", name=setup["name"], workers=len(self.active()))

    def _on_target_ok(self, environment: Any, msg: Any) -> None:
        if self.target is not None and msg.data.get("name") == self.target["name"]:
            self.target_acks[msg.node_id] = msg.data.get("error")

    # -- levels --------------------------------------------------------------------
    def run_level(self, cmd: dict[str, Any]) -> None:
        index, pattern = cmd["index"], cmd["pattern"]
        workers = self.active()
        if not workers:
            self.bridge.event("level_done", index=index, error="no workers connected", lost=[])
            return
        users = int(cmd["users"]) if pattern == "concurrency" else len(workers)
        # A distinct tick per level, so Locust re-places users even when the count is unchanged
        # (after a lost worker, the survivors take its users).
        self.shape.stage = (users, SPAWN_RATE + index)
        if self.runner.shape_greenlet is None:
            self.runner.start_shape()
        counts = self._wait_for_users(users)
        if counts is None:
            self.bridge.event("level_done", index=index, lost=[],
                              error=f"Locust did not place {users} users on the workers within {USERS_TIMEOUT_S:g} s")
            return
        order = [c for c in self.active() if counts.get(c)]
        if pattern == "concurrency":
            shares = p.concurrency_shares([counts[c] for c in order], cmd["window"], cmd["bases"])
        else:
            shares = [{**s, "window": cmd["window"], "bases": cmd["bases"], "rate": cmd["rate"],
                       "arrival": cmd["arrival"], "seed": cmd["seed"]}
                      for s in p.rate_shares(len(order), cmd.get("max_in_flight"))]
        lvl = MasterLevel(index, {c: counts[c] for c in order})
        self.level = lvl
        start_at = perf_counter_ns() + START_LEAD_NS
        for cid, share in zip(order, shares):
            self.runner.send_message(p.MSG_LEVEL, {"index": index, "level": cmd["level"], "pattern": pattern,
                                                   "level_index": cmd["level_index"],
                                                   "start_at": start_at, "offset_ns": self.offsets.get(cid, 0),
                                                   **share}, client_id=cid)
        self.bridge.event("level_started", index=index, start_at=start_at,
                          workers=[{**self._describe(c), "users": counts[c]} for c in order])
        self._check_level()

    def _wait_for_users(self, users: int) -> Optional[dict[str, int]]:
        deadline = perf_counter_ns() + int(USERS_TIMEOUT_S * 1e9)
        while perf_counter_ns() < deadline:
            counts = {c: self.runner.clients[c].user_classes_count.get(self.user_class, 0)
                      for c in self.active() if c in self.runner.clients}
            if sum(counts.values()) == users:
                return counts
            gevent.sleep(0.02)
        return None

    def stop_level(self, index: int, cancel: bool) -> None:
        lvl = self.level
        if lvl is None or lvl.index != index or lvl.finished:
            return
        for cid in lvl.assigned:
            if cid not in lvl.done and cid not in lvl.lost:
                self.runner.send_message(p.MSG_STOP, {"index": index, "cancel": cancel}, client_id=cid)

    def _on_records(self, environment: Any, msg: Any) -> None:
        cid, data = msg.node_id, msg.data
        self.bridge.write(data["lines"])
        lvl = self.level
        if lvl is not None and lvl.index == data["index"]:
            lvl.received[cid] = lvl.received.get(cid, 0) + data["n"]

    def _on_done(self, environment: Any, msg: Any) -> None:
        lvl = self.level
        if lvl is None or lvl.index != msg.data["index"]:
            return
        lvl.done[msg.node_id] = msg.data["sent"]
        lvl.health[msg.node_id] = msg.data.get("health")
        self._check_level()

    def _check_level(self) -> None:
        lvl = self.level
        if lvl is None or lvl.finished or not set(lvl.assigned) <= set(lvl.done) | lvl.lost:
            return
        lvl.finished = True
        short = {c: sent - lvl.received.get(c, 0) for c, sent in lvl.done.items() if sent != lvl.received.get(c, 0)}
        self.bridge.event("level_done", index=lvl.index, lost=[self._describe(c) for c in sorted(lvl.lost)],
                          records={c: lvl.received.get(c, 0) for c in lvl.assigned}, short=short,
                          health=[lvl.health[c] for c in lvl.assigned if lvl.health.get(c)])

    def quit(self) -> None:
        self.quitting = True
        self.runner.quit()


def _serve(controller: Controller, bridge: Bridge) -> None:
    try:
        for cmd in bridge.commands():
            kind = cmd.get("cmd")
            if kind == "target":
                gevent.spawn(controller.set_target, cmd["setup"])
            elif kind == "level":
                gevent.spawn(controller.run_level, cmd)
            elif kind == "stop":
                controller.stop_level(cmd["index"], bool(cmd.get("cancel")))
            elif kind == "quit":
                break
    finally:
        controller.quit()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.distributed.master")
    parser.add_argument("--bind-host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (announced on stdout)")
    parser.add_argument("--expect-workers", type=int, default=1)
    parser.add_argument("--pattern", choices=("concurrency", "rate"), default="concurrency")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    from locust.log import setup_logging

    setup_logging(args.loglevel)
    # Locust waits a second after placing users for worker reports; the controller waits itself.
    os.environ.setdefault("LOCUST_WAIT_FOR_WORKERS_REPORT_AFTER_RAMP_UP", "0")
    user_class = p.CLOSED_LOOP_USER if args.pattern == "concurrency" else p.PACER_USER
    shape = BenchShape()
    env = Environment(user_classes=[USER_CLASSES[user_class]], shape_class=shape)
    runner = env.create_master_runner(args.bind_host, args.port)
    bridge = Bridge()
    controller = Controller(runner, shape, bridge, args.expect_workers, user_class)
    bridge.event("listening", port=runner.server.port, host=args.bind_host)
    gevent.spawn(_serve, controller, bridge)
    runner.greenlet.join()
    bridge.event("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
