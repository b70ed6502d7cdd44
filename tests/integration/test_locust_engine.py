"""``sweep --engine locust``: a Locust master and worker processes on loopback against `benchbox sim`.

Every test checks that no master or worker outlives the sweep (``_children`` / ``_assert_gone``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from bench.histograms import LatencyHistogram
from bench.patterns import LevelWindow, arrival_offsets_ns
from tests.conftest import REPO, load_records, only_run_dir, run_cli, wait_for, write_scenario

pytestmark = pytest.mark.integration


def _sim_target(url: str) -> dict[str, Any]:
    return {"name": "sim", "role": "baseline", "url": url, "model": "sim-model"}


def _engine_pids(result: dict[str, Any]) -> list[int]:
    return [w["pid"] for w in result["engine"]["workers"]]


def _assert_gone(pids: list[int], timeout: float = 10.0) -> None:
    def gone() -> bool:
        return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                       for pid in pids)
    assert wait_for(gone, timeout=timeout), f"left running: {[p for p in pids if psutil.pid_exists(p)]}"


def _children(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _locust_children(proc: subprocess.Popen, kind: str) -> list[psutil.Process]:
    out = []
    for child in _children(proc):
        try:
            if kind in " ".join(child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def _hist(values_ns: list[int]) -> dict[str, Any]:
    return LatencyHistogram.from_ns(values_ns).summary_ms()


def test_master_and_two_workers_merge_into_one_result(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "30", "--itl-ms", "3", "--output-tokens", "24")
    scenario = write_scenario(tmp_path, {
        "name": "locust-merge",
        "targets": [_sim_target(sim.url)],
        "sampling": {"max_tokens": 24},
        "load": {"pattern": "concurrency", "levels": [3, 6], "requests": 40, "warmup": {"requests": 4}},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet",
                   "--engine", "locust", "--workers", "2")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    result = orjson.loads((run_dir / "result.json").read_bytes())
    records = load_records(run_dir)
    _assert_gone(_engine_pids(result))

    engine = result["engine"]
    assert engine["name"] == "locust" and len(engine["workers"]) == 2 and engine["lost_workers"] == []
    assert len({w["pid"] for w in engine["workers"]}) == 2
    assert result["complete"] is True and not result["failures"]
    truth = sim.truth()
    for level in result["levels"]:
        mine = [r for r in records if r["level"] == level["level"]]
        measured = [r for r in mine if r["phase"] == "measure"]
        # The merged result counts exactly what records.jsonl holds.
        assert level["requests"]["measured"] == len(measured) == 40
        assert level["requests"]["warmup"] == len(mine) - len(measured) == 4
        assert level["requests"]["ok"] == 40
        # Both workers sent part of the level (their users are interleaved columns).
        assert len({r["request_id"] for r in mine}) == len(mine)
        # Percentiles: the merged HDR histograms equal those built from all records, and agree
        # with exact order statistics within HDR's 0.1 %.
        ttft = [r["first_token_ns"] - r["sent_ns"] for r in measured]
        e2e = [r["end_ns"] - r["sent_ns"] for r in measured]
        itl = [b - a for r in measured for a, b in zip(r["chunk_ns"], r["chunk_ns"][1:])]
        for key, values in (("ttft_ms", ttft), ("e2e_ms", e2e), ("itl_ms", itl)):
            got, want = level["metrics"][key], _hist(values)
            for q in ("p50", "p90", "p95", "p99", "max", "count"):
                assert got[q] == want[q], (key, q, got[q], want[q])
            exact = sorted(values)
            for q, frac in (("p50", 0.5), ("p99", 0.99)):
                k = max(0, -(-len(exact) * int(frac * 100) // 100) - 1)
                assert abs(got[q] - exact[k] / 1e6) <= exact[k] / 1e6 * 0.002 + 0.002, (key, q)
        # Every record is a real request the simulator saw, stamped in this host's clock.
        for r in measured:
            assert r["request_id"] in truth and r["sent_ns"] <= truth[r["request_id"]]["received_ns"] + 1_000_000
            assert r["sent_ns"] < r["first_token_ns"] <= r["end_ns"] and len(r["chunk_ns"]) == 24
    # Items: measured requests walk the eval set in order across levels, as one process does.
    items = [f"item-{i}" for i in range(8)]
    walked = sorted((r["repeat"], r["item_id"]) for r in records if r["phase"] == "measure")
    assert walked == sorted((k // 8, items[k % 8]) for k in range(80))
    assert (run_dir / "locust-master.log").exists() and (run_dir / "locust-worker-1.log").exists()
    rebuilt = run_cli("report", str(run_dir), "--rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = orjson.loads((run_dir / "result.json").read_bytes())
    assert [lv["metrics"] for lv in again["levels"]] == [lv["metrics"] for lv in result["levels"]]


def test_rate_mode_splits_one_arrival_plan_across_workers(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "10", "--itl-ms", "1", "--output-tokens", "8", truth=False)
    load = {"pattern": "rate", "arrival": "poisson", "levels": [40], "duration_s": 3, "warmup": {"seconds": 0.5},
            "seed": 11, "max_in_flight": 32}
    scenario = write_scenario(tmp_path, {"name": "locust-rate", "targets": [_sim_target(sim.url)],
                                         "sampling": {"max_tokens": 8}, "load": load})
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet",
                   "--engine", "locust", "--workers", "2")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run_dir = only_run_dir(tmp_path / "runs")
    result = orjson.loads((run_dir / "result.json").read_bytes())
    _assert_gone(_engine_pids(result))
    level = result["levels"][0]
    # The same absolute plan as the single-process engine: count its admissions directly.
    window = LevelWindow(start_ns=0, warmup_s=0.5, duration_s=3.0)
    phases = []
    for offset in arrival_offsets_ns(40, "poisson", 11 * 1000 + 0):
        phase = window.admit(offset)
        if phase is None:
            break
        phases.append(phase)
    assert level["requests"]["measured"] == phases.count("measure")
    assert level["requests"]["warmup"] == phases.count("warmup")
    records = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    seqs = sorted(r["seq"] for r in records)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # every arrival of the plan, once
    # Each worker sent its own slice; arrivals are spaced by the plan, not by the responses.
    assert abs(level["throughput"]["achieved_rate_per_s"] - 40) / 40 < 0.25
    m = level["metrics"]
    assert m["client_lag_ms"]["count"] == level["requests"]["ok"]
    assert m["ttft_from_scheduled_ms"]["p50"] >= m["ttft_ms"]["p50"]
    assert all(r["scheduled_ns"] <= r["sent_ns"] for r in records)


def test_a_lost_worker_is_reported_and_its_records_kept(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "20", "--itl-ms", "5", "--output-tokens", "20", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "locust-loss",
        "targets": [_sim_target(sim.url)],
        "sampling": {"max_tokens": 20},
        "load": {"pattern": "concurrency", "levels": [4, 6], "duration_s": 7},
    })
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out), "--quiet",
                             "--engine", "locust", "--workers", "2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def records_from_both() -> bool:
            files = list(out.glob("*/records.jsonl")) if out.exists() else []
            return bool(files) and files[0].read_bytes().count(b"\n") >= 40
        assert wait_for(records_from_both, timeout=60)
        workers = _locust_children(proc, "locust-worker")
        assert len(workers) == 2
        victim = workers[0]
        victim.kill()  # SIGKILL: no goodbye, only missing heartbeats tell
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr + stdout
    assert "Traceback" not in stderr
    assert "was lost" in stdout
    run_dir = only_run_dir(out)
    result = orjson.loads((run_dir / "result.json").read_bytes())
    lost = result["engine"]["lost_workers"]
    assert len(lost) == 1 and lost[0]["pid"] == victim.pid and lost[0]["received"] > 0
    assert any("was lost during sim @ 4" in n for n in result["notes"])
    records = load_records(run_dir)
    by_level = [lv for lv in result["levels"]]
    assert len(by_level) == 2
    # Nothing received is dropped: the result counts every record in the file.
    assert sum(lv["requests"]["measured"] + lv["requests"]["warmup"] for lv in by_level) == len(records)
    # The second level ran on the survivor, which Locust gave all six users.
    second = [r for r in records if r["request_id"].startswith("sim-L1-")]
    assert second and all(r["error"] is None for r in second)
    _assert_gone(_engine_pids(result))


def test_interrupt_cancels_in_flight_requests_and_ends_every_process(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "50", "--itl-ms", "20", "--output-tokens", "100", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "locust-interrupt",
        "targets": [_sim_target(sim.url)],
        "sampling": {"max_tokens": 100},
        "load": {"pattern": "concurrency", "levels": [4, 8], "duration_s": 60},
    })
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out), "--quiet",
                             "--engine", "locust", "--workers", "2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def enough() -> bool:
            files = list(out.glob("*/records.jsonl")) if out.exists() else []
            return bool(files) and files[0].read_bytes().count(b"\n") >= 8
        assert wait_for(enough, timeout=60)
        children = _children(proc)
        assert len(children) >= 3  # master + 2 workers
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr + stdout
    assert "Traceback" not in stderr + stdout
    _assert_gone([c.pid for c in children])
    run_dir = only_run_dir(out)
    records = load_records(run_dir)
    cancelled = [r for r in records if r["error"] == "cancelled"]
    assert len(cancelled) == 4  # the four users' in-flight requests, from both workers
    result = orjson.loads((run_dir / "result.json").read_bytes())
    assert result["complete"] is False and result["interrupted"] == "SIGINT"
    assert result["levels"][0]["requests"]["errors"] == {"cancelled": 4}
    assert result["levels"][0]["error_rate"] == 0.0


def test_a_killed_sweep_takes_its_master_and_workers_with_it(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "20", "--itl-ms", "5", "--output-tokens", "20", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "locust-orphans", "targets": [_sim_target(sim.url)], "sampling": {"max_tokens": 20},
        "load": {"pattern": "concurrency", "levels": [2], "duration_s": 60},
    })
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out), "--quiet",
                             "--engine", "locust", "--workers", "2"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(_locust_children(proc, "locust-worker")) == 2, timeout=60)
        assert wait_for(lambda: out.exists() and any(f.stat().st_size for f in out.glob("*/records.jsonl")), 60)
        children = _children(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _assert_gone([c.pid for c in children], timeout=15)


def test_locust_engine_usage_errors_are_one_line(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path, {
        "name": "x", "targets": [_sim_target("http://127.0.0.1:9")],
        "load": {"pattern": "concurrency", "levels": [1], "requests": 1},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--engine", "locust",
                   "--locust-bind", "nowhere")
    assert proc.returncode == 2 and "--locust-bind" in proc.stderr and proc.stderr.count("\n") == 1
    proc = run_cli("locust-worker", "--master", "nope")
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr
    started = time.monotonic()
    proc = run_cli("locust-worker", "--help")
    assert proc.returncode == 0 and "--master" in proc.stdout and time.monotonic() - started < 10


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_worker_started_by_hand_joins_and_its_clock_is_measured(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "20", "--itl-ms", "2", "--output-tokens", "10")
    scenario = write_scenario(tmp_path, {
        "name": "locust-remote", "targets": [_sim_target(sim.url)], "sampling": {"max_tokens": 10},
        "load": {"pattern": "concurrency", "levels": [4], "requests": 40},
    })
    port = _free_port()
    out = tmp_path / "runs"
    sweep = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out), "--quiet",
                              "--engine", "locust", "--workers", "1", "--remote-workers", "1",
                              "--locust-bind", f"127.0.0.1:{port}"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Another boot id: the master treats it as a host with its own clock and measures the offset.
    remote = subprocess.Popen([sys.executable, "-m", "bench.cli", "locust-worker", "--master", f"127.0.0.1:{port}"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "BENCHBOX_BOOT_ID": "another-host"})
    try:
        stdout, stderr = sweep.communicate(timeout=120)
        remote_out, _ = remote.communicate(timeout=30)  # the master's quit ends it
    finally:
        for proc in (sweep, remote):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert sweep.returncode == 0, stderr + stdout
    assert remote.returncode == 0, remote_out
    assert "waiting for 1 remote worker" in stdout and "loopback" in stdout
    run_dir = only_run_dir(out)
    result = orjson.loads((run_dir / "result.json").read_bytes())
    workers = {w["pid"]: w for w in result["engine"]["workers"]}
    assert remote.pid in workers and len(workers) == 2
    synced = workers[remote.pid]
    assert synced["rtt_ns"] is not None and synced["rtt_ns"] < 50_000_000
    assert abs(synced["offset_ns"]) <= synced["rtt_ns"]  # same clock really: offset within the round trip
    level = result["levels"][0]
    assert level["requests"]["measured"] == level["requests"]["ok"] == 40
    truth = sim.truth()
    records = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    # Shifted records still line up with the simulator's clock within the offset estimate's error.
    for r in records:
        t = truth[r["request_id"]]
        assert r["first_token_ns"] - t["chunk_ns"][0] > -synced["rtt_ns"] - 1_000_000
    _assert_gone(_engine_pids(result))


def test_an_unreachable_target_stops_every_worker(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "locust-down",
        "targets": [_sim_target(sim.url), {"name": "down", "role": "candidate", "url": "http://127.0.0.1:9",
                                           "model": "x", "timeout_s": 5}],
        "sampling": {"max_tokens": 4},
        "load": {"pattern": "concurrency", "levels": [2], "duration_s": 6},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet", "--engine", "locust",
                   "--workers", "2", timeout=180)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run_dir = only_run_dir(tmp_path / "runs")
    result = orjson.loads((run_dir / "result.json").read_bytes())
    down = [lv for lv in result["levels"] if lv["target"] == "down"]
    assert len(down) == 1 and set(down[0]["requests"]["errors"]) == {"connect"}
    assert any("down @ 2: endpoint unreachable" in n for n in result["notes"])
    assert down[0]["requests"]["measured"] < 200  # refused connections pause; no busy loop of records
    sim_levels = [lv for lv in result["levels"] if lv["target"] == "sim"]
    assert len(sim_levels) == 1 and all(lv["requests"]["ok"] == lv["requests"]["measured"] for lv in sim_levels)
    _assert_gone(_engine_pids(result))


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")
def test_https_targets_verify_certificates_on_workers(tmp_path: Path, start_sim) -> None:
    from tests.integration.test_tls import TlsProxy, make_cert

    sim = start_sim("--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4", truth=False)
    cert, key = make_cert(tmp_path)
    proxy = TlsProxy(int(sim.url.rsplit(":", 1)[1]), cert, key)
    try:
        scenario = write_scenario(tmp_path, {
            "name": "locust-tls",
            "targets": [{"name": "secure", "role": "baseline", "url": f"https://127.0.0.1:{proxy.port}",
                         "model": "sim-model", "timeout_s": 10}],
            "sampling": {"max_tokens": 4},
            "load": {"pattern": "concurrency", "levels": [2], "requests": 6},
        })
        args = ["--quiet", "--engine", "locust", "--workers", "2"]
        refused = run_cli("sweep", str(scenario), "--out", str(tmp_path / "a"), *args)
        trusted = run_cli("sweep", str(scenario), "--out", str(tmp_path / "b"), *args, "--ca-file", str(cert))
    finally:
        proxy.close()
    assert refused.returncode == 0 and trusted.returncode == 0, refused.stderr + trusted.stderr
    bad = load_records(only_run_dir(tmp_path / "a"))
    assert bad and all(r["error"] == "connect" and "certificate" in r["error_detail"].lower() for r in bad)
    good = load_records(only_run_dir(tmp_path / "b"))
    assert len(good) == 6 and all(r["error"] is None for r in good)


def test_every_fault_is_the_same_classified_record_on_workers(tmp_path: Path, start_sim) -> None:
    """The chaos simulator's faults, mixed, through the gevent client: each record gets its own
    fault's class (the same table as the asyncio engine's), kept-alive connections closed under
    a request are resent once, and retries under a policy are records per attempt."""
    from tests.integration.test_chaos import EXPECTED, FAST

    modes = ["http_500", "http_429", "abort", "reset", "truncate", "stall", "malformed_json", "error_event",
             "oversize", "bad_utf8", "close", "drop_idle"]
    sim = start_sim(*FAST, "--chaos", ",".join(f"{m}=0.06" for m in modes))
    scenario = write_scenario(tmp_path, {
        "name": "locust-chaos",
        "targets": [{**_sim_target(sim.url), "timeout_s": 0.5, "max_response_bytes": 65536}],
        "sampling": {"max_tokens": 8},
        "load": {"pattern": "concurrency", "levels": [3], "requests": 72,
                 "retries": {"max": 1, "on": [429], "backoff_s": 0.01, "respect_retry_after": False}},
        "observability": {"scrape_server_metrics": False},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet", "--engine", "locust",
                   "--workers", "2")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run_dir = only_run_dir(tmp_path / "runs")
    result = orjson.loads((run_dir / "result.json").read_bytes())
    records = load_records(run_dir)
    assert len([r for r in records if not r["retried"]]) == 72
    assert wait_for(lambda: {r["request_id"] for r in records} <= set(sim.truth()), timeout=10)
    truth = sim.truth()
    drawn = set()
    for r in records:
        fault = truth[r["request_id"]]["fault"]
        drawn.add(fault)
        if r["retried"]:
            assert fault == "http_429" and r["error"] == "http_429"
            continue
        assert r["error"] == EXPECTED[fault], (fault, r["error"], r["error_detail"])
    assert len(drawn - {"none"}) >= 10, drawn
    retried = [r for r in records if r["retried"]]
    assert retried and all(any(x["request_id"] == r["request_id"] + "-a2" for x in records) for r in retried)
    level = result["levels"][0]
    assert level["requests"]["measured"] == 72
    _assert_gone(_engine_pids(result))


def test_an_interrupted_locust_sweep_resumes_where_it_stopped(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--ttft-ms", "20", "--itl-ms", "20", "--output-tokens", "12", truth=False)
    scenario = write_scenario(tmp_path, {
        "name": "locust-resume", "targets": [_sim_target(sim.url)], "sampling": {"max_tokens": 12},
        "load": {"pattern": "concurrency", "levels": [2, 3], "requests": 12},
    })
    out = tmp_path / "runs"
    args = ["--quiet", "--engine", "locust", "--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out), *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def into_second_level() -> bool:
            files = list(out.glob("*/records.jsonl")) if out.exists() else []
            return bool(files) and b'"sim-L1-' in files[0].read_bytes()
        assert wait_for(into_second_level, timeout=60)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    run_dir = only_run_dir(out)
    resumed = run_cli("sweep", "--resume", str(run_dir), *args)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    result = orjson.loads((run_dir / "result.json").read_bytes())
    assert result["complete"] is True
    assert [(lv["level"], lv["requests"]["measured"]) for lv in result["levels"]] == [(2, 12), (3, 12)]
    # The resumed level continues the eval set after the finished one: positions 12..23.
    second = [r for r in load_records(run_dir) if r["level"] == 3 and r["phase"] == "measure" and r["resume"] == 1]
    assert sorted((r["repeat"], r["item_id"]) for r in second) == sorted((k // 8, f"item-{k % 8}") for k in range(12, 24))
    _assert_gone(_engine_pids(result))
