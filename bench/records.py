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


def read_records(path: Path) -> Iterator[RequestRecord]:
    """Read records; a torn last line (crash mid-write) is skipped, not fatal."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            yield record_from_dict(obj)


def record_as_dict(record: RequestRecord) -> dict[str, Any]:
    return asdict(record)
