"""Observers of a sweep: the live Prometheus endpoint and the server-side metrics scrapers.

One object with a few hooks keeps `sweep.py` free of observability details. Everything here is
optional: without a port and without a metrics URL it does nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

from bench.scenario import Observability

IN_FLIGHT_TICK_S = 0.5


class _Tee:
    """Server-metric samples go to server_metrics.jsonl and, live, to the Prometheus endpoint."""

    def __init__(self, writer: Any, exporter: Any):
        self.writer = writer
        self.exporter = exporter

    def write(self, sample: dict) -> None:
        self.writer.write(sample)
        if sample.get("values") and sample.get("target"):
            self.exporter.set_server_metrics(sample["target"], sample["values"])

    def close(self) -> None:
        self.writer.close()


class Observers:
    def __init__(self, scenario_name: str, cfg: Observability, run_dir: Path,
                 prometheus_port: Optional[int] = None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.port = prometheus_port if prometheus_port is not None else cfg.prometheus_port
        self.exporter: Any = None
        if self.port is not None:
            from bench.exporter import LiveExporter

            self.exporter = LiveExporter(scenario_name, port=self.port, host=cfg.prometheus_host,
                                         grace_s=cfg.grace_s, pushgateway=cfg.pushgateway)
        self._writer: Any = None
        self._scrapers: dict[str, tuple[Any, asyncio.Task]] = {}
        self._nvml: Optional[tuple[Any, asyncio.Task]] = None
        self._tick: Optional[asyncio.Task] = None

    def start(self) -> Optional[int]:
        """Start the live endpoint; returns its port (None when disabled)."""
        return self.exporter.start() if self.exporter is not None else None

    def sinks(self) -> list[Any]:
        return [self.exporter] if self.exporter is not None else []

    def _metrics_writer(self) -> Any:
        if self._writer is None:
            from bench.scrape import ServerMetricsWriter

            self._writer = ServerMetricsWriter(self.run_dir / "server_metrics.jsonl")
            if self.exporter is not None:
                self._writer = _Tee(self._writer, self.exporter)
        return self._writer

    def target_started(self, target: str, metrics_url: Optional[str]) -> None:
        """Begin polling the target's /metrics (and NVML once per run) on their own connections."""
        if not self.cfg.scrape_server_metrics:
            return
        if metrics_url:
            from bench.scrape import MetricsScraper

            slots_url = metrics_url.rsplit("/metrics", 1)[0] + "/slots" if metrics_url.endswith("/metrics") else None
            scraper = MetricsScraper(target, metrics_url, self._metrics_writer(), self.cfg.scrape_interval_s,
                                     slots_url=slots_url)
            self._scrapers[target] = (scraper, asyncio.ensure_future(scraper.run()))
        if self._nvml is None:
            from bench.nvml import NvmlSampler

            sampler = NvmlSampler(self._metrics_writer(), self.cfg.scrape_interval_s)
            self._nvml = (sampler, asyncio.ensure_future(sampler.run()))

    def level_started(self, target: str, level: float, live: Any) -> None:
        if target in self._scrapers:
            self._scrapers[target][0].set_level(level)
        if self._nvml is not None:
            self._nvml[0].set_level(level)
        if self.exporter is not None:
            self.exporter.set_level(target, level)

            async def tick() -> None:
                while True:
                    self.exporter.set_in_flight(target, live.in_flight)
                    await asyncio.sleep(IN_FLIGHT_TICK_S)
            self._tick = asyncio.ensure_future(tick())

    async def level_finished(self, target: str, level: float) -> dict[str, Any]:
        """Server metrics of the level (gauges mean/max/last, counter deltas), for the level summary."""
        if target in self._scrapers:
            self._scrapers[target][0].set_level(None)  # a closing sample at the level's end
        if self._tick is not None:
            self._tick.cancel()
            await asyncio.gather(self._tick, return_exceptions=True)
            self._tick = None
            self.exporter.set_in_flight(target, 0)
        out: dict[str, Any] = {}
        if target in self._scrapers:
            out["server"] = self._scrapers[target][0].level_summary(level)
        if self._nvml is not None:
            gpu = self._nvml[0].level_summary(level)
            if gpu:
                out["gpu"] = gpu
        return out

    async def target_finished(self, target: str) -> None:
        if self.exporter is not None:
            self.exporter.set_level(target, None)
        entry = self._scrapers.pop(target, None)
        if entry is not None:
            entry[0].stop()
            entry[1].cancel()
            await asyncio.gather(entry[1], return_exceptions=True)

    async def stop_sampling(self) -> None:
        for target in list(self._scrapers):
            await self.target_finished(target)
        if self._nvml is not None:
            self._nvml[1].cancel()
            await asyncio.gather(self._nvml[1], return_exceptions=True)
            self._nvml = None
        if self._writer is not None:
            self._writer.close()

    def parse_failures(self, scored: list[Any]) -> None:
        """After the quality pass: parse failures per target x level onto the live endpoint."""
        if self.exporter is None:
            return
        counts: dict[tuple[str, float], int] = {}
        for r in scored:
            key = (r.target, r.level)
            counts[key] = counts.get(key, 0) + (r.outcome == "parse_failure")
        for (target, level), n in counts.items():
            self.exporter.observe_parse_failure(target, level, n)

    def close(self, wait_grace: bool = True) -> None:
        """Blocking (grace period): call after the event loop has finished."""
        if self.exporter is not None:
            self.exporter.close(wait_grace=wait_grace)
