"""End-to-end sweeps through the real CLI against `benchbox sim` on loopback.

The simulator logs when it really wrote each token (CLOCK_MONOTONIC, shared with the
client), so benchbox's numbers are checked against what the server delivered, not only
against the configured delays.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO, load_records, only_run_dir, run_cli, wait_for, write_scenario

pytestmark = pytest.mark.integration


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _sim_target(url: str) -> dict:
    return {"name": "sim", "role": "baseline", "url": url, "model": "sim-model"}


@pytest.mark.parametrize("users", [1, 16])
def test_ttft_and_itl_match_simulator_truth(tmp_path: Path, start_sim, users: int) -> None:
    sim = start_sim("--ttft-ms", "100", "--itl-ms", "10", "--output-tokens", "128")
    scenario = write_scenario(tmp_path, {
        "name": "accuracy",
        "targets": [_sim_target(sim.url)],
        "sampling": {"max_tokens": 128},
        "load": {"pattern": "concurrency", "levels": [users], "requests": max(12, 3 * users),
                 "warmup": {"requests": users}},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run_dir = only_run_dir(tmp_path / "runs")
    result = orjson.loads((run_dir / "result.json").read_bytes())
    level = result["levels"][0]
    assert result["complete"] is True
    assert level["requests"]["ok"] == level["requests"]["measured"] == max(12, 3 * users)
    assert level["tokens"]["usage_missing"] == 0
    assert level["tokens"]["output_total"] == 128 * level["requests"]["ok"]

    truth = sim.truth()
    measured = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    true_ttft = [(truth[r["request_id"]]["chunk_ns"][0] - truth[r["request_id"]]["received_ns"]) / 1e6
                 for r in measured]
    true_itl = [(b - a) / 1e6 for r in measured
                for a, b in zip(truth[r["request_id"]]["chunk_ns"], truth[r["request_id"]]["chunk_ns"][1:])]
    ttft = level["metrics"]["ttft_ms"]
    assert abs(ttft["p50"] - _quantile(true_ttft, 0.5)) < 2.0
    assert abs(level["metrics"]["itl_ms"]["p50"] - _quantile(true_itl, 0.5)) < 1.0
    # The client's own share of the error: how long after the server wrote the first token
    # did the client stamp it? (Request ingestion queueing at the server is real latency.)
    receive_lag = [(r["first_token_ns"] - truth[r["request_id"]]["chunk_ns"][0]) / 1e6 for r in measured]
    assert _quantile(receive_lag, 0.99) < 2.0
    # Every request's own numbers are consistent: TTFT < E2E, chunks ordered.
    for r in measured:
        assert r["sent_ns"] < r["first_token_ns"] <= r["end_ns"]
        assert r["chunk_ns"] == sorted(r["chunk_ns"]) and len(r["chunk_ns"]) == 128


def test_rate_mode_poisson_achieves_target_rate(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "20", "--itl-ms", "2", "--output-tokens", "16", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "rate",
        "targets": [_sim_target(sim.url)],
        "sampling": {"max_tokens": 16},
        "load": {"pattern": "rate", "arrival": "poisson", "levels": [50], "duration_s": 20, "seed": 7},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = orjson.loads((only_run_dir(tmp_path / "runs") / "result.json").read_bytes())
    level = result["levels"][0]
    achieved = level["throughput"]["achieved_rate_per_s"]
    print(f"rate mode: target 50/s achieved {achieved:.2f}/s, client lag p99 "
          f"{level['metrics']['client_lag_ms']['p99']} ms over {level['requests']['measured']} requests")
    assert abs(achieved - 50) / 50 < 0.05
    assert level["requests"]["ok"] == level["requests"]["measured"]
    lag = level["metrics"]["client_lag_ms"]
    assert lag["count"] == level["requests"]["ok"] and lag["p99"] is not None
    # Latency from the scheduled time can only be longer than from the send time.
    m = level["metrics"]
    assert m["ttft_from_scheduled_ms"]["p50"] >= m["ttft_ms"]["p50"]
    assert "lag p99" in proc.stdout


def test_sigint_mid_level_keeps_records_and_marks_result_incomplete(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "50", "--itl-ms", "20", "--output-tokens", "100", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "interrupt",
        "targets": [_sim_target(sim.url)],
        "sampling": {"max_tokens": 100},
        "load": {"pattern": "concurrency", "levels": [4, 8], "duration_s": 60},
    })
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out), "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def enough_records() -> bool:
            dirs = list(out.glob("*/records.jsonl")) if out.exists() else []
            return bool(dirs) and dirs[0].read_bytes().count(b"\n") >= 8
        assert wait_for(enough_records, timeout=30)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    run_dir = only_run_dir(out)
    lines = (run_dir / "records.jsonl").read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is valid JSON
    cancelled = [r for r in records if r["error"] == "cancelled"]
    completed = [r for r in records if r["error"] is None]
    assert len(cancelled) == 4  # the four users' in-flight requests
    assert len(completed) >= 8
    result = orjson.loads((run_dir / "result.json").read_bytes())
    assert result["complete"] is False and result["interrupted"] == "SIGINT"
    level = result["levels"][0]
    assert level["requests"]["ok"] == len(completed)
    assert level["requests"]["errors"] == {"cancelled": 4}
    assert level["error_rate"] == 0.0  # cancellation is not the server's failure
    assert [lv["level"] for lv in result["levels"]] == [4]


def test_report_rebuilds_the_same_numbers_from_records(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "5", "--itl-ms", "1", "--output-tokens", "8", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "report",
        "targets": [_sim_target(sim.url), {**_sim_target(sim.url), "name": "sim2", "role": "candidate",
                                           "protocol": "openai-completions"}],
        "sampling": {"max_tokens": 8},
        "load": {"pattern": "concurrency", "levels": [1, 2], "requests": 10, "warmup": {"requests": 2}},
    })
    assert run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet").returncode == 0
    run_dir = only_run_dir(tmp_path / "runs")
    original = orjson.loads((run_dir / "result.json").read_bytes())
    assert [(lv["target"], lv["level"]) for lv in original["levels"]] == [
        ("sim", 1), ("sim", 2), ("sim2", 1), ("sim2", 2)]
    proc = run_cli("report", str(run_dir), "--rebuild")
    assert proc.returncode == 0, proc.stderr
    rebuilt = orjson.loads((run_dir / "result.json").read_bytes())
    assert rebuilt["levels"] == original["levels"]
    assert "sim2" in proc.stdout
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["targets"]["sim"]["reported_models"]["data"][0]["id"]
    assert len(manifest["dataset"]["sha256"]) == 64 and len(manifest["scenario"]["sha256"]) == 64


def test_errors_are_classified_records_not_crashes(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "5", "--itl-ms", "1", "--output-tokens", "8", "--error-rate", "0.3",
                    "--abort-rate", "0.2", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "faults",
        "targets": [_sim_target(sim.url), {"name": "down", "role": "candidate", "url": "http://127.0.0.1:9",
                                           "model": "x", "timeout_s": 5}],
        "sampling": {"max_tokens": 8},
        "load": {"pattern": "concurrency", "levels": [2, 4], "requests": 60},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    result = orjson.loads((run_dir / "result.json").read_bytes())
    sim_level = result["levels"][0]
    errors = sim_level["requests"]["errors"]
    assert errors.get("http_5xx", 0) > 0 and errors.get("broken_stream", 0) > 0
    assert sim_level["requests"]["ok"] + sum(errors.values()) == sim_level["requests"]["measured"] == 60
    down = [lv for lv in result["levels"] if lv["target"] == "down"]
    assert len(down) == 1 and down[0]["requests"]["errors"] == {"connect": down[0]["requests"]["measured"]}
    assert any("unreachable" in n for n in result["notes"])
    records = load_records(run_dir)
    assert all(r["error_detail"] for r in records if r["error"])


def test_secrets_never_reach_run_files_or_output(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4", truth=False)
    secret = "sk-test-DO-NOT-LEAK-4242"
    scenario = write_scenario(tmp_path, {
        "name": "secrets",
        "targets": [{**_sim_target(sim.url), "api_key_env": "BENCHBOX_TEST_KEY",
                     "headers": {"X-Team": "voice"}}],
        "sampling": {"max_tokens": 4},
        "load": {"pattern": "concurrency", "levels": [1], "requests": 3},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), env={"BENCHBOX_TEST_KEY": secret})
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    for path in run_dir.iterdir():
        assert secret.encode() not in path.read_bytes(), path.name
    assert secret not in proc.stdout + proc.stderr
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["targets"]["sim"]["configured"]["api_key_env"] == "BENCHBOX_TEST_KEY"
    # Missing key: a clear one-line usage error, nothing measured.
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs2"), env={"BENCHBOX_TEST_KEY": ""})
    assert proc.returncode == 2 and "BENCHBOX_TEST_KEY" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs2").exists()  # nothing written


@pytest.mark.parametrize("content,needle", [
    ("name: x\nload: [1\n", "invalid YAML"),
    ("name: x\ndataset: items.jsonl\ntargets: []\nload: {levels: [1], requests: 1}\n", "targets"),
    ("name: x\ndataset: missing.jsonl\ntargets: [{name: a, role: baseline, url: 'http://h:1', model: m}]\n"
     "load: {levels: [1], requests: 1}\n", "no such file"),
    ("name: x\ndataset: items.jsonl\ntargets: [{name: a, role: baseline, url: 'ftp://h', model: m}]\n"
     "load: {levels: [1], requests: 1}\n", "targets.0.url"),
])
def test_malformed_scenarios_exit_2_with_one_line(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "items.jsonl").write_text('{"id": "a", "prompt": "p"}\n')
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    for command in ("validate", "sweep"):
        proc = run_cli(command, str(path), "--out", str(tmp_path / "runs")) if command == "sweep" else \
            run_cli(command, str(path))
        assert proc.returncode == 2
        assert needle in proc.stderr and str(path) in proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()
