"""Load patterns, by name. One file per pattern."""

from __future__ import annotations

from bench.patterns.base import Pattern, Send
from bench.patterns.clock import FakeClock, MonotonicClock
from bench.patterns.concurrency import ConcurrencyPattern
from bench.patterns.rate import RatePattern, arrival_offsets_ns
from bench.patterns.window import LevelWindow
from bench.scenario import Load


def pattern_for(load: Load, level: float, level_index: int) -> Pattern:
    if load.pattern == "concurrency":
        return ConcurrencyPattern(int(level))
    # A distinct, reproducible seed per level: levels do not share arrival sequences.
    return RatePattern(level, load.arrival, seed=load.seed * 1000 + level_index, max_in_flight=load.max_in_flight)


__all__ = [
    "Pattern", "Send", "FakeClock", "MonotonicClock", "ConcurrencyPattern", "RatePattern",
    "arrival_offsets_ns", "LevelWindow", "pattern_for",
]
