"""The pattern seam: decide *when* each request starts; the runner does the sending."""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from bench.patterns.clock import Clock
from bench.patterns.window import LevelWindow

# send(seq, scheduled_ns, phase) performs one request and returns when it is finished.
Send = Callable[[int, int, str], Awaitable[None]]


class Pattern(Protocol):
    async def drive(self, send: Send, clock: Clock, window: LevelWindow) -> None:
        """Issue requests until the window says stop; return when all have finished."""
