"""Deterministic simulator of an OpenAI-compatible streaming endpoint.

A calibration target with known timing truth: every token is due at an
absolute time ``received + ttft + sum(gaps)`` and is written when that deadline
passes, so timer error never accumulates. The server is raw asyncio (uvloop
when importable) + ``httptools`` with HTTP/1.1 keep-alive and pipelining; SSE
bodies use ``Transfer-Encoding: chunked``.

Clock: every ``*_ns`` value is ``time.perf_counter_ns()``, i.e. CLOCK_MONOTONIC
on Linux, which is shared by all processes on the machine, so a client on the
same host can compare its own stamps with the truth log directly. Loop timers
(asyncio and uvloop alike) have ~1 ms granularity, so on Linux token deadlines
are driven by a CLOCK_MONOTONIC ``timerfd`` instead (~0.05 ms typical
lateness); elsewhere ``loop.call_at`` is used. Either way the truth log
records when each event was actually written.

This module holds config, scheduler, HTTP server and CLI; planning, payloads
and the per-response writer live in :mod:`bench.sim_stream`.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import dataclasses
import heapq
import itertools
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import click
import httptools
import orjson

from bench.sim_chaos import CHAOS_MODES, check_chaos, parse_chaos
from bench.sim_protocols import protocol_route
from bench.sim_stream import (
    CHAT, COMPLETION, JSON_TYPE, Fault, Generation, HttpRequest, RequestError, error_body, http_head,
    metrics_text, parse_request, plan_request,
)

LISTEN_PREFIX = "benchbox-sim listening on "


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings. Times in milliseconds, lengths in tokens, rates in [0, 1].

    ``port=0`` binds a free port. ``jitter_ms`` is uniform ± on each gap (TTFT and
    every ITL); ``output_tokens_jitter`` is uniform ± on the length. Both are drawn
    from a per-request RNG seeded by ``(seed, request index)``.

    Chaos (:mod:`bench.sim_chaos`): ``chaos`` is ``((mode, share), ...)`` drawn from
    the same per-request RNG; ``trickle_ms`` is the gap between bytes of a trickled
    response, ``retry_after_s`` the ``Retry-After`` of an ``http_429``,
    ``oversize_bytes`` the content an ``oversize`` response floods. When
    ``outage_at`` is set, the generation request with that index (0-based) makes the
    server drop every connection and stop listening for ``outage_s`` seconds, then
    listen again on the same port.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model: str = "sim-model"
    ttft_ms: float = 100.0
    itl_ms: float = 10.0
    output_tokens: int = 128
    output_tokens_jitter: int = 0
    jitter_ms: float = 0.0
    tokens_per_chunk: int = 1
    role_chunk: bool = True
    keepalive_ms: float = 0.0
    error_rate: float = 0.0
    abort_rate: float = 0.0
    chaos: tuple[tuple[str, float], ...] = ()
    trickle_ms: float = 2.0
    retry_after_s: float = 1.0
    oversize_bytes: int = 64 * 1024 * 1024
    outage_at: int | None = None
    outage_s: float = 2.0
    seed: int = 0
    truth_log: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if not self.model:
            raise ValueError("model must be non-empty")
        for name in ("ttft_ms", "itl_ms", "jitter_ms", "keepalive_ms", "output_tokens_jitter", "trickle_ms",
                     "retry_after_s", "outage_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.output_tokens < 1:
            raise ValueError(f"output_tokens must be >= 1, got {self.output_tokens}")
        if self.tokens_per_chunk < 1:
            raise ValueError(f"tokens_per_chunk must be >= 1, got {self.tokens_per_chunk}")
        for name in ("error_rate", "abort_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        check_chaos(self.chaos)
        if self.oversize_bytes < 1:
            raise ValueError(f"oversize_bytes must be >= 1, got {self.oversize_bytes}")
        if self.outage_at is not None and self.outage_at < 0:
            raise ValueError(f"outage_at must be >= 0, got {self.outage_at}")


_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Deadlines:
    """Run callbacks at absolute ``perf_counter_ns`` deadlines.

    One non-blocking timerfd per server, armed (TFD_TIMER_ABSTIME) for the
    earliest pending deadline and watched with ``loop.add_reader``: the loop
    wakes on fd readiness, which is far finer than its own ms-rounded timers.
    Callbacks never run early (~0.05 ms late typically). Falls back to
    ``loop.call_at`` (~1 ms granularity, uvloop may fire slightly early) where
    timerfd or a CLOCK_MONOTONIC perf_counter is unavailable.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, use_timerfd: bool = True) -> None:
        self._loop = loop
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._armed: int | None = None
        self._fd: int | None = None
        self._settime: Any = None
        self._spec = _Itimerspec()  # reused: building a ctypes struct per call costs more than the syscall
        self._spec_ref = ctypes.byref(self._spec)
        perf_clock = time.get_clock_info("perf_counter").implementation
        if use_timerfd and sys.platform == "linux" and perf_clock == "clock_gettime(CLOCK_MONOTONIC)":
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            except (OSError, AttributeError):
                return
            if fd >= 0:
                self._settime = libc.timerfd_settime
                self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
                self._fd = fd
                loop.add_reader(fd, self._fire)

    def call_at_ns(self, deadline_ns: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` once ``perf_counter_ns() >= deadline_ns``.

        Not cancellable: callers check their own state when called (cheaper
        than handles, and a stale entry just returns).
        """
        if self._fd is None:
            self._loop.call_at(deadline_ns / 1e9, callback)  # loop.time() is CLOCK_MONOTONIC too
            return
        heapq.heappush(self._heap, (deadline_ns, next(self._seq), callback))
        if self._armed is None or deadline_ns < self._armed:
            self._arm(deadline_ns)

    def _arm(self, deadline_ns: int) -> None:
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._armed = deadline_ns

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)  # type: ignore[arg-type]  # consume the expiry count
        except BlockingIOError:
            pass
        self._armed = None
        heap = self._heap
        # At most the entries present on entry: one re-armed for "now" (itl 0)
        # waits for the next pass, so socket I/O is never starved.
        for _ in range(len(heap)):
            if not heap or heap[0][0] > time.perf_counter_ns():
                break
            callback = heapq.heappop(heap)[2]
            try:
                callback()
            except Exception as exc:  # keep serving other streams; report like a loop callback
                self._loop.call_exception_handler({"message": "benchbox-sim timer callback failed",
                                                   "exception": exc})
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        """Stop watching and close the timerfd; pending callbacks are dropped."""
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        self._heap.clear()

    @property
    def precise(self) -> bool:
        """True when driven by timerfd (sub-ms), False on the ``call_at`` fallback."""
        return self._fd is not None


@dataclass
class SimState:
    """Per-server state: request counter, metrics, deadline scheduler, truth log, connections."""

    config: SimConfig
    loop: asyncio.AbstractEventLoop
    deadlines: _Deadlines
    truth: IO[bytes] | None = None
    requests_total: int = 0
    running: int = 0
    tokens_total: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    conns: set[SimConnection] = field(default_factory=set)
    server: asyncio.AbstractServer | None = None  # None while an outage lasts
    comeback: asyncio.TimerHandle | None = None  # ends the outage
    listening: asyncio.Task[None] | None = None  # the comeback's create_server, while it runs

    def begin_outage(self) -> None:
        """The server "dies": stop listening (connects are refused), drop every connection
        (in-flight streams end with RST), and listen again ``outage_s`` later, same port."""
        self.faults[Fault.OUTAGE.value] += 1
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.conns):
            conn.transport.abort()
        self.comeback = self.loop.call_later(self.config.outage_s, self._comeback)

    def _comeback(self) -> None:
        self.listening = self.loop.create_task(self._listen())

    async def _listen(self) -> None:
        try:
            self.server = await self.loop.create_server(lambda: SimConnection(self), self.config.host,
                                                        self.config.port, reuse_address=True)
            self.comeback = None
        except OSError:  # the port is briefly taken: try again shortly
            self.comeback = self.loop.call_later(0.1, self._comeback)

    def next_index(self) -> int:
        """Arrival index of a generation request; seeds its RNG."""
        self.requests_total += 1
        return self.requests_total - 1

    def record(self, rec: dict[str, Any]) -> None:
        """Append one truth line; flushed at once so a killed sim loses nothing written."""
        if self.truth is not None:
            self.truth.write(orjson.dumps(rec) + b"\n")
            self.truth.flush()

    def metrics(self) -> bytes:
        """Prometheus text of the counters."""
        return metrics_text(self.requests_total, self.running, self.tokens_total, self.faults)


class SimConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: httptools parsing, pipelined requests answered in order."""

    def __init__(self, sim: SimState) -> None:
        self.sim = sim
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self.queue: collections.deque[HttpRequest] = collections.deque()
        self.busy = False
        self.closing = False
        self.upgraded = False  # the client asked for an HTTP Upgrade (e.g. curl --http2's h2c)
        self.gen: Generation | None = None
        self.served = 0  # responses completed on this connection
        self.start_ns = 0  # deadline base of the request being served (see Generation)
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sim.conns.add(self)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            return  # bytes after an Upgrade request belong to a protocol we do not speak
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp completed the request (without a body) before raising: it is
            # answered as plain HTTP/1.1, then the connection closes (keep_alive False).
            self.upgraded = True
        except httptools.HttpParserError:
            if not self.busy:  # mid-response, a 400 would corrupt the body being sent
                self.write_simple(400, error_body("malformed HTTP request"), JSON_TYPE, False)
            self.closing = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.queue.clear()
        if self.gen is not None:
            self.gen.cancel()
        self.sim.conns.discard(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        if self._headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        received_ns = time.perf_counter_ns()  # first: the truth clock starts when the request is complete
        path = self._url.split(b"?", 1)[0]
        upgrade = self.parser.should_upgrade()
        req = HttpRequest(self.parser.get_method(), path, self._headers, b"".join(self._body),
                          self.parser.should_keep_alive() and not upgrade, received_ns, upgrade)
        if self.busy or self.closing:
            self.queue.append(req)
        else:
            self._dispatch(req)

    # responses
    def write_simple(self, status: int, body: bytes, ctype: bytes, keep_alive: bool,
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """Write a complete response with Content-Length (does not end the exchange)."""
        headers = [(b"Content-Type", ctype), (b"Content-Length", str(len(body)).encode()), *(extra or [])]
        self.transport.write(http_head(status, headers, keep_alive) + body)

    def response_done(self, keep_alive: bool) -> None:
        """The current response is complete: close, or serve the next pipelined request."""
        self.busy, self.gen = False, None
        self.served += 1
        if self.closing:
            return
        if not keep_alive:
            self.closing = True
            self.transport.close()
        elif self.queue:
            # call_soon rather than recursion: a long pipeline of instant replies stays flat.
            self.sim.loop.call_soon(self._dispatch_queued)

    def _dispatch_queued(self) -> None:
        if self.queue and not self.busy and not self.closing:
            # A pipelined request starts "generating" now, not when it was parsed:
            # otherwise its first tokens would all be overdue and burst out at once.
            self._dispatch(self.queue.popleft(), time.perf_counter_ns())

    def _simple(self, req: HttpRequest, status: int, body: bytes, ctype: bytes = JSON_TYPE) -> None:
        self.write_simple(status, body, ctype, req.keep_alive)
        self.response_done(req.keep_alive)

    def _dispatch(self, req: HttpRequest, start_ns: int | None = None) -> None:
        self.busy = True
        self.start_ns = req.received_ns if start_ns is None else start_ns
        route = _ROUTES.get(req.path) or protocol_route(req.path)  # Triton / TGI routes: bench.sim_protocols
        if req.upgrade and req.method == b"POST":  # llhttp gave the body to the upgraded protocol
            self._simple(req, 400, error_body("HTTP Upgrade (e.g. h2c) is not supported: use plain HTTP/1.1"))
        elif route is None:
            self._simple(req, 404, error_body(f"no route for {req.path.decode('latin-1')}", code=404))
        elif req.method != route[0]:
            self._simple(req, 405, error_body(f"use {route[0].decode()} for {req.path.decode()}", code=405))
        else:
            route[1](self, req)

    # handlers
    def _health(self, req: HttpRequest) -> None:
        self._simple(req, 200, b'{"status":"ok"}')

    def _models(self, req: HttpRequest) -> None:
        model = {"id": self.sim.config.model, "object": "model", "created": 0, "owned_by": "benchbox-sim"}
        self._simple(req, 200, orjson.dumps({"object": "list", "data": [model]}))

    def _metrics(self, req: HttpRequest) -> None:
        self._simple(req, 200, self.sim.metrics(), b"text/plain; version=0.0.4; charset=utf-8")

    def _generate(self, req: HttpRequest, kind: str) -> None:
        index = self.sim.next_index()
        request_id = req.headers.get(b"x-request-id", b"").decode("latin-1") or f"sim-{index}"
        if index == self.sim.config.outage_at:
            self._unanswered(req, request_id, 0, Fault.OUTAGE)
            self.sim.begin_outage()
            return
        try:
            greq = parse_request(req.body, kind)
        except RequestError as exc:
            self._unanswered(req, request_id, 400, Fault.NONE)
            self._simple(req, 400, error_body(str(exc)))
            return
        plan = plan_request(self.sim.config, index, greq.max_tokens)
        if plan.fault is Fault.DROP_IDLE:
            if self.served:  # a keep-alive timeout firing just as this request arrived
                self.sim.faults[Fault.DROP_IDLE.value] += 1
                self._unanswered(req, request_id, 0, Fault.DROP_IDLE)
                self.closing = True
                self.transport.close()
                return
            plan = dataclasses.replace(plan, fault=Fault.NONE)  # a fresh connection has no idle timeout
        self.gen = Generation(self, req, greq, plan, request_id, self.start_ns)
        self.gen.start()

    def _unanswered(self, req: HttpRequest, request_id: str, status: int, fault: Fault) -> None:
        """Truth line of a generation request that got no generated response (status 0: none at all)."""
        self.sim.record({"request_id": request_id, "path": req.path.decode("latin-1"), "stream": None,
                         "received_ns": req.received_ns, "start_ns": self.start_ns, "chunk_ns": [],
                         "tokens": 0, "status": status, "fault": fault.value, "prompt_tokens": 0,
                         "end_ns": time.perf_counter_ns()})


_ROUTES: dict[bytes, tuple[bytes, Callable[[SimConnection, HttpRequest], None]]] = {
    b"/v1/chat/completions": (b"POST", lambda conn, req: conn._generate(req, CHAT)),
    b"/v1/completions": (b"POST", lambda conn, req: conn._generate(req, COMPLETION)),
    b"/v1/models": (b"GET", SimConnection._models),
    b"/health": (b"GET", SimConnection._health),
    b"/metrics": (b"GET", SimConnection._metrics),
}


class SimServer:
    """A running simulator (see :func:`start_sim`)."""

    def __init__(self, sim: SimState, host: str, port: int) -> None:
        self._sim, self.host, self.port = sim, host, port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8000`` (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening, drop open connections (in-flight requests log status 499), close the truth log."""
        sim = self._sim
        if sim.comeback is not None:
            sim.comeback.cancel()
            sim.comeback = None
        if sim.listening is not None and not sim.listening.done():
            sim.listening.cancel()
        server = sim.server
        if server is not None:
            server.close()
        for conn in list(self._sim.conns):
            conn.transport.abort()
        for _ in range(200):  # abort() defers connection_lost to the loop; let it run
            if not self._sim.conns:
                break
            await asyncio.sleep(0.001)
        if server is not None:
            await server.wait_closed()
        self._sim.deadlines.close()
        if self._sim.truth is not None:
            self._sim.truth.close()
            self._sim.truth = None


async def start_sim(config: SimConfig) -> SimServer:
    """Start the simulator on the running loop; ``config.port == 0`` picks a free port."""
    loop = asyncio.get_running_loop()
    truth = open(config.truth_log, "ab") if config.truth_log is not None else None  # noqa: SIM115
    sim = SimState(config, loop, _Deadlines(loop), truth)
    try:
        server = await loop.create_server(lambda: SimConnection(sim), config.host, config.port,
                                          reuse_address=True)
    except BaseException:
        sim.deadlines.close()
        if truth is not None:
            truth.close()
        raise
    port = server.sockets[0].getsockname()[1]
    sim.server = server
    if config.port == 0:  # an outage must come back on the same port
        sim.config = dataclasses.replace(config, port=port)
    return SimServer(sim, config.host, port)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _serve(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await start_sim(config)
    click.echo(f"{LISTEN_PREFIX}{server.url}")  # click.echo flushes: tests read this line for the port
    try:
        await stop.wait()
    finally:
        await server.close()


def run_sim(config: SimConfig) -> None:
    """Serve until SIGINT/SIGTERM, on uvloop when importable."""
    loop = _new_loop()
    try:
        loop.run_until_complete(_serve(config))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port.")
@click.option("--model", default="sim-model", show_default=True, help="Model name (a request's is echoed).")
@click.option("--ttft-ms", type=float, default=100.0, show_default=True)
@click.option("--itl-ms", type=float, default=10.0, show_default=True)
@click.option("--output-tokens", type=int, default=128, show_default=True)
@click.option("--output-tokens-jitter", type=int, default=0, show_default=True, help="Uniform ± on length.")
@click.option("--jitter-ms", type=float, default=0.0, show_default=True, help="Uniform ± on every gap.")
@click.option("--tokens-per-chunk", type=int, default=1, show_default=True)
@click.option("--role-chunk/--no-role-chunk", default=True, show_default=True)
@click.option("--keepalive-ms", type=float, default=0.0, show_default=True, help="': ping' period; 0 = off.")
@click.option("--error-rate", type=float, default=0.0, show_default=True, help="Share answered HTTP 500.")
@click.option("--abort-rate", type=float, default=0.0, show_default=True, help="Share cut off mid-stream.")
@click.option("--chaos", default="", metavar="MODE=SHARE,...",
              help="Shares of requests that misbehave, e.g. reset=0.1,stall=0.05. Modes: "
                   f"{', '.join(CHAOS_MODES)} (see bench/sim_chaos.py).")
@click.option("--trickle-ms", type=float, default=2.0, show_default=True,
              help="chaos trickle: gap between the bytes of a trickled response.")
@click.option("--retry-after-s", type=float, default=1.0, show_default=True,
              help="chaos http_429: the Retry-After header's value.")
@click.option("--oversize-bytes", type=int, default=64 * 1024 * 1024, show_default=True,
              help="chaos oversize: content flooded after half the tokens.")
@click.option("--outage-at", type=int, default=None,
              help="Generation request (0-based index) at which the server drops every connection and stops "
                   "listening...")
@click.option("--outage-s", type=float, default=2.0, show_default=True,
              help="...for this long, then listens again on the same port.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--truth-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append one JSON line of timing truth per finished request.")
def sim_command(**options: Any) -> None:
    """Run a deterministic OpenAI-compatible streaming simulator with known timing truth."""
    try:
        config = SimConfig(**{**options, "chaos": parse_chaos(options["chaos"])})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        run_sim(config)
    except OSError as exc:  # port in use, unwritable truth log: an operator error, not a crash
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    sim_command()
