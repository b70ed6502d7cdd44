"""Faults the load path must survive: real sweeps (``python -m bench.cli sweep``) against the
chaos simulator (``benchbox sim --chaos``) on loopback.

Every test checks the same contract, then its own fault: each request is one record with an
error class (never a traceback, never lost), result.json is valid and complete, the counts add
up, and requests after the fault succeed. The simulator's truth log says which fault each
request id drew, so classifications are checked request by request, not only in aggregate.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import orjson
import pytest

from bench.records import ERROR_CLASSES
from bench.results import load_result
from tests.conftest import REPO, SimProcess, load_records, only_run_dir, run_cli, wait_for, write_scenario

pytestmark = pytest.mark.integration

FAST = ("--ttft-ms", "3", "--itl-ms", "1", "--output-tokens", "8")
# What a correct client makes of each fault the simulator injects (None: a success).
EXPECTED = {
    "none": None, "close": None, "drop_idle": None,
    "http_500": "http_5xx", "http_429": "http_429", "http_429_bare": "http_429",
    "abort": "broken_stream", "reset": "broken_stream", "malformed_json": "broken_stream",
    "error_event": "broken_stream", "oversize": "broken_stream", "bad_utf8": "broken_stream",
    "stall": "timeout", "trickle": "timeout", "truncate": "truncated",
}


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    run_dir: Path
    result: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def level(self) -> dict[str, Any]:
        (level,) = self.result["levels"]
        return level


def sweep(tmp_path: Path, url: str, requests: int = 12, users: int = 2, timeout_s: float = 5.0,
          target: Optional[dict[str, Any]] = None, load: Optional[dict[str, Any]] = None) -> Run:
    """One target, one level, no warm-up: exactly ``requests`` measured requests."""
    scenario = write_scenario(tmp_path, {
        "name": "chaos",
        "targets": [{"name": "sim", "role": "baseline", "url": url, "model": "sim-model",
                     "timeout_s": timeout_s, **(target or {})}],
        "sampling": {"max_tokens": 8},
        "load": {"pattern": "concurrency", "levels": [users], "requests": requests, **(load or {})},
        "observability": {"scrape_server_metrics": False},
    })
    out = tmp_path / "runs"
    proc = run_cli("sweep", str(scenario), "--out", str(out), "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    run_dir = only_run_dir(out)
    result = load_result(run_dir / "result.json").model_dump()  # valid against the schema
    return Run(proc, run_dir, result, load_records(run_dir))


def check_contract(run: Run, requests: int) -> None:
    """Nothing lost, everything classified, the counts add up, the run completed."""
    assert run.result["complete"] is True and not run.result["failures"]
    finals = [r for r in run.records if not r["retried"]]
    assert len(finals) == requests  # one final record per request sent
    assert sorted(r["seq"] for r in finals) == list(range(requests))
    level = run.level
    req = level["requests"]
    assert req["measured"] == requests
    assert req["ok"] + sum(req["errors"].values()) == requests
    assert req["failed"] == sum(req["errors"].values())
    counted = collections.Counter(r["error"] for r in finals if r["error"])
    assert req["errors"] == dict(counted)
    for r in run.records:
        if r["error"] is not None:
            assert r["error"] in ERROR_CLASSES and r["error_detail"]
    # Latencies come from the successes only.
    assert level["metrics"]["e2e_ms"]["count"] == req["ok"]
    if req["measured"]:
        assert level["error_rate"] == pytest.approx(req["failed"] / req["measured"])


def truth_faults(sim: SimProcess, request_ids: list[str]) -> dict[str, str]:
    """request id -> the fault the simulator drew (waits for requests ended by a client hang-up)."""
    assert wait_for(lambda: set(request_ids) <= set(sim.truth()), timeout=10), "truth log incomplete"
    truth = sim.truth()
    return {rid: truth[rid]["fault"] for rid in request_ids}


def check_classes(run: Run, sim: SimProcess) -> collections.Counter[str]:
    """Every record's class is what its injected fault calls for; returns the faults drawn."""
    faults = truth_faults(sim, [r["request_id"] for r in run.records])
    for r in run.records:
        assert r["error"] == EXPECTED[faults[r["request_id"]]], (faults[r["request_id"]], r["error_detail"])
    return collections.Counter(faults.values())


def check_continued(run: Run) -> None:
    """Requests issued after the first failure still succeed: the fault did not stop the run."""
    failed = [r["seq"] for r in run.records if r["error"]]
    assert failed, "no fault was injected"
    assert any(r["error"] is None and r["seq"] > min(failed) for r in run.records)


# One test per fault mode: (simulator options, scenario target options, a detail to find).
CASES: dict[str, tuple[tuple[str, ...], dict[str, Any], str]] = {
    "http_500": (("--chaos", "http_500=0.3"), {}, "HTTP 500"),
    "http_429": (("--chaos", "http_429=0.3", "--retry-after-s", "7"), {}, "(Retry-After: 7)"),
    "http_429_bare": (("--chaos", "http_429_bare=0.3"), {}, "rate_limit_error"),
    "abort": (("--chaos", "abort=0.3"), {}, "connection closed by the server mid-response"),
    "reset": (("--chaos", "reset=0.3"), {}, "Connection reset by peer"),
    "truncate": (("--chaos", "truncate=0.3"), {}, "stream ended without [DONE] or finish_reason"),
    "stall": (("--chaos", "stall=0.3"), {"timeout_s": 0.5}, "no complete response within 0.5 s"),
    "trickle": (("--chaos", "trickle=0.3", "--trickle-ms", "2"), {"timeout_s": 0.5}, "within 0.5 s"),
    "malformed_json": (("--chaos", "malformed_json=0.3"), {}, "malformed stream event"),
    "error_event": (("--chaos", "error_event=0.3"), {}, "error in stream: 'simulated failure"),
    "oversize": (("--chaos", "oversize=0.3"), {"max_response_bytes": 65536}, "exceeded 65536 bytes"),
    "bad_utf8": (("--chaos", "bad_utf8=0.3"), {}, "not valid UTF-8"),
}


@pytest.mark.parametrize("mode", list(CASES))
def test_fault_is_a_classified_record_and_the_run_continues(tmp_path: Path, start_sim, mode: str) -> None:
    sim_args, target, detail = CASES[mode]
    sim = start_sim(*FAST, *sim_args)
    run = sweep(tmp_path, sim.url, requests=12, target=target)
    check_contract(run, 12)
    drawn = check_classes(run, sim)
    assert drawn[mode] >= 2 and drawn["none"] >= 2, drawn  # the seeded share gives both kinds
    check_continued(run)
    expected_class = EXPECTED[mode]
    failed = [r for r in run.records if r["error"]]
    assert run.level["requests"]["errors"] == {expected_class: drawn[mode]}
    assert all(detail in r["error_detail"] for r in failed), failed[0]["error_detail"]
    if mode == "http_429_bare":
        assert not any("Retry-After" in r["error_detail"] for r in failed)
    if mode in ("abort", "reset", "truncate", "malformed_json", "error_event", "oversize", "bad_utf8", "stall"):
        # The tokens that did arrive are kept with the failure (half of the 8, at the fault point).
        assert all(r["output_text"] for r in failed)
    # Success records after a fault carry the whole answer, with usage.
    assert all(r["output_tokens"] == 8 and r["finish_reason"] for r in run.records if r["error"] is None)


def test_every_fault_at_once_in_rate_mode(tmp_path: Path, start_sim) -> None:
    """Open loop (arrivals on a fixed plan) with all per-request modes mixed: each record still gets
    its own fault's class, and arrivals never wait for the misbehaving server."""
    modes = ["http_500", "http_429", "abort", "reset", "truncate", "stall", "malformed_json", "error_event",
             "oversize", "bad_utf8", "close"]
    sim = start_sim(*FAST, "--chaos", ",".join(f"{m}=0.06" for m in modes))
    run = sweep(tmp_path, sim.url, requests=60, timeout_s=0.5, target={"max_response_bytes": 65536},
                load={"pattern": "rate", "levels": [60], "arrival": "constant"})
    check_contract(run, 60)
    drawn = check_classes(run, sim)
    assert len(set(drawn) - {"none"}) >= 10, drawn  # seed 0: all 11 modes among the first 60
    check_continued(run)
    lag = run.level["metrics"]["client_lag_ms"]
    assert lag["p99"] < 50  # stalled requests held no arrival back


def test_trickled_response_within_the_timeout_is_whole_and_ok(tmp_path: Path, start_sim) -> None:
    """One byte at a time splits every HTTP and SSE frame at every offset: still a correct answer."""
    sim = start_sim("--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4", "--chaos", "trickle=1",
                    "--trickle-ms", "0.2")
    run = sweep(tmp_path, sim.url, requests=4, timeout_s=20)
    check_contract(run, 4)
    assert set(truth_faults(sim, [r["request_id"] for r in run.records]).values()) == {"trickle"}
    assert run.level["requests"]["ok"] == 4
    for r in run.records:
        assert r["output_tokens"] == 4 and len(r["chunk_ns"]) == 4 and len(r["output_text"].split()) == 4
        # Trickled: the answer took hundreds of one-byte reads, so E2E is far above the sim's 4 ms.
        assert (r["end_ns"] - r["sent_ns"]) / 1e6 > 100


def test_keep_alive_connections_closed_at_random(tmp_path: Path, start_sim) -> None:
    """The server announces keep-alive, then closes: no request may fail for it (a request
    that raced the close never reached a handler and is resent once on a fresh connection)."""
    sim = start_sim(*FAST, "--chaos", "close=0.5")
    run = sweep(tmp_path, sim.url, requests=24, users=2)
    check_contract(run, 24)
    assert run.level["requests"]["ok"] == 24
    truth = sim.truth()
    closes = sum(1 for t in truth.values() if t["fault"] == "close")
    assert closes >= 6
    # A fresh connection after (nearly) every close: the pool never reused a closed one.
    assert sum(r["new_connection"] for r in run.records) >= closes
    print(f"keep-alive close: {closes} closes in {len(truth)} server requests for 24 client requests, all ok")


def test_kept_alive_connection_closed_as_a_request_arrives(tmp_path: Path, start_sim) -> None:
    """The race every keep-alive client meets: the server's idle timeout closes the connection as
    the next request arrives. That request never reached a handler: it is resent once on a fresh
    connection (its latency counts from the first try) and succeeds; nothing is lost or doubled."""
    sim = start_sim(*FAST, "--chaos", "drop_idle=0.5")
    run = sweep(tmp_path, sim.url, requests=24, users=2)
    check_contract(run, 24)
    assert run.level["requests"]["ok"] == 24 and len(run.records) == 24
    lines = [orjson.loads(line) for line in sim.truth_log.read_bytes().splitlines()]
    dropped = [t["request_id"] for t in lines if t["fault"] == "drop_idle"]
    assert len(dropped) >= 3  # benchbox stops pooling after 3 such resends (a server that does this)
    answered = {t["request_id"] for t in lines if t["status"] == 200}
    assert set(dropped) <= answered  # each dropped request was answered on its resend
    assert len(lines) == 24 + len(dropped)
    resent = [r for r in run.records if r["request_id"] in dropped]
    assert all(r["new_connection"] for r in resent)
    print(f"keep-alive race: {len(dropped)} requests dropped unanswered, all resent once, 24/24 ok")


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = sweep(tmp_path, f"http://127.0.0.1:{port}", requests=5)
    check_contract(run, 5)
    assert run.level["requests"]["errors"] == {"connect": 5}
    assert all("cannot connect" in r["error_detail"] for r in run.records)
    assert not any("unreachable" in n for n in run.result["notes"])  # 5 refusals are not an outage


def test_server_outage_and_comeback(tmp_path: Path, start_sim) -> None:
    """The simulator drops every connection and stops listening for 1 s at its 10th request."""
    sim = start_sim(*FAST, "--outage-at", "10", "--outage-s", "1")
    run = sweep(tmp_path, sim.url, requests=50, users=2)
    check_contract(run, 50)
    errors = run.level["requests"]["errors"]
    assert set(errors) <= {"connect", "broken_stream"} and errors.get("connect", 0) >= 2, errors
    # Closed-loop users pause 0.2 s after a refusal: a 1 s outage is a dozen records, not thousands.
    assert errors["connect"] <= 30
    connect = [r for r in run.records if r["error"] == "connect"]
    assert all("Connection refused" in r["error_detail"] for r in connect)
    back = [r for r in run.records if r["error"] is None and r["sent_ns"] > max(c["end_ns"] for c in connect)]
    assert len(back) >= 20  # it came back on the same port, and the run went on
    print(f"outage 1 s at 2 users: {errors} of 50, {len(back)} ok after it")
    assert not any("unreachable" in n for n in run.result["notes"])
    assert "outage" in {t["fault"] for t in sim.truth().values()}


def test_simulator_killed_and_restarted_on_the_same_port(tmp_path: Path) -> None:
    """SIGKILL the server process mid-sweep; start a new one on the same port a second later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--ttft-ms", "3", "--itl-ms", "5", "--output-tokens", "8", "--port", str(port)]
    first = SimProcess(args, None)
    scenario = write_scenario(tmp_path, {
        "name": "killed",
        "targets": [{"name": "sim", "role": "baseline", "url": first.url, "model": "sim-model", "timeout_s": 5}],
        "sampling": {"max_tokens": 8},
        "load": {"pattern": "concurrency", "levels": [2], "duration_s": 4},
        "observability": {"scrape_server_metrics": False},
    })
    out = tmp_path / "runs"
    sweep_proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out),
                                   "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second: Optional[SimProcess] = None
    try:
        def records_so_far() -> int:
            files = list(out.glob("*/records.jsonl")) if out.exists() else []
            return files[0].read_bytes().count(b"\n") if files else 0
        assert wait_for(lambda: records_so_far() >= 10, timeout=30)
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        time.sleep(0.8)
        second = SimProcess(args, None)
        stdout, stderr = sweep_proc.communicate(timeout=60)
    finally:
        if sweep_proc.poll() is None:
            sweep_proc.kill()
            sweep_proc.communicate()
        first.stop()
        if second is not None:
            second.stop()
    assert sweep_proc.returncode == 0, stderr
    assert "Traceback" not in stdout + stderr
    run_dir = only_run_dir(out)
    run = Run(subprocess.CompletedProcess([], 0, stdout, stderr), run_dir,
              load_result(run_dir / "result.json").model_dump(), load_records(run_dir))
    check_contract(run, len(run.records))
    errors = run.level["requests"]["errors"]
    assert set(errors) <= {"connect", "broken_stream"} and errors, errors
    killed_at = min(r["end_ns"] for r in run.records if r["error"])
    after = sum(1 for r in run.records if r["error"] is None and r["sent_ns"] > killed_at)
    assert after >= 10
    print(f"SIGKILL + restart 0.8 s later: {len(run.records)} records, {errors}, {after} ok after the kill")


def test_retry_policy_records_every_attempt_and_keeps_latency_honest(tmp_path: Path, start_sim) -> None:
    sim = start_sim(*FAST, "--chaos", "http_429=0.4", "--retry-after-s", "0.3")
    run = sweep(tmp_path, sim.url, requests=12, load={"retries": {"max": 2, "on": [429], "max_wait_s": 5}})
    check_contract(run, 12)
    faults = truth_faults(sim, [r["request_id"] for r in run.records])
    retried = [r for r in run.records if r["retried"]]
    assert retried and all(r["error"] == "http_429" and faults[r["request_id"]] == "http_429" for r in retried)
    by_seq = collections.defaultdict(list)
    for r in run.records:
        by_seq[r["seq"]].append(r)
    for seq, attempts in by_seq.items():
        attempts.sort(key=lambda r: r["attempt"])
        assert [r["attempt"] for r in attempts] == list(range(1, len(attempts) + 1))
        assert all(r["retried"] for r in attempts[:-1]) and not attempts[-1]["retried"]
        assert len({r["item_id"] for r in attempts}) == 1
        assert attempts[-1]["request_id"] == (f"sim-L0-m{seq}" if len(attempts) == 1
                                              else f"sim-L0-m{seq}-a{len(attempts)}")
        for before, after in zip(attempts, attempts[1:]):  # Retry-After: 0.3 was waited for
            assert (after["sent_ns"] - before["end_ns"]) / 1e9 >= 0.29
        if len(attempts) == 3:  # max 2 retries: a third 429 is the answer
            assert attempts[-1]["error"] in (None, "http_429")
    level = run.level
    assert level["requests"]["retried"] == {"http_429": len(retried)}
    # Replaced attempts are neither requests nor latencies: TTFT is the final answers' only.
    assert level["metrics"]["ttft_ms"]["count"] == level["requests"]["ok"]
    assert level["metrics"]["ttft_ms"]["max"] < 200  # no Retry-After wait inside any latency
    assert "retried attempts" in run.proc.stdout
    print(f"retries: 12 requests, {len(retried)} replaced attempts, finals {level['requests']['errors'] or 'all ok'}")


def test_without_a_retry_policy_a_429_is_never_retried(tmp_path: Path, start_sim) -> None:
    sim = start_sim(*FAST, "--chaos", "http_429=0.5", "--retry-after-s", "0")
    run = sweep(tmp_path, sim.url, requests=8)
    check_contract(run, 8)
    assert len(run.records) == 8 and not any(r["retried"] or r["attempt"] != 1 for r in run.records)
    assert len(sim.truth()) == 8  # the server saw exactly one request per record
    assert run.level["requests"]["retried"] == {}
