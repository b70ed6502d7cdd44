"""The hot path: a streaming HTTP/1.1 client on raw asyncio transports + llhttp (httptools).

Why not aiohttp/httpx: a load generator must not be the bottleneck, and its timestamps
must be taken when bytes arrive. Here ``data_received`` stamps ``perf_counter_ns()`` and
queues the read; the reads of all ready sockets are then parsed together (HTTP framing, SSE,
JSON; ``ReadBatch``) — parse cost never leaks into latencies, not even under a burst.
Keep-alive connections are pooled per endpoint; a connection is used by one request at
a time (no pipelining), like every OpenAI client.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from email.utils import parsedate_to_datetime
from time import perf_counter_ns
from typing import Optional
from urllib.parse import urlsplit

import httptools

from bench import __version__
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


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection. Used by at most one Exchange at a time."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Optional[Exchange] = None
        self.usable = True
        self._now = 0
        self._content_type = b""
        self._header_name = b""
        self._chunked_or_length = False
        self._body: list[bytes] = []  # body pieces of the current read, not yet handed over
        self.served = 0  # responses completed on this connection

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.feed(data, perf_counter_ns())  # stamp first: everything below is parsing

    def feed(self, data: bytes, now: int) -> None:
        """Parse one read that arrived at ``now``."""
        self._now = now
        ex = self.exchange
        if ex is None:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self._discard()
            return
        if ex.record.first_byte_ns is None:
            ex.record.first_byte_ns = now
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._flush_body()
            ex.fail("broken_stream", f"invalid HTTP response: {e}", now)
            self._discard()
            return
        if self._body:
            self._flush_body()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.usable = False
        ex = self.exchange
        if ex is None or ex.resolved:
            return
        if self._body:
            self._flush_body()
        now = perf_counter_ns()
        if self.served and ex.record.first_byte_ns is None:
            ex.mark_stale()
        elif exc is None and ex.record.status is not None and not self._chunked_or_length:
            ex.on_message_complete(now)  # body delimited by connection close: a clean end
        elif exc is None and ex.record.status is not None and ex.is_sse and (ex.done_marker or ex.record.finish_reason):
            ex.finish(now)  # server closed right after a complete stream
        else:
            reason = f"connection lost: {exc}" if exc else "connection closed by the server mid-response"
            ex.fail("broken_stream", reason, now)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"content-type":
            self._content_type = value.lower()
        elif lname in (b"transfer-encoding", b"content-length"):
            self._chunked_or_length = True
        elif lname == b"retry-after" and self.exchange is not None:
            self.exchange.retry_after = value.decode("latin-1")[:40]

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.on_headers(self.parser.get_status_code(), self._content_type)

    def on_body(self, body: bytes) -> None:
        # One read often holds dozens of HTTP chunks (one SSE event each): collect them and hand
        # the exchange one buffer per read; all of it arrived at the same stamped instant.
        self._body.append(body)

    def _flush_body(self) -> None:
        parts, self._body = self._body, []
        if self.exchange is not None:
            self.exchange.on_body(parts[0] if len(parts) == 1 else b"".join(parts), self._now)

    def on_message_complete(self) -> None:
        if self._body:
            self._flush_body()
        ex = self.exchange
        self.served += 1
        if ex is not None:
            if not self.parser.should_keep_alive():
                self.usable = False
            ex.on_message_complete(self._now)

    # pool helpers
    def begin(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self._body = []
        self._content_type = b""
        self._chunked_or_length = False

    def _discard(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self._discard()


class ReadBatch:
    """Reads stamped now, parsed a moment later: stamps for every socket that is ready, then parsing.

    When many streams' tokens arrive together (a server's batch step, a burst of first tokens),
    the event loop hands over one ready socket after another; parsing each before stamping the
    next would put the parse time of all earlier ones into the later ones' latencies. So
    ``data_received`` only stamps and queues; the whole batch is parsed in one callback scheduled
    after the loop's current round of I/O callbacks (order per connection kept)."""

    __slots__ = ("_conns", "_scheduled")

    def __init__(self) -> None:
        self._conns: list["BatchedHttpConnection"] = []
        self._scheduled = False

    def add(self, conn: "BatchedHttpConnection") -> None:
        self._conns.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.drain)

    def drain(self) -> None:
        """Parse every queued read now (also called before a timeout or a cancel is recorded)."""
        self._scheduled = False
        while self._conns:
            conns, self._conns = self._conns, []
            for conn in conns:
                conn.parse_queued()


class BatchedHttpConnection(HttpConnection):
    """``HttpConnection`` whose reads are stamped on arrival and parsed by its ``ReadBatch``."""

    def __init__(self, batch: ReadBatch) -> None:
        super().__init__()
        self._batch = batch
        self._reads: list[tuple[bytes, int]] = []

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()  # the stamp; parsing waits for the batch
        if not self._reads:
            self._batch.add(self)
        self._reads.append((data, now))

    def parse_queued(self) -> None:
        reads, self._reads = self._reads, []
        for data, now in reads:
            self.feed(data, now)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.parse_queued()  # bytes that came before the close are part of the response
        super().connection_lost(exc)


class Endpoint:
    """A target's base URL with a keep-alive connection pool and pre-encoded headers.

    ``extra_headers`` may contain secrets (Authorization); they are only ever written to
    the socket, never to records, logs or reports.
    """

    def __init__(
        self,
        base_url: str,
        extra_headers: Optional[dict[str, str]] = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ):
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl_context = ssl.create_default_context() if parts.scheme == "https" else None
        self.max_response_bytes = max_response_bytes
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [
            f"Host: {host_header}",
            f"User-Agent: benchbox/{__version__}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
        ]
        for k, v in (extra_headers or {}).items():
            if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
                raise ValueError(f"header {k!r} contains a line break")
            lines.append(f"{k}: {v}")
        self._static_headers = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._idle: list[HttpConnection] = []
        self._all: set[HttpConnection] = set()
        self._reads = ReadBatch()
        self.stale_resends = 0
        # Some servers (llama.cpp's httplib) announce keep-alive but close after each streamed
        # response. After a few stale resends, stop pooling: every request gets a fresh connection.
        self.reuse_connections = True

    async def _acquire(self, timeout_s: float, fresh: bool = False) -> tuple[HttpConnection, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.usable and conn.transport is not None and not conn.transport.is_closing():
                return conn, False
            self._all.discard(conn)
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: BatchedHttpConnection(self._reads), self.host, self.port, ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context else None,
            ),
            timeout_s,
        )
        self._all.add(conn)
        return conn, True

    def _release(self, conn: HttpConnection, reusable: bool) -> None:
        conn.exchange = None
        if reusable and self.reuse_connections and conn.usable and conn.transport is not None and not conn.transport.is_closing():
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)

    async def stream(self, path: str, body: bytes, record: RequestRecord, adapter: Adapter, timeout_s: float) -> None:
        """POST ``body`` and fill ``record`` from the streamed response. Never raises for
        request failures (they become ``record.error``); re-raises CancelledError after
        marking the record ``cancelled``."""
        loop = asyncio.get_running_loop()
        exchange = Exchange(record, adapter, loop.create_future(), self.max_response_bytes)
        record.sent_ns = perf_counter_ns()
        timer = loop.call_later(timeout_s, self._on_timeout, exchange, timeout_s)
        conn: Optional[HttpConnection] = None
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\nContent-Length: {len(body)}\r\nX-Request-Id: {record.request_id}\r\n"
        ).encode("latin-1")
        try:
            for attempt in (0, 1):
                try:
                    conn, record.new_connection = await self._acquire(timeout_s, fresh=attempt > 0)
                except asyncio.TimeoutError:
                    exchange.fail("timeout", f"no connection to {self.host}:{self.port} within {timeout_s:g} s",
                                  perf_counter_ns())
                    return
                except (OSError, ssl.SSLError) as e:
                    exchange.fail("connect", f"cannot connect to {self.host}:{self.port}: {e.strerror or e}",
                                  perf_counter_ns())
                    return
                if exchange.resolved:  # timed out while connecting
                    return
                conn.begin(exchange)
                conn.transport.write(head + self._static_headers + b"\r\n" + body)  # type: ignore[union-attr]
                await exchange.future
                if not (exchange.stale and not exchange.resolved):
                    return
                # Resend once on a fresh connection; `sent_ns` keeps the first attempt, so the
                # (sub-millisecond) cost stays inside the measured latency.
                self.stale_resends += 1
                if self.stale_resends >= 3:
                    self.reuse_connections = False
                self._release(conn, False)
                conn = None
                exchange.stale = False
                exchange.future = loop.create_future()
            exchange.fail("broken_stream", "connection closed before any response, twice", perf_counter_ns())
        except asyncio.CancelledError:
            self._reads.drain()  # what already arrived belongs to the record
            exchange.fail("cancelled", "run interrupted while the request was in flight", perf_counter_ns())
            raise
        finally:
            timer.cancel()
            if conn is not None:
                clean = record.error is None or (record.error in ("http_4xx", "http_429", "http_5xx", "empty",
                                                                  "truncated")
                                                 and exchange.message_complete)
                self._release(conn, clean and exchange.message_complete)

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let transports run their close callbacks

    def _on_timeout(self, exchange: Exchange, timeout_s: float) -> None:
        self._reads.drain()  # a response that arrived in time is not a timeout
        exchange.fail("timeout", f"no complete response within {timeout_s:g} s", perf_counter_ns())
