"""Triton's HTTP generate extension and TGI's native stream, end to end through the real CLI against
`benchbox sim` (which speaks both, see bench/sim_protocols.py), plus the mixed OpenAI + Triton scenario.

The simulator logs when it wrote each response (CLOCK_MONOTONIC, shared with the client), so every
chunk benchbox stamped is checked against the moment the server really sent it.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import orjson
import pytest
import yaml

from tests.conftest import REPO, load_records, only_run_dir, run_cli, write_scenario

pytestmark = pytest.mark.integration

SIM_ARGS = ("--ttft-ms", "40", "--itl-ms", "5", "--output-tokens", "16")  # max_tokens 12 cuts it: "length"


def sweep(tmp_path: Path, targets: list[dict], **load: object) -> tuple[Path, dict]:
    scenario = write_scenario(tmp_path, {
        "name": "proto",
        "targets": targets,
        "sampling": {"temperature": 0, "max_tokens": 12},
        "load": {"pattern": "concurrency", "levels": [2], "requests": 8, "warmup": {"requests": 1}, **load},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet")
    run_dir = only_run_dir(tmp_path / "runs")
    assert proc.returncode in (0, 3), proc.stderr + proc.stdout
    return run_dir, orjson.loads((run_dir / "result.json").read_bytes())


def assert_matches_truth(records: list[dict], truth: dict[str, dict], tolerance_ms: float = 50.0) -> None:
    """Every content chunk benchbox stamped matches one the sim wrote, close in time. The sim stamps
    right after its write() returns (and may be preempted in between on a busy machine), so a
    client stamp can precede it slightly: the bound is on |difference|, the median must be small."""
    deltas = []
    for r in records:
        t = truth[r["request_id"]]
        assert len(r["chunk_ns"]) == len(t["chunk_ns"]), (r, t)
        deltas += [(got - sent) / 1e6 for got, sent in zip(r["chunk_ns"], t["chunk_ns"])]
    assert deltas and max(abs(d) for d in deltas) < tolerance_ms, max(deltas, key=abs)
    assert abs(sorted(deltas)[len(deltas) // 2]) < 5.0, sorted(deltas)[len(deltas) // 2]


def test_triton_generate_vllm_backend(tmp_path: Path, start_sim) -> None:
    sim = start_sim(*SIM_ARGS)
    run_dir, result = sweep(tmp_path, [{"name": "triton", "role": "baseline", "url": sim.url,
                                        "protocol": "triton-generate", "model": "vllm_model"}])
    level = result["levels"][0]
    assert level["requests"]["ok"] == level["requests"]["measured"] == 8
    measured = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    for r in measured:
        assert r["error"] is None and r["finish_reason"] == "length" and len(r["chunk_ns"]) == 12
        assert r["prompt_tokens"] and r["output_tokens"] is None  # Triton HTTP: counted from responses
    assert level["tokens"]["usage_missing"] == 8 and level["tokens"]["output_total"] == 96
    assert_matches_truth(measured, sim.truth())
    assert 40 <= level["metrics"]["ttft_ms"]["p50"] < 90
    reported = orjson.loads((run_dir / "manifest.json").read_bytes())["targets"]["triton"]["reported_triton"]
    assert reported["model_ready"] is True and reported["server"]["name"] == "triton"
    assert reported["model_config"]["model_transaction_policy"] == {"decoupled": True}
    assert {t["name"] for t in reported["model_metadata"]["inputs"]} >= {"text_input", "sampling_parameters"}


def test_triton_generate_tensorrtllm_inputs(tmp_path: Path, start_sim) -> None:
    sim = start_sim(*SIM_ARGS)
    run_dir, result = sweep(tmp_path, [{"name": "trt", "role": "baseline", "url": sim.url,
                                        "protocol": "triton-generate", "model": "ensemble",
                                        "triton": {"backend": "tensorrtllm"}}])
    measured = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    # no finish reason and no end marker in this flavor: the end of the body is the end of the answer
    assert all(r["error"] is None and r["finish_reason"] is None and len(r["chunk_ns"]) == 12 for r in measured)
    truth = sim.truth()
    assert {t["path"] for t in truth.values()} == {"/v2/models/ensemble/generate_stream"}


def test_triton_refused_input_is_http_4xx(tmp_path: Path, start_sim) -> None:
    sim = start_sim(*SIM_ARGS)
    run_dir, result = sweep(tmp_path, [{"name": "bad", "role": "baseline", "url": sim.url,
                                        "protocol": "triton-generate", "model": "vllm_model",
                                        "triton": {"inputs": {"max_new_tokens": 4}}}])
    measured = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    assert measured and all(r["error"] == "http_4xx" and r["status"] == 400 for r in measured)
    assert "unexpected inference input 'max_new_tokens'" in measured[0]["error_detail"]


def test_triton_stream_cut_midway_is_broken_not_ok(tmp_path: Path, start_sim) -> None:
    # No end marker in Triton's stream: a connection closed mid-answer must still not pass as complete.
    sim = start_sim(*SIM_ARGS, "--abort-rate", "1")
    run_dir, result = sweep(tmp_path, [{"name": "triton", "role": "baseline", "url": sim.url,
                                        "protocol": "triton-generate", "model": "vllm_model"}], requests=4)
    measured = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    assert measured and all(r["error"] == "broken_stream" for r in measured)
    assert all(len(r["chunk_ns"]) == 6 for r in measured)  # half the tokens were sent


def test_tgi_native_generate_stream(tmp_path: Path, start_sim) -> None:
    # 16 tokens cut at max_tokens 12 -> "length"; the sim validates parameters like TGI (temperature 0 -> 422)
    sim = start_sim(*SIM_ARGS)
    run_dir, result = sweep(tmp_path, [{"name": "tgi", "role": "baseline", "url": sim.url,
                                        "protocol": "tgi-generate", "model": "tgi"}])
    level = result["levels"][0]
    assert level["requests"]["ok"] == 8 and level["tokens"]["usage_missing"] == 0
    measured = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    assert all(r["finish_reason"] == "length" and r["output_tokens"] == 12 for r in measured)
    assert_matches_truth(measured, sim.truth())
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["targets"]["tgi"]["reported_tgi"]["max_stop_sequences"] == 4


def test_tgi_natural_end_counts_the_eos_token(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "10", "--itl-ms", "2", "--output-tokens", "5")
    run_dir, result = sweep(tmp_path, [{"name": "tgi", "role": "baseline", "url": sim.url,
                                        "protocol": "tgi-generate", "model": "tgi"}], requests=4)
    measured = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    for r in measured:
        assert r["error"] is None and r["finish_reason"] == "stop"
        assert len(r["chunk_ns"]) == 5 and r["output_tokens"] == 6  # TGI counts the EOS token; it is no text
        assert "</s>" not in r["output_text"]


@pytest.fixture
def triton_metrics() -> Iterator[str]:
    """A separate metrics endpoint (like Triton's :8002) serving a recorded Triton /metrics page."""
    page = (REPO / "tests/fixtures/metrics/triton.txt").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()
    thread.join()


def test_mixed_openai_and_triton_scenario(tmp_path: Path, start_sim, triton_metrics: str) -> None:
    sims = {"openai": start_sim(*SIM_ARGS), "triton": start_sim(*SIM_ARGS)}
    scenario = yaml.safe_load((REPO / "scenarios/ci/mixed-triton.yaml").read_text())
    for t in scenario["targets"]:
        t["url"] = sims[t["name"]].url
        if "metrics_url" in t:
            t["metrics_url"] = triton_metrics  # another port than the inference URL, as Triton's 8002
    scenario["dataset"]["path"] = str(REPO / "quality/voice.jsonl")
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    proc = run_cli("sweep", str(path), "--out", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode in (0, 3), proc.stderr + proc.stdout
    run_dir = only_run_dir(tmp_path / "runs")
    records = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    by_target = {name: [r for r in records if r["target"] == name] for name in sims}
    assert all(len(rs) == 16 and all(r["error"] is None for r in rs) for rs in by_target.values())
    # comparable records: the same fields, the same items in the same order, the same timing truth
    assert {frozenset(r) for r in records} == {frozenset(records[0])}
    assert [r["item_id"] for r in by_target["openai"]] == [r["item_id"] for r in by_target["triton"]]
    for name, sim in sims.items():
        assert_matches_truth(by_target[name], sim.truth())
    result = orjson.loads((run_dir / "result.json").read_bytes())
    levels = {(lv["target"], lv["level"]): lv for lv in result["levels"]}
    assert set(levels) == {(t, float(c)) for t in sims for c in (1, 4)}
    assert len({frozenset(lv["metrics"]) for lv in levels.values()}) == 1
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())["targets"]
    assert "reported_models" in manifest["openai"] and manifest["triton"]["reported_triton"]["model_ready"]
    # the Triton target's metrics came from its own metrics URL, mapped by the triton map
    samples = [orjson.loads(line) for line in (run_dir / "server_metrics.jsonl").read_bytes().splitlines()]
    triton = [s for s in samples if s.get("target") == "triton" and not s.get("error")]
    assert triton and {s["kind"] for s in triton} == {"triton"}
    assert triton[-1]["values"]["kv_cache_usage"] == pytest.approx(1560 / 6240)
    assert levels[("triton", 4.0)]["observed"]["server"]["kv_cache_usage"]["max"] == pytest.approx(1560 / 6240)
