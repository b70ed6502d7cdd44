"""Unit tests for the simulator's pure parts and its response writer, without sockets.

``Generation`` is driven through fakes (transport, deadline scheduler, server
state) so SSE/HTTP framing, usage/role chunks, chunking and faults are checked
byte for byte.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import itertools
import re
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from bench.sim import SimConfig, _Deadlines, sim_command
from bench.sim_chaos import CHAOS_MODES, bad_utf8_event, malformed_event, parse_chaos
from bench.sim_stream import (
    CHAT, CLIENT_GONE, COMPLETION, DONE_EVENT, LAST_HTTP_CHUNK, VOCAB, Fault, Generation, GenRequest,
    HttpRequest, Meta, RequestError, chat_chunk, choose_fault, completion_chunk, count_prompt_tokens,
    event_bounds, full_response, http_chunk, http_head, make_rng, metrics_text, parse_request, plan_request,
    plan_text, sse_event, token_text, usage_chunk,
)

MS = 1_000_000


# --- config ------------------------------------------------------------------


def test_config_defaults_match_contract() -> None:
    cfg = SimConfig()
    assert (cfg.host, cfg.port, cfg.model) == ("127.0.0.1", 8000, "sim-model")
    assert (cfg.ttft_ms, cfg.itl_ms, cfg.output_tokens, cfg.jitter_ms) == (100.0, 10.0, 128, 0.0)
    assert (cfg.tokens_per_chunk, cfg.role_chunk, cfg.keepalive_ms) == (1, True, 0)
    assert (cfg.error_rate, cfg.abort_rate, cfg.seed, cfg.truth_log, cfg.output_tokens_jitter) == (
        0.0, 0.0, 0, None, 0)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SimConfig().ttft_ms = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("bad", [
    {"ttft_ms": -1}, {"itl_ms": -0.1}, {"jitter_ms": -1}, {"keepalive_ms": -5}, {"output_tokens": 0},
    {"output_tokens_jitter": -1}, {"tokens_per_chunk": 0}, {"error_rate": 1.5}, {"abort_rate": -0.1},
    {"port": 70000}, {"model": ""},
])
def test_config_rejects_invalid(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad)


def test_cli_rejects_invalid_config_without_traceback() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(sim_command, ["--error-rate", "2"])
    assert result.exit_code == 2
    assert "error_rate" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- planning / determinism ----------------------------------------------------


def test_plan_is_deterministic_per_seed_and_index() -> None:
    cfg = SimConfig(jitter_ms=3.0, output_tokens=50, output_tokens_jitter=10, seed=7)
    assert plan_request(cfg, 3, None) == plan_request(cfg, 3, None)
    plans = [plan_request(cfg, i, None) for i in range(20)]
    assert len({p.token_offsets_ns for p in plans}) == 20  # every request draws its own gaps
    assert len({p.n_tokens for p in plans}) > 1
    other_seed = [plan_request(dataclasses.replace(cfg, seed=8), i, None) for i in range(20)]
    assert [p.token_offsets_ns for p in other_seed] != [p.token_offsets_ns for p in plans]


def test_plan_without_jitter_is_exact_schedule() -> None:
    plan = plan_request(SimConfig(ttft_ms=100, itl_ms=10, output_tokens=5), 0, None)
    assert plan.token_offsets_ns == (100 * MS, 110 * MS, 120 * MS, 130 * MS, 140 * MS)
    assert (plan.n_tokens, plan.finish_reason, plan.fault) == (5, "stop", Fault.NONE)


def test_plan_jitter_is_bounded_per_gap() -> None:
    cfg = SimConfig(ttft_ms=50, itl_ms=10, jitter_ms=2, output_tokens=200, seed=1)
    offsets = plan_request(cfg, 0, None).token_offsets_ns
    gaps = [offsets[0]] + [b - a for a, b in zip(offsets, offsets[1:])]
    assert 48 * MS <= gaps[0] <= 52 * MS
    assert all(8 * MS <= g <= 12 * MS for g in gaps[1:])
    assert len(set(gaps[1:])) > 100  # actually jittered
    assert abs(statistics.mean(gaps[1:]) - 10 * MS) < 0.4 * MS  # centred on itl (σ of the mean ≈ 0.08 ms)
    # large jitter is clamped at zero gap: deadlines never go backwards
    wild = plan_request(dataclasses.replace(cfg, jitter_ms=50), 0, None).token_offsets_ns
    assert all(b >= a for a, b in zip(wild, wild[1:]))


def test_output_length_jitter_bounds_and_max_tokens_cap() -> None:
    cfg = SimConfig(output_tokens=20, output_tokens_jitter=5, seed=3)
    lengths = [plan_request(cfg, i, None).n_tokens for i in range(300)]
    assert min(lengths) >= 15 and max(lengths) <= 25
    assert {15, 25} <= set(lengths)
    capped = plan_request(SimConfig(output_tokens=20), 0, 7)
    assert (capped.n_tokens, capped.finish_reason, len(capped.token_offsets_ns)) == (7, "length", 7)
    roomy = plan_request(SimConfig(output_tokens=20), 0, 50)
    assert (roomy.n_tokens, roomy.finish_reason) == (20, "stop")


def test_faults_follow_rates_and_do_not_shift_other_draws() -> None:
    always = SimConfig(error_rate=1.0)
    assert all(plan_request(always, i, None).fault is Fault.HTTP_500 for i in range(50))
    aborts = SimConfig(abort_rate=1.0, output_tokens=9)
    plan = plan_request(aborts, 0, None)
    assert (plan.fault, plan.abort_after_tokens) == (Fault.ABORT, 4)
    some = SimConfig(error_rate=0.3, seed=11)
    share = sum(choose_fault(make_rng(11, i), some) is Fault.HTTP_500 for i in range(4000)) / 4000
    assert 0.27 < share < 0.33
    base = SimConfig(output_tokens=30, output_tokens_jitter=10, jitter_ms=1)
    for i in range(20):  # enabling faults must not change the lengths/timings of the other requests
        a, b = plan_request(base, i, None), plan_request(dataclasses.replace(base, error_rate=0.5), i, None)
        assert (a.n_tokens, a.token_offsets_ns, a.vocab_start) == (
            b.n_tokens, b.token_offsets_ns, b.vocab_start)


def test_token_text_cycles_vocabulary_with_leading_space() -> None:
    assert token_text(0, 0) == " alpha"
    assert token_text(0, 1) == " beta"
    assert token_text(len(VOCAB) - 1, 1) == " alpha"  # wraps
    plan = plan_request(SimConfig(output_tokens=40), 0, None)
    words = plan_text(plan).split(" ")
    assert words[0] == "" and len(words) == 41 and set(words[1:]) == set(VOCAB)
    assert plan_text(plan, 2, 4) == token_text(plan.vocab_start, 2) + token_text(plan.vocab_start, 3)


def test_event_bounds_groups_tokens() -> None:
    assert event_bounds(5, 1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert event_bounds(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert event_bounds(4, 10) == [(0, 4)]


# --- payloads and framing --------------------------------------------------------

META_CHAT = Meta("chatcmpl-sim-0", 1700000000, "m1", CHAT)
META_CMPL = Meta("cmpl-sim-0", 1700000000, "m2", COMPLETION)


def test_sse_event_framing() -> None:
    event = sse_event(chat_chunk(META_CHAT, {"content": " hi"}))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n") == 2
    assert orjson.loads(event[6:]) == {
        "id": "chatcmpl-sim-0", "object": "chat.completion.chunk", "created": 1700000000, "model": "m1",
        "choices": [{"index": 0, "delta": {"content": " hi"}, "finish_reason": None}],
    }


def test_completion_chunk_shape() -> None:
    obj = orjson.loads(sse_event(completion_chunk(META_CMPL, " a b", "length"))[6:])
    assert obj["object"] == "text_completion" and obj["model"] == "m2"
    assert obj["choices"] == [{"index": 0, "text": " a b", "logprobs": None, "finish_reason": "length"}]


def test_usage_chunk_shape() -> None:
    obj = usage_chunk(META_CHAT, 12, 5)
    assert obj["choices"] == [] and obj["object"] == "chat.completion.chunk"
    assert obj["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert usage_chunk(META_CMPL, 1, 1)["object"] == "text_completion"


def test_full_response_shapes() -> None:
    chat = full_response(META_CHAT, " x y", "stop", 3, 2)
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": " x y"}
    assert chat["usage"]["total_tokens"] == 5
    cmpl = full_response(META_CMPL, " x", "length", 1, 1)
    assert cmpl["object"] == "text_completion" and cmpl["choices"][0]["text"] == " x"


def test_http_chunk_and_head() -> None:
    assert http_chunk(b"hello world!!!!!!") == b"11\r\nhello world!!!!!!\r\n"  # 17 bytes = 0x11
    with pytest.raises(ValueError):
        http_chunk(b"")
    head = http_head(200, [(b"Content-Type", b"text/event-stream")], keep_alive=False)
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    assert http_head(404, [], True).startswith(b"HTTP/1.1 404 Not Found\r\n")


def test_metrics_text_is_prometheus() -> None:
    text = metrics_text(5, 2, 640, {"http_500": 1}).decode()
    assert "# TYPE sim_requests_total counter\nsim_requests_total 5\n" in text
    assert "# TYPE sim_requests_running gauge\nsim_requests_running 2\n" in text
    assert "sim_tokens_generated_total 640\n" in text
    assert 'sim_faults_total{fault="http_500"} 1\n' in text and 'sim_faults_total{fault="abort"} 0\n' in text


# --- request parsing ------------------------------------------------------------


def test_parse_chat_request() -> None:
    body = {"model": "x", "stream": True, "max_tokens": 5, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "one two three"}]}]}
    req = parse_request(orjson.dumps(body), CHAT)
    assert req == GenRequest(CHAT, "x", True, True, 5, 5)


def test_parse_defaults_and_completions_prompt_counting() -> None:
    req = parse_request(b'{"prompt": "a b  c\\nd"}', COMPLETION)
    assert (req.stream, req.include_usage, req.max_tokens, req.model, req.prompt_tokens) == (
        False, False, None, None, 4)
    assert count_prompt_tokens({"prompt": [1, 2, 3, 4, 5]}, COMPLETION) == 5  # token ids
    assert count_prompt_tokens({"prompt": ["a b", "c"]}, COMPLETION) == 3
    assert parse_request(b'{"messages": [], "max_completion_tokens": 9}', CHAT).max_tokens == 9


@pytest.mark.parametrize("raw", [
    b"{bad", b"[1, 2]", b'{"prompt": "x", "max_tokens": 0}', b'{"prompt": "x", "max_tokens": "5"}',
    b'{"prompt": "x", "max_tokens": true}',
])
def test_parse_rejects_bad_requests(raw: bytes) -> None:
    with pytest.raises(RequestError):
        parse_request(raw, COMPLETION)


def test_parse_chat_requires_messages() -> None:
    with pytest.raises(RequestError, match="messages"):
        parse_request(b'{"prompt": "x"}', CHAT)


# --- Generation through fakes -------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class FakeDeadlines:
    """Collects deadlines; ``run()`` fires them in deadline order, checking none goes backwards."""

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.fired: list[int] = []

    def call_at_ns(self, deadline_ns: int, callback: Callable[[], None]) -> None:
        heapq.heappush(self.heap, (deadline_ns, next(self.seq), callback))

    def run(self) -> None:
        while self.heap:
            deadline, _, callback = heapq.heappop(self.heap)
            self.fired.append(deadline)
            callback()


@dataclasses.dataclass
class FakeSim:
    config: SimConfig
    deadlines: FakeDeadlines = dataclasses.field(default_factory=FakeDeadlines)
    loop: Any = None
    running: int = 0
    tokens_total: int = 0
    faults: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def record(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)


class FakeConn:
    def __init__(self, config: SimConfig) -> None:
        self.sim = FakeSim(config)
        self.transport = FakeTransport()
        self.closing = False
        self.done_calls: list[bool] = []

    def write_simple(self, status: int, body: bytes, ctype: bytes, keep_alive: bool,
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [(b"Content-Type", ctype), (b"Content-Length", str(len(body)).encode()), *(extra or [])]
        self.transport.write(http_head(status, headers, keep_alive) + body)

    def response_done(self, keep_alive: bool) -> None:
        self.done_calls.append(keep_alive)


def run_generation(config: SimConfig, body: dict[str, Any], kind: str = CHAT,
                   received_ns: int = 10**12) -> tuple[FakeConn, bytes, bytes]:
    """Drive one Generation to completion; returns (conn, HTTP head, de-chunked body)."""
    conn = FakeConn(config)
    greq = parse_request(orjson.dumps(body), kind)
    req = HttpRequest(b"POST", b"/v1/x", {}, b"", True, received_ns)
    plan = plan_request(config, 0, greq.max_tokens)
    gen = Generation(conn, req, greq, plan, "rid-1")  # type: ignore[arg-type]
    gen.start()
    conn.sim.deadlines.run()
    head, _, rest = bytes(conn.transport.data).partition(b"\r\n\r\n")
    return conn, head, dechunk(rest) if b"chunked" in head else rest


def dechunk(data: bytes) -> bytes:
    """Decode a chunked body, asserting well-formed framing (a truncated body is allowed)."""
    out = bytearray()
    while data:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, "truncated chunk size line"
        size = int(size_line, 16)
        if size == 0:
            assert data == b"\r\n", "bytes after the last chunk"
            break
        assert data[size:size + 2] == b"\r\n"
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)


def sse_payloads(body: bytes) -> list[Any]:
    """Parse SSE ``data:`` events; ``[DONE]`` becomes the string "[DONE]", comments are dropped."""
    events = body.split(b"\n\n")
    assert events[-1] == b"", "body must end on an event boundary"
    out: list[Any] = []
    for event in events[:-1]:
        if event.startswith(b":"):
            continue
        assert event.startswith(b"data: ")
        payload = event[6:]
        out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


CHAT_BODY = {"messages": [{"role": "user", "content": "hello there"}], "stream": True}


def test_stream_chat_framing_role_tokens_done() -> None:
    cfg = SimConfig(ttft_ms=100, itl_ms=10, output_tokens=4)
    conn, head, body = run_generation(cfg, {**CHAT_BODY, "model": "echo-me"})
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/event-stream" in head and b"Transfer-Encoding: chunked" in head
    assert b"X-Request-Id: rid-1" in head
    assert bytes(conn.transport.data).endswith(http_chunk(DONE_EVENT) + LAST_HTTP_CHUNK)
    events = sse_payloads(body)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant"}
    content = events[1:-1]
    assert len(content) == 4 and events[-1] == "[DONE]"
    assert all(e["model"] == "echo-me" and e["object"] == "chat.completion.chunk" for e in content)
    assert [e["choices"][0]["finish_reason"] for e in content] == [None, None, None, "stop"]
    text = "".join(e["choices"][0]["delta"]["content"] for e in content)
    assert text == plan_text(plan_request(cfg, 0, None))
    # each event fired at its absolute deadline
    assert conn.sim.deadlines.fired == [10**12 + ms * MS for ms in (100, 110, 120, 130)]
    (rec,) = conn.sim.records
    assert (rec["status"], rec["tokens"], len(rec["chunk_ns"]), rec["request_id"]) == (200, 4, 4, "rid-1")
    assert conn.done_calls == [True] and conn.sim.running == 0 and conn.sim.tokens_total == 4


def test_usage_chunk_only_when_asked() -> None:
    cfg = SimConfig(output_tokens=3)
    _, _, without = run_generation(cfg, CHAT_BODY)
    assert not any(isinstance(e, dict) and "usage" in e for e in sse_payloads(without))
    _, _, with_usage = run_generation(cfg, {**CHAT_BODY, "stream_options": {"include_usage": True}})
    events = sse_payloads(with_usage)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"] == [] and events[-2]["usage"] == {
        "prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_no_role_chunk_and_completions_stream() -> None:
    _, _, chat = run_generation(SimConfig(output_tokens=2, role_chunk=False), CHAT_BODY)
    assert "role" not in sse_payloads(chat)[0]["choices"][0]["delta"]
    _, _, cmpl = run_generation(SimConfig(output_tokens=2), {"prompt": "p", "stream": True}, COMPLETION)
    events = sse_payloads(cmpl)
    assert len(events) == 3 and events[-1] == "[DONE]"  # completions never get a role chunk
    assert all(e["object"] == "text_completion" and "text" in e["choices"][0] for e in events[:-1])


def test_tokens_per_chunk_groups_and_times_at_last_token() -> None:
    cfg = SimConfig(ttft_ms=100, itl_ms=10, output_tokens=7, tokens_per_chunk=3, role_chunk=False)
    conn, _, body = run_generation(cfg, {**CHAT_BODY, "max_tokens": 100})
    content = sse_payloads(body)[:-1]
    assert [len(e["choices"][0]["delta"]["content"].split()) for e in content] == [3, 3, 1]
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert conn.sim.deadlines.fired == [10**12 + ms * MS for ms in (120, 150, 160)]
    assert conn.sim.records[0]["tokens"] == 7


def test_deadlines_are_relative_to_start_ns() -> None:
    conn = FakeConn(SimConfig(ttft_ms=100, itl_ms=10, output_tokens=2))
    greq = parse_request(orjson.dumps(CHAT_BODY), CHAT)
    req = HttpRequest(b"POST", b"/v1/chat/completions", {}, b"", True, 5 * MS)
    plan = plan_request(conn.sim.config, 0, None)
    gen = Generation(conn, req, greq, plan, "r", 50 * MS)  # type: ignore[arg-type]
    gen.start()
    conn.sim.deadlines.run()
    assert conn.sim.deadlines.fired == [150 * MS, 160 * MS]
    rec = conn.sim.records[0]
    assert (rec["received_ns"], rec["start_ns"]) == (5 * MS, 50 * MS)


def test_max_tokens_gives_length_finish() -> None:
    _, _, body = run_generation(SimConfig(output_tokens=10, role_chunk=False), {**CHAT_BODY, "max_tokens": 2})
    content = sse_payloads(body)[:-1]
    assert len(content) == 2 and content[-1]["choices"][0]["finish_reason"] == "length"


def test_non_streaming_body_after_last_deadline() -> None:
    cfg = SimConfig(ttft_ms=100, itl_ms=10, output_tokens=3)
    conn, head, body = run_generation(cfg, {"messages": [], "model": "q"})
    assert b"Content-Type: application/json" in head and b"Content-Length: %d" % len(body) in head
    obj = orjson.loads(body)
    assert obj["object"] == "chat.completion" and obj["model"] == "q"
    assert obj["choices"][0]["finish_reason"] == "stop" and obj["usage"]["completion_tokens"] == 3
    assert conn.sim.deadlines.fired == [10**12 + 120 * MS]


def test_http_500_fault_is_immediate_openai_error() -> None:
    conn, head, body = run_generation(SimConfig(error_rate=1.0), CHAT_BODY)
    assert head.startswith(b"HTTP/1.1 500 ")
    assert orjson.loads(body)["error"]["type"] == "server_error"
    assert conn.sim.deadlines.fired == [] and conn.sim.faults == {"http_500": 1}
    assert conn.sim.records[0]["status"] == 500 and conn.done_calls == [True]


def test_abort_fault_truncates_after_half_the_tokens() -> None:
    conn, _, _ = run_generation(SimConfig(abort_rate=1.0, output_tokens=8, role_chunk=False), CHAT_BODY)
    raw = bytes(conn.transport.data)
    assert conn.transport.closed and conn.closing and b"[DONE]" not in raw
    assert not raw.endswith(LAST_HTTP_CHUNK)
    events = sse_payloads(dechunk(raw.partition(b"\r\n\r\n")[2]))
    assert len(events) == 4
    rec = conn.sim.records[0]
    assert (rec["fault"], rec["tokens"]) == ("abort", 4)


def test_cancel_records_client_gone() -> None:
    conn = FakeConn(SimConfig(output_tokens=5))
    greq = parse_request(orjson.dumps(CHAT_BODY), CHAT)
    req = HttpRequest(b"POST", b"/v1/chat/completions", {}, b"", True, 0)
    gen = Generation(conn, req, greq, plan_request(conn.sim.config, 0, None), "r")  # type: ignore[arg-type]
    gen.start()
    gen.cancel()
    conn.sim.deadlines.run()  # stale deadlines must be no-ops
    assert [r["status"] for r in conn.sim.records] == [CLIENT_GONE]
    assert conn.done_calls == [] and conn.sim.running == 0



# --- the deadline scheduler (a real loop, no sockets) ----------------------------------


@pytest.mark.parametrize("use_timerfd", [True, False])
def test_deadlines_fire_in_order_and_not_early(use_timerfd: bool) -> None:
    async def main() -> tuple[list[tuple[str, int, int]], bool]:
        deadlines = _Deadlines(asyncio.get_running_loop(), use_timerfd=use_timerfd)
        fired: list[tuple[str, int, int]] = []
        done = asyncio.get_running_loop().create_future()
        base = time.perf_counter_ns()
        plan = [("c", 30), ("a", 10), ("b", 20), ("past", -5)]
        for name, ms in plan:
            due = base + ms * MS

            def callback(name: str = name, due: int = due) -> None:
                fired.append((name, due, time.perf_counter_ns()))
                if len(fired) == len(plan):
                    done.set_result(None)

            deadlines.call_at_ns(due, callback)
        try:
            await asyncio.wait_for(done, 5)
        finally:
            precise = deadlines.precise
            deadlines.close()
        return fired, precise

    fired, precise = asyncio.run(main())
    assert [name for name, _, _ in fired] == ["past", "a", "b", "c"]
    if use_timerfd:
        assert precise == (sys.platform == "linux")
    else:
        assert not precise
    if precise:  # timerfd path guarantees never early; call_at may be ~1 ms early on uvloop
        assert all(at >= due for _, due, at in fired)


# --- chaos modes (bench.sim_chaos) -------------------------------------------------------


def test_parse_chaos_spec() -> None:
    assert parse_chaos("") == () and parse_chaos(None) == ()
    assert parse_chaos(" reset=0.1, stall=0.05 ") == (("reset", 0.1), ("stall", 0.05))
    assert set(CHAOS_MODES) >= {"http_429", "http_429_bare", "reset", "stall", "trickle", "malformed_json",
                                "error_event", "oversize", "bad_utf8", "close", "abort", "http_500"}
    assert "none" not in CHAOS_MODES and "outage" not in CHAOS_MODES


@pytest.mark.parametrize("spec,needle", [
    ("reset", "MODE=SHARE"), ("reset=x", "must be a number"), ("bogus=0.1", "valid: http_500"),
    ("reset=1.5", "in [0, 1]"), ("reset=0.6,stall=0.6", "sum to 1.2"), ("reset=0.1,reset=0.2", "twice"),
])
def test_parse_chaos_rejects_with_one_clear_line(spec: str, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_chaos(spec)


def test_cli_chaos_errors_are_usage_errors() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(sim_command, ["--chaos", "bogus=0.5"])
    assert result.exit_code == 2 and "unknown mode 'bogus'" in result.output
    help_text = CliRunner().invoke(sim_command, ["--help"]).output
    assert "--chaos" in help_text and "stall" in help_text and "--outage-at" in help_text


def test_chaos_shares_are_seeded_and_do_not_shift_other_draws() -> None:
    chaos = (("reset", 0.2), ("stall", 0.1), ("http_429", 0.1))
    cfg = SimConfig(chaos=chaos, seed=5, output_tokens=30, output_tokens_jitter=10)
    faults = [plan_request(cfg, i, None).fault for i in range(4000)]
    assert faults == [plan_request(cfg, i, None).fault for i in range(4000)]  # deterministic
    shares = collections.Counter(faults)
    for fault, share in ((Fault.RESET, 0.2), (Fault.STALL, 0.1), (Fault.HTTP_429, 0.1)):
        assert abs(shares[fault] / 4000 - share) < 0.025
    plain = dataclasses.replace(cfg, chaos=())
    for i in range(50):
        a, b = plan_request(plain, i, None), plan_request(cfg, i, None)
        assert (a.n_tokens, a.token_offsets_ns, a.vocab_start) == (b.n_tokens, b.token_offsets_ns, b.vocab_start)
    # The legacy rates come first and keep their meaning.
    assert plan_request(SimConfig(error_rate=1.0, chaos=(("reset", 1.0),)), 0, None).fault is Fault.HTTP_500


def test_mid_stream_faults_act_after_half_the_tokens() -> None:
    for mode in ("reset", "stall", "truncate", "malformed_json", "error_event", "oversize", "bad_utf8", "abort"):
        plan = plan_request(SimConfig(chaos=((mode, 1.0),), output_tokens=9), 0, None)
        assert plan.abort_after_tokens == 4, mode
    for mode in ("http_429", "trickle", "close"):
        assert plan_request(SimConfig(chaos=((mode, 1.0),)), 0, None).abort_after_tokens is None


class ChaosTransport(FakeTransport):
    """FakeTransport plus what the chaos writers use: abort, the socket, the write buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False
        self.sockopts: list[tuple[int, int, bytes]] = []

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_extra_info(self, name: str) -> Any:
        assert name == "socket"
        return self

    def setsockopt(self, level: int, opt: int, value: bytes) -> None:
        self.sockopts.append((level, opt, value))

    def get_write_buffer_size(self) -> int:
        return 0


def run_chaos(mode: str, body: dict[str, Any] | None = None, **cfg: Any) -> tuple[FakeConn, bytes, bytes]:
    """run_generation with every request drawing ``mode``, on a ChaosTransport."""
    conn, _ = start_chaos(mode, body, **cfg)
    conn.sim.deadlines.run()
    head, _, rest = bytes(conn.transport.data).partition(b"\r\n\r\n")
    return conn, head, rest


def start_chaos(mode: str, body: dict[str, Any] | None = None, **cfg: Any) -> tuple[FakeConn, Generation]:
    config = SimConfig(chaos=((mode, 1.0),), role_chunk=False, output_tokens=cfg.pop("output_tokens", 8), **cfg)
    conn = FakeConn(config)
    conn.transport = ChaosTransport()
    greq = parse_request(orjson.dumps(body or {**CHAT_BODY, "stream_options": {"include_usage": True}}), CHAT)
    req = HttpRequest(b"POST", b"/v1/x", {}, b"", True, 10**12)
    gen = Generation(conn, req, greq, plan_request(config, 0, greq.max_tokens), "rid-1")  # type: ignore[arg-type]
    gen.start()
    return conn, gen


def test_http_429_with_and_without_retry_after() -> None:
    conn, head, body = run_chaos("http_429", retry_after_s=2.5)
    assert head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n") and b"\r\nRetry-After: 2.5" in head
    assert b"Connection: keep-alive" in head
    assert orjson.loads(body)["error"]["type"] == "rate_limit_error"
    assert conn.sim.records[0]["status"] == 429 and conn.done_calls == [True]
    _, head, _ = run_chaos("http_429_bare")
    assert head.startswith(b"HTTP/1.1 429 ") and b"Retry-After" not in head


def test_reset_sends_rst_after_half_the_tokens() -> None:
    conn, _, rest = run_chaos("reset")
    assert conn.transport.aborted and conn.closing
    assert conn.transport.sockopts == [(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))]
    assert len(sse_payloads(dechunk(rest))) == 4 and b"[DONE]" not in rest
    assert (conn.sim.records[0]["fault"], conn.sim.records[0]["tokens"]) == ("reset", 4)


def test_stall_sends_half_then_nothing_until_the_client_leaves() -> None:
    conn, gen = start_chaos("stall")
    conn.sim.deadlines.run()
    sent = bytes(conn.transport.data)
    assert len(sse_payloads(dechunk(sent.partition(b"\r\n\r\n")[2]))) == 4
    assert not conn.transport.closed and conn.sim.records == [] and conn.sim.running == 1
    conn.sim.deadlines.run()
    assert bytes(conn.transport.data) == sent  # nothing more, ever
    gen.cancel()  # the client timed out and hung up: the truth log says so
    assert [(r["status"], r["fault"], r["tokens"]) for r in conn.sim.records] == [(CLIENT_GONE, "stall", 4)]
    assert conn.sim.running == 0


def test_malformed_json_error_event_and_bad_utf8_events() -> None:
    for mode in ("malformed_json", "error_event", "bad_utf8"):
        conn, _, rest = run_chaos(mode)
        body = dechunk(rest)
        events = body.split(b"\n\n")
        assert events[-2] == b"data: [DONE]" and events[-1] == b""  # a clean end of the HTTP body
        good = [orjson.loads(e[6:]) for e in events[:4]]
        assert all(g["choices"][0]["delta"]["content"] for g in good)
        bad = events[4][6:]
        if mode == "error_event":
            assert orjson.loads(bad)["error"]["type"] == "server_error"
        else:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(bad)
        if mode == "bad_utf8":
            assert b"\x80\xff\xfe" in bad
            with pytest.raises(UnicodeDecodeError):
                bad.decode("utf-8")
            assert orjson.loads(bad.replace(b"\x80\xff\xfe", b"x"))  # only the bytes are wrong
        assert conn.sim.records[0]["status"] == 200 and conn.done_calls == [True]


def test_pure_fault_payloads() -> None:
    cfg = SimConfig(output_tokens=4)
    conn = FakeConn(cfg)
    greq = parse_request(orjson.dumps(CHAT_BODY), CHAT)
    gen = Generation(conn, HttpRequest(b"POST", b"/", {}, b"", True, 0), greq,  # type: ignore[arg-type]
                     plan_request(cfg, 0, None), "r")
    assert malformed_event(gen).endswith(b"\n\n") and malformed_event(gen).startswith(b"data: {")
    assert b"\x80\xff\xfe" in bad_utf8_event(gen)


def test_oversize_floods_past_any_max_tokens() -> None:
    conn, _, rest = run_chaos("oversize", {**CHAT_BODY, "max_tokens": 2}, output_tokens=2,
                              oversize_bytes=300_000)
    body = dechunk(rest)
    assert len(body) > 300_000 and body.endswith(b"data: [DONE]\n\n")
    assert conn.sim.records[0]["status"] == 200


def test_trickle_writes_one_byte_per_step_and_the_same_response() -> None:
    conn, head, rest = run_chaos("trickle", trickle_ms=1.0, output_tokens=3)
    normal = FakeConn(SimConfig(role_chunk=False, output_tokens=3))
    greq = parse_request(orjson.dumps({**CHAT_BODY, "stream_options": {"include_usage": True}}), CHAT)
    Generation(normal, HttpRequest(b"POST", b"/v1/x", {}, b"", True, 10**12), greq,  # type: ignore[arg-type]
               plan_request(normal.sim.config, 0, None), "rid-1").start()
    normal.sim.deadlines.run()
    # Same bytes as an untouched response (plan and ids alike), written one at a time.
    total = len(conn.transport.data)
    assert bytes(conn.transport.data).split(b"\r\n\r\n", 1)[1] == bytes(normal.transport.data).split(
        b"\r\n\r\n", 1)[1]
    fired = conn.sim.deadlines.fired
    assert len(fired) == total - 1  # the first byte at once, then one deadline per byte
    assert all(b - a == MS for a, b in zip(fired, fired[1:]))
    assert conn.sim.records[0]["tokens"] == 3 and conn.done_calls == [True]


def test_close_fault_answers_then_drops_the_kept_alive_connection() -> None:
    conn, head, rest = run_chaos("close")
    assert b"Connection: keep-alive" in head and sse_payloads(dechunk(rest))[-1] == "[DONE]"
    assert conn.done_calls == [False]  # response_done(keep_alive=False): the server closes


def test_config_validates_chaos_fields() -> None:
    for bad in ({"chaos": (("nope", 0.1),)}, {"trickle_ms": -1}, {"oversize_bytes": 0}, {"outage_at": -1},
                {"outage_s": -1}, {"retry_after_s": -2}):
        with pytest.raises(ValueError):
            SimConfig(**bad)


def test_truncate_ends_the_http_body_cleanly_without_finish_or_done() -> None:
    conn, _, rest = run_chaos("truncate")
    assert rest.endswith(LAST_HTTP_CHUNK) and not conn.transport.closed  # framing intact, connection kept
    events = sse_payloads(dechunk(rest))
    assert len(events) == 4 and "[DONE]" not in events
    assert all(e["choices"][0]["finish_reason"] is None for e in events)
    assert conn.done_calls == [True] and conn.sim.records[0]["fault"] == "truncate"
