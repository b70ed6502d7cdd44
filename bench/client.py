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
import ssl
from time import perf_counter_ns
from typing import Optional
from urllib.parse import urlsplit

import httptools

from bench import __version__
from bench.adapters.base import Adapter
from bench.exchange import DEFAULT_MAX_RESPONSE_BYTES, Exchange
from bench.records import RequestRecord


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
