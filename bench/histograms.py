"""HDR latency histograms: mergeable, encodable, and honest about out-of-range values.

Values are recorded in microseconds (1 us .. 1 hour, 3 significant digits, i.e. a
relative error of at most 0.1 %). A value outside that range is *counted* in
``out_of_range`` instead of being dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np  # at import, not at the first batch: importing it mid-level stalled the loop ~100 ms
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


# hdrh's layout for SIGNIFICANT_DIGITS=3 and LOWEST_US=1: 2048 sub-buckets, so values below 2^11
# are exact and each further bucket doubles the step. Checked against hdrh in the tests.
_SUB_BUCKET_BITS = 11


def _bit_length(values):  # noqa: ANN001, ANN202 - numpy int64 array in, int64 array out
    # frexp gives the exponent exactly (no log2 rounding at 2^k - 1) for |v| < 2^53.
    return np.frexp(values.astype(np.float64))[1].astype(np.int64)


_CAPACITY_US: list[int] = []


def _capacity_us(hist: HdrHistogram) -> int:
    """The largest value hdrh really accepts: its last bucket ends above HIGHEST_US."""
    if not _CAPACITY_US:
        lo, hi = HIGHEST_US, HIGHEST_US * 4
        while lo < hi:  # largest v with a valid counts index
            mid = (lo + hi + 1) // 2
            if hist._counts_index_for(mid) < hist.counts_len:  # noqa: SLF001
                lo = mid
            else:
                hi = mid - 1
        _CAPACITY_US.append(lo)
    return _CAPACITY_US[0]


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

    def record_many_ns(self, values_ns: Sequence[int]) -> None:
        """``record_ns`` for many values at once, with the same result (tested): values are
        quantized in numpy to the lowest value of their HDR bucket, so a batch of ITL gaps costs
        one Python call per distinct bucket instead of one per value (hdrh's record_value is
        pure Python, ~1.4 us; a 256-token stream has 255 gaps)."""
        if len(values_ns) == 0:
            return
        ns = np.asarray(values_ns, dtype=np.int64)
        negative = int(np.count_nonzero(ns < 0))
        us = np.maximum((ns[ns >= 0] + 500) // 1000, LOWEST_US)
        too_big = us > _capacity_us(self.hist)
        self.out_of_range += negative + int(np.count_nonzero(too_big))
        us = us[~too_big]
        # Bucket b holds values whose bit length exceeds the sub-bucket magnitude by b; its
        # values share everything above their low b bits.
        shift = np.maximum(_bit_length(us) - _SUB_BUCKET_BITS, 0)
        lowest = (us >> shift) << shift
        values, counts = np.unique(lowest, return_counts=True)
        record = self.hist.record_value
        for v, c in zip(values.tolist(), counts.tolist()):
            record(v, c)

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
