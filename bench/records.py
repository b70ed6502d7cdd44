"""Per-request records: what was measured, written as each request completes.

Times are integers from ``time.perf_counter_ns()`` (CLOCK_MONOTONIC on Linux), absolute,
in nanoseconds; the manifest holds one wall-clock anchor to map them to dates. A record
is the unit of truth: every statistic, score and report is computed from records.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Iterator, Optional

import orjson

# Error classes (a failed request is a record with one of these, never an exception).
ERROR_CLASSES = (
    "connect",        # could not open a connection
    "timeout",        # no complete response within the target's timeout_s
    "http_4xx",
    "http_429",       # rate limited (Retry-After, when sent, is kept in error_detail)
    "http_5xx",
    "broken_stream",  # connection lost mid-response, malformed SSE/JSON, or an error object in the stream
    "truncated",      # the stream ended cleanly but without [DONE] / finish_reason
    "empty",          # a complete response with no content tokens
    "cancelled",      # the run was interrupted while the request was in flight
)

PHASES = ("cold", "warmup", "measure")


@dataclass(slots=True)
class RequestRecord:
    """One request. ``None`` means "did not happen" (e.g. no first token on an error)."""

    target: str
    level: float
    phase: str                 # cold | warmup | measure
    seq: int                   # order of issue within the target x level
    item_id: str
    repeat: int
    request_id: str
    scheduled_ns: int          # when the pattern intended to send (rate mode: from the absolute plan)
    sent_ns: int = 0           # when the client began the request (before connecting, if it had to)
    first_byte_ns: Optional[int] = None
    first_token_ns: Optional[int] = None   # first content-bearing chunk
    end_ns: int = 0
    chunk_ns: list[int] = field(default_factory=list)  # arrival of every content-bearing chunk
    status: Optional[int] = None
    error: Optional[str] = None            # one of ERROR_CLASSES
    error_detail: Optional[str] = None
    finish_reason: Optional[str] = None
    prompt_tokens: Optional[int] = None    # from the server's usage, when present
    output_tokens: Optional[int] = None    # from the server's usage, when present
    output_text: str = ""
    reasoning_text: str = ""
    new_connection: bool = False
    server_timings: Optional[dict[str, Any]] = None  # e.g. llama.cpp's per-response `timings`
    # First content token's logprob and top alternatives, when the scenario asks for logprobs.
    first_token_logprobs: Optional[dict[str, Any]] = None
    # Reasoning models: arrival of the first reasoning chunk (``reasoning_content``), which is not a
    # token of the answer (first_token_ns stays the answer's first content chunk).
    first_reasoning_ns: Optional[int] = None
    # Structured tool calls of the answer (OpenAI ``tool_calls``, streamed fragments assembled):
    # ``[{"id", "type", "function": {"name", "arguments"}}]``; None when the answer had none.
    tool_calls: Optional[list[dict[str, Any]]] = None
    # With a retry policy (load.retries): 1-based attempt of this request (same seq and item), and
    # whether a later attempt replaced this one. Replaced attempts are kept but are not the answer:
    # statistics, quality and gates count them apart, never in latencies or the error rate.
    attempt: int = 1
    retried: bool = False
    # How many times the run had been resumed (`benchbox sweep --resume`) when this request was made:
    # 0 in the original run. A level cut short by an interrupt is run again in full on resume; its
    # earlier records stay in the file but are superseded (see read_records).
    resume: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_SERIALIZE_DATACLASS)


_FIELD_NAMES = {f.name for f in fields(RequestRecord)}


def record_from_dict(obj: dict[str, Any]) -> RequestRecord:
    return RequestRecord(**{k: v for k, v in obj.items() if k in _FIELD_NAMES})


class RecordWriter:
    """Appends records to ``records.jsonl``, one line each, flushed per record.

    Flushing per record is what lets an interrupted or crashed run keep everything it
    measured; the cost (one write syscall per request) is small next to a request.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fh: IO[bytes] = open(path, "ab", buffering=0)
        self.count = 0

    def on_record(self, record: RequestRecord) -> None:
        self._fh.write(record.to_json() + b"\n")
        self.count += 1

    def close(self) -> None:
        if not self._fh.closed:
            os.fsync(self._fh.fileno())
            self._fh.close()


def read_records(path: Path, superseded: bool = False) -> Iterator[RequestRecord]:
    """Read records; a torn last line (crash mid-write) is skipped, not fatal.

    A target x level that a resumed run measured again counts only with its latest attempt: the
    records an interrupt cut short are skipped unless ``superseded`` (cold requests are never
    superseded: each belongs to its own server launch)."""
    latest = {} if superseded else _latest_resume(path)
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            record = record_from_dict(obj)
            if latest and record.phase != "cold" and latest.get((record.target, record.level), 0) > record.resume:
                continue
            yield record


def _latest_resume(path: Path) -> dict[tuple[str, float], int]:
    """(target, level) -> the highest ``resume`` among its records, for levels measured after a resume.

    Cheap for runs that were never resumed: only lines with a non-zero ``resume`` are parsed."""
    latest: dict[tuple[str, float], int] = {}
    with open(path, "rb") as fh:
        for line in fh:
            if b'"resume":' not in line or b'"resume":0' in line:
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            key = (obj.get("target"), obj.get("level"))
            if obj.get("phase") != "cold" and obj.get("resume", 0) > latest.get(key, 0):
                latest[key] = obj["resume"]
    return latest


def repair_torn_tail(path: Path) -> int:
    """Cut a torn last line (a crash mid-write) so appended records start on a line of their own.
    Returns the number of bytes removed."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = pos - step + cut + 1
                break
            pos -= step
        else:
            keep = 0
        fh.truncate(keep)
        return size - keep


def record_as_dict(record: RequestRecord) -> dict[str, Any]:
    return asdict(record)
