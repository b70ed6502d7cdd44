"""One request/response turned into a RequestRecord: HTTP callbacks in, record fields out.

``Exchange`` gets the callbacks of one response (status and headers, body reads stamped on
arrival, the end) from a connection — the asyncio client's (``bench.client``) or the Locust
workers' gevent one (``bench.distributed.gevent_client``) — and fills the record: SSE events,
plain content deltas on the fast path (a per-stream byte template, else orjson), everything else
through the adapter, error classes, the response byte cap. No sockets here.
"""

from __future__ import annotations

import asyncio
import re
import time
from email.utils import parsedate_to_datetime
from typing import Optional

from bench.adapters.base import Adapter
from bench.adapters.delta_template import MAX_LEARN_TRIES, DeltaTemplate
from bench.adapters.openai_common import assemble_tool_calls
from bench.adapters.sse import SSEParser
from bench.records import RequestRecord


DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


def response_byte_cap(max_tokens: int) -> int:
    """Default cap on the bytes read for one response that may hold ``max_tokens`` tokens:
    32 KiB a token (a streamed chunk with top-20 logprobs is ~3 KiB), at least 4 MiB. A server
    that sends more is broken (``broken_stream``), and benchbox stops reading it."""
    return max(4 * 1024 * 1024, 32 * 1024 * max_tokens)
_ERROR_BODY_KEEP = 2048
_RUN_MIN = 8   # events in one read before a run is checked in one go
_RUN_TAIL = 6  # events at a read's end searched for the run's last plain delta


class Exchange:
    """One request/response: turns HTTP callbacks into fields of a RequestRecord."""

    __slots__ = (
        "record", "adapter", "sse", "future", "done_marker", "parts", "reasoning", "is_sse",
        "error_body", "body_bytes", "max_bytes", "raw_body", "message_complete", "retry_after", "resolved",
        "stale", "fast", "template", "template_tries",
    )

    def __init__(self, record: RequestRecord, adapter: Adapter, future: asyncio.Future, max_bytes: int):
        self.record = record
        self.adapter = adapter
        self.sse = SSEParser()
        self.future = future
        self.done_marker = False
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.is_sse = True
        self.error_body = b""
        self.raw_body: list[bytes] = []
        self.body_bytes = 0
        self.max_bytes = max_bytes
        self.message_complete = False
        self.retry_after: Optional[str] = None
        self.resolved = False  # the record is final; later callbacks must not touch it
        self.stale = False     # sent on a kept-alive connection the server had already closed
        # The adapter's shortcut for plain content deltas (None: every event takes parse_event).
        self.fast = getattr(adapter, "fast_content", None)
        self.template: Optional[DeltaTemplate] = None  # learned from this stream's plain deltas
        self.template_tries = 0

    # -- callbacks from the connection (``now`` was stamped before parsing) --
    def on_headers(self, status: int, content_type: bytes) -> None:
        self.record.status = status
        self.is_sse = b"event-stream" in content_type or not content_type

    def on_body(self, data: bytes, now: int) -> None:
        if self.resolved:
            return
        self.body_bytes += len(data)
        if self.body_bytes > self.max_bytes:
            self.fail("broken_stream", f"response exceeded {self.max_bytes} bytes", now)
            return
        status = self.record.status or 0
        if not 200 <= status < 300:
            if len(self.error_body) < _ERROR_BODY_KEEP:
                self.error_body += data[: _ERROR_BODY_KEEP - len(self.error_body)]
            return
        if not self.is_sse:
            self.raw_body.append(data)
            return
        fast = self.fast
        rec = self.record
        template = self.template
        events = self.sse.feed(data)
        batch = len(events) >= _RUN_MIN
        i = 0
        while i < len(events):
            event, payload = events[i]
            i += 1
            if fast is not None and not event:
                if batch and template is not None and len(events) - i >= _RUN_MIN:
                    batch = False  # one try per read: a failed run falls back to the step below
                    end = self._plain_run_end(events, i - 1, template)
                    texts = template.match_run([p for _, p in events[i - 1:end]]) if end else None
                    if texts is not None:  # a run of plain deltas checked in one go (coalesced reads)
                        texts = [t for t in texts if t]
                        if texts:
                            if rec.first_token_ns is None:
                                rec.first_token_ns = now
                            rec.chunk_ns.extend([now] * len(texts))
                            self.parts.extend(texts)
                        i = end
                        continue
                text = template.match(payload) if template is not None else None
                if text is None:
                    text = fast(payload)
                    # (Re)learn: a stream's chunks may change outside the text now and then
                    # (llama.cpp's "created" seconds), so a template that stopped matching is replaced.
                    if text and self.template_tries < MAX_LEARN_TRIES:
                        self.template_tries += 1
                        learned = DeltaTemplate.learn(payload, text, fast)
                        if learned is not None:  # a text that cannot make one keeps the old one
                            template = self.template = learned
                if text is not None:  # a plain content delta: the only per-token work
                    if text:
                        if rec.first_token_ns is None:
                            rec.first_token_ns = now
                        rec.chunk_ns.append(now)
                        self.parts.append(text)
                    continue
            self._on_event(event, payload, now)
            if self.resolved:
                return

    @staticmethod
    def _plain_run_end(events: list, start: int, template: DeltaTemplate) -> int:
        """End (exclusive) of the run of template events from ``start``: found from the read's
        last event backwards, past a short tail (finish chunk, usage, [DONE]); 0 when none."""
        end = len(events)
        while end > start + _RUN_MIN and end > len(events) - _RUN_TAIL:
            event, payload = events[end - 1]
            if not event and template.match(payload) is not None:
                break
            end -= 1
        else:
            return 0
        return end if all(not e for e, _ in events[start:end]) else 0

    def _on_event(self, event: bytes, payload: bytes, now: int) -> None:
        if payload == b"[DONE]":
            self.done_marker = True
            return
        delta = self.adapter.parse_event(payload)
        rec = self.record
        if delta.malformed:
            try:
                payload.decode("utf-8")
                why = "malformed stream event"
            except UnicodeDecodeError as e:  # name the bad bytes: they may sit past the 120 shown
                why = f"stream event is not valid UTF-8 (byte {e.start}: {payload[e.start:e.start + 4]!r})"
            self.fail("broken_stream", f"{why}: {payload[:120]!r}", now)
            return
        if delta.error or event == b"error":
            self.fail("broken_stream", f"error in stream: {delta.error or payload[:200]!r}", now)
            return
        if delta.content:
            if rec.first_token_ns is None:
                rec.first_token_ns = now
                if delta.logprobs is not None:
                    rec.first_token_logprobs = delta.logprobs
            rec.chunk_ns.append(now)
            self.parts.append(delta.content)
        if delta.reasoning:
            self.reasoning.append(delta.reasoning)
            if rec.first_reasoning_ns is None:
                rec.first_reasoning_ns = now
        if delta.tool_calls:
            _add_tool_calls(rec, delta.tool_calls, now, bool(delta.content))
        if delta.finish_reason:
            rec.finish_reason = delta.finish_reason
        if delta.usage:
            rec.prompt_tokens = _int_or_none(delta.usage.get("prompt_tokens"))
            rec.output_tokens = _int_or_none(delta.usage.get("completion_tokens"))
        if delta.timings:
            rec.server_timings = delta.timings

    def on_message_complete(self, now: int) -> None:
        self.message_complete = True
        if self.resolved:
            return
        if self.is_sse:
            for event, payload in self.sse.finish():
                self._on_event(event, payload, now)
                if self.resolved:
                    return
        self.finish(now)

    def finish(self, now: int) -> None:
        """The response ended (message complete or clean EOF): classify and resolve."""
        rec = self.record
        rec.end_ns = now
        status = rec.status or 0
        if not 200 <= status < 300:
            # 429 is its own class: load shedding says "capacity", not "the request was wrong".
            rec.error = "http_5xx" if status >= 500 else "http_429" if status == 429 else "http_4xx"
            rec.error_detail = _error_detail(self.error_body, status, self.retry_after)
        elif not self.is_sse:
            delta = self.adapter.parse_body(b"".join(self.raw_body))
            if delta.malformed or delta.error:
                rec.error, rec.error_detail = "broken_stream", (delta.error or "malformed response body")
            else:
                if delta.content:
                    rec.first_token_ns = now
                    rec.chunk_ns.append(now)
                    self.parts.append(delta.content)
                    rec.first_token_logprobs = delta.logprobs
                if delta.tool_calls:
                    _add_tool_calls(rec, delta.tool_calls, now, bool(delta.content))
                rec.finish_reason = delta.finish_reason
                if delta.usage:
                    rec.prompt_tokens = _int_or_none(delta.usage.get("prompt_tokens"))
                    rec.output_tokens = _int_or_none(delta.usage.get("completion_tokens"))
                rec.server_timings = delta.timings
        elif not self.done_marker and rec.finish_reason is None and getattr(self.adapter, "end_marker", True):
            rec.error, rec.error_detail = "truncated", "stream ended without [DONE] or finish_reason"
        rec.output_text = "".join(self.parts)
        rec.reasoning_text = "".join(self.reasoning)
        if rec.tool_calls:
            rec.tool_calls = assemble_tool_calls(rec.tool_calls)
        if rec.error is None and not rec.output_text and not rec.reasoning_text and not rec.tool_calls:
            rec.error, rec.error_detail = "empty", "no content tokens in a complete response"
        self._resolve()

    def _resolve(self) -> None:
        self.resolved = True
        if not self.future.done():
            self.future.set_result(None)

    def mark_stale(self) -> None:
        """The reused connection died before any response byte: the request never reached a
        handler, so it may be resent on a fresh connection (what curl and urllib3 do)."""
        self.stale = True
        if not self.future.done():
            self.future.set_result(None)

    def fail(self, error_class: str, detail: str, now: int) -> None:
        if self.resolved:
            return
        rec = self.record
        rec.end_ns = now
        rec.error, rec.error_detail = error_class, detail[:500]
        rec.output_text = "".join(self.parts)
        rec.reasoning_text = "".join(self.reasoning)
        if rec.tool_calls:
            rec.tool_calls = assemble_tool_calls(rec.tool_calls)
        self._resolve()


def _add_tool_calls(rec: RequestRecord, fragments: list, now: int, counted: bool) -> None:
    """Tool-call fragments are tokens of the answer: they stamp the first token and a chunk (once per
    event: ``counted`` when the event's text already did). Assembled when the request ends."""
    if rec.tool_calls is None:
        rec.tool_calls = []
    rec.tool_calls.extend(fragments)
    if not counted:
        if rec.first_token_ns is None:
            rec.first_token_ns = now
        rec.chunk_ns.append(now)


def _int_or_none(v: object) -> Optional[int]:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _error_detail(body: bytes, status: int, retry_after: Optional[str]) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    detail = f"HTTP {status}: {text[:300]}" if text else f"HTTP {status}"
    return detail + (f" (Retry-After: {retry_after})" if retry_after else "")


_RETRY_AFTER = re.compile(r" \(Retry-After: ([^)]*)\)$")


def retry_after_s(record: RequestRecord, now_unix: Optional[float] = None) -> Optional[float]:
    """The server's ``Retry-After`` of a failed response, in seconds (>= 0), from the
    ``error_detail`` that :func:`_error_detail` wrote; None when absent or unreadable.
    Both forms are read: delay-seconds and an HTTP-date (relative to ``now_unix``)."""
    match = _RETRY_AFTER.search(record.error_detail or "")
    if match is None:
        return None
    value = match[1].strip()
    try:
        return max(0.0, float(value))  # delay-seconds (some servers send a fraction)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now_unix is None else now_unix))
