"""Bounded resources: a sweep gives back every file descriptor and thread it took.

The sweep runs in this process (``run_sweep_command``, as the CLI calls it) against `benchbox sim`
through several levels, with the live exporter on; /proc/self/fd is counted before and after. The
memory side (flat RSS over a long run) is benchmarks/soak.py's job, not a test's.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.dataset import load_dataset
from bench.scenario import load_scenario
from bench.sweep_cli import run_sweep_command
from tests.conftest import write_scenario

pytestmark = pytest.mark.integration


def fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd of the listdir itself, closed by now
            continue
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_sweep_releases_file_descriptors_and_threads(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim("--ttft-ms", "2", "--itl-ms", "1", "--output-tokens", "8", "--abort-rate", "0.1", truth=False)
    path = write_scenario(tmp_path, {
        "name": "fds",
        "targets": [{"name": "sim", "role": "baseline", "url": sim.url, "model": "sim-model"},
                    {"name": "down", "role": "candidate", "url": "http://127.0.0.1:9", "model": "m", "timeout_s": 2}],
        "sampling": {"max_tokens": 8},
        "load": {"pattern": "concurrency", "levels": [4, 16, 32], "requests": 64},
        "observability": {"prometheus_port": 0, "grace_s": 0},
        "quality": {"scorers": [{"name": "exact"}]},
    })
    loaded = load_scenario(path)
    dataset = load_dataset(loaded.resolve(loaded.scenario.dataset.path), loaded.scenario.dataset)

    def sweep() -> None:
        assert run_sweep_command(loaded, dataset, tmp_path / "runs", quiet=True) == 0

    sweep()  # the first one imports lazily and warms caches
    before, threads = fds(), threading.active_count()
    sweep()
    sweep()
    after = fds()
    leaked = {fd: target for fd, target in after.items() if fd not in before}
    assert not leaked, f"file descriptors left open by a sweep: {leaked}"
    assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
    assert len(list((tmp_path / "runs").iterdir())) == 3
