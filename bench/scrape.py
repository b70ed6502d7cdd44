"""Server metrics during a run: poll each target's Prometheus ``/metrics``, map its names to logical metrics.

One ``MetricsScraper`` per target polls every ``interval_s`` (default 1 s) on its own connection (urllib in a
worker thread, ``Connection: close``, no proxies, timeout below the interval), never through the load
generator's pool. ``prometheus_client.parser`` parses the text; ``bench/metric_maps.yaml`` (server kind ->
logical metric -> ordered candidates) maps it onto kv_cache_usage (0..1), requests_running, requests_waiting,
preemptions*, prompt_tokens*, generation_tokens*, gpu_memory_used_bytes (* counters) and, for llama.cpp,
kv_cache_resident. The kind is detected from the names when not given. Each poll appends one JSON line::

    {"t_ns": perf_counter_ns at the response, "target": ..., "level": the level when the poll was sent,
     "kind": "vllm", "values": {logical: value}, "error": null | "what went wrong"}

A failed poll is such a line with ``error`` set and no values: counted, never raised (a failed llama.cpp
``/slots`` read adds ``"slots_error"`` and leaves the slot-derived values out).

llama.cpp: current llama-server builds export no KV-cache gauge (``llamacpp:kv_cache_usage_ratio`` is gone),
so the scraper also reads ``GET /slots`` (``slots_url``, default: the metrics URL ending in ``/slots``) and
derives the fill from it: see ``slots_kv_usage``.

``set_level(level)`` tags the samples that follow and polls at once, so each level starts (and the previous
one ends) with a sample at its boundary; ``level_summary(level)`` reduces that level's samples.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional, Union

import orjson
import yaml

MAPS_PATH = Path(__file__).with_name("metric_maps.yaml")
MAX_BODY = 16 * 1024 * 1024
_AGGS = {"sum": sum, "max": max, "min": min, "mean": lambda v: sum(v) / len(v)}
_CANDIDATE_KEYS = {"name", "labels", "agg", "scale"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy


# ---------------------------------------------------------------------------------------------- the name maps
@functools.lru_cache(maxsize=4)
def load_maps(path: Union[str, Path] = MAPS_PATH) -> dict[str, Any]:
    """The validated maps: ``{"logical": {...}, "servers": {kind: {"detect": [...], "metrics": {...}}}}``."""
    maps = yaml.safe_load(Path(path).read_text())
    logical = maps.get("logical") or {}
    for name, spec in logical.items():
        if spec.get("type") not in ("gauge", "counter") or spec.get("agg", "sum") not in _AGGS:
            raise ValueError(f"{path}: logical.{name}: needs type gauge|counter and agg sum|mean|max|min")
    for kind, server in (maps.get("servers") or {}).items():
        if not server.get("detect"):
            raise ValueError(f"{path}: servers.{kind}: needs detect prefixes")
        for metric, candidates in (server.get("metrics") or {}).items():
            if metric not in logical:
                raise ValueError(f"{path}: servers.{kind}.metrics.{metric}: not a logical metric")
            for c in candidates:
                _check_candidate(c, f"{path}: servers.{kind}.metrics.{metric}")
    return maps


def _check_candidate(c: Any, where: str) -> None:
    if isinstance(c, str):
        return
    if not isinstance(c, dict):
        raise ValueError(f"{where}: a candidate is a name or a mapping, not {c!r}")
    if "ratio" in c:
        if set(c) != {"ratio"} or len(c["ratio"]) != 2:
            raise ValueError(f"{where}: ratio takes exactly [numerator, denominator]")
        for part in c["ratio"]:
            _check_candidate(part, where)
    elif "slots" in c:
        if set(c) != {"slots"} or c["slots"] not in ("processing", "all"):
            raise ValueError(f"{where}: slots is processing or all")
    elif "name" not in c or set(c) - _CANDIDATE_KEYS or c.get("agg", "sum") not in _AGGS:
        raise ValueError(f"{where}: unknown candidate {c!r}")


def metric_types(maps: Optional[dict] = None) -> dict[str, str]:
    """Logical metric -> "gauge" | "counter"."""
    return {k: v["type"] for k, v in (maps or load_maps())["logical"].items()}


def uses_slots(kind: Optional[str], maps: Optional[dict] = None) -> bool:
    """Whether this kind's map reads llama.cpp's ``/slots``."""
    server = (maps or load_maps())["servers"].get(kind or "") or {}

    def has(c: Any) -> bool:
        return isinstance(c, dict) and ("slots" in c or any(has(p) for p in c.get("ratio", ())))
    return any(has(c) for cands in (server.get("metrics") or {}).values() for c in cands)


# ------------------------------------------------------------------------------------------ parsing (pure)
Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_samples(text: str) -> Samples:
    """Prometheus text -> sample name -> [(labels, value)] (histogram/summary parts under their own names)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            v = float(s.value)
            if math.isfinite(v):
                out.setdefault(s.name, []).append((dict(s.labels), v))
    return out


def detect_kind(samples: Samples, maps: Optional[dict] = None) -> str:
    """The first server kind (file order) whose detect prefixes match a sample name; "unknown" otherwise."""
    for kind, server in (maps or load_maps())["servers"].items():
        prefixes = tuple(server["detect"])
        if any(name.startswith(prefixes) for name in samples):
            return kind
    return "unknown"


def slots_kv_usage(slots: Any, mode: str = "processing") -> Optional[float]:
    """KV-cache fill of a llama-server from its ``GET /slots`` answer (a list, one object per slot).

    tokens(slot) = ``n_prompt_tokens``: the length of the slot's cached token sequence (prompt *and* the
    tokens generated so far; older builds: ``n_past``); an idle slot that never ran a task reports none (0).
    mode "processing": sum(tokens of slots with ``is_processing`` true) / sum(``n_ctx`` of all slots), the KV
    held by running requests (what vLLM's and SGLang's usage gauges mean). mode "all": every slot's tokens,
    idle ones included (llama-server keeps a finished request's tokens in its slot for prompt-cache reuse).
    ``n_ctx`` is the slot's share of the context: the denominator is the whole cache when it is split per
    slot (kv_unified false, which is what ``-np N`` gives). With a unified cache every slot reports the full
    context and the fraction reads n_slots times too low. None when the answer has no usable slot.
    """
    if not isinstance(slots, list):
        return None
    total = used = 0
    for s in slots:
        if not isinstance(s, dict):
            continue
        total += int(s.get("n_ctx") or 0)
        busy = s["is_processing"] if "is_processing" in s else s.get("state", 0) != 0
        if mode == "all" or busy:
            used += int(s.get("n_prompt_tokens", s.get("n_past", 0)) or 0)
    return used / total if total > 0 else None


def _value(c: Any, samples: Samples, slots: Any, agg: str) -> Optional[float]:
    if isinstance(c, str):
        c = {"name": c}
    if "ratio" in c:
        num, den = (_value(p, samples, slots, agg) for p in c["ratio"])
        return num / den if num is not None and den else None
    if "slots" in c:
        return slots_kv_usage(slots, c["slots"]) if slots is not None else None
    want = c.get("labels") or {}
    vals = [v for labels, v in samples.get(c["name"], ())
            if all(labels.get(k) in (w if isinstance(w, list) else [w]) for k, w in want.items())]
    if not vals:
        return None
    return _AGGS[c.get("agg", agg)](vals) * c.get("scale", 1)


def map_samples(samples: Samples, kind: str, slots: Any = None,
                maps: Optional[dict] = None) -> dict[str, float]:
    """Logical values of one kind from parsed samples (and llama.cpp's /slots answer, if any)."""
    maps = maps or load_maps()
    out: dict[str, float] = {}
    server = maps["servers"].get(kind) or {}
    for metric, candidates in (server.get("metrics") or {}).items():
        agg = maps["logical"][metric].get("agg", "sum")
        for c in candidates:
            v = _value(c, samples, slots, agg)
            if v is not None:
                out[metric] = v
                break
    return out


def parse_metrics(text: str, kind: Optional[str] = None, slots: Any = None) -> tuple[str, dict[str, float]]:
    """Pure: Prometheus text (and optionally llama.cpp's parsed /slots list) -> (kind, {logical: value}).

    ``kind`` None detects it from the names; an unknown detected kind maps nothing. Raises ValueError on text
    the Prometheus parser rejects or a kind the maps do not know.
    """
    maps = load_maps()
    if kind is not None and kind not in maps["servers"]:
        raise ValueError(f"unknown server kind {kind!r} (known: {', '.join(maps['servers'])})")
    samples = parse_samples(text)
    kind = kind or detect_kind(samples, maps)
    return kind, map_samples(samples, kind, slots, maps)


# ------------------------------------------------------------------------------------------ level summaries
def _reset_safe_delta(values: list[float]) -> float:
    """Counter increase over a sequence: a drop means the server restarted its counter from 0."""
    return sum(b - a if b >= a else b for a, b in zip(values, values[1:]))


class LevelSeries:
    """Samples kept in memory for per-level summaries (values None = a failed poll)."""

    def __init__(self, types: Optional[dict[str, str]] = None):
        self.types = types if types is not None else metric_types()
        self.rows: list[tuple[int, Optional[float], Optional[dict[str, float]]]] = []

    def add(self, t_ns: int, level: Optional[float], values: Optional[dict[str, float]]) -> None:
        self.rows.append((t_ns, level, values))

    def summary(self, level: Optional[float]) -> dict[str, Any]:
        """Per metric: gauges {mean, max, last, n}; counters {delta, rate_per_s, n}; plus samples, errors.

        Counters are read per contiguous run of this level's samples, closed by the sample that follows the
        run (set_level polls at once, so that one is taken at the boundary): delta sums the runs' reset-safe
        increases, rate_per_s divides it by the runs' spans. A level that ran twice (repeats) pools both.
        """
        rows = self.rows
        idx = [i for i, r in enumerate(rows) if r[1] == level]
        ok = [rows[i] for i in idx if rows[i][2] is not None]
        out: dict[str, Any] = {"samples": len(ok), "errors": len(idx) - len(ok)}
        runs: list[list[int]] = []
        for i in idx:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        names = sorted({k for r in ok for k in r[2]})
        for name in names:
            if self.types.get(name, "gauge") == "counter":
                delta, span, n = 0.0, 0, 0
                for run in runs:
                    seq = [rows[i] for i in run] + ([rows[run[-1] + 1]] if run[-1] + 1 < len(rows) else [])
                    pts = [(t, v[name]) for t, _, v in seq if v is not None and name in v]
                    n += sum(1 for i in run if rows[i][2] and name in rows[i][2])
                    if len(pts) >= 2:
                        delta += _reset_safe_delta([v for _, v in pts])
                        span += pts[-1][0] - pts[0][0]
                out[name] = {"delta": delta, "rate_per_s": delta / (span / 1e9) if span > 0 else None, "n": n}
            else:
                vals = [r[2][name] for r in ok if name in r[2]]
                out[name] = {"mean": sum(vals) / len(vals), "max": max(vals), "last": vals[-1],
                             "n": len(vals)}
        return out


# ---------------------------------------------------------------------------------------------- the writer
class ServerMetricsWriter:
    """Appends samples as JSON lines to ``run_dir/server_metrics.jsonl``, flushed per line; shared by every
    scraper and the NVML sampler (thread-safe). Writes after close() are dropped and counted."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0

    def write(self, sample: dict) -> None:
        line = orjson.dumps(sample, default=str) + b"\n"
        with self._lock:
            if self._f is None:
                self.dropped += 1
                return
            self._f.write(line)
            self._f.flush()
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


# ---------------------------------------------------------------------------------------------- the scraper
def _http_get(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": "text/plain", "Connection": "close",
                                               "User-Agent": "benchbox-scraper"})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            body = resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as e:
        e.close()                                          # it holds the response (and its socket) open
        raise
    if len(body) > MAX_BODY:
        raise ValueError(f"response over {MAX_BODY // (1024 * 1024)} MiB")
    return body


def _describe(e: BaseException, timeout: float) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)) or "timed out" in str(e):
        return f"timeout after {timeout:g} s"
    if isinstance(e, urllib.error.URLError):
        return f"connect: {e.reason}"
    return f"{type(e).__name__}: {e}"[:300]


def write_sample(out: Any, sample: dict) -> Optional[str]:
    """Write one sample; a failed write is reported back (never raised): sampling must not end a run."""
    if out is None:
        return None
    try:
        out.write(sample)
    except (OSError, ValueError, TypeError) as e:
        return f"write: {e}"
    return None


class MetricsScraper:
    """Polls one target's ``/metrics`` until cancelled; see the module docstring."""

    def __init__(self, target: str, url: str, out: ServerMetricsWriter, interval_s: float = 1.0,
                 kind: Optional[str] = None, slots_url: Optional[str] = None,
                 timeout_s: Optional[float] = None):
        maps = load_maps()
        if kind is not None and kind not in maps["servers"]:
            raise ValueError(f"unknown server kind {kind!r} (known: {', '.join(maps['servers'])})")
        self.target, self.url, self.out = target, url, out
        self.interval_s = max(0.05, float(interval_s))
        self.timeout_s = min(float(timeout_s or 0.8 * self.interval_s), 0.95 * self.interval_s)
        self.kind = kind                                   # the detected kind once known
        if slots_url is None and url.endswith("/metrics"):
            slots_url = url[: -len("/metrics")] + "/slots"
        self.slots_url = slots_url
        self.slots_off: Optional[str] = None               # why /slots is no longer polled
        self.level: Optional[float] = None
        self.samples = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self.series = LevelSeries(metric_types(maps))
        self._wake: Optional[asyncio.Event] = None
        self._stopping = False

    def stop(self) -> None:
        """End run() at its next step (the caller still cancels and awaits the task)."""
        self._stopping = True
        if getattr(self, "_wake", None) is not None:
            self._wake.set()

    def set_level(self, level: Optional[float]) -> None:
        """Tag the samples that follow with ``level`` and poll now (call from the event loop's thread)."""
        self.level = level
        if self._wake is not None:
            self._wake.set()

    def level_summary(self, level: Optional[float]) -> dict[str, Any]:
        return {**self.series.summary(level), "kind": self.kind}

    async def _get(self, url: str) -> bytes:
        return await asyncio.wait_for(asyncio.to_thread(_http_get, url, self.timeout_s), self.timeout_s)

    async def _get_slots(self) -> tuple[Any, Optional[str]]:
        try:
            data = orjson.loads(await self._get(self.slots_url))
            return data, None
        except Exception as e:  # noqa: BLE001 - a poll never raises
            msg = _describe(e, self.timeout_s)
            if isinstance(e, (urllib.error.HTTPError, orjson.JSONDecodeError)):
                self.slots_off = f"/slots: {msg}"          # answered, but not with slots: stop asking
            return None, msg

    async def poll_once(self) -> dict[str, Any]:
        """One poll: fetch, parse, record, write. Never raises (bar cancellation)."""
        level, kind, values, error, slots_error = self.level, self.kind, None, None, None
        want_slots = self.slots_url is not None and self.slots_off is None
        try:
            if kind is not None and want_slots and uses_slots(kind):
                body, (slots, slots_error) = await asyncio.gather(self._get(self.url), self._get_slots())
            else:
                body, slots = await self._get(self.url), None
            samples = parse_samples(body.decode("utf-8", "replace"))
            kind = kind or detect_kind(samples)
            if slots is None and slots_error is None and want_slots and uses_slots(kind):
                slots, slots_error = await self._get_slots()
            values = map_samples(samples, kind, slots)
            if kind != "unknown":
                self.kind = kind
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a failed poll is data, not a crash
            error = _describe(e, self.timeout_s)
        t_ns = time.perf_counter_ns()
        sample = {"t_ns": t_ns, "target": self.target, "level": level, "kind": kind,
                  "values": values or {}, "error": error}
        if slots_error:
            sample["slots_error"] = slots_error
        if error is None:
            self.samples += 1
        else:
            self.errors += 1
            self.last_error = error
        self.series.add(t_ns, level, values if error is None else None)
        write_error = write_sample(self.out, sample)
        if write_error:
            self.last_error = write_error
        return sample

    async def run(self) -> None:
        """Poll every ``interval_s`` (at once after set_level) until cancelled; never raises otherwise."""
        self._wake = asyncio.Event()
        due = time.perf_counter()
        # Stop on a flag as well as on cancellation: on Python < 3.12, wait_for() can swallow a
        # cancel that arrives together with a wake-up (set_level(None) right before the cancel).
        while not self._stopping:
            self._wake.clear()
            await self.poll_once()
            due += self.interval_s
            now = time.perf_counter()
            due = max(due, now)                            # a slow poll skips ticks instead of bursting
            try:
                await asyncio.wait_for(self._wake.wait(), due - now)
                due = time.perf_counter()                  # a new level: a sample now, then on schedule
            except asyncio.TimeoutError:
                pass
