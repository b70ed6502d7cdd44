"""Response generation for the streaming simulator (``bench.sim``).

Two layers:

* pure functions (planning, OpenAI payloads, SSE/HTTP framing, request
  parsing): no sockets, clocks or loop, so the wire format and the seeded
  randomness are unit-tested directly;
* :class:`Generation`, the timer-driven state machine that writes one response
  on a connection of ``bench.sim``'s server.

Units: planned times are integer nanoseconds *relative to the moment
generation starts*: the ``time.perf_counter_ns()`` (CLOCK_MONOTONIC) stamp of
the fully received request, or, for a pipelined request queued behind
another response, of its dispatch.
"""

from __future__ import annotations

import array
import enum
import itertools
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # annotations only: bench.sim imports this module
    from collections.abc import Callable

    from bench.sim import SimConfig, SimConnection

CHAT = "chat"
COMPLETION = "completion"

# A small fixed vocabulary: each simulated token is one word with a leading
# space, so the streamed text is readable and every token is one "word".
VOCAB: tuple[str, ...] = (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi",
)

DONE_EVENT = b"data: [DONE]\n\n"
PING_EVENT = b": ping\n\n"
LAST_HTTP_CHUNK = b"0\r\n\r\n"
JSON_TYPE = b"application/json"
CLIENT_GONE = 499  # truth-log status when the client disconnected mid-response (nginx's code)
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            429: b"Too Many Requests", 500: b"Internal Server Error"}
_NS_PER_MS = 1_000_000


class Fault(str, enum.Enum):
    """What goes wrong with one request; the hook point for chaos modes.

    To add a mode: add a member, decide it in :func:`choose_fault` (and any
    parameters in :func:`plan_request`), then act on it in :class:`Generation`.
    The chaos modes (``--chaos``) are described and written in :mod:`bench.sim_chaos`.
    """

    NONE = "none"
    HTTP_500 = "http_500"  # immediate 500 with an OpenAI error body
    ABORT = "abort"  # connection closed after half the tokens, no [DONE]
    HTTP_429 = "http_429"  # immediate 429 with Retry-After
    HTTP_429_BARE = "http_429_bare"  # immediate 429 without Retry-After
    RESET = "reset"  # RST after half the tokens
    STALL = "stall"  # no more bytes after half the tokens
    TRUNCATE = "truncate"  # the HTTP body ends cleanly after half the tokens: no finish_reason, no [DONE]
    TRICKLE = "trickle"  # the whole response one byte at a time
    MALFORMED_JSON = "malformed_json"  # a non-JSON event after half the tokens
    ERROR_EVENT = "error_event"  # an OpenAI error object in the stream after half the tokens
    OVERSIZE = "oversize"  # a flood of content after half the tokens, whatever max_tokens said
    BAD_UTF8 = "bad_utf8"  # a content event with non-UTF-8 bytes after half the tokens
    CLOSE = "close"  # a normal response, then the kept-alive connection is closed
    DROP_IDLE = "drop_idle"  # on a kept-alive connection: closed unanswered (bench.sim decides)
    OUTAGE = "outage"  # server-wide (not drawn per request): stops listening for a while


# Answered at once, before any token is due (HTTP 500 here, the rest in bench.sim_chaos).
IMMEDIATE_FAULTS = frozenset({Fault.HTTP_500, Fault.HTTP_429, Fault.HTTP_429_BARE, Fault.TRICKLE})
# Act once ``Plan.abort_after_tokens`` (half the tokens) were sent (ABORT here, the rest in bench.sim_chaos).
MID_STREAM_FAULTS = frozenset({Fault.ABORT, Fault.RESET, Fault.STALL, Fault.TRUNCATE, Fault.MALFORMED_JSON,
                               Fault.ERROR_EVENT, Fault.OVERSIZE, Fault.BAD_UTF8})


class RequestError(ValueError):
    """A client error that becomes an HTTP 400 ``invalid_request_error``."""


@dataclass(frozen=True)
class HttpRequest:
    """One parsed HTTP request; ``received_ns`` is perf_counter_ns when parsing finished."""

    method: bytes
    path: bytes
    headers: dict[bytes, bytes]  # names lower-cased
    body: bytes
    keep_alive: bool
    received_ns: int
    upgrade: bool = False  # carried an HTTP Upgrade (h2c...): answered as HTTP/1.1, then closed


@dataclass(frozen=True)
class GenRequest:
    """The fields of an OpenAI generation request the simulator honours."""

    kind: str  # CHAT or COMPLETION
    model: str | None
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int


@dataclass(frozen=True)
class Plan:
    """Everything decided for one request before any byte is sent.

    ``token_offsets_ns[i]`` is when token ``i`` is due, in ns after generation starts.
    ``abort_after_tokens`` is set only for mid-stream faults (:data:`MID_STREAM_FAULTS`):
    the tokens sent before the fault acts.
    """

    index: int
    fault: Fault
    n_tokens: int
    finish_reason: str
    vocab_start: int
    token_offsets_ns: tuple[int, ...]
    abort_after_tokens: int | None = None


@dataclass(frozen=True)
class Meta:
    """Per-response identity repeated in every chunk."""

    id: str
    created: int  # unix seconds
    model: str
    kind: str


def make_rng(seed: int, index: int) -> random.Random:
    """Per-request RNG seeded from ``(seed, request index)``; reproducible across runs.

    A string seed is hashed with SHA-512 by ``random``, so it is stable across
    processes (unlike ``hash()``).
    """
    return random.Random(f"benchbox-sim:{seed}:{index}")


def choose_fault(rng: random.Random, cfg: SimConfig) -> Fault:
    """Draw the fault for a request. Always consumes three draws (error rate, abort
    rate, chaos modes) so that enabling one mode never shifts the lengths/timings
    drawn for other requests."""
    err, abort, chaos = rng.random(), rng.random(), rng.random()
    if err < cfg.error_rate:
        return Fault.HTTP_500
    if abort < cfg.abort_rate:
        return Fault.ABORT
    edge = 0.0
    for name, share in cfg.chaos:  # cumulative share intervals, in the order given
        edge += share
        if chaos < edge:
            return Fault(name)
    return Fault.NONE


def plan_request(cfg: SimConfig, index: int, max_tokens: int | None) -> Plan:
    """Decide fault, length, token texts and token deadlines for request ``index``.

    Length: ``output_tokens ± output_tokens_jitter`` (uniform, at least 1), then
    capped by ``max_tokens``; ``finish_reason`` is ``"length"`` when the cap cut
    the natural length short, else ``"stop"``.
    Timing: the first gap is ``ttft_ms``, then ``itl_ms`` per token, each gap
    independently ``± jitter_ms`` (uniform over whole ns, clamped at 0);
    deadlines are the cumulative sum, so timer error in the server never
    accumulates.
    """
    rng = make_rng(cfg.seed, index)
    fault = choose_fault(rng, cfg)
    natural = max(1, cfg.output_tokens + rng.randint(-cfg.output_tokens_jitter, cfg.output_tokens_jitter))
    n_tokens = natural if max_tokens is None else min(natural, max_tokens)
    finish = "length" if n_tokens < natural else "stop"
    vocab_start = rng.randrange(len(VOCAB))
    ttft_ns, itl_ns, jitter_ns = (round(ms * _NS_PER_MS) for ms in (cfg.ttft_ms, cfg.itl_ms, cfg.jitter_ms))
    # This runs on the request path (a burst of 256 arrivals pays it 256
    # times), hence integer ns and one bulk C-level draw instead of a
    # rng.uniform() call per token.
    offsets: tuple[int, ...]
    if jitter_ns:
        draws = array.array("I")
        draws.frombytes(rng.randbytes(draws.itemsize * n_tokens))
        span, bits = 2 * jitter_ns + 1, 8 * draws.itemsize
        gaps = [itl_ns - jitter_ns + (u * span >> bits) for u in draws]  # uniform on [-jitter, +jitter]
        gaps[0] += ttft_ns - itl_ns
        if jitter_ns > min(ttft_ns, itl_ns):
            gaps = [max(0, g) for g in gaps]
        offsets = tuple(itertools.accumulate(gaps))
    elif itl_ns:
        offsets = tuple(range(ttft_ns, ttft_ns + n_tokens * itl_ns, itl_ns))
    else:
        offsets = (ttft_ns,) * n_tokens
    abort_after = n_tokens // 2 if fault in MID_STREAM_FAULTS else None
    return Plan(index, fault, n_tokens, finish, vocab_start, offsets, abort_after)


def token_text(vocab_start: int, i: int) -> str:
    """Text of token ``i`` of a response: a vocabulary word with a leading space."""
    return " " + VOCAB[(vocab_start + i) % len(VOCAB)]


def plan_text(plan: Plan, start: int = 0, end: int | None = None) -> str:
    """Concatenated text of tokens ``[start, end)`` of ``plan``."""
    stop = plan.n_tokens if end is None else end
    return "".join(token_text(plan.vocab_start, i) for i in range(start, stop))


def event_bounds(n_tokens: int, tokens_per_chunk: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of each SSE content event; the last may be short.

    An event is due at the deadline of its last token (``end - 1``).
    """
    return [(s, min(s + tokens_per_chunk, n_tokens)) for s in range(0, n_tokens, tokens_per_chunk)]


# --- OpenAI payloads (dicts) -------------------------------------------------


def chat_chunk(meta: Meta, delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` object."""
    return {
        "id": meta.id, "object": "chat.completion.chunk", "created": meta.created, "model": meta.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def completion_chunk(meta: Meta, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    """One streamed ``text_completion`` object."""
    return {
        "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def content_chunk(meta: Meta, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    """A content-bearing chunk of the right shape for ``meta.kind``."""
    if meta.kind == CHAT:
        return chat_chunk(meta, {"content": text}, finish_reason)
    return completion_chunk(meta, text, finish_reason)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def usage_chunk(meta: Meta, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The final ``include_usage`` chunk: empty ``choices`` plus ``usage``."""
    obj = "chat.completion.chunk" if meta.kind == CHAT else "text_completion"
    return {
        "id": meta.id, "object": obj, "created": meta.created, "model": meta.model,
        "choices": [], "usage": usage(prompt_tokens, completion_tokens),
    }


def full_response(meta: Meta, text: str, finish_reason: str, prompt_tokens: int, n: int) -> dict[str, Any]:
    """The non-streaming response body for ``meta.kind``."""
    if meta.kind == CHAT:
        choice: dict[str, Any] = {
            "index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {
        "id": meta.id, "object": obj, "created": meta.created, "model": meta.model,
        "choices": [choice], "usage": usage(prompt_tokens, n),
    }


def error_body(message: str, err_type: str = "invalid_request_error", code: int | None = None) -> bytes:
    """An OpenAI-style error JSON body."""
    return orjson.dumps({"error": {"message": message, "type": err_type, "param": None, "code": code}})


# --- framing -----------------------------------------------------------------


def sse_event(obj: dict[str, Any]) -> bytes:
    """Frame a JSON object as one SSE ``data:`` event."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def http_chunk(payload: bytes) -> bytes:
    """Frame ``payload`` as one HTTP/1.1 chunk (``Transfer-Encoding: chunked``).

    An empty payload would be the terminating chunk, so it is rejected here;
    use :data:`LAST_HTTP_CHUNK`.
    """
    if not payload:
        raise ValueError("empty HTTP chunk would terminate the body")
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def http_head(status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """HTTP/1.1 status line and headers, ending with the blank line."""
    lines = [b"HTTP/1.1 %d %b" % (status, _REASONS.get(status, b"Unknown"))]
    lines += [k + b": " + v for k, v in headers]
    lines.append(b"Connection: " + (b"keep-alive" if keep_alive else b"close"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def metrics_text(requests_total: int, running: int, tokens_total: int, faults: dict[str, int]) -> bytes:
    """Prometheus text exposition (format 0.0.4) of the simulator's counters."""
    lines = [
        "# HELP sim_requests_total Generation requests received.", "# TYPE sim_requests_total counter",
        f"sim_requests_total {requests_total}",
        "# HELP sim_requests_running Generations in flight.", "# TYPE sim_requests_running gauge",
        f"sim_requests_running {running}",
        "# HELP sim_tokens_generated_total Completion tokens sent.",
        "# TYPE sim_tokens_generated_total counter", f"sim_tokens_generated_total {tokens_total}",
        "# HELP sim_faults_total Injected faults.", "# TYPE sim_faults_total counter",
    ]
    lines += [f'sim_faults_total{{fault="{f.value}"}} {faults.get(f.value, 0)}'
              for f in Fault if f is not Fault.NONE]
    return ("\n".join(lines) + "\n").encode()


# --- request parsing ---------------------------------------------------------


def _words(value: Any) -> int:
    """Rough token count: whitespace-split words of strings, nested lists/parts."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)  # a pre-tokenized prompt
        return sum(_words(v) for v in value)
    if isinstance(value, dict):  # a content part: {"type": "text", "text": ...}
        return _words(value.get("text"))
    return 0


def count_prompt_tokens(body: dict[str, Any], kind: str) -> int:
    """Approximate prompt tokens: words of all message contents (chat) or the prompt."""
    if kind == CHAT:
        messages = body.get("messages") or []
        return sum(_words(m.get("content")) for m in messages if isinstance(m, dict))
    return _words(body.get("prompt"))


def parse_request(raw: bytes, kind: str) -> GenRequest:
    """Validate a generation request body; raises :class:`RequestError` (HTTP 400)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    if kind == CHAT and not isinstance(body.get("messages"), list):
        raise RequestError("'messages' must be a list")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise RequestError("'max_tokens' must be a positive integer")
    model = body.get("model")
    options = body.get("stream_options")
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return GenRequest(
        kind=kind,
        model=model if isinstance(model, str) else None,
        stream=bool(body.get("stream", False)),
        include_usage=include_usage,
        max_tokens=max_tokens,
        prompt_tokens=count_prompt_tokens(body, kind),
    )


# --- zero-delay bodies ------------------------------------------------------

_BURST_CACHE: dict[tuple[Any, ...], bytes] = {}
_BURST_CACHE_MAX = 512


def burst_body(meta: Meta, plan: Plan, greq: GenRequest, tokens_per_chunk: int, role_chunk: bool) -> bytes:
    """The whole chunked SSE body of a zero-delay response, rendered once per shape.

    Rendering 256 events costs ~0.5 ms of Python; the cache makes a burst response a memcpy,
    so the simulator outruns the client under test. Cached bodies repeat the first
    response's ``id``/``created`` (ids are not unique in burst mode)."""
    key = (meta.kind, meta.model, plan.n_tokens, plan.vocab_start, plan.finish_reason,
           greq.include_usage, greq.prompt_tokens, tokens_per_chunk, role_chunk)
    body = _BURST_CACHE.get(key)
    if body is None:
        parts = [http_chunk(sse_event(chat_chunk(meta, {"role": "assistant"})))] if role_chunk else []
        bounds = event_bounds(plan.n_tokens, tokens_per_chunk)
        for n, (start, end) in enumerate(bounds):
            finish = plan.finish_reason if n == len(bounds) - 1 else None
            parts.append(http_chunk(sse_event(content_chunk(meta, plan_text(plan, start, end), finish))))
        if greq.include_usage:
            parts.append(http_chunk(sse_event(usage_chunk(meta, greq.prompt_tokens, plan.n_tokens))))
        parts += [http_chunk(DONE_EVENT), LAST_HTTP_CHUNK]
        body = b"".join(parts)
        if len(_BURST_CACHE) >= _BURST_CACHE_MAX:
            _BURST_CACHE.clear()
        _BURST_CACHE[key] = body
    return body


# --- the stateful writer -----------------------------------------------------


class Generation:
    """One chat/completions response in flight, driven by deadline timers (no task per request).

    Truth record written when it ends (``SimState.record``): ``received_ns``,
    ``start_ns`` (the deadline base: ``received_ns`` unless the request was
    pipelined behind another), ``chunk_ns`` (perf_counter_ns right after each
    content event was handed to the transport; for non-streaming, after the
    body), ``tokens`` actually sent, ``status`` (499: client went away), ``fault``.
    """

    def __init__(self, conn: SimConnection, req: HttpRequest, greq: GenRequest, plan: Plan,
                 request_id: str, start_ns: int | None = None) -> None:
        self.conn, self.req, self.greq, self.plan, self.request_id = conn, req, greq, plan, request_id
        self.start_ns = req.received_ns if start_ns is None else start_ns
        self.sim = conn.sim
        self.cfg = conn.sim.config
        prefix = "chatcmpl" if greq.kind == CHAT else "cmpl"
        model = greq.model or self.cfg.model
        self.meta = Meta(f"{prefix}-sim-{plan.index}", int(time.time()), model, greq.kind)
        self.events = event_bounds(plan.n_tokens, self.cfg.tokens_per_chunk)
        self.next_event = 0
        self.tokens_sent = 0
        self.chunk_ns: list[int] = []
        self.done = False  # pending timers check this instead of being cancelled

    def start(self) -> None:
        """Act on the plan: immediate fault, or send headers (+ role chunk) and arm the first deadline."""
        self.sim.running += 1
        if self.plan.fault is not Fault.NONE:
            self.sim.faults[self.plan.fault.value] += 1
        if self.plan.fault is Fault.HTTP_500:
            body = error_body("simulated internal error (benchbox-sim error_rate)", "server_error", 500)
            self.conn.write_simple(500, body, JSON_TYPE, self.req.keep_alive, self._id_header())
            self._finish(500)
            return
        if self.plan.fault in IMMEDIATE_FAULTS:  # 429s and trickle
            from bench.sim_chaos import respond_now

            respond_now(self)
            return
        if not self.greq.stream:
            plan = self.plan
            last = plan.n_tokens if plan.abort_after_tokens is None else plan.abort_after_tokens
            self._arm(plan.token_offsets_ns[last - 1] if last else 0, self._send_full)
            return
        headers = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache"),
                   (b"Transfer-Encoding", b"chunked"), *self._id_header()]
        out = http_head(200, headers, self.req.keep_alive)
        if self._burst_ok():
            self._send_burst(out)
            return
        if self.cfg.role_chunk and self.greq.kind == CHAT:  # like vLLM: role chunk at once, before any token
            out += http_chunk(sse_event(chat_chunk(self.meta, {"role": "assistant"})))
        self.conn.transport.write(out)
        if self.plan.abort_after_tokens == 0:
            self._abort()
            return
        if self.cfg.keepalive_ms > 0:
            self.sim.loop.call_later(self.cfg.keepalive_ms / 1e3, self._ping)
        self._arm_next_event()

    def _burst_ok(self) -> bool:
        """Zero-delay plan (``--ttft-ms 0 --itl-ms 0``): every token is due at once, so the whole
        stream goes out in one write. This keeps the simulator far faster than any client
        (throughput self-benchmarks); the bytes on the wire are the same events."""
        plan = self.plan
        return (plan.fault is Fault.NONE and plan.n_tokens > 0 and plan.token_offsets_ns[-1] == 0
                and self.cfg.keepalive_ms <= 0)

    def _send_burst(self, head: bytes) -> None:
        body = burst_body(self.meta, self.plan, self.greq, self.cfg.tokens_per_chunk,
                          self.cfg.role_chunk and self.greq.kind == CHAT)
        self.conn.transport.write(head + body)
        now = time.perf_counter_ns()
        self.chunk_ns = [now] * len(self.events)
        self.tokens_sent = self.plan.n_tokens
        self.sim.tokens_total += self.plan.n_tokens
        self._finish(200)

    def cancel(self) -> None:
        """The connection went away before the response ended."""
        if not self.done:
            self._finish(CLIENT_GONE)

    def _id_header(self) -> list[tuple[bytes, bytes]]:
        return [(b"X-Request-Id", self.request_id.encode("latin-1", "replace"))]

    def _arm(self, offset_ns: int, callback: Callable[[], None]) -> None:
        # Absolute deadline on the shared monotonic clock: a late wake-up delays
        # only its own event, never the following ones.
        self.sim.deadlines.call_at_ns(self.start_ns + offset_ns, callback)

    def _arm_next_event(self) -> None:
        end = self.events[self.next_event][1]
        self._arm(self.plan.token_offsets_ns[end - 1], self._emit)

    def _ping(self) -> None:
        if self.done or self.conn.transport.is_closing():
            return
        self.conn.transport.write(http_chunk(PING_EVENT))
        self.sim.loop.call_later(self.cfg.keepalive_ms / 1e3, self._ping)

    def _emit(self) -> None:
        """Write one content event, stamp it, then arm the next one or end the stream."""
        if self.done:
            return
        transport = self.conn.transport
        if transport.is_closing():
            self.cancel()
            return
        start, end = self.events[self.next_event]
        self.next_event += 1
        last = self.next_event == len(self.events)
        finish = self.plan.finish_reason if last else None
        chunk = content_chunk(self.meta, plan_text(self.plan, start, end), finish)
        transport.write(http_chunk(sse_event(chunk)))
        self.chunk_ns.append(time.perf_counter_ns())
        self.tokens_sent = end
        self.sim.tokens_total += end - start
        if self.plan.abort_after_tokens is not None and end >= self.plan.abort_after_tokens:
            self._abort()
        elif not last:
            self._arm_next_event()
        else:
            tail = b""
            if self.greq.include_usage:
                tail = http_chunk(sse_event(usage_chunk(self.meta, self.greq.prompt_tokens, end)))
            transport.write(tail + http_chunk(DONE_EVENT) + LAST_HTTP_CHUNK)
            self._finish(200)

    def _send_full(self) -> None:
        """Non-streaming: the whole body once every token is due (or close, for an abort)."""
        if self.done:
            return
        if self.plan.abort_after_tokens is not None:
            self._abort()
            return
        plan = self.plan
        body = orjson.dumps(full_response(self.meta, plan_text(plan), plan.finish_reason,
                                          self.greq.prompt_tokens, plan.n_tokens))
        self.conn.write_simple(200, body, JSON_TYPE, self.req.keep_alive, self._id_header())
        self.chunk_ns.append(time.perf_counter_ns())
        self.tokens_sent = plan.n_tokens
        self.sim.tokens_total += plan.n_tokens
        self._finish(200)

    def _abort(self) -> None:
        """The plan's mid-stream fault point (``abort_after_tokens`` were sent)."""
        if self.plan.fault is not Fault.ABORT:  # the chaos modes
            from bench.sim_chaos import at_fault_point

            at_fault_point(self)
            return
        # close() flushes what was already written, then FINs: the client sees a
        # truncated chunked body with no [DONE].
        self.conn.closing = True
        self.conn.transport.close()
        self._finish(200)

    def _finish(self, status: int) -> None:
        self.done = True
        self.sim.running -= 1
        self.sim.record({
            "request_id": self.request_id, "path": self.req.path.decode("latin-1"),
            "stream": self.greq.stream, "received_ns": self.req.received_ns, "start_ns": self.start_ns,
            "chunk_ns": self.chunk_ns, "tokens": self.tokens_sent, "status": status,
            "fault": self.plan.fault.value, "prompt_tokens": self.greq.prompt_tokens,
            "end_ns": time.perf_counter_ns(),
        })
        if status != CLIENT_GONE:  # Fault.CLOSE: announced keep-alive, closes anyway
            self.conn.response_done(self.req.keep_alive and self.plan.fault is not Fault.CLOSE)
