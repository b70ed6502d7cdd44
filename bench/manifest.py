"""The manifest: everything needed to reproduce a run and decide if two runs compare.

Secrets never enter it: headers are listed by name only, API keys by the name of the
environment variable that holds them.
"""

from __future__ import annotations

import os
import platform
import time
import urllib.error
import urllib.request
from time import perf_counter_ns
from typing import Any, Optional

import orjson

from bench import __version__
from bench.dataset import Dataset
from bench.scenario import LoadedScenario, Target


def host_facts() -> dict[str, Any]:
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_facts(),
    }
    try:
        import psutil

        facts["memory_bytes"] = psutil.virtual_memory().total
    except Exception:  # psutil is a dependency, but the manifest must never fail a run
        pass
    return facts


def gpu_facts() -> Optional[list[dict[str, Any]]]:
    """GPUs seen through NVML, or None when NVML (or a GPU) is absent — not an error."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_total_bytes": int(mem.total)})
        return out
    finally:
        pynvml.nvmlShutdown()


def target_as_configured(t: Target) -> dict[str, Any]:
    data = t.model_dump(mode="json", exclude={"headers"})
    data["headers"] = sorted(t.headers)  # names only: values may be secrets
    return data


def fetch_models(base_url: str, headers: dict[str, str], timeout_s: float = 10.0, ctx: Any = None) -> Any:
    """What the server says it serves (``GET /v1/models``); an error string if it cannot say.
    ``ctx``: the target's TLS context, the same the load uses."""
    req = urllib.request.Request(base_url.rstrip("/") + "/v1/models", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ctx) as resp:  # noqa: S310 (http(s) only, validated)
            return orjson.loads(resp.read(1_000_000))
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return {"error": f"GET /v1/models failed: {reason}"}


def build_manifest(loaded: LoadedScenario, dataset: Dataset, run_id: str) -> dict[str, Any]:
    sc = loaded.scenario
    return {
        "schema_version": 1,
        "run_id": run_id,
        "benchbox_version": __version__,
        "created_unix": time.time(),
        # One anchor maps every perf_counter_ns timestamp in records to wall-clock time.
        "clock_anchor": {"perf_counter_ns": perf_counter_ns(), "unix_ns": time.time_ns()},
        "scenario": {
            "name": sc.name,
            "description": sc.description,
            "path": str(loaded.path),
            "sha256": loaded.sha256,
            "load": sc.load.model_dump(mode="json"),
            "repeats": sc.repeats,
            "slo": sc.slo.model_dump(mode="json"),
            "gates": list(sc.gates),
        },
        "dataset": {
            "path": str(dataset.path),
            "sha256": dataset.sha256,
            "items": len(dataset.items),
            "slices": dataset.slice_counts(),
        },
        "sampling": sc.sampling.model_dump(mode="json"),
        "targets": {t.name: {"configured": target_as_configured(t)} for t in sc.targets},
        "host": host_facts(),
    }
