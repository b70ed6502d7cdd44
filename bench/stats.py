"""Statistics of one target x level, computed from records alone (never from live state).

Definitions (also in README):
- TTFT = first content-bearing chunk - sent
- ITL  = every gap between consecutive content-bearing chunks
- TPOT = (end - first token) / (output tokens - 1), output tokens from the server's usage
- E2E  = end - sent
- rate mode adds TTFT and E2E from the *scheduled* time, and client lag = sent - scheduled
Only measured-phase records count; warm-up and cold records are reported apart. Attempts that a
retry replaced (``RequestRecord.retried``) are counted apart by error class (``requests.retried``):
a request's latency and outcome are its final attempt's.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from operator import sub
from typing import Any, Iterable, Optional

from bench.histograms import LatencyHistogram
from bench.records import ERROR_CLASSES, RequestRecord


ITL_BATCH = 8_192  # one flush costs ~1 ms of loop time: short enough not to show in timings


@dataclass(slots=True)
class LevelAccumulator:
    """Builds histograms and counters for one target x level from finished records."""

    target: str
    level: float
    pattern: str
    ttft: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    ttft_reasoning: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    itl: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    tpot: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    e2e: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    ttft_sched: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    e2e_sched: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    client_lag: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    counts: dict[str, int] = field(default_factory=lambda: {"measure": 0, "warmup": 0, "cold": 0})
    errors: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)  # replaced attempts by error class
    ok: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    usage_missing: int = 0
    window_start_ns: Optional[int] = None
    window_end_ns: Optional[int] = None
    first_sent_ns: Optional[int] = None
    last_sent_ns: Optional[int] = None
    finish_reasons: dict[str, int] = field(default_factory=dict)
    # Inter-token gaps waiting to be recorded in one batch: one HDR call per bucket instead of
    # per token keeps a 2,000 req/s x 256-token sweep's accumulator off the event loop's back.
    itl_pending: array = field(default_factory=lambda: array("q"))

    def add(self, r: RequestRecord) -> None:
        if r.retried:  # a replaced attempt: not a request of its own, and not its latency
            if r.phase == "measure":
                key = r.error or "ok"
                self.retried[key] = self.retried.get(key, 0) + 1
                start = r.scheduled_ns if self.pattern == "rate" else r.sent_ns
                if self.window_start_ns is None or start < self.window_start_ns:
                    self.window_start_ns = start
            return
        self.counts[r.phase] = self.counts.get(r.phase, 0) + 1
        if r.phase != "measure":
            return
        start = r.scheduled_ns if self.pattern == "rate" else r.sent_ns
        if self.window_start_ns is None or start < self.window_start_ns:
            self.window_start_ns = start
        if r.end_ns and (self.window_end_ns is None or r.end_ns > self.window_end_ns):
            self.window_end_ns = r.end_ns
        if r.sent_ns:
            if self.first_sent_ns is None or r.sent_ns < self.first_sent_ns:
                self.first_sent_ns = r.sent_ns
            if self.last_sent_ns is None or r.sent_ns > self.last_sent_ns:
                self.last_sent_ns = r.sent_ns
        if r.error is not None:
            self.errors[r.error] = self.errors.get(r.error, 0) + 1
            return
        self.ok += 1
        if r.finish_reason:
            self.finish_reasons[r.finish_reason] = self.finish_reasons.get(r.finish_reason, 0) + 1
        if r.output_tokens is None:
            self.usage_missing += 1
            out_tokens = len(r.chunk_ns)  # fallback only; flagged by usage_missing
        else:
            out_tokens = r.output_tokens
        self.output_tokens += out_tokens
        self.prompt_tokens += r.prompt_tokens or 0
        self.e2e.record_ns(r.end_ns - r.sent_ns)
        if r.first_reasoning_ns is not None:
            self.ttft_reasoning.record_ns(r.first_reasoning_ns - r.sent_ns)
        if r.first_token_ns is not None:
            self.ttft.record_ns(r.first_token_ns - r.sent_ns)
            if out_tokens > 1:
                self.tpot.record_ns((r.end_ns - r.first_token_ns) // (out_tokens - 1))
        chunks = r.chunk_ns
        if len(chunks) > 1:
            self.itl_pending.extend(map(sub, chunks[1:], chunks[:-1]))
            if len(self.itl_pending) >= ITL_BATCH:
                self.flush()
        if self.pattern == "rate":
            if r.attempt == 1:  # a retry's send waited for earlier attempts: not the generator's lag
                self.client_lag.record_ns(max(0, r.sent_ns - r.scheduled_ns))
            self.e2e_sched.record_ns(r.end_ns - r.scheduled_ns)
            if r.first_token_ns is not None:
                self.ttft_sched.record_ns(r.first_token_ns - r.scheduled_ns)

    def flush(self) -> None:
        """Record the pending inter-token gaps (summary() does this itself)."""
        if self.itl_pending:
            self.itl.record_many_ns(self.itl_pending)
            self.itl_pending = array("q")

    def summary(self) -> dict[str, Any]:
        self.flush()
        measured = self.counts.get("measure", 0)
        failed = sum(self.errors.values())
        # Cancelled requests say nothing about the server: excluded from the error rate.
        judged = measured - self.errors.get("cancelled", 0)
        # Achieved arrival rate: n sends span n-1 intervals.
        achieved = None
        if measured > 1 and self.first_sent_ns is not None and self.last_sent_ns > self.first_sent_ns:
            achieved = (measured - 1) / ((self.last_sent_ns - self.first_sent_ns) / 1e9)
        window_s = None
        if self.window_start_ns is not None and self.window_end_ns is not None:
            window_s = max(1e-9, (self.window_end_ns - self.window_start_ns) / 1e9)
        metrics = {
            "ttft_ms": self.ttft.summary_ms(),
            "itl_ms": self.itl.summary_ms(),
            "tpot_ms": self.tpot.summary_ms(),
            "e2e_ms": self.e2e.summary_ms(),
        }
        if self.ttft_reasoning.count:  # reasoning models: first reasoning chunk - sent (TTFT is the answer's)
            metrics["ttft_reasoning_ms"] = self.ttft_reasoning.summary_ms()
        if self.pattern == "rate":
            metrics["ttft_from_scheduled_ms"] = self.ttft_sched.summary_ms()
            metrics["e2e_from_scheduled_ms"] = self.e2e_sched.summary_ms()
            metrics["client_lag_ms"] = self.client_lag.summary_ms()
        return {
            "target": self.target,
            "level": self.level,
            "pattern": self.pattern,
            "requests": {
                "measured": measured,
                "ok": self.ok,
                "failed": failed,
                "warmup": self.counts.get("warmup", 0),
                "cold": self.counts.get("cold", 0),
                "errors": {k: self.errors[k] for k in ERROR_CLASSES if k in self.errors},
                "retried": dict(sorted(self.retried.items())),
            },
            "error_rate": (failed - self.errors.get("cancelled", 0)) / judged if judged > 0 else None,
            "window_s": window_s,
            "throughput": {
                "requests_per_s": self.ok / window_s if window_s else None,
                "output_tokens_per_s": self.output_tokens / window_s if window_s else None,
                "achieved_rate_per_s": achieved,
            },
            "tokens": {
                "output_total": self.output_tokens,
                "prompt_total": self.prompt_tokens,
                "usage_missing": self.usage_missing,
            },
            "finish_reasons": dict(sorted(self.finish_reasons.items())),
            "metrics": metrics,
        }


def cold_summary(records: Iterable[RequestRecord]) -> dict[str, Any]:
    """The first requests after a managed server became ready, one entry each."""
    out = []
    for r in records:
        if r.phase != "cold":
            continue
        out.append({
            "item_id": r.item_id,
            "error": r.error,
            "ttft_ms": (r.first_token_ns - r.sent_ns) / 1e6 if r.first_token_ns else None,
            "e2e_ms": (r.end_ns - r.sent_ns) / 1e6 if r.end_ns else None,
            "output_tokens": r.output_tokens,
        })
    return {"requests": out}


def summarize_records(records: Iterable[RequestRecord], patterns: dict[str, str]) -> list[dict[str, Any]]:
    """Group records by (target, level) in first-seen order and summarise each group.

    ``patterns`` maps target name to its pattern ("concurrency" | "rate").
    """
    groups: dict[tuple[str, float], LevelAccumulator] = {}
    for r in records:
        if r.phase == "cold":
            continue
        key = (r.target, r.level)
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = LevelAccumulator(r.target, r.level, patterns.get(r.target, "concurrency"))
        acc.add(r)
    return [acc.summary() for acc in groups.values()]
