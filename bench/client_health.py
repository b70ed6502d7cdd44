"""Is the load generator itself the bottleneck? Watched per level, reported beside the numbers.

A client that runs out of CPU queues its own work: requests go out late and arriving bytes wait
in the socket before they are stamped, so the server looks slower than it is. Three signals,
all cheap enough to run during every level:

- event-loop delay: a 10 ms tick scheduled on the loop; how late it fires is how long any
  callback (a send, a ``data_received`` stamp) can wait right now;
- send lag: ``sent_ns - scheduled_ns`` of measured requests (rate mode: behind the arrival plan;
  closed loop: building and writing the request after a user became free);
- CPU share: process CPU time / wall time over the level (1.0 = one core fully busy).

A level is flagged *saturated* when loop delay p99 or send lag p99 passes ``LAG_LIMIT_MS``, or
the process used more than ``CPU_LIMIT`` of a core. The flag goes into the level's result and
the report; it does not stop the run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from bench.histograms import LatencyHistogram
from bench.records import RequestRecord

TICK_S = 0.010
LAG_LIMIT_MS = 5.0
CPU_LIMIT = 0.90


class ClientHealth:
    """One level's watch: ``start()`` on the running loop, a sink for records, ``stop()`` -> summary."""

    def __init__(self) -> None:
        self.loop_delay = LatencyHistogram.empty()
        self.send_lag = LatencyHistogram.empty()
        self._handle: Optional[asyncio.TimerHandle] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._due = 0.0
        self._wall0 = self._cpu0 = 0.0
        self._summary: Optional[dict[str, Any]] = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        self._schedule()

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + TICK_S
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        late_s = self._loop.time() - self._due
        self.loop_delay.record_ns(max(0, int(late_s * 1e9)))
        self._schedule()

    def on_record(self, record: RequestRecord) -> None:
        if record.phase == "measure" and record.sent_ns and record.scheduled_ns:
            self.send_lag.record_ns(max(0, record.sent_ns - record.scheduled_ns))

    def stop(self) -> dict[str, Any]:
        if self._summary is not None:
            return self._summary
        if self._handle is not None:
            self._handle.cancel()
        wall = max(1e-9, time.perf_counter() - self._wall0)
        cpu = (time.process_time() - self._cpu0) / wall
        self._summary = summarize(self.loop_delay.summary_ms(), self.send_lag.summary_ms(), cpu)
        return self._summary


def summarize(loop_delay: dict[str, Any], send_lag: dict[str, Any], cpu_share: float) -> dict[str, Any]:
    reasons = []
    for name, hist in (("event-loop delay", loop_delay), ("send lag", send_lag)):
        p99 = hist.get("p99")
        if p99 is not None and p99 > LAG_LIMIT_MS:
            reasons.append(f"{name} p99 {p99:.1f} ms > {LAG_LIMIT_MS:g} ms")
    if cpu_share > CPU_LIMIT:
        reasons.append(f"client CPU {cpu_share:.0%} of a core > {CPU_LIMIT:.0%}")
    return {
        "saturated": bool(reasons),
        "reasons": reasons,
        "cpu_share": round(cpu_share, 3),
        "loop_delay_ms": _short(loop_delay),
        "send_lag_ms": _short(send_lag),
    }


def merge_health(workers: list[dict[str, Any]], coordinator: dict[str, Any]) -> dict[str, Any]:
    """``--workers``: the level is saturated if any worker was, or the coordinator (which
    receives and accumulates every record) ran out of CPU. Worst-of figures at the top."""
    reasons = [f"worker {i}: {r}" for i, p in enumerate(workers) for r in p["reasons"]]
    if coordinator["cpu_share"] > CPU_LIMIT:
        reasons.append(f"coordinator CPU {coordinator['cpu_share']:.0%} of a core > {CPU_LIMIT:.0%}")
    return {
        "saturated": bool(reasons),
        "reasons": reasons,
        "cpu_share": round(max(p["cpu_share"] for p in workers), 3),
        "loop_delay_ms": _worst(workers, "loop_delay_ms"),
        "send_lag_ms": _worst(workers, "send_lag_ms"),
        "workers": workers,
        "coordinator_cpu_share": coordinator["cpu_share"],
    }


def _short(hist: dict[str, Any]) -> dict[str, Any]:
    return {k: hist.get(k) for k in ("count", "p50", "p99", "max")}


def _worst(parts: list[dict[str, Any]], key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"count": sum(p[key].get("count") or 0 for p in parts)}
    for k in ("p50", "p99", "max"):
        values = [p[key][k] for p in parts if p[key].get(k) is not None]
        out[k] = max(values) if values else None
    return out


def saturation_note(target: str, level: float, health: dict[str, Any]) -> str:
    return (f"{target} @ {level:g}: the load generator was saturated ({'; '.join(health['reasons'])}); "
            f"latencies at this level include client queueing - use --workers N or more load hosts")
