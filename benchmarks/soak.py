"""Does a long, fast sweep keep a flat memory and file-descriptor footprint?

Runs `benchbox sweep` against `benchbox sim` in rate mode (open loop, short responses) for
``--minutes`` and samples the sweep process's resident memory (RSS) and open file descriptors
every minute (every 10 s for runs of 5 minutes or less). Records stream to disk and histograms
are fixed-size, so RSS should rise while the interpreter and pools warm up and then stay flat.
Prints a table and writes JSON. A benchmark, not a test (the numbers are memory, not timing).

    nice -n 10 python benchmarks/soak.py [--minutes 30] [--rate 200] [--tokens 8]

Columns: elapsed minutes, sweep RSS (MiB), its change since the first sample after warm-up,
open fds, the simulator's RSS, and how many records the sweep had written.
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
from typing import Any, Optional

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results" / "soak.json"


def start_sim(tokens: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "bench.sim", "--port", "0", "--ttft-ms", "5", "--itl-ms", "1",
           "--output-tokens", str(tokens)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO,
                            start_new_session=True)
    line = proc.stdout.readline().decode()  # type: ignore[union-attr]
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1]


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return 0


def sample(proc: psutil.Process, sim: psutil.Process, records: Path, t0: float) -> Optional[dict[str, Any]]:
    try:
        rss = proc.memory_info().rss
        fds = proc.num_fds()
    except psutil.Error:
        return None
    try:
        sim_rss = sim.memory_info().rss
    except psutil.Error:
        sim_rss = None
    return {"elapsed_s": round(time.monotonic() - t0, 1), "rss_mib": round(rss / 2**20, 1), "fds": fds,
            "sim_rss_mib": round(sim_rss / 2**20, 1) if sim_rss else None, "records": count_lines(records)}


def run(minutes: float, rate: float, tokens: int, keep: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bb-soak-"))
    sim_proc, url = start_sim(tokens)
    try:
        items = work / "items.jsonl"
        items.write_text("".join(json.dumps({"id": f"i{i}", "messages": [{"role": "user", "content": f"q {i}"}]})
                                 + "\n" for i in range(256)))
        scenario = work / "soak.yaml"
        scenario.write_text(yaml.safe_dump({
            "name": "soak", "dataset": "items.jsonl",
            "targets": [{"name": "sim", "role": "baseline", "url": url, "model": "sim-model", "timeout_s": 30}],
            "sampling": {"max_tokens": tokens},
            "load": {"pattern": "rate", "arrival": "poisson", "levels": [rate], "max_in_flight": 256,
                     "duration_s": minutes * 60, "seed": 1},
        }, sort_keys=False))
        out = work / "runs"
        interval = 10.0 if minutes <= 5 else 60.0
        t0 = time.monotonic()
        sweep = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out),
                                  "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        proc, sim = psutil.Process(sweep.pid), psutil.Process(sim_proc.pid)
        samples: list[dict[str, Any]] = []
        records = None
        next_at = t0 + 1.0  # one early sample: the footprint before the first level warms up
        while sweep.poll() is None:
            if records is None and out.exists():
                found = list(out.glob("*/records.jsonl"))
                records = found[0] if found else None
            if time.monotonic() >= next_at:
                s = sample(proc, sim, records or out / "none", t0)
                if s is not None and s["elapsed_s"] <= minutes * 60 + 5:
                    samples.append(s)
                    print(fmt_row(s, samples), flush=True)
                next_at += interval if len(samples) > 1 else interval - 1.0
            time.sleep(0.2)
        output = sweep.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
        run_dir = records.parent if records else None
        result = json.loads((run_dir / "result.json").read_text()) if run_dir else {}
        level = (result.get("levels") or [{}])[0]
        summary = {
            "minutes": minutes, "rate_per_s": rate, "output_tokens": tokens, "sample_interval_s": interval,
            "exit_code": sweep.returncode, "samples": samples,
            "records": count_lines(records) if records else 0,
            "records_bytes": records.stat().st_size if records else 0,
            "achieved_rate_per_s": (level.get("throughput") or {}).get("achieved_rate_per_s"),
            "errors": (level.get("requests") or {}).get("errors"),
            "complete": result.get("complete"),
            "output_tail": output[-2000:] if sweep.returncode else "",
        }
        summary.update(growth(samples))
        return summary
    finally:
        sim_proc.terminate()
        try:
            sim_proc.wait(10)
        except subprocess.TimeoutExpired:
            sim_proc.kill()
            sim_proc.wait()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def growth(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS change after warm-up: from the sample at ~1/6 of the run to the last one (MiB, MiB/hour)."""
    if len(samples) < 3:
        return {}
    base = samples[max(1, len(samples) // 6)]
    last = samples[-1]
    hours = max(1e-9, (last["elapsed_s"] - base["elapsed_s"]) / 3600)
    delta = last["rss_mib"] - base["rss_mib"]
    return {"rss_first_mib": samples[0]["rss_mib"], "rss_after_warmup_mib": base["rss_mib"],
            "rss_last_mib": last["rss_mib"], "rss_max_mib": max(s["rss_mib"] for s in samples),
            "rss_growth_after_warmup_mib": round(delta, 1), "rss_growth_mib_per_hour": round(delta / hours, 1),
            "fds_min": min(s["fds"] for s in samples), "fds_max": max(s["fds"] for s in samples)}


def fmt_row(s: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    if len(samples) == 1:
        print(f"{'min':>6} {'rss MiB':>9} {'Δ MiB':>7} {'fds':>5} {'sim MiB':>8} {'records':>9}")
    d = s["rss_mib"] - samples[min(1, len(samples) - 1)]["rss_mib"]
    sim = f"{s['sim_rss_mib']:8.1f}" if s["sim_rss_mib"] is not None else f"{'-':>8}"
    return f"{s['elapsed_s'] / 60:6.1f} {s['rss_mib']:9.1f} {d:+7.1f} {s['fds']:5d} {sim} {s['records']:9d}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (rate mode, poisson)")
    ap.add_argument("--tokens", type=int, default=8, help="output tokens per response")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    summary = run(args.minutes, args.rate, args.tokens, args.keep)
    summary["host"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"exit {summary['exit_code']}, {summary['records']} records "
          f"({summary['records_bytes'] / 2**20:.0f} MiB), achieved {summary['achieved_rate_per_s']} req/s, "
          f"errors {summary['errors']}")
    if "rss_growth_after_warmup_mib" in summary:
        print(f"RSS {summary['rss_first_mib']} -> {summary['rss_after_warmup_mib']} (after warm-up) -> "
              f"{summary['rss_last_mib']} MiB; growth after warm-up {summary['rss_growth_after_warmup_mib']:+} MiB "
              f"({summary['rss_growth_mib_per_hour']:+} MiB/h); fds {summary['fds_min']}..{summary['fds_max']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
