"""The worker's streaming HTTP/1.1 client: gevent sockets + the asyncio client's own parser.

A Locust worker runs on gevent, so it cannot use ``bench.client``'s asyncio transports, but it
does use the very same response machinery: ``bench.client.HttpConnection`` (llhttp via
``httptools``) and ``bench.exchange.Exchange`` (SSE, adapters, error classes, the record's fields). This
module only replaces the transport: a blocking-looking ``recv()`` on a gevent socket, after
which ``HttpConnection.data_received`` stamps ``perf_counter_ns()`` before any parsing, as
the asyncio client's ``data_received`` does. Keep-alive pooling, the one resend of a request
that hit a connection the server had already closed, timeouts and cancellation
(``greenlet.kill()`` -> a ``cancelled`` record) follow ``bench.client.Endpoint.stream``.

Import only in gevent processes (it imports gevent, never locust).
"""

from __future__ import annotations

import socket as _stdsocket
import ssl
from time import perf_counter_ns
from typing import Optional
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.socket
import gevent.ssl

from bench import __version__
from bench.adapters.base import Adapter
from bench.client import HttpConnection
from bench.exchange import DEFAULT_MAX_RESPONSE_BYTES, Exchange
from bench.records import RequestRecord

READ_SIZE = 64 * 1024  # below glibc's mmap threshold: no mmap/munmap per read


class _Done:
    """The two methods of ``asyncio.Future`` that ``Exchange`` calls, for greenlets."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = gevent.event.Event()

    def done(self) -> bool:
        return self._event.is_set()

    def set_result(self, _value: object) -> None:
        self._event.set()


class _SocketTransport:
    """The three transport methods ``HttpConnection`` uses, over a gevent socket."""

    __slots__ = ("sock", "closed")

    def __init__(self, sock: gevent.socket.socket):
        self.sock = sock
        self.closed = False

    def write(self, data: bytes) -> None:
        sent = self.sock.send(data)  # a request fits the socket buffer: one send, no sendall loop
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def is_closing(self) -> bool:
        return self.closed


class GeventEndpoint:
    """A target's base URL with a keep-alive pool, for greenlets. ``extra_headers`` may hold
    secrets: they are only written to the socket."""

    def __init__(self, base_url: str, extra_headers: Optional[dict[str, str]] = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, ssl_context: Optional[ssl.SSLContext] = None):
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        if parts.scheme == "https" and ssl_context is None:
            ssl_context = gevent.ssl.create_default_context()
        self.ssl_context = ssl_context if parts.scheme == "https" else None
        self.max_response_bytes = max_response_bytes
        lines = [
            f"Host: {parts.netloc.rsplit('@', 1)[-1]}",
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
        self.stale_resends = 0
        self.reuse_connections = True

    def _connect(self, timeout_s: float) -> HttpConnection:
        sock = gevent.socket.create_connection((self.host, self.port), timeout=timeout_s)
        try:
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        conn = HttpConnection()
        conn.connection_made(_SocketTransport(sock))  # type: ignore[arg-type]
        self._all.add(conn)
        return conn

    def _acquire(self, timeout_s: float, fresh: bool) -> tuple[HttpConnection, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.usable and conn.transport is not None and not conn.transport.is_closing():
                return conn, False
            self._all.discard(conn)
        return self._connect(timeout_s), True

    def _release(self, conn: HttpConnection, reusable: bool) -> None:
        conn.exchange = None
        if reusable and self.reuse_connections and conn.usable and not conn.transport.is_closing():  # type: ignore[union-attr]
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)

    def stream(self, path: str, body: bytes, record: RequestRecord, adapter: Adapter, timeout_s: float) -> None:
        """POST ``body`` and fill ``record`` from the streamed response. Request failures become
        ``record.error``; ``GreenletExit`` (a kill) marks the record ``cancelled`` and propagates."""
        exchange = Exchange(record, adapter, _Done(), self.max_response_bytes)  # type: ignore[arg-type]
        record.sent_ns = perf_counter_ns()
        deadline = record.sent_ns + int(timeout_s * 1e9)
        conn: Optional[HttpConnection] = None
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\nContent-Length: {len(body)}\r\nX-Request-Id: {record.request_id}\r\n"
        ).encode("latin-1")
        try:
            for attempt in (0, 1):
                try:
                    conn, record.new_connection = self._acquire(max(0.001, (deadline - perf_counter_ns()) / 1e9),
                                                                 fresh=attempt > 0)
                except _stdsocket.timeout:
                    exchange.fail("timeout", f"no connection to {self.host}:{self.port} within {timeout_s:g} s",
                                  perf_counter_ns())
                    return
                except OSError as e:
                    exchange.fail("connect", f"cannot connect to {self.host}:{self.port}: {e.strerror or e}",
                                  perf_counter_ns())
                    return
                conn.begin(exchange)
                self._exchange(conn, exchange, head + self._static_headers + b"\r\n" + body, deadline, timeout_s)
                if not (exchange.stale and not exchange.resolved):
                    return
                # The kept-alive connection was already closed: resend once on a fresh one
                # (``sent_ns`` keeps the first attempt, as in the asyncio client).
                self.stale_resends += 1
                if self.stale_resends >= 3:
                    self.reuse_connections = False
                self._release(conn, False)
                conn = None
                exchange.stale = False
                exchange.future = _Done()  # type: ignore[assignment]
            exchange.fail("broken_stream", "connection closed before any response, twice", perf_counter_ns())
        except gevent.GreenletExit:
            exchange.fail("cancelled", "run interrupted while the request was in flight", perf_counter_ns())
            raise
        finally:
            if conn is not None:
                clean = record.error is None or (record.error in ("http_4xx", "http_5xx", "empty", "truncated")
                                                 and exchange.message_complete)
                self._release(conn, clean and exchange.message_complete)

    @staticmethod
    def _exchange(conn: HttpConnection, exchange: Exchange, request: bytes, deadline: int, timeout_s: float) -> None:
        """Write the request and feed every read to the connection until the exchange resolves.
        One timer covers the whole exchange (not one per read: reads are the per-token path)."""
        transport: _SocketTransport = conn.transport  # type: ignore[assignment]
        sock = transport.sock
        timer = gevent.Timeout(max(0.001, (deadline - perf_counter_ns()) / 1e9))
        sock.settimeout(None)
        timer.start()
        try:
            transport.write(request)
            while not exchange.future.done():
                data = sock.recv(READ_SIZE)
                if not data:
                    conn.connection_lost(None)
                    return
                conn.data_received(data)  # stamps perf_counter_ns() before parsing
        except gevent.Timeout as expired:
            if expired is not timer:
                raise
            exchange.fail("timeout", f"no complete response within {timeout_s:g} s", perf_counter_ns())
            conn.close()
        except OSError as e:
            conn.connection_lost(e)
            transport.close()
        finally:
            timer.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def is_closing(self) -> bool:
        return self.closed


class GeventEndpoint:
    """A target's base URL with a keep-alive pool, for greenlets. ``extra_headers`` may hold
    secrets: they are only written to the socket."""

    def __init__(self, base_url: str, extra_headers: Optional[dict[str, str]] = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, ssl_context: Optional[ssl.SSLContext] = None):
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        if parts.scheme == "https" and ssl_context is None:
            ssl_context = gevent.ssl.create_default_context()
        self.ssl_context = ssl_context if parts.scheme == "https" else None
        self.max_response_bytes = max_response_bytes
        lines = [
            f"Host: {parts.netloc.rsplit('@', 1)[-1]}",
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
        self.stale_resends = 0
        self.reuse_connections = True

    def _connect(self, timeout_s: float) -> HttpConnection:
        sock = gevent.socket.create_connection((self.host, self.port), timeout=timeout_s)
        try:
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        conn = HttpConnection()
        conn.connection_made(_SocketTransport(sock))  # type: ignore[arg-type]
        self._all.add(conn)
        return conn

    def _acquire(self, timeout_s: float, fresh: bool) -> tuple[HttpConnection, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.usable and conn.transport is not None and not conn.transport.is_closing():
                return conn, False
            self._all.discard(conn)
        return self._connect(timeout_s), True

    def _release(self, conn: HttpConnection, reusable: bool) -> None:
        conn.exchange = None
        if reusable and self.reuse_connections and conn.usable and not conn.transport.is_closing():  # type: ignore[union-attr]
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)

    def stream(self, path: str, body: bytes, record: RequestRecord, adapter: Adapter, timeout_s: float) -> None:
        """POST ``body`` and fill ``record`` from the streamed response. Request failures become
        ``record.error``; ``GreenletExit`` (a kill) marks the record ``cancelled`` and propagates."""
        exchange = Exchange(record, adapter, _Done(), self.max_response_bytes)  # type: ignore[arg-type]
        record.sent_ns = perf_counter_ns()
        deadline = record.sent_ns + int(timeout_s * 1e9)
        conn: Optional[HttpConnection] = None
        head = (
            f"POST {self.prefix}{path} HTTP/1.1\r\nContent-Length: {len(body)}\r\nX-Request-Id: {record.request_id}\r\n"
        ).encode("latin-1")
        try:
            for attempt in (0, 1):
                try:
                    conn, record.new_connection = self._acquire(max(0.001, (deadline - perf_counter_ns()) / 1e9),
                                                                 fresh=attempt > 0)
                except _stdsocket.timeout:
                    exchange.fail("timeout", f"no connection to {self.host}:{self.port} within {timeout_s:g} s",
                                  perf_counter_ns())
                    return
                except OSError as e:
                    exchange.fail("connect", f"cannot connect to {self.host}:{self.port}: {e.strerror or e}",
                                  perf_counter_ns())
                    return
                conn.begin(exchange)
                self._exchange(conn, exchange, head + self._static_headers + b"\r\n" + body, deadline, timeout_s)
                if not (exchange.stale and not exchange.resolved):
                    return
                # The kept-alive connection was already closed: resend once on a fresh one
                # (``sent_ns`` keeps the first attempt, as in the asyncio client).
                self.stale_resends += 1
                if self.stale_resends >= 3:
                    self.reuse_connections = False
                self._release(conn, False)
                conn = None
                exchange.stale = False
                exchange.future = _Done()  # type: ignore[assignment]
            exchange.fail("broken_stream", "connection closed before any response, twice", perf_counter_ns())
        except gevent.GreenletExit:
            exchange.fail("cancelled", "run interrupted while the request was in flight", perf_counter_ns())
            raise
        finally:
            if conn is not None:
                clean = record.error is None or (record.error in ("http_4xx", "http_5xx", "empty", "truncated")
                                                 and exchange.message_complete)
                self._release(conn, clean and exchange.message_complete)

    @staticmethod
    def _exchange(conn: HttpConnection, exchange: Exchange, request: bytes, deadline: int, timeout_s: float) -> None:
        """Write the request and feed every read to the connection until the exchange resolves."""
        transport: _SocketTransport = conn.transport  # type: ignore[assignment]
        sock = transport.sock
        try:
            sock.settimeout(max(0.001, (deadline - perf_counter_ns()) / 1e9))
            transport.write(request)
            while not exchange.future.done():
                remaining = deadline - perf_counter_ns()
                if remaining <= 0:
                    raise _stdsocket.timeout()
                sock.settimeout(remaining / 1e9)
                data = sock.recv(READ_SIZE)
                if not data:
                    conn.connection_lost(None)
                    return
                conn.data_received(data)  # stamps perf_counter_ns() before parsing
        except _stdsocket.timeout:
            exchange.fail("timeout", f"no complete response within {timeout_s:g} s", perf_counter_ns())
            conn.close()
        except OSError as e:
            conn.connection_lost(e)
            transport.close()

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
