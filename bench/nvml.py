"""GPU samples from NVML during a run: memory used/total, utilisation and power of every GPU.

``pynvml`` comes from the optional ``nvidia-ml-py`` package and is imported lazily, on the first probe.
Without the module, the NVIDIA driver or a GPU, ``probe()`` and ``level_summary()`` say
``{"available": False, "reason": ...}`` and ``run()`` returns at once: never an error.

Every GPU NVML sees is sampled (not only those in ``CUDA_VISIBLE_DEVICES``: a server under test in a container
uses the GPUs it was given, not this process's), unless ``indices`` names some. Samples go to the shared
``ServerMetricsWriter`` in the scrapers' shape, ``kind`` "nvml"; values (all gauges)::

    gpu_memory_used_bytes, gpu_memory_total_bytes   summed over the sampled GPUs
    gpu_utilization_pct                             mean over the GPUs (NVML's busy-time share, 0..100)
    gpu_power_w                                     summed
    gpu<i>_memory_used_bytes, gpu<i>_memory_total_bytes, gpu<i>_utilization_pct, gpu<i>_power_w   per GPU

A reading NVML does not support on a GPU (e.g. power on some boards) is left out, not an error.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from typing import Any, Optional, Sequence

from bench.scrape import LevelSeries, ServerMetricsWriter, write_sample

_INIT_LOCK = threading.Lock()


def _load_pynvml() -> Any:
    return importlib.import_module("pynvml")


class NvmlSampler:
    """Samples NVML every ``interval_s`` until cancelled; same run()/set_level()/level_summary() shape as
    ``bench.scrape.MetricsScraper``."""

    def __init__(self, out: Optional[ServerMetricsWriter], interval_s: float = 1.0, target: str = "gpu",
                 indices: Optional[Sequence[int]] = None):
        self.out = out
        self.interval_s = max(0.05, float(interval_s))
        self.target = target
        self.indices = list(indices) if indices is not None else None
        self.level: Optional[float] = None
        self.samples = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self.status: Optional[dict[str, Any]] = None      # probe()'s answer, once probed
        self.series = LevelSeries({})                     # every value is a gauge
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []

    # -- NVML (blocking; run in a worker thread by run()) --
    def probe(self) -> dict[str, Any]:
        """Initialise NVML once: ``{"available": True, "driver": ..., "gpus": [{index, name, uuid,
        memory_total_bytes}]}`` or ``{"available": False, "reason": ...}``."""
        with _INIT_LOCK:
            if self.status is None or (self.status["available"] and self._nvml is None):
                self.status = self._probe()
            return self.status

    def _probe(self) -> dict[str, Any]:
        try:
            nv = _load_pynvml()
        except ImportError:
            return {"available": False, "reason": "pynvml not installed (pip install nvidia-ml-py)"}
        try:
            nv.nvmlInit()
        except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            return {"available": False, "reason": f"NVML unavailable: {_text(e)}"}
        try:
            count = nv.nvmlDeviceGetCount()
            wanted = range(count) if self.indices is None else [i for i in self.indices if 0 <= i < count]
            handles = [(i, nv.nvmlDeviceGetHandleByIndex(i)) for i in wanted]
            if not handles:
                nv.nvmlShutdown()
                return {"available": False, "reason": f"no GPU visible to NVML ({count} found, "
                                                      f"indices {self.indices})"}
            gpus = []
            for i, h in handles:
                mem = _try(nv.nvmlDeviceGetMemoryInfo, h)
                gpus.append({"index": i, "name": _text(_try(nv.nvmlDeviceGetName, h)),
                             "uuid": _text(_try(nv.nvmlDeviceGetUUID, h)),
                             "memory_total_bytes": getattr(mem, "total", None)})
            driver = _text(_try(nv.nvmlSystemGetDriverVersion))
        except Exception as e:  # noqa: BLE001
            _try(nv.nvmlShutdown)
            return {"available": False, "reason": f"NVML error: {_text(e)}"}
        self._nvml, self._handles = nv, handles
        return {"available": True, "driver": driver, "gpus": gpus}

    def read(self) -> dict[str, float]:
        """One reading of every sampled GPU (probe() must have said available)."""
        nv, values = self._nvml, {}
        used = total = power = 0.0
        utils: list[float] = []
        have_power = False
        for i, h in self._handles:
            mem = _try(nv.nvmlDeviceGetMemoryInfo, h)
            if mem is not None:
                values[f"gpu{i}_memory_used_bytes"] = float(mem.used)
                values[f"gpu{i}_memory_total_bytes"] = float(mem.total)
                used += mem.used
                total += mem.total
            util = _try(nv.nvmlDeviceGetUtilizationRates, h)
            if util is not None:
                values[f"gpu{i}_utilization_pct"] = float(util.gpu)
                utils.append(float(util.gpu))
            mw = _try(nv.nvmlDeviceGetPowerUsage, h)
            if mw is not None:
                values[f"gpu{i}_power_w"] = mw / 1000.0
                power += mw / 1000.0
                have_power = True
        if total:
            values["gpu_memory_used_bytes"], values["gpu_memory_total_bytes"] = used, total
        if utils:
            values["gpu_utilization_pct"] = sum(utils) / len(utils)
        if have_power:
            values["gpu_power_w"] = power
        return values

    def shutdown(self) -> None:
        with _INIT_LOCK:
            if self._nvml is not None:
                _try(self._nvml.nvmlShutdown)
                self._nvml, self._handles = None, []  # status stays: level_summary() still reads it

    # -- the sampler --
    def set_level(self, level: Optional[float]) -> None:
        self.level = level

    def level_summary(self, level: Optional[float]) -> dict[str, Any]:
        status = self.status or {"available": False, "reason": "not started"}
        if not status["available"]:
            return {**status, "samples": 0, "errors": 0, "kind": "nvml"}
        return {**self.series.summary(level), "available": True, "kind": "nvml"}

    async def poll_once(self) -> dict[str, Any]:
        level, values, error = self.level, None, None
        try:
            values = await asyncio.to_thread(self.read)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed reading is data, not a crash
            error = f"NVML: {_text(e)}"
        t_ns = time.perf_counter_ns()
        self.series.add(t_ns, level, values if error is None else None)
        if error is None:
            self.samples += 1
        else:
            self.errors += 1
            self.last_error = error
        sample = {"t_ns": t_ns, "target": self.target, "level": level, "kind": "nvml",
                  "values": values or {}, "error": error}
        write_error = write_sample(self.out, sample)
        if write_error:
            self.last_error = write_error
        return sample

    async def run(self) -> None:
        """Sample until cancelled; returns at once when NVML or a GPU is not available."""
        status = await asyncio.to_thread(self.probe)
        if not status["available"]:
            return
        due = time.perf_counter()
        try:
            while True:
                await self.poll_once()
                due = max(due + self.interval_s, time.perf_counter())
                await asyncio.sleep(due - time.perf_counter())
        finally:
            self.shutdown()


def nvml_status(indices: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """A one-off probe (for a manifest): what probe() says, NVML shut down again afterwards."""
    s = NvmlSampler(None, indices=indices)
    try:
        return s.probe()
    finally:
        s.shutdown()


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends: leave the reading out
        return None


def _text(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, BaseException):
        return str(x) or type(x).__name__
    return x
