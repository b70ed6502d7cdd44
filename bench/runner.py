"""One load level against one target: items in, records out (to sinks, as they finish)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import orjson

from bench.adapters.base import Adapter
from bench.client import Endpoint
from bench.exchange import retry_after_s
from bench.dataset import Dataset, Item
from bench.patterns import ConcurrencyPattern, LevelWindow, Pattern
from bench.patterns.clock import Clock
from bench.records import RequestRecord
from bench.scenario import Retries, Sampling

# After this many consecutive connection failures, spanning at least UNREACHABLE_AFTER_S, the
# endpoint is considered down and the level stops issuing: thousands of instant "connection
# refused" records measure nothing, but a server that restarts within seconds is waited for.
UNREACHABLE_AFTER = 25
UNREACHABLE_AFTER_S = 5.0
# A closed-loop user whose connection was refused pauses this long before its next request, so
# an outage yields a few records a second per user, not a busy loop of them.
CONNECT_PAUSE_S = 0.2


class Sink(Protocol):
    def on_record(self, record: RequestRecord) -> None: ...


@dataclass
class LiveStats:
    """Counters for the progress display; the numbers in results come from records."""

    done: int = 0
    ok: int = 0
    errors: int = 0
    in_flight: int = 0
    recent_ttft_ms: deque = field(default_factory=lambda: deque(maxlen=2000))

    def on_record(self, record: RequestRecord) -> None:
        self.done += 1
        if record.error is None:
            self.ok += 1
            if record.first_token_ns is not None:
                self.recent_ttft_ms.append((record.first_token_ns - record.sent_ns) / 1e6)
        else:
            self.errors += 1

    def ttft_percentiles(self) -> tuple[Optional[float], Optional[float]]:
        if not self.recent_ttft_ms:
            return None, None
        values = sorted(self.recent_ttft_ms)
        n = len(values)
        return values[min(n - 1, int(0.5 * n))], values[min(n - 1, int(0.95 * n))]


@dataclass
class TargetRuntime:
    """What the hot path needs to talk to one target."""

    name: str
    model: str
    endpoint: Endpoint
    adapter: Adapter
    timeout_s: float


class LevelRunner:
    def __init__(
        self,
        runtime: TargetRuntime,
        dataset: Dataset,
        sampling: Sampling,
        sinks: list[Sink],
        clock: Clock,
        retries: Optional[Retries] = None,
    ):
        self.runtime = runtime
        self.retries = retries
        self._closed_loop = False  # set per level: pause after a refused connection
        self.items = dataset.items
        self.sampling = sampling
        self.sinks = sinks
        self.clock = clock
        self._consecutive_connect_errors = 0
        self._connect_errors_since_ns = 0
        self.unreachable = False
        # Item cursors live as long as the target's sweep: measured requests walk the eval set
        # in order *across* levels, so a sweep covers the whole set once before repeating
        # (quality needs every item); warm-up and cold requests walk it backwards from the end,
        # so they do not pre-warm the server's prompt cache for the measured items that follow.
        self._cursor = {"measure": 0, "warmup": 0, "cold": 0}
        # With --workers N, worker w walks positions w, w+N, w+2N... of the same sequences
        # (items and request numbers), so N workers together cover exactly what one would.
        self.stride, self.offset = 1, 0
        self._base = {"measure": 0, "warmup": 0, "cold": 0}  # --workers + --resume: where the run left off

    def resume_from(self, cursors: dict[str, int]) -> None:
        """A resumed run (bench/resume.py): requests already sent per phase, so items continue in order."""
        if self.stride > 1:  # a worker: positions base + k*N + w, k counting its own requests
            self._base.update({k: v for k, v in cursors.items() if k in self._base})
        else:
            self._cursor.update({k: v for k, v in cursors.items() if k in self._cursor})

    def body_for(self, item: Item, repeat: int) -> bytes:
        body: dict[str, Any] = self.runtime.adapter.build_body(item, self.sampling, self.runtime.model)
        if repeat and self.sampling.temperature > 0 and self.sampling.seed is not None:
            # Sampled repeats need distinct seeds, or every repeat returns the same answer.
            self.runtime.adapter.set_seed(body, self.sampling.seed + repeat)
        return orjson.dumps(body)

    async def send(self, level: float, level_index: int, seq: int, scheduled_ns: int, phase: str,
                   window: Optional[LevelWindow]) -> RequestRecord:
        n = len(self.items)
        k = self._cursor[phase]
        self._cursor[phase] = k + 1
        if self.stride > 1:
            k = self._base[phase] + k * self.stride + self.offset
            seq = seq * self.stride + self.offset
        item = self.items[k % n] if phase == "measure" else self.items[n - 1 - (k % n)]
        repeat = k // n
        rt = self.runtime
        body = self.body_for(item, repeat)
        request_id = f"{rt.name}-L{level_index}-{phase[0]}{seq}"
        attempt = 1
        while True:
            record = RequestRecord(
                target=rt.name, level=level, phase=phase, seq=seq, item_id=item.id, repeat=repeat,
                request_id=request_id if attempt == 1 else f"{request_id}-a{attempt}",
                scheduled_ns=scheduled_ns, attempt=attempt,
            )
            wait_s: Optional[float] = None
            try:
                await rt.endpoint.stream(rt.adapter.path, body, record, rt.adapter, rt.timeout_s)
            finally:
                wait_s = self.retry_wait_s(record)
                if self._count_connect_error(record, window):
                    wait_s = None
                record.retried = wait_s is not None
                self._emit(record)
            if wait_s is None:
                if record.error == "connect" and self._closed_loop and not self.unreachable:
                    await self.clock.sleep_until(self.clock.now_ns() + int(CONNECT_PAUSE_S * 1e9))
                return record
            attempt += 1
            try:
                await self.clock.sleep_until(self.clock.now_ns() + int(wait_s * 1e9))
            except asyncio.CancelledError:  # interrupted between attempts: the request still ends in a record
                now = self.clock.now_ns()
                self._emit(RequestRecord(
                    target=rt.name, level=level, phase=phase, seq=seq, item_id=item.id, repeat=repeat,
                    request_id=f"{request_id}-a{attempt}", scheduled_ns=scheduled_ns, sent_ns=now, end_ns=now,
                    error="cancelled", error_detail="run interrupted while waiting to retry", attempt=attempt,
                ))
                raise

    def _count_connect_error(self, record: RequestRecord, window: Optional[LevelWindow]) -> bool:
        """Track consecutive refused connections; True once the endpoint counts as unreachable
        (the level's window is then stopped)."""
        if record.error != "connect":
            self._consecutive_connect_errors = 0
            return False
        now = self.clock.now_ns()
        if self._consecutive_connect_errors == 0:
            self._connect_errors_since_ns = now
        self._consecutive_connect_errors += 1
        down_s = (now - self._connect_errors_since_ns) / 1e9
        if (self._consecutive_connect_errors >= UNREACHABLE_AFTER and down_s >= UNREACHABLE_AFTER_S
                and window is not None):
            self.unreachable = True
            window.stop()
        return self.unreachable

    def retry_wait_s(self, record: RequestRecord) -> Optional[float]:
        """Seconds to wait before retrying ``record`` under the scenario's policy; None: it is final.

        The server's Retry-After when the policy respects it, else ``backoff_s * 2^(attempt-1)``;
        either capped by ``max_wait_s``. Never retried: successes, cancellations, classes and
        statuses the policy does not name, and the attempt after ``max`` retries."""
        policy = self.retries
        error = record.error
        if policy is None or error is None or error == "cancelled" or record.attempt > policy.max:
            return None
        by_status = error.startswith("http_") and record.status is not None and record.status in policy.on
        if error not in policy.on and not by_status:
            return None
        after = retry_after_s(record) if policy.respect_retry_after else None
        wait = after if after is not None else policy.backoff_s * 2 ** (record.attempt - 1)
        return min(wait, policy.max_wait_s)

    def _emit(self, record: RequestRecord) -> None:
        for sink in self.sinks:
            sink.on_record(record)

    async def run_level(self, pattern: Pattern, window: LevelWindow, level: float, level_index: int,
                        live: Optional[LiveStats] = None) -> None:
        async def send(seq: int, scheduled_ns: int, phase: str) -> None:
            if live is not None:
                live.in_flight += 1
            try:
                await self.send(level, level_index, seq, scheduled_ns, phase, window)
            finally:
                if live is not None:
                    live.in_flight -= 1

        self._closed_loop = isinstance(pattern, ConcurrencyPattern)
        await pattern.drive(send, self.clock, window)

    async def run_cold(self, count: int) -> list[RequestRecord]:
        """The first ``count`` requests after a server became ready, sent one at a time."""
        out = []
        for seq in range(count):
            out.append(await self.send(0, 0, seq, self.clock.now_ns(), "cold", None))
        return out


async def cancel_and_wait(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
