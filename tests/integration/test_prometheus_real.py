"""A real Prometheus server (Debian's ``prometheus`` package) scrapes a LiveExporter on loopback.

Records are fed at a steady pace for ~5 s while Prometheus scrapes every second; then the exporter
closes with a grace period, and the queries are evaluated at a moment inside that grace period: the
benchbox series carry the final values exactly, and every PromQL expression of the shipped Grafana
dashboard runs (with Grafana's variables filled in). Expressions over benchbox series must return
data; the vLLM / llama.cpp ones must only parse (nothing serves them here).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from bench.exporter import LiveExporter
from bench.records import RequestRecord

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "benchbox.json"
SCENARIO = "itest"
REPO_ROOT = Path(__file__).resolve().parents[2]
MS = 1_000_000


def prometheus_binary() -> Optional[str]:
    for candidate in (os.environ.get("PROMETHEUS_BIN"), shutil.which("prometheus"), "/usr/bin/prometheus"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


class PromServer:
    def __init__(self, binary: str, folder: Path, scrape_port: int):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: benchbox\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{scrape_port}']\n"
        )
        self.log_path = folder / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=folder,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if http_get(self.base + "/-/ready", timeout=2)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready (exit {self.proc.poll()}): {self.log_tail()}")

    def wait_scraping(self, timeout: float = 60) -> None:
        """Until the first successful scrape (Prometheus applies new targets after ~5 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = http_get(self.base + "/api/v1/targets")
            active = json.loads(body)["data"]["activeTargets"] if status == 200 else []
            if any(t["health"] == "up" for t in active):
                return
            time.sleep(0.2)
        raise RuntimeError(f"prometheus never scraped the exporter: {self.log_tail()}")

    def query(self, expr: str, at: float) -> dict[str, Any]:
        qs = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        status, body = http_get(f"{self.base}/api/v1/query?{qs}")
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (expr, status, answer)
        return answer["data"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> dict[str, Any]:
        qs = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step})
        status, body = http_get(f"{self.base}/api/v1/query_range?{qs}")
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (expr, status, answer)
        return answer["data"]

    def scalar(self, expr: str, at: float) -> float:
        data = self.query(expr, at)
        assert data["resultType"] == "vector" and len(data["result"]) == 1, (expr, data)
        return float(data["result"][0]["value"][1])

    def log_tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture
def exporter() -> Iterator[LiveExporter]:
    ex = LiveExporter(SCENARIO, port=0, grace_s=4.0)
    yield ex
    ex.close(wait_grace=False)


@pytest.fixture
def prometheus(tmp_path: Path, exporter: LiveExporter) -> Iterator[PromServer]:
    binary = prometheus_binary()
    if binary is None:
        pytest.skip("no prometheus binary (PATH, /usr/bin/prometheus or $PROMETHEUS_BIN): "
                    "apt-get install prometheus (.ci/run installs it)")
    server = PromServer(binary, tmp_path, exporter.start())
    try:
        server.wait_ready()
        server.wait_scraping()
        yield server
    finally:
        server.stop()


def make_record(target: str, level: float, seq: int, now_ns: int, error: Optional[str]) -> RequestRecord:
    """A request that just ended: TTFT 40-100 ms, 8 chunks 10-25 ms apart (or an error)."""
    ttft = (40 + (seq * 7) % 60) * MS
    gaps = [(10 + (seq + i) % 16) * MS for i in range(7)]
    e2e = ttft + sum(gaps) + 5 * MS
    sent = now_ns - e2e
    r = RequestRecord(target=target, level=level, phase="measure", seq=seq, item_id=f"i{seq}", repeat=0,
                      request_id=f"{target}-{seq}", scheduled_ns=sent, sent_ns=sent, end_ns=now_ns,
                      error=error)
    if error is None:
        r.first_token_ns = sent + ttft
        r.chunk_ns = [r.first_token_ns]
        for g in gaps:
            r.chunk_ns.append(r.chunk_ns[-1] + g)
        r.output_tokens = 8
    return r


def grafana_expand(expr: str) -> str:
    """Fill in the dashboard's variables as Grafana would with "All" targets and the default phase."""
    return (expr.replace("$__rate_interval", "1m").replace("$scenario", SCENARIO)
            .replace("$target", ".*").replace("$phase", "measure"))


def test_real_prometheus_scrapes_exporter_and_dashboard_queries(prometheus: PromServer,
                                                                exporter: LiveExporter) -> None:
    targets = ("base", "cand")
    expected = {t: {"ok": 0, "error": 0, "tokens": 0, "itl": 0, "parse": 0} for t in targets}
    seq = 0
    t_end = time.monotonic() + 5.0
    tick = 0
    while time.monotonic() < t_end:                 # ~5 s at a steady pace: 2 records per target per tick
        level = 1 if tick < 12 else 2               # the level changes half-way
        for t in targets:
            exporter.set_level(t, level)
            exporter.set_in_flight(t, level + tick % 2)
            exporter.set_server_metrics(t, {"kv_cache_usage": 0.1 * level, "requests_waiting": tick % 3,
                                            "requests_running": level})
            for _ in range(2):
                seq += 1
                error = "http_5xx" if (t == "cand" and seq % 5 == 0) else None
                exporter.on_record(make_record(t, level, seq, time.perf_counter_ns(), error))
                if error is None:
                    expected[t]["ok"] += 1
                    expected[t]["tokens"] += 8
                    expected[t]["itl"] += 7
                else:
                    expected[t]["error"] += 1
            if seq % 6 == 0:
                exporter.observe_parse_failure(t, level)
                expected[t]["parse"] += 1
        tick += 1
        time.sleep(0.2)
    for t in targets:
        exporter.set_in_flight(t, 0)
    port = exporter.port

    # Close right after the last records: without the grace period they would never be scraped.
    t_close = time.time()
    exporter.close()
    assert time.time() - t_close >= 4.0
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    at = t_close + 3.0                               # inside the grace period, after >= 2 scrapes
    assert prometheus.scalar('up{job="benchbox"}', at) == 1.0, prometheus.log_tail()

    total = sum(e["ok"] + e["error"] for e in expected.values())
    assert prometheus.scalar(f'sum(benchbox_requests_total{{scenario="{SCENARIO}"}})', at) == total
    for t, e in expected.items():
        sel = f'scenario="{SCENARIO}", target="{t}"'
        assert prometheus.scalar(f'sum(benchbox_requests_total{{{sel}, outcome="ok"}})', at) == e["ok"]
        assert prometheus.scalar(f'sum(benchbox_requests_total{{{sel}, outcome="error"}})', at) == e["error"]
        assert prometheus.scalar(f"sum(benchbox_output_tokens_total{{{sel}}})", at) == e["tokens"]
        assert prometheus.scalar(f"sum(benchbox_ttft_seconds_count{{{sel}}})", at) == e["ok"]
        assert prometheus.scalar(f"sum(benchbox_e2e_seconds_count{{{sel}}})", at) == e["ok"]
        assert prometheus.scalar(f"sum(benchbox_itl_seconds_count{{{sel}}})", at) == e["itl"]
        assert prometheus.scalar(f"sum(benchbox_parse_failures_total{{{sel}}})", at) == e["parse"]
        assert prometheus.scalar(f"benchbox_level{{{sel}}}", at) == 2
        assert prometheus.scalar(f"benchbox_in_flight{{{sel}}}", at) == 0
        mean_ttft = prometheus.scalar(
            f"sum(benchbox_ttft_seconds_sum{{{sel}}}) / sum(benchbox_ttft_seconds_count{{{sel}}})", at)
        assert 0.04 <= mean_ttft <= 0.1
    errors = f'sum(benchbox_errors_total{{scenario="{SCENARIO}", error_class="http_5xx"}})'
    assert prometheus.scalar(errors, at) == expected["cand"]["error"]
    levels = prometheus.query(f'count by (level) (benchbox_requests_total{{scenario="{SCENARIO}"}})', at)
    assert {r["metric"]["level"] for r in levels["result"]} == {"1", "2"}

    # Every expression of the shipped dashboard.
    dash = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    for title, expr in exprs:
        data = prometheus.query(grafana_expand(expr), at)
        if "benchbox_" not in expr:
            continue                                 # server-side series: parsing is what is checked
        values = [float(r["value"][1]) for r in data["result"]]
        assert values, (title, expr)
        assert any(not math.isnan(v) for v in values), (title, expr, data)
        if "histogram_quantile" in expr:
            assert {r["metric"]["target"] for r in data["result"]} == set(targets), (title, expr)
            assert all(0 < v <= 1.0 for v in values), (title, expr, values)


# -- a real sweep against a real llama-server, watched by a real Prometheus ------------------------
def _dashboard_exprs() -> list[str]:
    dash = json.loads((REPO_ROOT / "docker" / "grafana" / "dashboards" / "benchbox.json").read_text())

    def walk(panels: list[dict]) -> Iterator[dict]:
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))
    return [t["expr"] for p in walk(dash["panels"]) for t in p.get("targets", []) if t.get("expr")]


@pytest.mark.llamacpp
def test_sweep_against_llama_server_is_visible_in_prometheus(tmp_path: Path) -> None:
    from bench.provision import installed_llamacpp, resolve_model

    binary = prometheus_binary()
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (.ci/run installs it)")
    if installed_llamacpp() is None:
        pytest.skip("llama.cpp is not built (benchbox server install)")
    resolve_model("smollm2-135m-q4_1", progress=None)
    port = free_port()
    prom = PromServer(binary, tmp_path, port)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        "name: prom-it\n"
        f"dataset: {{path: {REPO_ROOT / 'quality' / 'voice.jsonl'}, slices: [short_context], limit: 12}}\n"
        "targets:\n"
        "  - {name: q4_1, role: baseline, server: {definition: llamacpp, model: smollm2-135m-q4_1, cold_requests: 0}}\n"
        "sampling: {max_tokens: 8, temperature: 0}\n"
        "load: {pattern: concurrency, levels: [1, 2], requests: 12}\n"
        "observability: {grace_s: 6, scrape_interval_s: 0.5}\n"
        "quality: {scorers: [{name: label, labels_from_meta: labels}], primary: label_correct}\n"
    )
    try:
        prom.wait_ready()
        started = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(tmp_path / "runs"),
             "--quiet", "--prometheus-port", str(port)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "live metrics:" in proc.stdout
        at = time.time() - 2  # inside the grace period: the final values were scraped
        run_dir = next((tmp_path / "runs").iterdir())
        result = json.loads((run_dir / "result.json").read_text())
        measured = sum(lv["requests"]["ok"] for lv in result["levels"])
        total = prom.scalar('sum(benchbox_requests_total{scenario="prom-it", phase="measure", outcome="ok"})', at)
        assert total == measured == 24
        ttft_count = prom.scalar('sum(benchbox_ttft_seconds_count{scenario="prom-it", phase="measure"})', at)
        assert ttft_count == measured
        p95 = prom.scalar('histogram_quantile(0.95, sum by (le) (benchbox_ttft_seconds_bucket{scenario="prom-it"}))', at)
        assert 0 < p95 < 60
        # Server metrics scraped by benchbox from llama-server, re-exported under logical names.
        running = prom.query('max_over_time(benchbox_server_metric{scenario="prom-it", metric="requests_running"}[5m])', at)
        assert running["result"] and float(running["result"][0]["value"][1]) >= 1
        assert (run_dir / "server_metrics.jsonl").stat().st_size > 0
        assert "server" in result["levels"][0]["observed"]
        # Every dashboard expression is valid PromQL; every benchbox one shows data over the run,
        # as the panel would when a person looks at this run's time range.
        for expr in _dashboard_exprs():
            data = prom.query_range(grafana_expand(expr).replace(SCENARIO, "prom-it").replace("1m", "5m"),
                                    started, time.time())
            if "benchbox_" in expr:
                assert data["result"], expr
    finally:
        prom.stop()
