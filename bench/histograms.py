"""HDR latency histograms: mergeable, encodable, and honest about out-of-range values.

Values are recorded in microseconds (1 us .. 1 hour, 3 significant digits, i.e. a
relative error of at most 0.1 %). A value outside that range is *counted* in
``out_of_range`` instead of being dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def _pkey(p: float) -> str:
    return "p" + (f"{p:g}".replace(".", "_"))


@dataclass(slots=True)
class LatencyHistogram:
    hist: HdrHistogram
    out_of_range: int = 0

    @classmethod
    def empty(cls) -> "LatencyHistogram":
        return cls(HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))

    @classmethod
    def from_ns(cls, values_ns: Iterable[int]) -> "LatencyHistogram":
        h = cls.empty()
        for v in values_ns:
            h.record_ns(v)
        return h

    def record_ns(self, value_ns: int) -> None:
        # Round to the nearest microsecond; sub-microsecond values are clamped to 1 us
        # (a real latency is never below that on a network path) rather than lost.
        us = max(LOWEST_US, (value_ns + 500) // 1000)
        if value_ns < 0 or not self.hist.record_value(us):
            self.out_of_range += 1

    @property
    def count(self) -> int:
        return self.hist.get_total_count()

    def merge(self, other: "LatencyHistogram") -> None:
        if other.count:  # hdrh's add() would take an empty histogram's min of 0
            self.hist.add(other.hist)
        self.out_of_range += other.out_of_range

    def encode(self) -> str:
        return self.hist.encode().decode("ascii") if self.count else ""

    @classmethod
    def decode(cls, encoded: str, out_of_range: int = 0) -> "LatencyHistogram":
        if not encoded:
            return cls(cls.empty().hist, out_of_range)
        return cls(HdrHistogram.decode(encoded.encode("ascii")), out_of_range)

    def summary_ms(self) -> dict[str, Optional[float]]:
        """Percentiles, mean and max in milliseconds (None when empty), plus counts and the encoding."""
        out: dict = {"count": self.count, "out_of_range": self.out_of_range}
        if self.count == 0:
            for p in PERCENTILES:
                out[_pkey(p)] = None
            out.update(mean=None, max=None, min=None)
        else:
            for p in PERCENTILES:
                out[_pkey(p)] = self.hist.get_value_at_percentile(p) / 1000.0
            out.update(
                mean=round(self.hist.get_mean_value() / 1000.0, 4),
                max=self.hist.get_max_value() / 1000.0,
                min=self.hist.get_min_value() / 1000.0,
            )
        out["hdr"] = self.encode()
        return out
