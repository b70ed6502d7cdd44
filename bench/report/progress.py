"""Live progress while a sweep runs: a rich status line on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from typing import Any, Optional

from rich.console import Console
from rich.live import Live
from rich.text import Text

from bench.runner import LiveStats
from bench.scenario import Load


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


class Progress:
    def __init__(self, console: Console):
        self.console = console
        self.live: Optional[Live] = None
        self.stats: Optional[LiveStats] = None
        self.label = ""
        self.started = 0.0
        self.budget = ""

    def start_level(self, target: str, level: float, load: Load, stats: LiveStats) -> None:
        unit = "users" if load.pattern == "concurrency" else "req/s"
        self.label = f"{target} @ {level:g} {unit}"
        parts = []
        if load.requests:
            parts.append(f"{load.requests} req")
        if load.duration_s:
            parts.append(f"{load.duration_s:g} s")
        self.budget = " / ".join(parts)
        self.stats = stats
        self.started = time.monotonic()
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, get_renderable=self._render)
            self.live.start()
        else:
            self.console.print(f"{self.label}: running ({self.budget})")

    def _render(self) -> Text:
        s = self.stats
        if s is None:
            return Text("")
        p50, p95 = s.ttft_percentiles()
        elapsed = time.monotonic() - self.started
        return Text.from_markup(
            f"[bold]{self.label}[/] {elapsed:5.1f}s ({self.budget})  done {s.done}  in-flight {s.in_flight}  "
            f"TTFT p50 {_fmt(p50)} ms  p95 {_fmt(p95)} ms  errors [{'red' if s.errors else 'green'}]{s.errors}[/]"
        )

    def end_level(self, summary: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        req = summary["requests"]
        ttft = summary["metrics"]["ttft_ms"]
        tput = summary["throughput"]
        self.console.print(
            f"{self.label}: {req['ok']}/{req['measured']} ok, TTFT p50 {_fmt(ttft['p50'])} ms "
            f"p99 {_fmt(ttft['p99'])} ms, {_fmt(tput['output_tokens_per_s'])} tok/s"
            + (f", errors {req['errors']}" if req["errors"] else "")
            + (f", retried attempts {req['retried']}" if req.get("retried") else "")
        )

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
