"""Exchange: recorded SSE transcripts fed at fake timestamps become RequestRecord fields.

No sockets: the HTTP callbacks (headers, body reads, message complete) are called
directly with virtual ``now`` stamps, as ``HttpConnection`` would after llhttp.
Each transcript read is one event block (up to and including its blank line), the
i-th read (0-based) arriving at ``T0 + (i + 1) * STEP``; the message completes one
step after the last read.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Iterator, Optional

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.adapters import get_adapter
from bench.exchange import DEFAULT_MAX_RESPONSE_BYTES, Exchange
from bench.records import ERROR_CLASSES, RequestRecord

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
T0 = 5_000_000_000
STEP = 10_000_000  # 10 ms between reads
SSE = b"text/event-stream; charset=utf-8"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def at(i: int) -> int:
    """Stamp of the i-th read."""
    return T0 + (i + 1) * STEP


def blocks(data: bytes) -> list[bytes]:
    """Split a body into event blocks, each ending with its blank line (LF or CRLF)."""
    out = re.findall(rb".*?(?:\r\n\r\n|\n\n)", data, re.S)
    rest = data[sum(map(len, out)):]
    return out + ([rest] if rest else [])


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / name).read_bytes()


def new_exchange(loop, protocol: str = "openai-chat",
                 max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> Exchange:
    rec = RequestRecord(target="t", level=1, phase="measure", seq=0, item_id="i", repeat=0,
                        request_id="t-L0-m0", scheduled_ns=T0, sent_ns=T0)
    return Exchange(rec, get_adapter(protocol), loop.create_future(), max_bytes)


def play(loop, body: bytes, *, protocol: str = "openai-chat", status: int = 200, content_type: bytes = SSE,
         reads: Optional[list[bytes]] = None, complete: bool = True, retry_after: Optional[str] = None,
         max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> tuple[RequestRecord, Exchange]:
    ex = new_exchange(loop, protocol, max_bytes)
    ex.retry_after = retry_after
    ex.on_headers(status, content_type)
    reads = blocks(body) if reads is None else reads
    for i, piece in enumerate(reads):
        ex.on_body(piece, at(i))
    if complete:
        ex.on_message_complete(at(len(reads)))
    return ex.record, ex


def content_block_indexes(body: bytes, protocol: str = "openai-chat") -> list[int]:
    """Indexes of the blocks that carry content, found independently of Exchange."""
    out = []
    for i, b in enumerate(blocks(body)):
        for line in b.splitlines():
            if line.startswith(b"data: ") and line[6:] != b"[DONE]":
                obj = orjson.loads(line[6:])
                ch = (obj.get("choices") or [{}])[0]
                if protocol == "openai-completions":
                    text = ch.get("text")
                else:
                    text = (ch.get("delta") or {}).get("content")
                if text:
                    out.append(i)
    return out


# --- successful streams ---------------------------------------------------------


def test_vllm_chat(loop) -> None:
    body = transcript("vllm_chat.sse")
    rec, ex = play(loop, body)
    assert len(blocks(body)) == 11  # role, 7 content, finish, usage, [DONE]
    assert rec.error is None, rec.error_detail
    assert rec.first_token_ns == at(1)  # block 0 is the role-only chunk
    assert rec.chunk_ns == [at(i) for i in range(1, 8)]
    assert rec.end_ns == at(11)
    assert rec.output_text == "The capital of France is Paris."
    assert rec.reasoning_text == ""
    assert rec.finish_reason == "stop"
    assert (rec.prompt_tokens, rec.output_tokens) == (15, 7)
    assert rec.server_timings is None
    assert ex.done_marker and ex.future.done() and ex.resolved


def test_llamacpp_chat_timings_and_usage(loop) -> None:
    rec, _ = play(loop, transcript("llamacpp_chat.sse"))
    assert rec.error is None
    assert rec.first_token_ns == at(1)  # role chunk has "content": null
    assert rec.chunk_ns == [at(i) for i in range(1, 8)]
    assert rec.output_text == "Hello! How can I help?"
    assert rec.finish_reason == "stop"
    assert (rec.prompt_tokens, rec.output_tokens) == (11, 7)
    assert rec.server_timings == {
        "prompt_n": 11, "prompt_ms": 35.204, "prompt_per_token_ms": 3.2004, "prompt_per_second": 312.46,
        "predicted_n": 7, "predicted_ms": 86.128, "predicted_per_token_ms": 12.304,
        "predicted_per_second": 81.27,
    }


def test_multi_token_chunks_one_stamp_per_event(loop) -> None:
    rec, _ = play(loop, transcript("multi_token_chunks.sse"))
    assert rec.error is None
    assert rec.chunk_ns == [at(1), at(2), at(3)]
    assert rec.output_tokens == 12  # from usage, not from counting chunks
    assert rec.output_text == "Once upon a time, there was a little robot who"
    assert rec.finish_reason == "length"


def test_keepalive_comments_and_crlf(loop) -> None:
    body = transcript("keepalive_crlf.sse")
    assert b"\r\n" in body
    rec, ex = play(loop, body)
    # blocks: 0 role, 1 ping, 2 "Hi", 3 ping, 4 " there", 5 finish, 6 usage, 7 [DONE]
    assert rec.error is None
    assert ex.sse.comments == 2
    assert rec.first_token_ns == at(2)
    assert rec.chunk_ns == [at(2), at(4)]
    assert rec.output_text == "Hi there"
    assert (rec.prompt_tokens, rec.output_tokens, rec.finish_reason) == (8, 2, "stop")


def test_completions_stream(loop) -> None:
    body = transcript("vllm_completions.sse")
    rec, _ = play(loop, body, protocol="openai-completions")
    assert rec.error is None
    assert content_block_indexes(body, "openai-completions") == list(range(8))
    assert rec.first_token_ns == at(0)
    assert rec.chunk_ns == [at(i) for i in range(8)]  # the last token arrives with finish_reason
    assert rec.output_text == " Paris. It is also the largest city"
    assert (rec.finish_reason, rec.prompt_tokens, rec.output_tokens) == ("length", 5, 8)


def test_reasoning_does_not_count_as_first_token(loop) -> None:
    rec, _ = play(loop, transcript("reasoning_chat.sse"))
    # blocks: 0 role, 1-4 reasoning, 5-6 content, 7 finish, 8 usage, 9 [DONE]
    assert rec.error is None
    assert rec.first_token_ns == at(5)
    assert rec.chunk_ns == [at(5), at(6)]
    assert rec.reasoning_text == "Okay, the user asks for 2+2."
    assert rec.output_text == "2 + 2 = 4."
    assert rec.output_tokens == 20


@pytest.mark.parametrize("name,protocol", [
    ("vllm_chat.sse", "openai-chat"), ("llamacpp_chat.sse", "openai-chat"),
    ("multi_token_chunks.sse", "openai-chat"), ("keepalive_crlf.sse", "openai-chat"),
    ("reasoning_chat.sse", "openai-chat"), ("vllm_completions.sse", "openai-completions"),
])
def test_chunk_stamps_match_independent_count(loop, name: str, protocol: str) -> None:
    body = transcript(name)
    rec, _ = play(loop, body, protocol=protocol)
    idx = content_block_indexes(body, protocol)
    assert rec.chunk_ns == [at(i) for i in idx]
    assert rec.first_token_ns == at(idx[0])


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=2529), max_size=25))
def test_any_read_split_same_record(cuts: list[int]) -> None:
    body = transcript("vllm_chat.sse")
    bounds = [0, *sorted({c % len(body) for c in cuts} - {0}), len(body)]
    reads = [body[a:b] for a, b in zip(bounds, bounds[1:])]
    loop = asyncio.new_event_loop()
    try:
        rec, _ = play(loop, body, reads=reads)
    finally:
        loop.close()
    assert rec.error is None
    assert rec.output_text == "The capital of France is Paris."
    assert (rec.finish_reason, rec.prompt_tokens, rec.output_tokens) == ("stop", 15, 7)
    # The first token is stamped with the read that completed the first content event.
    first_content_end = sum(map(len, blocks(body)[:2]))  # end of block 1, after its blank line
    read_index = next(i for i, b in enumerate(bounds[1:]) if b >= first_content_end)
    assert rec.first_token_ns == at(read_index)
    assert 1 <= len(rec.chunk_ns) <= 7
    assert rec.chunk_ns == sorted(rec.chunk_ns)


# --- failures -------------------------------------------------------------------


def test_error_object_mid_stream_is_broken_stream(loop) -> None:
    rec, ex = play(loop, transcript("error_midstream.sse"))
    # blocks: 0 role, 1 "The", 2 " answer", 3 error object, 4 [DONE]
    assert rec.error == "broken_stream"
    assert "CUDA out of memory" in rec.error_detail
    assert rec.end_ns == at(3)  # resolved at the error, later bytes ignored
    assert rec.output_text == "The answer"  # what arrived before the error is kept
    assert rec.chunk_ns == [at(1), at(2)]
    assert ex.future.done()


def test_event_error_name_is_broken_stream(loop) -> None:
    body = (blocks(transcript("vllm_chat.sse"))[1]
            + b'event: error\ndata: {"message":"server overloaded"}\n\n' + b"data: [DONE]\n\n")
    rec, _ = play(loop, body)
    assert rec.error == "broken_stream"
    assert "server overloaded" in rec.error_detail
    assert rec.output_text == "The"


def test_malformed_json_is_broken_stream(loop) -> None:
    rec, _ = play(loop, transcript("malformed_json.sse"))
    # blocks: 0 role, 1 "Hello", 2 cut-short event, 3 "!"+finish, 4 [DONE]
    assert rec.error == "broken_stream"
    assert "malformed" in rec.error_detail
    assert rec.end_ns == at(2)
    assert rec.output_text == "Hello"
    assert rec.finish_reason is None  # the later finish chunk was not processed


def test_clean_end_without_done_or_finish_is_truncated(loop) -> None:
    cut = b"".join(blocks(transcript("vllm_chat.sse"))[:5])  # role + 4 content chunks, then the body ends
    rec, _ = play(loop, cut)
    assert rec.error == "truncated"
    assert rec.output_text == "The capital of France"
    assert rec.end_ns == at(5)
    assert rec.first_token_ns == at(1)


def test_finish_reason_without_done_is_ok(loop) -> None:
    body = b"".join(blocks(transcript("vllm_chat.sse"))[:-1])  # no [DONE]
    rec, ex = play(loop, body)
    assert rec.error is None and not ex.done_marker


def test_done_without_finish_reason_is_ok(loop) -> None:
    b = blocks(transcript("vllm_chat.sse"))
    rec, _ = play(loop, b"".join(b[:8]) + b"data: [DONE]\n\n")
    assert rec.error is None and rec.finish_reason is None


def test_no_content_is_empty(loop) -> None:
    rec, _ = play(loop, transcript("vllm_chat_empty.sse"))
    assert rec.error == "empty"
    assert rec.first_token_ns is None and rec.chunk_ns == []
    assert rec.output_tokens == 0 and rec.finish_reason == "stop"


def test_final_event_without_blank_line_is_delivered(loop) -> None:
    b = blocks(transcript("vllm_chat.sse"))
    body = b"".join(b[:8]) + b[8].rstrip(b"\n")  # finish chunk, no blank line, no [DONE]
    rec, _ = play(loop, body)
    assert rec.error is None and rec.finish_reason == "stop"


def test_http_429_with_retry_after(loop) -> None:
    body = b'{"error":{"message":"Rate limit exceeded: 10 requests per minute","type":"rate_limit_error"}}'
    rec, _ = play(loop, body, status=429, content_type=b"application/json", reads=[body[:20], body[20:]],
                  retry_after="3")
    assert rec.error == "http_429" and rec.status == 429  # its own class: load shedding, not a bad request
    assert rec.error_detail.startswith("HTTP 429: ")
    assert "Rate limit exceeded: 10 requests per minute" in rec.error_detail
    assert rec.error_detail.endswith("(Retry-After: 3)")
    assert rec.first_token_ns is None and rec.output_text == ""
    assert rec.end_ns == at(2)


def test_http_503_sse_content_type_still_http_error(loop) -> None:
    body = b"Service Unavailable\nmodel is loading\n"
    rec, _ = play(loop, body, status=503, content_type=b"text/plain", reads=[body])
    assert rec.error == "http_5xx"
    assert rec.error_detail == "HTTP 503: Service Unavailable model is loading"
    assert "\n" not in rec.error_detail


def test_http_error_without_body(loop) -> None:
    rec, _ = play(loop, b"", status=404, content_type=b"application/json", reads=[])
    assert rec.error == "http_4xx" and rec.error_detail == "HTTP 404"


def test_http_error_body_kept_bounded(loop) -> None:
    body = b"x" * 10_000
    rec, ex = play(loop, body, status=500, content_type=b"text/html", reads=[body[:3000], body[3000:]])
    assert len(ex.error_body) == 2048
    assert rec.error == "http_5xx" and len(rec.error_detail) <= len("HTTP 500: ") + 300


def test_response_byte_cap_is_broken_stream(loop) -> None:
    body = transcript("vllm_chat.sse")
    cap = len(b"".join(blocks(body)[:3]))  # exactly the first three blocks fit
    rec, ex = play(loop, body, max_bytes=cap)
    assert rec.error == "broken_stream"
    assert f"exceeded {cap} bytes" in rec.error_detail
    assert rec.end_ns == at(3)
    assert rec.output_text == "The capital"
    assert ex.future.done()


def test_callbacks_after_resolution_are_ignored(loop) -> None:
    rec, ex = play(loop, transcript("error_midstream.sse"), complete=False)
    snapshot = (rec.error, rec.error_detail, rec.end_ns, list(rec.chunk_ns), rec.output_text)
    ex.on_body(blocks(transcript("vllm_chat.sse"))[1], at(50))
    ex.on_message_complete(at(51))
    assert (rec.error, rec.error_detail, rec.end_ns, list(rec.chunk_ns), rec.output_text) == snapshot
    assert ex.message_complete


def test_fail_keeps_partial_output(loop) -> None:
    ex = new_exchange(loop)
    ex.on_headers(200, SSE)
    for i, b in enumerate(blocks(transcript("vllm_chat.sse"))[:3]):
        ex.on_body(b, at(i))
    ex.fail("timeout", "no complete response within 1 s", at(9))
    rec = ex.record
    assert (rec.error, rec.end_ns, rec.output_text) == ("timeout", at(9), "The capital")
    assert rec.error in ERROR_CLASSES


def test_non_streamed_json_body(loop) -> None:
    body = (b'{"choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},'
            b'"finish_reason":"stop"}],'
            b'"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}')
    rec, _ = play(loop, body, content_type=b"application/json", reads=[body[:40], body[40:]])
    assert rec.error is None
    assert rec.first_token_ns == at(2) and rec.chunk_ns == [at(2)]  # stamped when the body completes
    assert (rec.output_text, rec.finish_reason, rec.output_tokens) == ("Paris.", "stop", 2)


def test_non_streamed_malformed_body(loop) -> None:
    rec, _ = play(loop, b"<html>oops</html>", content_type=b"text/html", reads=[b"<html>oops</html>"])
    assert rec.error == "broken_stream"


def test_missing_content_type_treated_as_sse(loop) -> None:
    rec, ex = play(loop, transcript("vllm_chat.sse"), content_type=b"")
    assert ex.is_sse and rec.error is None


def test_llamacpp_error_field_is_broken_stream(loop) -> None:
    rec, _ = play(loop, transcript("llamacpp_error_field.sse"))
    assert rec.error == "broken_stream"
    assert "exceeds the available context size" in (rec.error_detail or "")


def test_wrong_shape_event_is_broken_stream(loop) -> None:
    body = b'data: {"choices":[{"index":0,"delta":"oops"}]}\n\ndata: [DONE]\n\n'
    rec, _ = play(loop, body)
    assert rec.error == "broken_stream"
