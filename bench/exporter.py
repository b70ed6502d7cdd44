"""Live Prometheus endpoint: benchbox's client-side metrics while a sweep runs.

One ``LiveExporter`` per run. It is a record sink (``on_record``) like ``RecordWriter``: every finished
request updates counters and histograms in a *private* ``CollectorRegistry`` (the process-wide
``prometheus_client.REGISTRY`` is never touched, so two exporters in one process never collide).
``start()`` serves that registry over HTTP on a daemon thread; ``close()`` optionally pushes it to a
Pushgateway, keeps serving for ``grace_s`` seconds so the last scrape sees the final values, then stops.

Metrics (all labelled ``scenario``; ``level`` is a short string such as "4" or "0.5"):

==================================  =========  ===================================================
benchbox_requests_total             counter    {target, level, phase, outcome="ok"|"error"}
benchbox_errors_total               counter    {target, level, phase, error_class}
benchbox_output_tokens_total        counter    {target, level, phase}; successes only, usage or chunks
benchbox_ttft_seconds               histogram  {target, level, phase}; first token - sent, successes
benchbox_itl_seconds                histogram  {target, level, phase}; every gap between content chunks
benchbox_e2e_seconds                histogram  {target, level, phase}; end - sent, successes
benchbox_parse_failures_total       counter    {target, level}
benchbox_in_flight                  gauge      {target}
benchbox_level                      gauge      {target}; the load level now running (absent between)
==================================  =========  ===================================================

Successes only in the histograms and the token counter, as in the run's statistics (``bench.stats``).
Cardinality is bounded: phases and error classes are closed sets (anything else becomes "other") and
levels are the scenario's own list.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally

import logging
import threading
from typing import Any, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server

from bench.records import ERROR_CLASSES, PHASES, RequestRecord

log = logging.getLogger(__name__)

PREFIX = "benchbox_"
LABELS = ("scenario", "target", "level", "phase")
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                5.0, 10.0, 20.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
               0.3, 0.5, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
               60.0, 90.0, 120.0, 180.0, 240.0, 300.0)
# Every series name the exporter can expose (the dashboard test checks PromQL against these).
METRIC_NAMES = frozenset({
    "benchbox_requests_total", "benchbox_errors_total", "benchbox_output_tokens_total",
    "benchbox_parse_failures_total", "benchbox_in_flight", "benchbox_level", "benchbox_server_metric",
    *(f"benchbox_{h}_seconds_{s}" for h in ("ttft", "itl", "e2e") for s in ("bucket", "sum", "count")),
})
_NS = 1e9  # divide, not multiply by 1e-9: correctly rounded (250_000_000 ns -> exactly 0.25 s)


def observe_many(hist: Any, values: list[float]) -> None:
    """``hist.observe(v)`` for each value, in one pass: a 256-token stream has 255 gaps, and
    observe() costs ~2 us each (a linear bucket scan under a lock). Same result: each value
    lands in the first bucket whose upper bound is >= it (bisect_left), the sum gets every value.
    Falls back to observe() if prometheus_client's internals ever change shape."""
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for v in values:
            hist.observe(v)
        return
    counts = Tally(bisect_left(bounds, v) for v in values)
    for index, n in counts.items():
        if index < len(buckets):  # the last bound is +Inf, so every value has a bucket
            buckets[index].inc(n)
    total.inc(sum(values))


def level_label(level: Optional[float]) -> str:
    """The ``level`` label: 4.0 -> "4", 0.5 -> "0.5", None -> ""."""
    if level is None:
        return ""
    value = float(level)
    return str(int(value)) if value.is_integer() else format(value, "g")


class _Series:
    """The labelled children of one (target, level, phase), cached so ``on_record`` does no label lookups."""

    __slots__ = ("ok", "error", "retried", "tokens", "ttft", "itl", "e2e")

    def __init__(self, ex: "LiveExporter", labels: tuple[str, str, str, str]):
        self.ok = ex.requests.labels(*labels, "ok")
        self.error = ex.requests.labels(*labels, "error")
        self.retried = ex.requests.labels(*labels, "retried")
        self.tokens = ex.output_tokens.labels(*labels)
        self.ttft = ex.ttft.labels(*labels)
        self.itl = ex.itl.labels(*labels)
        self.e2e = ex.e2e.labels(*labels)


class LiveExporter:
    """Live client-side metrics for one run, on a private registry. See the module docstring."""

    def __init__(self, scenario: str, port: int = 0, host: str = "127.0.0.1", grace_s: float = 15.0,
                 pushgateway: Optional[str] = None):
        self.scenario = scenario
        self.port = port
        self.host = host
        self.grace_s = max(0.0, float(grace_s))
        self.pushgateway = pushgateway or None
        self.push_error: Optional[str] = None   # why the last push failed (a push never raises)
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(PREFIX + "requests", "Finished requests by outcome (ok | error | retried: "
                                "a failed attempt the scenario's retry policy sent again, not an error).",
                                [*LABELS, "outcome"], registry=reg)
        self.errors = Counter(PREFIX + "errors", "Failed requests by error class.",
                              [*LABELS, "error_class"], registry=reg)
        self.output_tokens = Counter(PREFIX + "output_tokens",
                                     "Output tokens of successes (server usage, else content chunks).",
                                     LABELS, registry=reg)
        self.parse_failures = Counter(PREFIX + "parse_failures", "Responses whose output did not parse.",
                                      ("scenario", "target", "level"), registry=reg)
        self.ttft = Histogram(PREFIX + "ttft_seconds", "Time to first content token (successes).",
                              LABELS, buckets=TTFT_BUCKETS, registry=reg)
        self.itl = Histogram(PREFIX + "itl_seconds", "Gaps between consecutive content chunks (successes).",
                             LABELS, buckets=ITL_BUCKETS, registry=reg)
        self.e2e = Histogram(PREFIX + "e2e_seconds", "End-to-end request time (successes).",
                             LABELS, buckets=E2E_BUCKETS, registry=reg)
        self.in_flight = Gauge(PREFIX + "in_flight", "Requests in flight now.", ("scenario", "target"),
                               registry=reg)
        self.level = Gauge(PREFIX + "level", "The load level now running (concurrency or req/s).",
                           ("scenario", "target"), registry=reg)
        # The target server's own metrics as benchbox scraped them, under logical names (kv_cache_usage,
        # requests_running, requests_waiting, ...): one dashboard panel for vLLM, SGLang, TGI, llama.cpp.
        self.server_metric = Gauge(PREFIX + "server_metric", "Target server metric, logical name (scraped).",
                                   ("scenario", "target", "metric"), registry=reg)
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._stop = threading.Event()

    # -- serving -------------------------------------------------------------------------
    def start(self) -> int:
        """Serve ``/metrics`` (any path, in fact) on a daemon thread; returns the bound port."""
        if self._closed:
            raise RuntimeError("LiveExporter.start() after close()")
        if self._server is None:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
            self.port = int(self._server.server_port)
        return self.port

    @property
    def serving(self) -> bool:
        return self._server is not None

    def push(self) -> bool:
        """Push the registry to the configured Pushgateway (job "benchbox", grouped by scenario).

        Never raises: a failed push is logged and kept in ``push_error``. Returns whether it was pushed.
        """
        if not self.pushgateway:
            return False
        try:
            push_to_gateway(self.pushgateway, job="benchbox", registry=self.registry,
                            grouping_key={"scenario": self.scenario}, timeout=10)
        except Exception as e:  # noqa: BLE001 - the run's results matter more than its live view
            self.push_error = f"{type(e).__name__}: {e}"
            log.warning("push to Pushgateway %s failed: %s", self.pushgateway, self.push_error)
            return False
        self.push_error = None
        return True

    def close(self, wait_grace: bool = True) -> None:
        """Push (if configured), keep serving ``grace_s`` seconds (if ``wait_grace``), then stop.

        Blocks for the grace period: call it after the event loop is done (or in an executor), and with
        ``wait_grace=False`` on an interrupt. A second call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.push()
            if wait_grace and self._server is not None and self.grace_s > 0:
                self._stop.wait(self.grace_s)
        finally:
            self._shutdown()

    def cut_grace(self) -> None:
        """End a ``close()`` that is waiting out its grace period now (from another thread)."""
        self._stop.set()

    def _shutdown(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)

    def __enter__(self) -> "LiveExporter":
        self.start()
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.close(wait_grace=exc_type is None)

    # -- updates (called from the event loop; no I/O) ------------------------------------------
    def _get(self, target: str, level: str, phase: str) -> _Series:
        key = (target, level, phase)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, (self.scenario, target, level, phase))
        return series

    def on_record(self, record: RequestRecord) -> None:
        """Sink: count one finished request and, for a success, observe its latencies and tokens."""
        phase = record.phase if record.phase in PHASES else "other"
        lvl = level_label(record.level)
        series = self._get(record.target, lvl, phase)
        if record.retried:  # as in result.json: the request's final attempt decides its outcome
            series.retried.inc()
            return
        if record.error is not None:
            series.error.inc()
            error_class = record.error if record.error in ERROR_CLASSES else "other"
            self.errors.labels(self.scenario, record.target, lvl, phase, error_class).inc()
            return
        series.ok.inc()
        chunks = record.chunk_ns
        tokens = record.output_tokens if record.output_tokens is not None else len(chunks)
        if tokens > 0:
            series.tokens.inc(tokens)
        if record.sent_ns:
            if record.first_token_ns is not None:
                series.ttft.observe((record.first_token_ns - record.sent_ns) / _NS)
            if record.end_ns:
                series.e2e.observe((record.end_ns - record.sent_ns) / _NS)
        if len(chunks) > 1:
            observe_many(series.itl, [(b - a) / _NS for a, b in zip(chunks, chunks[1:])])

    def set_level(self, target: str, level: Optional[float]) -> None:
        """The level ``target`` runs now; ``None`` when it runs none (the series goes away).

        A new level's measure-phase series start at 0, so its rates and error ratio exist from its start.
        """
        if level is None:
            try:
                self.level.remove(self.scenario, target)
            except KeyError:
                pass
            return
        self.level.labels(self.scenario, target).set(float(level))
        lvl = level_label(level)
        self._get(target, lvl, "measure")
        self.parse_failures.labels(self.scenario, target, lvl)
        for error_class in ERROR_CLASSES:  # "0 errors" is data; an absent series reads as "no data"
            self.errors.labels(self.scenario, target, lvl, "measure", error_class)

    def set_in_flight(self, target: str, n: int) -> None:
        self.in_flight.labels(self.scenario, target).set(n)

    def set_server_metrics(self, target: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.server_metric.labels(self.scenario, target, name).set(value)

    def observe_parse_failure(self, target: str, level: float, n: int = 1) -> None:
        self.parse_failures.labels(self.scenario, target, level_label(level)).inc(n)
