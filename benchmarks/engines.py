"""The asyncio engine and the locust engine on the same scenario: same TTFT? how many streams/s?

Two measurements, each through the real ``benchbox sweep`` CLI against ``benchbox sim``:

1. **Agreement** - one scenario (closed loop, ``--users`` streams, simulator TTFT 100 ms,
   ITL 10 ms, 128 tokens) run by ``--engine asyncio`` and by ``--engine locust`` with one and
   with ``--locust-workers`` workers, alternating, ``--rounds`` times. Reported: each run's TTFT p50/p99 (benchbox's merged
   result), the same percentiles of the simulator's own truth log (request parsed -> first
   token written; CLOCK_MONOTONIC is shared on one host), and the engines' difference.
2. **Throughput** - the simulator with zero delays (each 32-token stream in one write) and
   levels of ``--levels`` users for ``--seconds`` each; the most completed streams/s any level
   sustained, per engine configuration, with the load generator's own saturation flags.

Not part of the test suite. The numbers depend on the host; on a small shared machine the
simulator, the sweep process, the Locust master and its workers all compete for the same cores.

    python benchmarks/engines.py [--users 16] [--requests 400] [--rounds 2] [--levels 64 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def q(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, -(-len(values) * round(p * 1000) // 1000) - 1))]


def start_sim(args: list[str], truth: Path | None = None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "bench.sim", "--port", "0", *args]
    if truth is not None:
        cmd += ["--truth-log", str(truth)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=REPO)
    line = proc.stdout.readline().decode()  # type: ignore[union-attr]
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_scenario(work: Path, name: str, url: str, max_tokens: int, load: dict[str, Any]) -> Path:
    items = work / "items.jsonl"
    if not items.exists():
        items.write_text("".join(json.dumps({"id": f"i{i}", "messages": [{"role": "user", "content": f"q {i}"}]})
                                 + "\n" for i in range(64)))
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "dataset": str(items),
        "targets": [{"name": "sim", "role": "baseline", "url": url, "model": "sim"}],
        "sampling": {"max_tokens": max_tokens}, "load": load,
    }))
    return path


def sweep(scenario: Path, out: Path, engine_args: list[str]) -> tuple[Path, float]:
    cmd = [sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out), "--quiet", *engine_args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(engine_args) or 'asyncio'}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    return run_dir, time.monotonic() - t0


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def agreement(work: Path, users: int, requests: int, rounds: int, workers: int) -> list[dict[str, Any]]:
    truth_path = work / "truth.jsonl"
    sim, url = start_sim(["--ttft-ms", "100", "--itl-ms", "10", "--output-tokens", "128"], truth_path)
    rows = []
    try:
        scenario = write_scenario(work, f"agree-{users}", url, 128, {
            "pattern": "concurrency", "levels": [users], "requests": requests, "warmup": {"requests": users}})
        for r in range(rounds):
            configs = [("asyncio", []), ("locust x1", ["--engine", "locust", "--workers", "1"])]
            if workers > 1:
                configs.append((f"locust x{workers}", ["--engine", "locust", "--workers", str(workers)]))
            for label, args in configs:
                run_dir, wall = sweep(scenario, work / "runs", args)
                level = load_json(run_dir / "result.json")["levels"][0]
                truth = {}
                for line in truth_path.read_text().splitlines():
                    rec = json.loads(line)
                    truth[rec["request_id"]] = rec
                recs = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines()]
                recs = [x for x in recs if x["phase"] == "measure" and x["error"] is None and x["request_id"] in truth]
                t_ttft = [(truth[x["request_id"]]["chunk_ns"][0] - truth[x["request_id"]]["received_ns"]) / 1e6
                          for x in recs]
                recv = [(x["first_token_ns"] - truth[x["request_id"]]["chunk_ns"][0]) / 1e6 for x in recs]
                send = [(truth[x["request_id"]]["received_ns"] - x["sent_ns"]) / 1e6 for x in recs]
                ttft = level["metrics"]["ttft_ms"]
                rows.append({
                    "round": r, "engine": label, "n": level["requests"]["ok"], "wall_s": round(wall, 1),
                    "ttft_p50": ttft["p50"], "ttft_p99": ttft["p99"],
                    "truth_ttft_p50": round(q(t_ttft, 0.5), 3), "truth_ttft_p99": round(q(t_ttft, 0.99), 3),
                    "recv_lag_p50": round(q(recv, 0.5), 3), "recv_lag_p99": round(q(recv, 0.99), 3),
                    "send_lag_p50": round(q(send, 0.5), 3), "send_lag_p99": round(q(send, 0.99), 3),
                    "saturated": level.get("client", {}).get("saturated"),
                })
                truth_path.write_text("")  # the next run's truth only
    finally:
        stop(sim)
    return rows


def throughput(work: Path, levels: list[int], seconds: float, configs: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    sim, url = start_sim(["--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", "32"])
    rows = []
    try:
        scenario = write_scenario(work, "throughput", url, 32, {
            "pattern": "concurrency", "levels": levels, "duration_s": seconds, "warmup": {"seconds": 1}})
        for label, args in configs:
            run_dir, wall = sweep(scenario, work / "runs", args)
            result = load_json(run_dir / "result.json")
            for lv in result["levels"]:
                client = lv.get("client", {})
                rows.append({
                    "engine": label, "users": int(lv["level"]), "ok": lv["requests"]["ok"],
                    "errors": lv["requests"]["failed"], "streams_per_s": round(lv["throughput"]["requests_per_s"] or 0, 1),
                    "tokens_per_s": round(lv["throughput"]["output_tokens_per_s"] or 0),
                    "ttft_p50": lv["metrics"]["ttft_ms"]["p50"], "ttft_p99": lv["metrics"]["ttft_ms"]["p99"],
                    "saturated": client.get("saturated"), "reasons": client.get("reasons", []),
                })
    finally:
        stop(sim)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--locust-workers", type=int, default=2)
    parser.add_argument("--levels", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "engines.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bb-engines-"))
    try:
        agree = [] if args.skip_agreement else agreement(work, args.users, args.requests, args.rounds,
                                                          args.locust_workers)
        print(f"TTFT agreement: sim TTFT 100 ms, ITL 10 ms, 128 tokens; {args.users} users, "
              f"{args.requests} measured requests per run")
        print(f"{'round':>5} {'engine':<11} {'n':>4} | {'TTFT p50':>8} {'truth':>7} | {'TTFT p99':>8} {'truth':>7} | "
              f"{'send lag p50/p99':>17} | {'recv lag p50/p99':>17} | saturated")
        for r in agree:
            print(f"{r['round']:>5} {r['engine']:<11} {r['n']:>4} | {r['ttft_p50']:8.2f} {r['truth_ttft_p50']:7.2f} | "
                  f"{r['ttft_p99']:8.2f} {r['truth_ttft_p99']:7.2f} | {r['send_lag_p50']:7.3f} /{r['send_lag_p99']:7.3f} | "
                  f"{r['recv_lag_p50']:7.3f} /{r['recv_lag_p99']:7.3f} | {r['saturated']}")
        diffs = []
        for rnd in range(args.rounds if agree else 0):
            base, *others = [r for r in agree if r["round"] == rnd]
            for o in others:
                diffs.append({"round": rnd, "engine": o["engine"], "p50": round(o["ttft_p50"] - base["ttft_p50"], 3),
                              "p99": round(o["ttft_p99"] - base["ttft_p99"], 3)})
                print(f"round {rnd}: {o['engine']} - asyncio: TTFT p50 {diffs[-1]['p50']:+.2f} ms, "
                      f"p99 {diffs[-1]['p99']:+.2f} ms")
        if diffs:
            worst = max(max(abs(d["p50"]), abs(d["p99"])) for d in diffs)
            print(f"largest |difference| over rounds: {worst:.2f} ms")
            for engine in dict.fromkeys(r["engine"] for r in agree):
                mine = [r for r in agree if r["engine"] == engine]
                p50s, p99s = [r["ttft_p50"] for r in mine], [r["ttft_p99"] for r in mine]
                print(f"{engine:<11} median of rounds: TTFT p50 {q(p50s, 0.5):.2f} ms, p99 {q(p99s, 0.5):.2f} ms; "
                      f"round-to-round range p50 {max(p50s) - min(p50s):.2f} ms, p99 {max(p99s) - min(p99s):.2f} ms")
        tput: list[dict[str, Any]] = []
        if not args.skip_throughput:
            n = args.locust_workers
            configs = [("asyncio", []), ("asyncio w2", ["--workers", "2"]),
                       ("locust x1", ["--engine", "locust", "--workers", "1"]),
                       (f"locust x{n}", ["--engine", "locust", "--workers", str(n)])]
            tput = throughput(work, args.levels, args.seconds, configs)
            print(f"\nthroughput: sim with zero delays, 32-token streams, {args.seconds:g} s per level")
            print(f"{'engine':<11} {'users':>5} {'ok':>6} {'err':>4} | {'streams/s':>9} {'tok/s':>8} | "
                  f"{'TTFT p50':>8} {'p99':>7} | saturated")
            for r in tput:
                print(f"{r['engine']:<11} {r['users']:>5} {r['ok']:>6} {r['errors']:>4} | {r['streams_per_s']:9.1f} "
                      f"{r['tokens_per_s']:8d} | {r['ttft_p50']:8.2f} {r['ttft_p99']:7.2f} | "
                      f"{'; '.join(r['reasons']) if r['saturated'] else 'no'}")
            best: dict[str, float] = {}
            for r in tput:
                best[r["engine"]] = max(best.get(r["engine"], 0.0), r["streams_per_s"])
            print("max streams/s: " + ", ".join(f"{k} {v:.0f}" for k, v in best.items()))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "host": {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                     "python": platform.python_version(), "machine": platform.machine(),
                     "loadavg_at_end": os.getloadavg()},
            "agreement": agree, "differences": diffs, "throughput": tput,
        }, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
