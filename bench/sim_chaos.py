"""Chaos modes of the streaming simulator: the ways a server pushed past its limits misbehaves.

Each mode is a :class:`~bench.sim_stream.Fault` drawn per request from its share
(``SimConfig.chaos``, ``benchbox sim --chaos reset=0.1,stall=0.05``), seeded by
``(seed, request index)`` like every other draw, so a given request index always
gets the same fault. What each does, and what a correct client makes of it:

============== ============================================================ ==============
mode           what the server does                                         client class
============== ============================================================ ==============
http_500       HTTP 500 with an OpenAI error body, at once (= --error-rate) http_5xx
http_429       HTTP 429 ``rate_limit_error`` with ``Retry-After``           http_429
http_429_bare  HTTP 429 without ``Retry-After``                             http_429
abort          half the tokens, then a clean close, no [DONE] (= --abort-   broken_stream
               rate; a close-delimited body would be ``truncated``)
reset          half the tokens, then RST (``SO_LINGER`` 0, then close)       broken_stream
truncate       half the tokens, then the HTTP body ends cleanly (last       truncated
               chunk): no finish_reason, no [DONE]
stall          headers and half the tokens, then nothing (``: ping``        timeout
               comments still flow with --keepalive-ms, like a hung
               generation behind a live SSE timer)
trickle        the whole response, one byte every ``trickle_ms``            ok, or timeout
malformed_json half the tokens, then an event that is not JSON, [DONE]      broken_stream
error_event    half the tokens, then ``data: {"error": {...}}``, [DONE]     broken_stream
oversize       half the tokens, then ``oversize_bytes`` of content,         broken_stream
               whatever ``max_tokens`` said (the client's byte cap)
bad_utf8       half the tokens, then a content event with bytes that are    broken_stream
               not UTF-8 (so not JSON: RFC 8259 §8.1)
close          a normal response announced keep-alive, then the server      ok
               closes the connection
drop_idle      a request arriving on a kept-alive connection: the           ok (resent
               connection is closed unanswered, as when a keep-alive        once on a fresh
               timeout fires just as the request arrives (on a fresh        connection)
               connection the request is answered normally)
============== ============================================================ ==============

Plus one mode that is not per request: an *outage* (``outage_at``/``outage_s`` in
``bench.sim``) where the whole server stops listening and drops every connection,
then comes back on the same port.

Pure parts (spec parsing, payloads) are unit-tested; the writers act on a
:class:`~bench.sim_stream.Generation` at its start or at its fault point.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import TYPE_CHECKING

import orjson

from bench.sim_stream import (
    CHAT, DONE_EVENT, JSON_TYPE, LAST_HTTP_CHUNK, Fault, chat_chunk, content_chunk, error_body, full_response,
    http_chunk, http_head, plan_text, sse_event, usage_chunk,
)

if TYPE_CHECKING:
    from bench.sim_stream import Generation

# Faults a request can draw from ``--chaos`` (NONE and the server-wide OUTAGE cannot).
CHAOS_MODES: tuple[str, ...] = tuple(f.value for f in Fault if f not in (Fault.NONE, Fault.OUTAGE))
_OVERSIZE_EVENT_TEXT = 16 * 1024  # content characters per flood event


def parse_chaos(spec: str | None) -> tuple[tuple[str, float], ...]:
    """``"reset=0.1,stall=0.05"`` -> ``(("reset", 0.1), ("stall", 0.05))``; ValueError names the problem."""
    if not spec or not spec.strip():
        return ()
    out: list[tuple[str, float]] = []
    for part in spec.split(","):
        name, sep, share = part.strip().partition("=")
        if not sep:
            raise ValueError(f"chaos: expected MODE=SHARE, got {part.strip()!r}")
        try:
            value = float(share)
        except ValueError:
            raise ValueError(f"chaos: share of {name.strip()!r} must be a number, got {share!r}") from None
        out.append((name.strip(), value))
    check_chaos(tuple(out))
    return tuple(out)


def check_chaos(chaos: tuple[tuple[str, float], ...]) -> None:
    """Valid modes, each named once, shares in [0, 1] summing to at most 1."""
    seen: set[str] = set()
    for name, share in chaos:
        if name not in CHAOS_MODES:
            raise ValueError(f"chaos: unknown mode {name!r}; valid: {', '.join(CHAOS_MODES)}")
        if name in seen:
            raise ValueError(f"chaos: mode {name!r} given twice")
        seen.add(name)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"chaos: share of {name!r} must be in [0, 1], got {share}")
    total = sum(share for _, share in chaos)
    if total > 1.0 + 1e-9:
        raise ValueError(f"chaos: shares sum to {total:g}, more than 1")


# --- payloads ----------------------------------------------------------------------


def stream_error_event(message: str) -> bytes:
    """An OpenAI-style error object as one SSE event (what vLLM sends when generation fails)."""
    return b"data: " + error_body(message, "server_error", 500) + b"\n\n"


def malformed_event(gen: Generation) -> bytes:
    """A content event cut off inside its JSON: a complete SSE event whose data is not JSON."""
    whole = sse_event(content_chunk(gen.meta, plan_text(gen.plan, gen.tokens_sent, gen.tokens_sent + 1)))
    return whole[: len(whole) // 2] + b"\n\n"


def bad_utf8_event(gen: Generation) -> bytes:
    """A content event whose text carries raw bytes that are not UTF-8 (a lone continuation
    byte, an invalid lead byte): the JSON around them is otherwise well formed."""
    raw = sse_event(content_chunk(gen.meta, " BENCHBOX-BAD-UTF8"))
    return raw.replace(b"BENCHBOX-BAD-UTF8", b"\x80\xff\xfe", 1)


def oversize_event(gen: Generation) -> bytes:
    """One HTTP-chunked content event of ~16 KiB of text: the unit of an ``oversize`` flood."""
    words = plan_text(gen.plan) or " alpha"
    text = (words * (_OVERSIZE_EVENT_TEXT // len(words) + 1))[:_OVERSIZE_EVENT_TEXT]
    return http_chunk(sse_event(content_chunk(gen.meta, text)))


def render_response(gen: Generation) -> bytes:
    """The complete, correct response ``gen`` would send, as one byte string (for trickle)."""
    keep_alive = gen.req.keep_alive
    if not gen.greq.stream:
        plan = gen.plan
        body = orjson.dumps(full_response(gen.meta, plan_text(plan), plan.finish_reason,
                                          gen.greq.prompt_tokens, plan.n_tokens))
        headers = [(b"Content-Type", JSON_TYPE), (b"Content-Length", str(len(body)).encode()), *_id(gen)]
        return http_head(200, headers, keep_alive) + body
    headers = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache"),
               (b"Transfer-Encoding", b"chunked"), *_id(gen)]
    out = [http_head(200, headers, keep_alive)]
    if gen.cfg.role_chunk and gen.greq.kind == CHAT:
        out.append(http_chunk(sse_event(chat_chunk(gen.meta, {"role": "assistant"}))))
    for i, (start, end) in enumerate(gen.events):
        finish = gen.plan.finish_reason if i == len(gen.events) - 1 else None
        out.append(http_chunk(sse_event(content_chunk(gen.meta, plan_text(gen.plan, start, end), finish))))
    if gen.greq.include_usage:
        out.append(http_chunk(sse_event(usage_chunk(gen.meta, gen.greq.prompt_tokens, gen.plan.n_tokens))))
    out.append(http_chunk(DONE_EVENT) + LAST_HTTP_CHUNK)
    return b"".join(out)


def _id(gen: Generation) -> list[tuple[bytes, bytes]]:
    return [(b"X-Request-Id", gen.request_id.encode("latin-1", "replace"))]


# --- writers -----------------------------------------------------------------------


def respond_now(gen: Generation) -> None:
    """Act on an immediate fault (``IMMEDIATE_FAULTS``) other than HTTP 500, which Generation answers."""
    fault = gen.plan.fault
    if fault is Fault.TRICKLE:
        _Trickle(gen, render_response(gen)).drip()
        return
    extra = _id(gen)
    if fault is Fault.HTTP_429:
        extra.append((b"Retry-After", b"%g" % gen.cfg.retry_after_s))
    body = error_body("simulated rate limit (benchbox-sim chaos)", "rate_limit_error", 429)
    gen.conn.write_simple(429, body, JSON_TYPE, gen.req.keep_alive, extra)
    gen._finish(429)


def at_fault_point(gen: Generation) -> None:
    """Act on a mid-stream fault (``MID_STREAM_FAULTS``) other than ABORT, once ``abort_after_tokens``
    tokens were sent."""
    fault, conn = gen.plan.fault, gen.conn
    if fault is Fault.STALL:
        return  # the Generation stays open; the client's timeout ends it (truth status 499)
    if fault is Fault.RESET or not gen.greq.stream:
        # Stream-only faults on a non-streamed request: drop the connection (nothing was sent).
        sock = conn.transport.get_extra_info("socket")
        if sock is not None and fault is Fault.RESET:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.closing = True
        if fault is Fault.RESET:
            conn.transport.abort()
        else:
            conn.transport.close()
        gen._finish(200)
        return
    if fault is Fault.OVERSIZE:
        _Flood(gen).step()
        return
    if fault is Fault.TRUNCATE:
        conn.transport.write(LAST_HTTP_CHUNK)
        gen._finish(200)
        return
    if fault is Fault.MALFORMED_JSON:
        bad = http_chunk(malformed_event(gen))
    elif fault is Fault.ERROR_EVENT:
        bad = http_chunk(stream_error_event("simulated failure mid-generation (benchbox-sim chaos)"))
    else:  # BAD_UTF8
        bad = http_chunk(bad_utf8_event(gen))
    conn.transport.write(bad + http_chunk(DONE_EVENT) + LAST_HTTP_CHUNK)
    gen._finish(200)


class _Flood:
    """Writes ``oversize_bytes`` of content events as fast as the client reads them: a batch
    whenever the transport's buffer is under 1 MiB (so the simulator's memory stays bounded
    however large the flood), then [DONE]. A client that hangs up ends it (truth status 499)."""

    _BUFFER = 1 << 20

    def __init__(self, gen: Generation) -> None:
        self.gen, self.event, self.left = gen, oversize_event(gen), gen.cfg.oversize_bytes

    def step(self) -> None:
        gen = self.gen
        transport = gen.conn.transport
        if gen.done:
            return
        if transport.is_closing():
            gen.cancel()
            return
        if transport.get_write_buffer_size() < self._BUFFER:
            n = max(1, min(self.left, self._BUFFER) // len(self.event))
            transport.write(self.event * n)
            self.left -= n * len(self.event)
            if self.left <= 0:
                transport.write(http_chunk(DONE_EVENT) + LAST_HTTP_CHUNK)
                gen._finish(200)
                return
        gen.sim.deadlines.call_at_ns(time.perf_counter_ns() + 200_000, self.step)


class _Trickle:
    """Writes ``data`` one byte at a time, each due ``trickle_ms`` after the previous one
    (absolute deadlines from the first byte, so timer lateness never accumulates)."""

    def __init__(self, gen: Generation, data: bytes) -> None:
        self.gen, self.data, self.pos = gen, data, 0
        self.step_ns = round(gen.cfg.trickle_ms * 1_000_000)
        self.base_ns = time.perf_counter_ns()

    def drip(self) -> None:
        gen = self.gen
        if gen.done:
            return
        if gen.conn.transport.is_closing():
            gen.cancel()
            return
        gen.conn.transport.write(self.data[self.pos:self.pos + 1])
        self.pos += 1
        if self.pos < len(self.data):
            gen.sim.deadlines.call_at_ns(self.base_ns + self.pos * self.step_ns, self.drip)
            return
        gen.chunk_ns.append(time.perf_counter_ns())
        gen.tokens_sent = gen.plan.n_tokens
        gen.sim.tokens_total += gen.plan.n_tokens
        gen._finish(200)
