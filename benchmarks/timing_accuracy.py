"""How close are benchbox's TTFT/ITL to what the server really did?

Runs `benchbox sweep` against `benchbox sim` (TTFT 100 ms, ITL 10 ms, 128 tokens) at several
concurrency levels and compares, per request, benchbox's timestamps with the simulator's own
truth log (when it parsed each request and wrote each token; both processes use
CLOCK_MONOTONIC). Prints a table and writes JSON. Not part of the test suite.

    python benchmarks/timing_accuracy.py [--levels 1 64 256] [--pin]

Columns:
- TTFT p50/p99 reported by benchbox vs the same percentiles of the server-side truth
  (request parsed -> first token written),
- send lag: request sent (client) -> parsed (server): queueing at the server's ingestion,
  real latency that users see, not a client error,
- receive lag: token written (server) -> stamped (client): the client's own share of the error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def q(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def start_sim(truth: Path, pin: bool) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "bench.sim", "--port", "0", "--ttft-ms", "100", "--itl-ms", "10",
           "--output-tokens", "128", "--truth-log", str(truth)]
    if pin and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "1", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=REPO)
    line = proc.stdout.readline().decode()
    return proc, line.strip().rsplit(" ", 1)[-1]


def measure(users: int, pin: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bb-acc-"))
    truth_path = work / "truth.jsonl"
    sim, url = start_sim(truth_path, pin)
    try:
        items = work / "items.jsonl"
        items.write_text("".join(json.dumps({"id": f"i{i}", "messages": [{"role": "user", "content": f"q {i}"}]}) + "\n"
                                 for i in range(16)))
        scenario = work / "s.yaml"
        # At least 320 measured requests, so a p99 is not one request's number.
        scenario.write_text(yaml.safe_dump({
            "name": f"accuracy-{users}", "dataset": str(items),
            "targets": [{"name": "sim", "role": "baseline", "url": url, "model": "sim"}],
            "sampling": {"max_tokens": 128},
            "load": {"pattern": "concurrency", "levels": [users], "requests": max(320, 2 * users),
                     "warmup": {"requests": users}},
        }))
        cmd = [sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(work / "runs"), "--quiet"]
        if pin and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            cmd = ["taskset", "-c", "0", *cmd]
        t0 = time.monotonic()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        wall = time.monotonic() - t0
        run_dir = next((work / "runs").iterdir())
        result = json.loads((run_dir / "result.json").read_text())
        truth = {}
        for line in truth_path.read_text().splitlines():
            rec = json.loads(line)
            truth[rec["request_id"]] = rec
        recs = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
        recs = [r for r in recs if r["phase"] == "measure" and r["error"] is None]
        t_ttft = [(truth[r["request_id"]]["chunk_ns"][0] - truth[r["request_id"]]["received_ns"]) / 1e6 for r in recs]
        t_itl = [(b - a) / 1e6 for r in recs for a, b in zip(truth[r["request_id"]]["chunk_ns"],
                                                              truth[r["request_id"]]["chunk_ns"][1:])]
        # What a perfect client would report: the server's first write minus the send (server
        # queueing included: it is real latency), and benchbox's error against it per request.
        t_ttft_sent = [(truth[r["request_id"]]["chunk_ns"][0] - r["sent_ns"]) / 1e6 for r in recs]
        ttft_err = [(r["first_token_ns"] - truth[r["request_id"]]["chunk_ns"][0]) / 1e6 for r in recs]
        itl_err = [((c1 - c0) - (t1 - t0)) / 1e6 for r in recs
                   for (c0, c1), (t0, t1) in zip(zip(r["chunk_ns"], r["chunk_ns"][1:]),
                                                 zip(truth[r["request_id"]]["chunk_ns"],
                                                     truth[r["request_id"]]["chunk_ns"][1:]))]
        send_lag = [(truth[r["request_id"]]["received_ns"] - r["sent_ns"]) / 1e6 for r in recs]
        recv_lag = [(c - t) / 1e6 for r in recs for c, t in zip(r["chunk_ns"], truth[r["request_id"]]["chunk_ns"])]
        m = result["levels"][0]["metrics"]
        return {
            "users": users, "requests": len(recs), "wall_s": round(wall, 2),
            "ttft_p50": m["ttft_ms"]["p50"], "ttft_p99": m["ttft_ms"]["p99"],
            "truth_ttft_p50": q(t_ttft, 0.5), "truth_ttft_p99": q(t_ttft, 0.99),
            "truth_sent_ttft_p50": q(t_ttft_sent, 0.5), "truth_sent_ttft_p99": q(t_ttft_sent, 0.99),
            "ttft_err_p50": q(ttft_err, 0.5), "ttft_err_p99": q(ttft_err, 0.99),
            "itl_err_p50": q([abs(e) for e in itl_err], 0.5), "itl_err_p99": q([abs(e) for e in itl_err], 0.99),
            "itl_p50": m["itl_ms"]["p50"], "truth_itl_p50": q(t_itl, 0.5),
            "send_lag_p50": q(send_lag, 0.5), "send_lag_p99": q(send_lag, 0.99),
            "recv_lag_p50": q(recv_lag, 0.5), "recv_lag_p99": q(recv_lag, 0.99),
        }
    finally:
        sim.terminate()
        sim.wait()
        sim.stdout.close()
        shutil.rmtree(work, ignore_errors=True)


def print_table(rows: list[dict]) -> None:
    """truth(srv): the server's own request-parsed -> first-token time; truth(snd): server's
    first-token write - client send (what a perfect client reports, server queueing included);
    TTFT err: benchbox's first-token stamp - the server's write, per request; ITL err: |measured
    gap - true gap| per gap."""
    head = (f"{'users':>5} {'n':>5} | {'TTFT p50':>8} {'snd':>7} {'srv':>7} | {'TTFT p99':>8} {'snd':>7} {'srv':>7} | "
            f"{'err p50/p99':>13} | {'ITL p50':>7} {'truth':>6} {'|err| p50':>9} | {'send lag p50/p99':>16}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['users']:>5} {r['requests']:>5} | {r['ttft_p50']:8.2f} {r['truth_sent_ttft_p50']:7.2f} "
              f"{r['truth_ttft_p50']:7.2f} | {r['ttft_p99']:8.2f} {r['truth_sent_ttft_p99']:7.2f} "
              f"{r['truth_ttft_p99']:7.2f} | {r['ttft_err_p50']:5.2f} /{r['ttft_err_p99']:6.2f} | "
              f"{r['itl_p50']:7.3f} {r['truth_itl_p50']:6.3f} {r['itl_err_p50']:9.3f} | "
              f"{r['send_lag_p50']:7.2f} /{r['send_lag_p99']:7.2f}")
    print("(ms) snd: server first write - client send; srv: server parse -> first write; "
          "err: client stamp - server write")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--pin", action="store_true", help="client on CPU 0, simulator on CPU 1")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "timing_accuracy.json")
    args = parser.parse_args()
    rows = [measure(u, args.pin) for u in args.levels]
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"(ms; written to {args.json})")


if __name__ == "__main__":
    main()
