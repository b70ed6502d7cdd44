"""bench.scrape (server /metrics -> logical metrics, level summaries, the scraper loop) and bench.nvml."""

from __future__ import annotations

import asyncio
import http.server
import json
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from bench import nvml as nvml_mod
from bench.nvml import NvmlSampler, nvml_status
from bench.scrape import (
    LevelSeries, MetricsScraper, ServerMetricsWriter, detect_kind, load_maps, parse_metrics, parse_samples,
    slots_kv_usage, uses_slots,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


# ---------------------------------------------------------------------------------------------- parsing
EXPECTED = {
    "vllm.txt": ("vllm", {"kv_cache_usage": 0.4275, "requests_running": 7.0, "requests_waiting": 3.0,
                          "preemptions": 2.0, "prompt_tokens": 254381.0, "generation_tokens": 58913.0}),
    "sglang.txt": ("sglang", {"kv_cache_usage": 0.28, "requests_running": 24.0, "requests_waiting": 5.0,
                              "preemptions": 4.0, "prompt_tokens": 8128902.0,
                              "generation_tokens": 7557572.0}),
    "tgi.txt": ("tgi", {"kv_cache_usage": 4096 / 16384, "requests_running": 12.0, "requests_waiting": 3.0,
                        "prompt_tokens": 402113.0, "generation_tokens": 98304.0}),
    # captured from the pinned llama-server (-np 2 -c 4096) with three requests in flight
    "llamacpp.txt": ("llamacpp", {"requests_running": 2.0, "requests_waiting": 1.0, "prompt_tokens": 103.0,
                                  "generation_tokens": 200.0}),
    "triton.txt": ("triton", {"kv_cache_usage": 1560 / 6240, "requests_running": 6.0,
                              "requests_waiting": 0.0 + 1 + 2 + 0, "prompt_tokens": 65536.0,
                              "generation_tokens": 32768.0,
                              "gpu_memory_used_bytes": 76235669504.0 + 1048576.0}),
    # fallbacks: older names
    "vllm_v0.txt": ("vllm", {"kv_cache_usage": 0.8125, "requests_running": 12.0, "requests_waiting": 0.0,
                             "preemptions": 17.0, "prompt_tokens": 1048576.0, "generation_tokens": 262144.0}),
    "llamacpp_old.txt": ("llamacpp", {"kv_cache_usage": 0.375, "kv_cache_resident": 0.375,
                                      "requests_running": 3.0, "requests_waiting": 0.0,
                                      "prompt_tokens": 4810.0, "generation_tokens": 1536.0}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_maps_to_exact_logical_values(name):
    kind, values = parse_metrics(fixture(name))
    assert (kind, values) == EXPECTED[name]
    # the same with the kind given instead of detected
    assert parse_metrics(fixture(name), kind=EXPECTED[name][0]) == EXPECTED[name]


def test_llamacpp_kv_fill_from_slots():
    slots = json.loads(fixture("llamacpp_slots.txt"))
    assert [(s["is_processing"], s["n_ctx"], s["n_prompt_tokens"]) for s in slots] == [(True, 2048, 120)] * 2
    kind, values = parse_metrics(fixture("llamacpp.txt"), slots=slots)
    assert kind == "llamacpp"
    assert values["kv_cache_usage"] == values["kv_cache_resident"] == 240 / 4096
    # slots win over the old gauge; without slots the old gauge is the fallback
    assert parse_metrics(fixture("llamacpp_old.txt"), slots=slots)[1]["kv_cache_usage"] == 240 / 4096
    assert uses_slots("llamacpp") and not uses_slots("vllm") and not uses_slots(None)


def test_slots_kv_usage_modes():
    slots = [
        {"id": 0, "n_ctx": 1024, "is_processing": True, "n_prompt_tokens": 300},
        {"id": 1, "n_ctx": 1024, "is_processing": False, "n_prompt_tokens": 500},   # kept for prompt reuse
        {"id": 2, "n_ctx": 1024, "is_processing": False},                           # never used
        {"id": 3, "n_ctx": 1024, "state": 1, "n_past": 100},                        # older build's fields
    ]
    assert slots_kv_usage(slots) == slots_kv_usage(slots, "processing") == 400 / 4096
    assert slots_kv_usage(slots, "all") == 900 / 4096
    assert slots_kv_usage([]) is None and slots_kv_usage({"error": "x"}) is None
    assert slots_kv_usage([{"n_ctx": 0}]) is None


def test_fallback_candidates_and_ratios():
    text = fixture("tgi.txt").replace("tgi_batch_max_total_tokens", "tgi_batch_total_tokens")
    assert parse_metrics(text)[1]["kv_cache_usage"] == 0.25
    no_budget = "\n".join(x for x in fixture("tgi.txt").splitlines() if "max_total_tokens" not in x) + "\n"
    assert "kv_cache_usage" not in parse_metrics(no_budget)[1]
    # SGLang without token_usage: used / max tokens
    text = "\n".join(x for x in fixture("sglang.txt").splitlines() if "token_usage" not in x) + "\n"
    assert parse_metrics(text)[1]["kv_cache_usage"] == 45296 / 161772
    # TensorRT-LLM builds that only export the fraction
    text = "\n".join(x for x in fixture("triton.txt").splitlines()
                     if 'block_type="used"' not in x) + "\n"
    text += ('nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",'
             'version="1"} 0.5\n')
    assert parse_metrics(text)[1]["kv_cache_usage"] == 0.5
    # TensorRT-LLM's own waiting count is preferred over Triton's pending count
    waiting = 'nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 9\n'
    assert parse_metrics(fixture("triton.txt") + waiting)[1]["requests_waiting"] == 9.0


def test_triton_with_vllm_backend_is_triton():
    text = (
        "# TYPE nv_inference_pending_request_count gauge\n"
        'nv_inference_pending_request_count{model="vllm_model",version="1"} 4\n'
        "# TYPE nv_gpu_memory_used_bytes gauge\n"
        'nv_gpu_memory_used_bytes{gpu_uuid="GPU-1"} 1000\n'
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model="vllm_model",version="1"} 3\n'
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{model="vllm_model",version="1"} 0.5\n'
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{model="vllm_model",version="1"} 77\n'
    )
    assert parse_metrics(text) == ("triton", {
        "kv_cache_usage": 0.5, "requests_running": 3.0, "requests_waiting": 4.0, "prompt_tokens": 77.0,
        "gpu_memory_used_bytes": 1000.0})


def test_label_sets_combine_by_the_metrics_agg():
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 7\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 5\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25\n'
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{engine="0",model_name="m"} 10\n'
        'vllm:generation_tokens_total{engine="1",model_name="m"} 32\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0",model_name="m"} NaN\n'
    )
    assert parse_metrics(text) == ("vllm", {"kv_cache_usage": 0.375, "requests_running": 12.0,
                                            "generation_tokens": 42.0})


def test_kind_detection():
    for name, (kind, _) in EXPECTED.items():
        assert detect_kind(parse_samples(fixture(name))) == kind
    assert parse_metrics("# TYPE foo gauge\nfoo 1\n") == ("unknown", {})
    assert parse_metrics("") == ("unknown", {})
    # a kind given explicitly wins, even when the names say otherwise
    assert parse_metrics(fixture("vllm.txt"), kind="sglang") == ("sglang", {})
    with pytest.raises(ValueError, match="unknown server kind 'nope'"):
        parse_metrics(fixture("vllm.txt"), kind="nope")
    with pytest.raises(ValueError):
        parse_metrics("this is { not prometheus\n")


def test_maps_file_is_valid_and_validated(tmp_path):
    maps = load_maps()
    assert list(maps["servers"]) == ["triton", "vllm", "sglang", "tgi", "llamacpp"]
    assert {"kv_cache_usage", "requests_running", "requests_waiting", "preemptions", "prompt_tokens",
            "generation_tokens", "gpu_memory_used_bytes"} <= set(maps["logical"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("logical: {x: {type: gauge}}\nservers: {s: {detect: ['s_'], metrics: {y: [s_y]}}}\n")
    with pytest.raises(ValueError, match="not a logical metric"):
        load_maps(bad)
    bad.write_text("logical: {x: {type: gauge}}\n"
                   "servers: {s: {detect: ['s_'], metrics: {x: [{nme: s_x}]}}}\n")
    with pytest.raises(ValueError, match="unknown candidate"):
        load_maps(bad)


# ---------------------------------------------------------------------------------------------- level math
TYPES = {"g": "gauge", "c": "counter"}


def test_level_summary_gauges_and_counter_with_reset():
    s = LevelSeries(TYPES)
    s.add(0, None, {"g": 100.0, "c": 5.0})                 # before the level: not in it
    s.add(1_000_000_000, 1, {"g": 1.0, "c": 10.0})         # set_level(1) polls at once
    s.add(2_000_000_000, 1, {"g": 3.0, "c": 40.0})
    s.add(3_000_000_000, 1, None)                          # a failed poll
    s.add(4_000_000_000, 1, {"g": 2.0, "c": 15.0})         # the server restarted: 0 -> 15
    s.add(5_000_000_000, None, {"g": 0.0, "c": 20.0})      # set_level(None): closes the level
    out = s.summary(1)
    assert out["samples"] == 3 and out["errors"] == 1
    assert out["g"] == {"mean": 2.0, "max": 3.0, "last": 2.0, "n": 3}
    assert out["c"] == {"delta": 30.0 + 15.0 + 5.0, "rate_per_s": 50.0 / 4.0, "n": 3}


def test_level_summary_repeats_pool_and_edges():
    s = LevelSeries(TYPES)
    for t, level, c in [(0, 1, 0.0), (1, 1, 10.0), (2, 2, 15.0), (3, 2, 16.0), (4, 1, 20.0), (5, 1, 30.0)]:
        s.add(t * 1_000_000_000, level, {"c": c, "g": float(t)})
    one = s.summary(1)
    assert one["c"]["delta"] == 15.0 + 10.0          # 0->10->15 (closed by level 2), then 20->30 (last run)
    assert one["c"]["rate_per_s"] == 25.0 / 3.0
    assert one["g"] == {"mean": 2.5, "max": 5.0, "last": 5.0, "n": 4}
    assert s.summary(2)["c"]["delta"] == 5.0         # 15->16->20
    assert s.summary(7) == {"samples": 0, "errors": 0}
    single = LevelSeries(TYPES)
    single.add(0, 3, {"c": 4.0})
    assert single.summary(3)["c"] == {"delta": 0.0, "rate_per_s": None, "n": 1}


# ---------------------------------------------------------------------------------------------- writer
def test_writer_appends_flushed_json_lines(tmp_path):
    path = tmp_path / "run" / "server_metrics.jsonl"
    w = ServerMetricsWriter(path)
    w.write({"t_ns": 1, "target": "a", "level": None, "kind": "vllm", "values": {"x": 1.5}, "error": None})
    assert json.loads(path.read_text()) == {"t_ns": 1, "target": "a", "level": None, "kind": "vllm",
                                            "values": {"x": 1.5}, "error": None}
    w.write({"t_ns": 2})
    w.close()
    w.close()
    w.write({"t_ns": 3})
    assert [json.loads(x)["t_ns"] for x in path.read_text().splitlines()] == [1, 2]
    assert (w.written, w.dropped) == (2, 1)


# ---------------------------------------------------------------------------------------------- the scraper
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        st = self.server.state  # type: ignore[attr-defined]
        st["hits"].append(self.path)
        time.sleep(st.get("delay", 0))
        status, body = (200, st["slots"]) if self.path == "/slots" else (st["status"], st["body"])
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def metrics_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.state = {"status": 200, "body": "", "slots": "[]", "hits": []}  # type: ignore[attr-defined]
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    th.join(5)


def _vllm(running: int, gen: int) -> str:
    return ("# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="m"}} {running}\n'
            "# TYPE vllm:generation_tokens_total counter\n"
            f'vllm:generation_tokens_total{{model_name="m"}} {gen}\n')


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


async def _until(cond, limit_s: float = 3.0) -> None:
    for _ in range(int(limit_s / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)


def test_scraper_polls_tags_levels_and_summarises(tmp_path, metrics_server):
    url = f"http://127.0.0.1:{metrics_server.server_address[1]}/metrics"
    st = metrics_server.state
    writer = ServerMetricsWriter(tmp_path / "server_metrics.jsonl")
    sc = MetricsScraper("tgt", url, writer, interval_s=1.0)
    assert sc.timeout_s < sc.interval_s

    async def go():
        for level, running, gen in [(1, 2, 100), (1, 4, 150), (1, 3, 20), (None, 0, 30)]:
            sc.set_level(level)
            st["body"] = _vllm(running, gen)
            await sc.poll_once()
        st["status"], st["body"] = 500, "oops"
        sc.set_level(2)
        await sc.poll_once()

    asyncio.run(go())
    writer.close()
    rows = _lines(tmp_path / "server_metrics.jsonl")
    assert [(r["level"], r["kind"], r["values"].get("requests_running"), r["error"]) for r in rows] == [
        (1, "vllm", 2.0, None), (1, "vllm", 4.0, None), (1, "vllm", 3.0, None), (None, "vllm", 0.0, None),
        (2, "vllm", None, "HTTP 500")]
    assert all(r["target"] == "tgt" and isinstance(r["t_ns"], int) for r in rows)
    out = sc.level_summary(1)
    assert out["kind"] == "vllm" and out["samples"] == 3 and out["errors"] == 0
    assert out["requests_running"] == {"mean": 3.0, "max": 4.0, "last": 3.0, "n": 3}
    assert out["generation_tokens"]["delta"] == 50 + 20 + 10      # reset between the 2nd and 3rd poll
    assert sc.level_summary(2) == {"samples": 0, "errors": 1, "kind": "vllm"}
    assert (sc.samples, sc.errors, sc.last_error) == (4, 1, "HTTP 500")
    assert "/slots" not in st["hits"]                              # only llama.cpp's map reads /slots


def test_scraper_reads_llamacpp_slots(tmp_path, metrics_server):
    st = metrics_server.state
    st["body"], st["slots"] = fixture("llamacpp.txt"), fixture("llamacpp_slots.txt")
    url = f"http://127.0.0.1:{metrics_server.server_address[1]}/metrics"
    writer = ServerMetricsWriter(tmp_path / "m.jsonl")
    sc = MetricsScraper("ll", url, writer)
    assert sc.slots_url == url[: -len("metrics")] + "slots"
    first = asyncio.run(sc.poll_once())                            # kind unknown yet: metrics, then slots
    second = asyncio.run(sc.poll_once())                           # both at once
    writer.close()
    for s in (first, second):
        assert s["kind"] == "llamacpp" and s["error"] is None and s["values"]["kv_cache_usage"] == 240 / 4096
    assert st["hits"].count("/slots") == 2
    st["slots"] = "not json"
    third = asyncio.run(sc.poll_once())
    assert third["error"] is None and "slots_error" in third and "kv_cache_usage" not in third["values"]
    assert sc.slots_off and asyncio.run(sc.poll_once())["values"]["requests_running"] == 2.0
    assert st["hits"].count("/slots") == 3                         # no more asking once it answered wrong


def test_scraper_failures_are_samples_not_exceptions(tmp_path, metrics_server):
    port = metrics_server.server_address[1]
    st = metrics_server.state
    writer = ServerMetricsWriter(tmp_path / "m.jsonl")
    st["body"] = "garbage { here\n"
    bad = asyncio.run(MetricsScraper("a", f"http://127.0.0.1:{port}/metrics", writer).poll_once())
    assert bad["error"] and bad["values"] == {} and bad["kind"] is None
    st["body"], st["delay"] = _vllm(1, 1), 0.5
    slow = MetricsScraper("b", f"http://127.0.0.1:{port}/metrics", writer, interval_s=0.2)
    assert asyncio.run(slow.poll_once())["error"] == f"timeout after {slow.timeout_s:g} s"
    refused = MetricsScraper("c", "http://127.0.0.1:9/metrics", writer)
    assert asyncio.run(refused.poll_once())["error"].startswith("connect:")
    writer.close()
    assert len(_lines(tmp_path / "m.jsonl")) == 3 and refused.errors == 1
    with pytest.raises(ValueError, match="unknown server kind"):
        MetricsScraper("d", "http://x/metrics", writer, kind="bogus")


def test_run_polls_on_schedule_and_at_once_on_a_new_level(tmp_path, metrics_server):
    metrics_server.state["body"] = _vllm(1, 1)
    url = f"http://127.0.0.1:{metrics_server.server_address[1]}/metrics"
    writer = ServerMetricsWriter(tmp_path / "m.jsonl")
    sc = MetricsScraper("t", url, writer, interval_s=30.0)

    async def go():
        task = asyncio.create_task(sc.run())
        await _until(lambda: sc.samples == 1)
        await asyncio.sleep(0.1)
        assert sc.samples == 1                     # the next tick is 30 s away
        sc.set_level(4)
        await _until(lambda: sc.samples == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    writer.close()
    assert [r["level"] for r in _lines(tmp_path / "m.jsonl")] == [None, 4]


# ---------------------------------------------------------------------------------------------- NVML
def test_nvml_module_absent_is_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)     # import pynvml -> ImportError
    st = nvml_status()
    assert st["available"] is False and "nvidia-ml-py" in st["reason"]
    writer = ServerMetricsWriter(tmp_path / "m.jsonl")
    s = NvmlSampler(writer, interval_s=0.01)
    asyncio.run(asyncio.wait_for(s.run(), 5))            # returns at once
    s.set_level(1)
    assert s.level_summary(1) == {"available": False, "reason": st["reason"], "samples": 0, "errors": 0,
                                  "kind": "nvml"}
    writer.close()
    assert (tmp_path / "m.jsonl").read_text() == ""


class _NVMLError(Exception):
    """What pynvml raises (NVMLError_DriverNotLoaded, NVMLError_NotSupported, ...)."""


def _fake_pynvml(gpus: int, init_error: bool = False) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.calls = []  # type: ignore[attr-defined]

    def init():
        if init_error:
            raise _NVMLError("Driver Not Loaded")
    m.nvmlInit = init
    m.nvmlShutdown = lambda: m.calls.append("shutdown")
    m.nvmlDeviceGetCount = lambda: gpus
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: b"Fake GPU"
    m.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"
    m.nvmlSystemGetDriverVersion = lambda: "555.42"
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * 1000, total=8000)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=50 + 10 * h, memory=5)

    def power(h):
        if h == 1:
            raise _NVMLError("Not Supported")
        return 250_500
    m.nvmlDeviceGetPowerUsage = power
    return m


def test_nvml_driver_missing_or_no_gpu(monkeypatch):
    monkeypatch.setattr(nvml_mod, "_load_pynvml", lambda: _fake_pynvml(1, init_error=True))
    assert nvml_status() == {"available": False, "reason": "NVML unavailable: Driver Not Loaded"}
    monkeypatch.setattr(nvml_mod, "_load_pynvml", lambda: _fake_pynvml(0))
    st = nvml_status()
    assert st["available"] is False and "no GPU" in st["reason"]


def test_nvml_sampler_with_a_fake_driver(monkeypatch, tmp_path):
    fake = _fake_pynvml(2)
    monkeypatch.setattr(nvml_mod, "_load_pynvml", lambda: fake)
    writer = ServerMetricsWriter(tmp_path / "m.jsonl")
    s = NvmlSampler(writer, interval_s=0.02)
    s.set_level(8)

    async def go():
        task = asyncio.create_task(s.run())
        await _until(lambda: s.samples >= 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    writer.close()
    assert s.status["available"] is True and s.status["driver"] == "555.42"
    assert [g["name"] for g in s.status["gpus"]] == ["Fake GPU", "Fake GPU"]
    rows = _lines(tmp_path / "m.jsonl")
    assert len(rows) >= 3 and {r["kind"] for r in rows} == {"nvml"} and {r["level"] for r in rows} == {8}
    v = rows[0]["values"]
    assert v["gpu_memory_used_bytes"] == 3000.0 and v["gpu_memory_total_bytes"] == 16000.0
    assert v["gpu0_utilization_pct"] == 50.0 and v["gpu_utilization_pct"] == 55.0
    assert v["gpu0_power_w"] == v["gpu_power_w"] == 250.5 and "gpu1_power_w" not in v
    out = s.level_summary(8)
    assert out["available"] is True and out["samples"] == len(rows) and out["errors"] == 0
    assert out["gpu_memory_used_bytes"] == {"mean": 3000.0, "max": 3000.0, "last": 3000.0, "n": len(rows)}
    assert fake.calls == ["shutdown"]                    # NVML shut down when the sampler stopped


def test_stop_ends_run_even_when_a_wake_up_and_the_cancel_race() -> None:
    """set_level(None) then cancel() at once: on Python 3.11 wait_for() may swallow the cancel;
    stop() must end the loop anyway (a hang here once froze a whole sweep)."""
    import asyncio

    from bench.scrape import MetricsScraper

    class NullWriter:
        def write(self, sample: dict) -> None:
            pass

    async def main() -> bool:
        scraper = MetricsScraper("t", "http://127.0.0.1:9/metrics", NullWriter(), interval_s=0.05)
        task = asyncio.ensure_future(scraper.run())
        for _ in range(5):
            await asyncio.sleep(0.02)
            scraper.set_level(1.0)
        scraper.set_level(None)
        scraper.stop()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        return bool(done)

    assert asyncio.run(main())
