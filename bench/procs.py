"""Small helpers for the processes benchbox launches: how many CPUs it may use, a log's tail."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_count() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def tail_file(path: Path, n: int = 20, window: int = 256 * 1024) -> str:
    """The last ``n`` lines of a (possibly large, possibly missing) log file; "" if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - window))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])
