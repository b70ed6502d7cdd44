"""Closed loop: N users, each sends its next request as soon as the previous one ends."""

from __future__ import annotations

import asyncio

from bench.patterns.base import Send
from bench.patterns.clock import Clock
from bench.patterns.window import LevelWindow


class ConcurrencyPattern:
    def __init__(self, users: int):
        if users < 1:
            raise ValueError("concurrency must be at least 1")
        self.users = users

    async def drive(self, send: Send, clock: Clock, window: LevelWindow) -> None:
        counter = iter(range(1 << 62))

        async def user() -> None:
            while True:
                scheduled = clock.now_ns()  # closed loop: intended start == when the user is free
                phase = window.admit(scheduled)
                if phase is None:
                    return
                await send(next(counter), scheduled, phase)

        await asyncio.gather(*(user() for _ in range(self.users)))
