"""Everything around the hot path must be fast too: `benchbox --help`, and scoring and report
generation for a run of 100,000 records.

Makes a real run directory (a short sweep of the voice eval set against `benchbox sim`, baseline
and candidate), then grows its records.jsonl to ``--records`` by repeating the measured records
under new request numbers (repeats of the eval set, as a long sweep would have), and times:

- ``benchbox --help``                       (target: < 300 ms)
- ``benchbox report RUN --rebuild``         (result.json from records, terminal table, report.html; < 30 s)
- ``benchbox score RUN``                    (the quality pass on every record; < 30 s)

    python benchmarks/offline_speed.py [--records 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent
BENCHBOX = [sys.executable, "-m", "bench.cli"]


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def make_run(work: Path) -> Path:
    sim = subprocess.Popen([sys.executable, "-m", "bench.sim", "--port", "0", "--ttft-ms", "0", "--itl-ms", "0",
                            "--output-tokens", "12"], stdout=subprocess.PIPE, cwd=REPO)
    url = sim.stdout.readline().decode().strip().rsplit(" ", 1)[-1]
    try:
        scenario = work / "offline.yaml"
        scenario.write_text(yaml.safe_dump({
            "name": "offline-speed", "dataset": str(REPO / "quality" / "voice.jsonl"),
            "targets": [{"name": "base", "role": "baseline", "url": url, "model": "sim"},
                        {"name": "cand", "role": "candidate", "url": url, "model": "sim"}],
            "sampling": {"max_tokens": 12},
            "load": {"pattern": "concurrency", "levels": [8], "requests": 240},
            "quality": {"scorers": [{"name": "label", "labels_from_meta": "labels"}, {"name": "refusal"}],
                        "primary": "label_correct"},
        }))
        proc = subprocess.run([*BENCHBOX, "sweep", str(scenario), "--out", str(work / "runs"), "--quiet",
                               "--allow-path", str(REPO / "quality")],
                              cwd=REPO, capture_output=True, text=True)
        if proc.returncode not in (0, 1, 3):
            raise SystemExit(f"sweep failed: {proc.stderr.strip().splitlines()[-1:]}")
    finally:
        sim.terminate()
        sim.wait()
    return next((work / "runs").iterdir())


def grow(run_dir: Path, total: int) -> int:
    lines = (run_dir / "records.jsonl").read_bytes().splitlines()
    measured = [orjson.loads(line) for line in lines]
    measured = [r for r in measured if r["phase"] == "measure"]
    per_target: dict[str, list[dict]] = {}
    for r in measured:
        per_target.setdefault(r["target"], []).append(r)
    want = total // len(per_target)
    with open(run_dir / "records.jsonl", "wb") as fh:
        for name, recs in per_target.items():
            recs.sort(key=lambda r: r["seq"])
            for k in range(want):
                r = dict(recs[k % len(recs)])
                r["seq"], r["repeat"] = k, k // len(recs)
                r["request_id"] = f"{name}-L0-m{k}"
                fh.write(orjson.dumps(r) + b"\n")
    return want * len(per_target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "offline_speed.json")
    args = ap.parse_args()
    helps = [timed([sys.executable, "-m", "bench.cli", "--help"])[0] for _ in range(5)]
    exe = [timed([str(Path(sys.executable).parent / "benchbox"), "--help"])[0] for _ in range(5)]
    print(f"benchbox --help: median {1000 * statistics.median(exe):.0f} ms "
          f"(python -m bench.cli --help: {1000 * statistics.median(helps):.0f} ms)")
    with tempfile.TemporaryDirectory(prefix="bb-offline-") as tmp:
        run_dir = make_run(Path(tmp))
        n = grow(run_dir, args.records)
        size_mb = (run_dir / "records.jsonl").stat().st_size / 1e6
        print(f"run with {n:,} records ({size_mb:.0f} MB records.jsonl)")
        report_s, proc = timed([*BENCHBOX, "report", str(run_dir), "--rebuild"])
        ok_report = proc.returncode == 0 and (run_dir / "report.html").exists()
        print(f"benchbox report --rebuild: {report_s:.1f} s{'' if ok_report else ' FAILED: ' + proc.stderr[-300:]}")
        score_s, proc = timed([*BENCHBOX, "score", str(run_dir)])
        ok_score = proc.returncode in (0, 1, 3)
        print(f"benchbox score:            {score_s:.1f} s{'' if ok_score else ' FAILED: ' + proc.stderr[-300:]}")
        result = orjson.loads((run_dir / "result.json").read_bytes())
        measured = sum(lv["requests"]["measured"] for lv in result["levels"])
        assert measured == n, (measured, n)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"records": n, "help_ms": 1000 * statistics.median(exe),
                                     "report_rebuild_s": report_s, "score_s": score_s}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
