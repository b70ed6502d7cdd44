"""Which requests of a level are warm-up, which are measured, and when issuing stops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(slots=True)
class LevelWindow:
    """Decides the phase of each request as the pattern issues it.

    A request is *warm-up* while fewer than ``warmup_requests`` have been issued or its
    scheduled time is before ``start + warmup_s``; warm-up records are kept but excluded
    from statistics. The measurement window opens with the first measured request and
    issuing stops after ``requests`` measured requests and/or ``duration_s`` of
    measurement, whichever comes first. ``stop()`` ends issuing early (interrupts, errors).
    """

    start_ns: int
    warmup_s: float = 0.0
    warmup_requests: int = 0
    duration_s: Optional[float] = None
    requests: Optional[int] = None
    issued: int = 0
    measured_issued: int = 0
    measure_start_ns: Optional[int] = None
    stopped: bool = False

    def admit(self, scheduled_ns: int) -> Optional[str]:
        """Phase for the next request scheduled at ``scheduled_ns``, or None to stop issuing."""
        if self.stopped:
            return None
        warm = self.issued < self.warmup_requests or scheduled_ns < self.start_ns + int(self.warmup_s * 1e9)
        if warm:
            self.issued += 1
            return "warmup"
        if self.measure_start_ns is None:
            self.measure_start_ns = scheduled_ns
        if self.requests is not None and self.measured_issued >= self.requests:
            self.stopped = True
            return None
        if self.duration_s is not None and scheduled_ns >= self.measure_start_ns + int(self.duration_s * 1e9):
            self.stopped = True
            return None
        self.issued += 1
        self.measured_issued += 1
        return "measure"

    def deadline_ns(self) -> Optional[int]:
        """When issuing must stop at the latest (None if only a request count bounds it)."""
        if self.duration_s is None:
            return None
        opens = self.measure_start_ns if self.measure_start_ns is not None else self.start_ns + int(self.warmup_s * 1e9)
        return opens + int(self.duration_s * 1e9)

    def stop(self) -> None:
        self.stopped = True
