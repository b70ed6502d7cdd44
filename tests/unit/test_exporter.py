"""bench/exporter.py: the live Prometheus endpoint, read back through prometheus_client's own parser.

Also checks the shipped docker/ files that depend on it: every PromQL expression of the Grafana
dashboard (balanced, known metric names and labels), the provisioning and the compose mounts.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.exporter import E2E_BUCKETS, ITL_BUCKETS, METRIC_NAMES, TTFT_BUCKETS, LiveExporter, level_label
from bench.records import RequestRecord

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "benchbox.json"
B = 10**12          # a perf_counter_ns()-like origin
MS = 1_000_000


def rec(target: str = "a", level: float = 4, phase: str = "measure", ttft_ms: Optional[int] = 250,
        gaps_ms: tuple[int, ...] = (), e2e_ms: int = 500, error: Optional[str] = None,
        output_tokens: Optional[int] = None, seq: int = 0) -> RequestRecord:
    r = RequestRecord(target=target, level=level, phase=phase, seq=seq, item_id=f"i{seq}", repeat=0,
                      request_id=f"{target}-{seq}", scheduled_ns=B, sent_ns=B, end_ns=B + e2e_ms * MS,
                      error=error, output_tokens=output_tokens)
    if ttft_ms is not None:
        r.first_token_ns = B + ttft_ms * MS
        t = r.first_token_ns
        r.chunk_ns = [t]
        for g in gaps_ms:
            t += g * MS
            r.chunk_ns.append(t)
    return r


def scrape(ex: LiveExporter) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} from the private registry's text exposition, parsed back."""
    text = generate_latest(ex.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


def get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def refused(port: int) -> bool:
    try:
        get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except (urllib.error.URLError, ConnectionError):
        return True
    return False


# --- the sink -------------------------------------------------------------------------------
def test_counters_and_histograms_exact() -> None:
    ex = LiveExporter("voice")
    ex.on_record(rec(ttft_ms=250, gaps_ms=(125, 125), e2e_ms=500, output_tokens=5, seq=1))
    ex.on_record(rec(ttft_ms=500, gaps_ms=(62,), e2e_ms=1000, output_tokens=None, seq=2))  # no usage: chunks
    ex.on_record(rec(ttft_ms=100, gaps_ms=(10,), error="timeout", output_tokens=7, seq=3))
    ex.on_record(rec(ttft_ms=None, error="weird-new-class", seq=4))
    ex.on_record(rec(phase="warmup", ttft_ms=125, e2e_ms=125, output_tokens=0, seq=5))
    ex.on_record(rec(target="b", level=0.5, ttft_ms=5, gaps_ms=(1, 2, 3), e2e_ms=20, output_tokens=4, seq=6))
    ex.on_record(rec(phase="bogus", ttft_ms=10, e2e_ms=10, output_tokens=1, seq=7))
    m = scrape(ex)
    a4 = dict(scenario="voice", target="a", level="4", phase="measure")
    b = dict(scenario="voice", target="b", level="0.5", phase="measure")
    warm = {**a4, "phase": "warmup"}

    assert m[key("benchbox_requests_total", **a4, outcome="ok")] == 2
    assert m[key("benchbox_requests_total", **a4, outcome="error")] == 2
    assert m[key("benchbox_requests_total", **warm, outcome="ok")] == 1
    assert m[key("benchbox_requests_total", **b, outcome="ok")] == 1
    assert m[key("benchbox_requests_total", **{**a4, "phase": "other"}, outcome="ok")] == 1
    assert m[key("benchbox_errors_total", **a4, error_class="timeout")] == 1
    assert m[key("benchbox_errors_total", **a4, error_class="other")] == 1
    assert sum(v for (n, _), v in m.items() if n == "benchbox_errors_total") == 2
    assert sum(v for (n, _), v in m.items() if n == "benchbox_requests_total") == 7

    # tokens: usage when present, else content chunks; failures never count
    assert m[key("benchbox_output_tokens_total", **a4)] == 5 + 2
    assert m[key("benchbox_output_tokens_total", **warm)] == 0
    assert m[key("benchbox_output_tokens_total", **b)] == 4

    # TTFT/E2E of successes only: 0.25 and 0.5 s; E2E 0.5 and 1.0 s
    assert m[key("benchbox_ttft_seconds_count", **a4)] == 2
    assert m[key("benchbox_ttft_seconds_sum", **a4)] == 0.75
    assert m[key("benchbox_ttft_seconds_bucket", **a4, le="0.2")] == 0
    assert m[key("benchbox_ttft_seconds_bucket", **a4, le="0.3")] == 1
    assert m[key("benchbox_ttft_seconds_bucket", **a4, le="0.5")] == 2     # le is inclusive
    assert m[key("benchbox_ttft_seconds_bucket", **a4, le="+Inf")] == 2
    assert m[key("benchbox_e2e_seconds_count", **a4)] == 2
    assert m[key("benchbox_e2e_seconds_sum", **a4)] == 1.5
    assert m[key("benchbox_e2e_seconds_bucket", **a4, le="0.5")] == 1
    assert m[key("benchbox_e2e_seconds_bucket", **a4, le="1.0")] == 2
    # ITL: every gap between content chunks of successes: 0.125, 0.125, 0.062
    assert m[key("benchbox_itl_seconds_count", **a4)] == 3
    assert m[key("benchbox_itl_seconds_sum", **a4)] == 0.125 + 0.125 + 0.062
    assert m[key("benchbox_itl_seconds_bucket", **a4, le="0.05")] == 0
    assert m[key("benchbox_itl_seconds_bucket", **a4, le="0.075")] == 1
    assert m[key("benchbox_itl_seconds_bucket", **a4, le="0.15")] == 3
    assert m[key("benchbox_itl_seconds_count", **b)] == 3
    assert m[key("benchbox_itl_seconds_sum", **b)] == 0.001 + 0.002 + 0.003
    assert m[key("benchbox_itl_seconds_bucket", **b, le="0.001")] == 1
    assert m[key("benchbox_itl_seconds_count", **warm)] == 0              # one chunk: no gap
    assert m[key("benchbox_ttft_seconds_sum", **warm)] == 0.125


def test_buckets_cover_the_issue_ranges() -> None:
    assert (TTFT_BUCKETS[0], TTFT_BUCKETS[-1]) == (0.005, 60.0)
    assert (ITL_BUCKETS[0], ITL_BUCKETS[-1]) == (0.001, 5.0)
    assert (E2E_BUCKETS[0], E2E_BUCKETS[-1]) == (0.01, 300.0)
    for buckets in (TTFT_BUCKETS, ITL_BUCKETS, E2E_BUCKETS):
        assert list(buckets) == sorted(set(buckets))


def test_level_labels() -> None:
    assert level_label(4) == "4"
    assert level_label(4.0) == "4"
    assert level_label(0.5) == "0.5"
    assert level_label(0) == "0"
    assert level_label(12.25) == "12.25"
    assert level_label(None) == ""


def test_gauges_and_parse_failures() -> None:
    ex = LiveExporter("x")
    ex.set_level("a", 8.0)
    ex.set_in_flight("a", 5)
    ex.observe_parse_failure("a", 8.0)
    ex.observe_parse_failure("a", 8.0, n=3)
    m = scrape(ex)
    assert m[key("benchbox_level", scenario="x", target="a")] == 8
    assert m[key("benchbox_in_flight", scenario="x", target="a")] == 5
    assert m[key("benchbox_parse_failures_total", scenario="x", target="a", level="8")] == 4
    # a new level's measure series exist at 0 from its start (rates and error ratios are defined)
    meas = dict(scenario="x", target="a", level="8", phase="measure")
    assert m[key("benchbox_requests_total", **meas, outcome="ok")] == 0
    assert m[key("benchbox_requests_total", **meas, outcome="error")] == 0
    assert m[key("benchbox_output_tokens_total", **meas)] == 0

    ex.set_level("a", 16)
    ex.set_in_flight("a", 0)
    m = scrape(ex)
    assert m[key("benchbox_level", scenario="x", target="a")] == 16
    assert m[key("benchbox_in_flight", scenario="x", target="a")] == 0
    ex.set_level("a", None)          # between levels / done: the series goes away
    ex.set_level("never-set", None)  # no error
    assert not [k for k in scrape(ex) if k[0] == "benchbox_level"]


def test_private_registry_global_untouched() -> None:
    before = generate_latest(REGISTRY)
    names_before = set(REGISTRY._names_to_collectors)  # noqa: SLF001 - the point of the test
    # two exporters on one registry would raise "Duplicated timeseries"
    one, two = LiveExporter("same"), LiveExporter("same")
    one.on_record(rec())
    two.on_record(rec())
    two.on_record(rec())
    assert set(REGISTRY._names_to_collectors) == names_before  # noqa: SLF001
    assert b"benchbox_" not in generate_latest(REGISTRY)
    assert generate_latest(REGISTRY).count(b"\n") == before.count(b"\n")
    a4 = dict(scenario="same", target="a", level="4", phase="measure", outcome="ok")
    assert scrape(one)[key("benchbox_requests_total", **a4)] == 1
    assert scrape(two)[key("benchbox_requests_total", **a4)] == 2


def test_every_exposed_name_is_known() -> None:
    ex = LiveExporter("s")
    ex.on_record(rec(gaps_ms=(5,), output_tokens=2))
    ex.on_record(rec(error="connect"))
    ex.set_level("a", 4)
    ex.set_in_flight("a", 1)
    ex.observe_parse_failure("a", 4)
    ex.set_server_metrics("a", {"kv_cache_usage": 0.25, "requests_waiting": 3})
    names = {n for n, _ in scrape(ex)}
    assert names == set(METRIC_NAMES)


def test_server_metrics_are_gauges_by_logical_name() -> None:
    ex = LiveExporter("s")
    ex.set_server_metrics("a", {"kv_cache_usage": 0.25, "requests_waiting": 3})
    ex.set_server_metrics("a", {"kv_cache_usage": 0.5})
    values = {dict(labels)["metric"]: v for (n, labels), v in scrape(ex).items() if n == "benchbox_server_metric"}
    assert values == {"kv_cache_usage": 0.5, "requests_waiting": 3.0}


# --- serving, grace, push --------------------------------------------------------------------
def test_http_endpoint_port_zero() -> None:
    ex = LiveExporter("http", port=0, grace_s=30)
    port = ex.start()
    try:
        assert port > 0 and ex.start() == port and ex.serving
        ex.on_record(rec(output_tokens=3))
        body = get(f"http://127.0.0.1:{port}/metrics")
        labels = 'level="4",outcome="ok",phase="measure",scenario="http",target="a"'
        assert f"benchbox_requests_total{{{labels}}} 1.0" in body
        assert "benchbox_ttft_seconds_bucket" in body
        assert "python_gc" not in body and "process_cpu" not in body   # not the global registry
    finally:
        t0 = time.monotonic()
        ex.close(wait_grace=False)
    assert time.monotonic() - t0 < 5
    assert not ex.serving and refused(port)
    ex.close()   # idempotent
    with pytest.raises(RuntimeError):
        ex.start()


def test_grace_period_serves_final_values() -> None:
    grace = 0.6
    ex = LiveExporter("grace", grace_s=grace)
    port = ex.start()
    ex.on_record(rec())
    t0 = time.monotonic()
    closer = threading.Thread(target=ex.close)
    closer.start()
    try:
        time.sleep(0.05)
        ex.on_record(rec(seq=2))     # a request that finished as the run ended
        body = get(f"http://127.0.0.1:{port}/metrics")
        assert re.search(r'benchbox_requests_total\{[^}]*outcome="ok"[^}]*\} 2\.0', body)
    finally:
        closer.join(10)
    assert not closer.is_alive()
    assert time.monotonic() - t0 >= grace
    assert refused(port)


def test_grace_can_be_cut_short() -> None:
    ex = LiveExporter("cut", grace_s=60)
    port = ex.start()
    closer = threading.Thread(target=ex.close)
    t0 = time.monotonic()
    closer.start()
    time.sleep(0.1)
    ex.cut_grace()
    closer.join(10)
    assert not closer.is_alive() and time.monotonic() - t0 < 10
    assert refused(port)


def test_context_manager_and_no_server() -> None:
    with LiveExporter("cm", grace_s=0) as ex:
        assert get(f"http://127.0.0.1:{ex.port}/").startswith("# HELP")
    assert refused(ex.port)
    quiet = LiveExporter("never-started", grace_s=60)
    t0 = time.monotonic()
    quiet.close()                      # nothing served: no grace to wait
    assert time.monotonic() - t0 < 1


class _FakeGateway(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_push_to_gateway_on_close() -> None:
    gw = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGateway)
    thread = threading.Thread(target=gw.serve_forever, daemon=True)
    thread.start()
    _FakeGateway.received = []
    try:
        ex = LiveExporter("pushy", grace_s=0, pushgateway=f"http://127.0.0.1:{gw.server_port}")
        ex.on_record(rec(output_tokens=3))
        ex.on_record(rec(error="http_5xx"))
        ex.close()
    finally:
        gw.shutdown()
        gw.server_close()
        thread.join(5)
    assert ex.push_error is None
    [(method, path, body)] = _FakeGateway.received
    assert (method, path) == ("PUT", "/metrics/job/benchbox/scenario/pushy")
    samples = {(s.name, s.labels.get("outcome")): s.value
               for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert samples[("benchbox_requests_total", "ok")] == 1
    assert samples[("benchbox_requests_total", "error")] == 1


def test_push_failure_never_raises() -> None:
    gw = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGateway)
    dead_port = gw.server_port
    gw.server_close()                  # nothing listens there now
    ex = LiveExporter("nopush", grace_s=0, pushgateway=f"127.0.0.1:{dead_port}")
    port = ex.start()
    ex.close()
    assert ex.push_error and "URLError" in ex.push_error
    assert refused(port)
    assert LiveExporter("off").push() is False


# --- the shipped dashboard and docker files ---------------------------------------------------
PROMQL_FUNCTIONS = {"histogram_quantile", "rate", "irate", "increase", "sum", "max", "min", "avg", "count",
                    "clamp_min", "clamp_max", "max_over_time", "last_over_time", "topk", "abs", "vector"}
PROMQL_KEYWORDS = {"by", "without", "or", "and", "unless", "on", "ignoring", "group_left", "group_right",
                   "bool", "offset", "inf", "nan"}
SERVER_METRICS = {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:num_requests_waiting",
                  "vllm:num_requests_running", "llamacpp:requests_deferred", "llamacpp:requests_processing",
                  "llamacpp:kv_cache_usage_ratio"}
BENCHBOX_LABELS = {"metric", "scenario", "target", "level", "phase", "outcome", "error_class", "le"}
GRAFANA_VARS = {"$scenario", "$target", "$phase", "$__rate_interval"}


def promql_problems(expr: str) -> list[str]:
    """Why ``expr`` is not plausible PromQL over known series ([] when it is)."""
    problems = []
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    if '"' in bare.replace('""', ""):
        problems.append("unterminated string")
    stack, pairs = [], {")": "(", "]": "[", "}": "{"}
    for ch in bare:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                problems.append(f"unbalanced {ch!r}")
                break
    if stack:
        problems.append(f"unclosed {''.join(stack)!r}")
    for var in re.findall(r"\$[A-Za-z_]+", expr):
        if var not in GRAFANA_VARS:
            problems.append(f"unknown variable {var}")
    for window in re.findall(r"\[([^\]]*)\]", bare):
        if window != "$__rate_interval" and not re.fullmatch(r"\d+[smhdw]", window):
            problems.append(f"bad range [{window}]")
    # label matchers: known label names only, a known operator and a string value
    for matchers in re.findall(r"\{([^}]*)\}", bare):
        for m in filter(None, (x.strip() for x in matchers.split(","))):
            mm = re.fullmatch(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"\"", m)
            if not mm or mm.group(1) not in BENCHBOX_LABELS:
                problems.append(f"bad matcher {m!r}")
    outside = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    outside = re.sub(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", r"\1 ", outside)
    for ident in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", outside):
        if ident in PROMQL_FUNCTIONS or ident.lower() in PROMQL_KEYWORDS:
            continue
        if ident not in METRIC_NAMES and ident not in SERVER_METRICS:
            problems.append(f"unknown metric or function {ident!r}")
    for ident in re.findall(r"\b(?:sum|max|min|avg|count)\b(?!\s*(?:by|without)?\s*\()", outside):
        problems.append(f"aggregation {ident} without parentheses")
    return problems


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return out


def test_promql_checker_catches_mistakes() -> None:
    good = 'sum by (target) (rate(benchbox_requests_total{target=~"$target"}[$__rate_interval]))'
    assert promql_problems(good) == []
    assert promql_problems("sum(rate(benchbox_requests_total[1m])") != []
    assert promql_problems("rate(benchbox_request_total[1m])") != []          # typo in the name
    assert promql_problems('rate(benchbox_requests_total{tgt="a"}[1m])') != []
    assert promql_problems('rate(benchbox_requests_total{target="a}[1m])') != []
    assert promql_problems("rate(benchbox_requests_total[$__interval])") != []


def test_dashboard_promql_is_plausible() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    for title, expr in exprs:
        assert promql_problems(expr) == [], (title, expr)
    text = " ".join(e for _, e in exprs)
    # every client-side family is on the dashboard, and the server panels read both servers
    for name in ("requests_total", "errors_total", "output_tokens_total", "parse_failures_total",
                 "in_flight", "level", "ttft_seconds_bucket", "itl_seconds_bucket", "e2e_seconds_bucket"):
        assert f"benchbox_{name}" in text, name
    for name in ("vllm:kv_cache_usage_perc", "vllm:num_requests_waiting", "llamacpp:requests_deferred",
                 "llamacpp:requests_processing"):
        assert name in text, name
    for h in ("ttft", "itl", "e2e"):
        for q in ("0.5", "0.95", "0.99"):
            head = f"histogram_quantile({q}, sum by (target, le) (rate(benchbox_{h}_seconds_bucket{{"
            assert any(e.startswith(head) for _, e in exprs), (h, q)


def test_docker_files_agree() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ds = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    [source] = ds["datasources"]
    [ds_var] = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds_var["current"]["value"] == source["uid"] and source["type"] == "prometheus"
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/benchbox.yaml").read_text())
    [prov] = provider["providers"]
    mounts = {m.split(":")[1]: m.split(":")[0] for s in services.values() for m in s.get("volumes", [])}
    assert mounts[prov["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
    for host_path in ("./grafana/dashboards", "./grafana/provisioning", "./prometheus.yml"):
        assert (DOCKER / host_path).exists(), host_path
    assert (REPO / services["benchbox"]["build"]["context"].replace("..", ".") / "pyproject.toml").exists()
    assert (DOCKER.parent / services["benchbox"]["build"]["dockerfile"]).exists()
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert "host.docker.internal:9464" in jobs["benchbox"]["static_configs"][0]["targets"]
    assert jobs["vllm"]["static_configs"][0]["targets"] == ["vllm:8000"]
    assert "host.docker.internal:host-gateway" in services["prometheus"]["extra_hosts"]


def test_observe_many_equals_observe_one_by_one():
    import random

    from prometheus_client import CollectorRegistry, Histogram

    from bench.exporter import observe_many

    bounds = (0.001, 0.005, 0.01, 0.05, 0.1, 1.0)
    rng = random.Random(5)
    values = [rng.choice([0.0, 0.001, 0.0049, 0.005, 0.02, 0.1, 0.5, 3.0, 99.0]) for _ in range(500)]
    one = Histogram("one", "x", registry=CollectorRegistry(), buckets=bounds)
    many = Histogram("many", "x", registry=CollectorRegistry(), buckets=bounds)
    for v in values:
        one.observe(v)
    observe_many(many, values)

    def samples(h):
        return [(s.name.split("_", 1)[1], dict(s.labels).get("le"), round(s.value, 9))
                for m in h.collect() for s in m.samples if not s.name.endswith("_created")]

    assert samples(many) == samples(one)


def test_a_retried_attempt_is_not_an_error():
    from bench.exporter import LiveExporter
    from bench.records import RequestRecord

    ex = LiveExporter("s")
    rec = RequestRecord(target="t", level=1, phase="measure", seq=0, item_id="i", repeat=0, request_id="r",
                        scheduled_ns=0, sent_ns=1, end_ns=2, error="http_429", status=429, retried=True)
    ex.on_record(rec)
    value = ex.registry.get_sample_value
    assert value("benchbox_requests_total", {"scenario": "s", "target": "t", "level": "1", "phase": "measure",
                                             "outcome": "retried"}) == 1
    assert not value("benchbox_requests_total", {"scenario": "s", "target": "t", "level": "1", "phase": "measure",
                                                 "outcome": "error"})
