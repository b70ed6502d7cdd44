"""Time sources for load patterns: the real monotonic clock, and a virtual one for tests."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from time import perf_counter_ns
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...

    async def sleep_until(self, deadline_ns: int) -> None: ...


class MonotonicClock:
    """``perf_counter_ns`` (CLOCK_MONOTONIC): the clock every record uses."""

    def now_ns(self) -> int:
        return perf_counter_ns()

    async def sleep_until(self, deadline_ns: int) -> None:
        delay = (deadline_ns - perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)


class FakeClock:
    """Virtual time for tests: sleeping advances time instantly, in deadline order.

    Call ``run(coro)`` to drive a coroutine: whenever every task is blocked on the clock,
    time jumps to the earliest deadline. Deterministic and instant.
    """

    def __init__(self, start_ns: int = 1_000_000_000):
        self._now = start_ns
        self._sleepers: list[tuple[int, int, asyncio.Future]] = []
        self._counter = itertools.count()

    def now_ns(self) -> int:
        return self._now

    async def sleep_until(self, deadline_ns: int) -> None:
        if deadline_ns <= self._now:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline_ns, next(self._counter), fut))
        await fut

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + int(seconds * 1e9))

    async def run(self, coro) -> object:
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(20):  # let every runnable task reach its next await
                await asyncio.sleep(0)
            if task.done():
                break
            if not self._sleepers:
                continue
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
        return task.result()
