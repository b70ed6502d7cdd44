"""Shared helpers: start processes on loopback, write scenarios, run the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


class SimProcess:
    """A `benchbox sim` subprocess; ``url`` once it printed its listening line."""

    def __init__(self, args: list[str], truth_log: Optional[Path]):
        cmd = [sys.executable, "-m", "bench.sim", "--port", "0", *args]
        if truth_log is not None:
            cmd += ["--truth-log", str(truth_log)]
        self.truth_log = truth_log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                                     start_new_session=True)
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r} {self.proc.stderr.read().decode()[-500:]}")
        self.url = line.strip().rsplit(" ", 1)[-1]

    def truth(self) -> dict[str, dict[str, Any]]:
        assert self.truth_log is not None
        out = {}
        for line in self.truth_log.read_bytes().splitlines():
            rec = orjson.loads(line)
            out[rec["request_id"]] = rec
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Any]:
    started: list[SimProcess] = []

    def start(*args: str, truth: bool = True) -> SimProcess:
        sim = SimProcess(list(args), tmp_path / f"truth-{len(started)}.jsonl" if truth else None)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def write_items(path: Path, n: int = 8, max_tokens: Optional[int] = None) -> Path:
    with open(path, "wb") as fh:
        for i in range(n):
            item: dict[str, Any] = {
                "id": f"item-{i}",
                "messages": [{"role": "user", "content": f"question number {i} about something"}],
                "reference": f"answer {i}",
                "slices": ["easy" if i % 2 else "hard"],
            }
            if max_tokens:
                item["max_tokens"] = max_tokens
            fh.write(orjson.dumps(item) + b"\n")
    return path


def write_scenario(folder: Path, scenario: dict[str, Any], name: str = "scenario.yaml") -> Path:
    if "dataset" not in scenario:
        write_items(folder / "items.jsonl")
        scenario = {**scenario, "dataset": "items.jsonl"}
    path = folder / name
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def run_cli(*args: str, timeout: float = 300, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, env={**os.environ, **(env or {})},
    )


def only_run_dir(out: Path) -> Path:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (run_dir / "records.jsonl").read_bytes().splitlines() if line.strip()]


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
