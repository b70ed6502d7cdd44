"""Open loop: arrivals at R requests/s from an absolute, seeded plan.

Each request's intended start is fixed in advance (``start + offset``), independent of
how fast the server answers, so a slow server cannot slow the arrivals down and hide
its own latency (coordinated omission). Latency is reported from the scheduled time too,
and ``sent - scheduled`` (client lag) shows when the client itself falls behind.
"""

from __future__ import annotations

import asyncio
import random
from typing import Iterator, Optional

from bench.patterns.base import Send
from bench.patterns.clock import Clock
from bench.patterns.window import LevelWindow


def arrival_offsets_ns(rate: float, arrival: str, seed: int) -> Iterator[int]:
    """Offsets (ns from the level start) of successive arrivals. Pure and deterministic."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if arrival == "constant":
        k = 0
        while True:
            yield round(k * 1e9 / rate)
            k += 1
    elif arrival == "poisson":
        rng = random.Random(seed)
        t = 0.0
        while True:
            yield round(t * 1e9)
            t += rng.expovariate(rate)
    else:
        raise ValueError(f"unknown arrival process {arrival!r}; known: constant, poisson")


class RatePattern:
    def __init__(self, rate: float, arrival: str = "poisson", seed: int = 0, max_in_flight: Optional[int] = None,
                 shard: tuple[int, int] = (0, 1)):
        self.rate = rate
        self.arrival = arrival
        self.seed = seed
        self.max_in_flight = max_in_flight
        # (w, N): this process sends arrivals w, w+N, ... of the one plan (``--workers N``), so the
        # workers together send exactly the single-process arrival sequence.
        self.shard = shard

    async def drive(self, send: Send, clock: Clock, window: LevelWindow) -> None:
        cap = asyncio.Semaphore(self.max_in_flight) if self.max_in_flight else None
        tasks: set[asyncio.Task] = set()

        async def one(seq: int, scheduled: int, phase: str) -> None:
            try:
                await send(seq, scheduled, phase)
            finally:
                if cap is not None:
                    cap.release()

        try:
            part, parts = self.shard
            for seq, offset in enumerate(arrival_offsets_ns(self.rate, self.arrival, self.seed)):
                if parts > 1:
                    if seq % parts != part:
                        continue
                    seq //= parts  # the runner maps it back to the plan's index (seq * N + w)
                scheduled = window.start_ns + offset
                if window.stopped:
                    break
                await clock.sleep_until(scheduled)
                phase = window.admit(scheduled)
                if phase is None:
                    break
                if cap is not None:
                    # At the cap the arrival waits; its lag (sent - scheduled) is recorded, not hidden.
                    await cap.acquire()
                task = asyncio.ensure_future(one(seq, scheduled, phase))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            raise
