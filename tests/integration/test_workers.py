"""`benchbox sweep --workers N` against `benchbox sim`: one run directory, the same files and
numbers as one process, nothing lost on Ctrl-C; and the client-saturation flag."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import pytest

from tests.conftest import REPO, only_run_dir, run_cli, wait_for, write_scenario

pytestmark = pytest.mark.integration


def _target(url: str) -> dict:
    return {"name": "sim", "role": "baseline", "url": url, "model": "sim-model"}


def _records(run_dir: Path) -> list[dict]:
    return [orjson.loads(line) for line in (run_dir / "records.jsonl").read_bytes().splitlines()]


def test_two_workers_write_one_run_with_every_record(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "20", "--itl-ms", "2", "--output-tokens", "16")
    scenario = write_scenario(tmp_path, {
        "name": "workers",
        "targets": [_target(sim.url)],
        "sampling": {"max_tokens": 16},
        "load": {"pattern": "concurrency", "levels": [2, 6], "requests": 30, "warmup": {"requests": 4}},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    records = _records(run_dir)
    result = orjson.loads((run_dir / "result.json").read_bytes())
    for lv in result["levels"]:
        assert lv["requests"]["measured"] == 30 and lv["requests"]["warmup"] == 4 and lv["requests"]["ok"] == 30
        assert len(lv["client"]["workers"]) == 2
    assert len(records) == 2 * (30 + 4)
    assert len({r["request_id"] for r in records}) == len(records)
    # the simulator saw every request exactly once, and the records agree with its truth log
    truth = sim.truth()
    assert {r["request_id"] for r in records} == set(truth)
    # measured requests walk the 8-item eval set in order across both workers and levels
    measured = sorted((r for r in records if r["phase"] == "measure"), key=lambda r: (r["level"], r["seq"]))
    assert [r["item_id"] for r in measured[:16]] == [f"item-{k % 8}" for k in range(16)]
    # merged histograms are exactly what the records say
    before = [{k: v for k, v in lv.items()} for lv in result["levels"]]
    assert run_cli("report", str(run_dir), "--rebuild").returncode == 0
    rebuilt = orjson.loads((run_dir / "result.json").read_bytes())
    assert rebuilt["levels"] == before


def test_two_workers_in_rate_mode_keep_the_arrival_plan(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "10", "--itl-ms", "1", "--output-tokens", "8", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "workers-rate",
        "targets": [_target(sim.url)],
        "sampling": {"max_tokens": 8},
        "load": {"pattern": "rate", "levels": [40], "arrival": "constant", "duration_s": 3},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    records = sorted(_records(run_dir), key=lambda r: r["seq"])
    assert [r["seq"] for r in records] == list(range(len(records)))  # the plan's indices, none twice
    gaps = {b["scheduled_ns"] - a["scheduled_ns"] for a, b in zip(records, records[1:])}
    assert gaps == {25_000_000}  # constant 40/s from one absolute plan, split across two processes
    level = orjson.loads((run_dir / "result.json").read_bytes())["levels"][0]
    assert abs(level["throughput"]["achieved_rate_per_s"] - 40) < 2


def test_ctrl_c_with_workers_keeps_records_and_leaves_no_process(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "50", "--itl-ms", "20", "--output-tokens", "100", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "workers-interrupt",
        "targets": [_target(sim.url)],
        "sampling": {"max_tokens": 100},
        "load": {"pattern": "concurrency", "levels": [4], "duration_s": 60},
    })
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out),
                             "--quiet", "--workers", "2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: list[psutil.Process] = []
    try:
        def enough_records() -> bool:
            files = list(out.glob("*/records.jsonl")) if out.exists() else []
            return bool(files) and files[0].read_bytes().count(b"\n") >= 8
        assert wait_for(enough_records, timeout=60)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    records = _records(only_run_dir(out))  # every line valid JSON
    assert sum(r["error"] == "cancelled" for r in records) == 4  # the in-flight requests of both workers
    assert sum(r["error"] is None for r in records) >= 8
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_a_saturated_client_is_flagged(tmp_path: Path, start_sim) -> None:
    # Zero server delay: the whole stream arrives at once, the client is the only bottleneck.
    sim = start_sim("--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", "256", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "saturate",
        "targets": [_target(sim.url)],
        "sampling": {"max_tokens": 256},
        "load": {"pattern": "concurrency", "levels": [64], "duration_s": 3, "warmup": {"seconds": 0.5}},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    level = orjson.loads((only_run_dir(tmp_path / "runs") / "result.json").read_bytes())["levels"][0]
    assert level["client"]["saturated"] is True and level["client"]["reasons"]
    assert "load generator was saturated" in proc.stdout
