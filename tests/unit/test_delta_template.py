"""The per-stream delta template: provably the same text as decoding, or no answer at all."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bench.exchange
from bench.adapters.delta_template import DeltaTemplate
from bench.adapters.openai_common import fast_chat_content, fast_completion_text
from bench.adapters import get_adapter
from bench.exchange import DEFAULT_MAX_RESPONSE_BYTES, Exchange
from bench.records import RequestRecord


def chat_chunk(text, *, cid: str = "c1", finish=None, **extra) -> bytes:
    obj = {"id": cid, "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}]}
    obj.update(extra)
    return orjson.dumps(obj)


def test_learns_and_matches_plain_deltas() -> None:
    tmpl = DeltaTemplate.learn(chat_chunk("Hello"), "Hello", fast_chat_content)
    assert tmpl is not None
    assert tmpl.match(chat_chunk(" world")) == " world"
    assert tmpl.match(chat_chunk("héllo ✓")) == "héllo ✓"
    assert tmpl.match(chat_chunk("")) == ""


@pytest.mark.parametrize("payload", [
    chat_chunk('say "hi"'),            # escaped quote: needs a real decode
    chat_chunk("a\\b"),                # escaped backslash
    chat_chunk("line\nbreak"),         # \n escape
    chat_chunk("x", finish="stop"),    # the finishing chunk differs outside the text
    chat_chunk("x", cid="c2"),         # another stream's id
    chat_chunk("x", usage={"completion_tokens": 3}),
    b'{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"\xff"}'
    b',"logprobs":null,"finish_reason":null}]}',  # not UTF-8
    b"[DONE]",
])
def test_anything_else_is_left_to_the_decoder(payload: bytes) -> None:
    tmpl = DeltaTemplate.learn(chat_chunk("Hello"), "Hello", fast_chat_content)
    assert tmpl is not None
    assert tmpl.match(payload) is None


def test_raw_control_character_is_not_plain_text() -> None:
    tmpl = DeltaTemplate.learn(chat_chunk("Hello"), "Hello", fast_chat_content)
    raw = chat_chunk("ab").replace(b'"ab"', b'"a\tb"')  # invalid JSON: orjson refuses it
    assert fast_chat_content(raw) is None
    assert tmpl.match(raw) is None


def test_no_template_when_the_cut_is_ambiguous_or_unprovable() -> None:
    # The text's literal appears twice: which one is the content is not decided by bytes.
    twice = chat_chunk("m")  # "model":"m" and "content":"m"
    assert DeltaTemplate.learn(twice, "m", fast_chat_content) is None
    # A later duplicate key wins in the decoder; the only plain copy of the text is the losing one:
    # the probe shows that cut is not the content.
    dup = chat_chunk("é")[:-1] + b',"choices":[{"index":0,"delta":{"content":"\\u00e9"}}]}'
    assert fast_chat_content(dup) == "é"
    assert DeltaTemplate.learn(dup, "é", fast_chat_content) is None
    # Text the server escapes (non-ASCII as \u) is not found as plain bytes.
    escaped = chat_chunk("é").replace("é".encode(), b"\\u00e9")
    assert fast_chat_content(escaped) == "é"
    assert DeltaTemplate.learn(escaped, "é", fast_chat_content) is None


def test_completions_shape() -> None:
    chunk = orjson.dumps({"id": "x", "choices": [{"index": 0, "text": "abc", "logprobs": None,
                                                  "finish_reason": None}]})
    tmpl = DeltaTemplate.learn(chunk, "abc", fast_completion_text)
    assert tmpl is not None and tmpl.match(chunk.replace(b'"abc"', b'"de f"')) == "de f"


# --- the whole Exchange: with the template, the record is the one decoding gives -------

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)


def stream(parts: list[str], finish_at: int, cid: str) -> bytes:
    events = [chat_chunk(None, cid=cid)]  # role-only start
    for i, text in enumerate(parts):
        events.append(chat_chunk(text, cid=cid, finish="length" if i == finish_at else None))
    events.append(orjson.dumps({"id": cid, "choices": [], "usage": {"prompt_tokens": 2,
                                                                     "completion_tokens": len(parts)}}))
    return b"".join(b"data: " + e + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def new_exchange(loop, adapter) -> Exchange:
    rec = RequestRecord(target="t", level=1, phase="measure", seq=0, item_id="i", repeat=0,
                        request_id="r", scheduled_ns=0, sent_ns=0)
    ex = Exchange(rec, adapter, loop.create_future(), DEFAULT_MAX_RESPONSE_BYTES)
    ex.on_headers(200, b"text/event-stream")
    return ex


def counting_adapter(monkeypatch) -> tuple[object, list[bytes]]:
    """The chat adapter with its fast_content counting the payloads it decodes."""
    calls: list[bytes] = []
    adapter = get_adapter("openai-chat")
    monkeypatch.setattr(adapter, "fast_content", lambda data: calls.append(data) or fast_chat_content(data),
                        raising=False)
    return adapter, calls


def play(body: bytes, cuts: list[int]) -> RequestRecord:
    loop = asyncio.new_event_loop()
    try:
        ex = new_exchange(loop, get_adapter("openai-chat"))
        rec = ex.record
        bounds = [0, *sorted({c % len(body) for c in cuts} - {0}), len(body)]
        for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
            ex.on_body(body[a:b], 1000 * (i + 1))
        ex.on_message_complete(10**9)
        return rec
    finally:
        loop.close()


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(texts, min_size=1, max_size=40), finish_at=st.integers(0, 44),
       cid=st.sampled_from(["c1", "x", 'q"uote']), cuts=st.lists(st.integers(1, 4000), max_size=6))
def test_exchange_same_record_with_and_without_template(parts, finish_at, cid, cuts) -> None:
    body = stream(parts, finish_at, cid)
    with_template = play(body, cuts)
    saved = bench.exchange.MAX_LEARN_TRIES
    bench.exchange.MAX_LEARN_TRIES = 0
    try:
        decoded = play(body, cuts)
    finally:
        bench.exchange.MAX_LEARN_TRIES = saved
    assert with_template.to_json() == decoded.to_json()
    assert with_template.output_text == "".join(parts)


def test_exchange_uses_the_template(monkeypatch) -> None:
    """The shortcut is really taken: orjson runs once per stream for the plain deltas, not per token."""
    adapter, calls = counting_adapter(monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        ex = new_exchange(loop, adapter)
        rec = ex.record
        words = [f"w{i} " for i in range(50)]
        ex.on_body(stream(words, 99, "c1"), 1)
        ex.on_message_complete(2)
    finally:
        loop.close()
    assert rec.output_text == "".join(words)
    assert len(rec.chunk_ns) == 50
    # role chunk, first word (learned + its probe), usage and [DONE]: nowhere near 50 decodes
    assert len(calls) <= 6


def test_match_run_is_all_or_nothing() -> None:
    tmpl = DeltaTemplate.learn(chat_chunk("Hello"), "Hello", fast_chat_content)
    plain = [chat_chunk(t) for t in ["a", "b c", "", "é"]]
    assert tmpl.match_run(plain) == ["a", "b c", "", "é"]
    for odd in (chat_chunk('q"'), chat_chunk("x", finish="stop"), chat_chunk("x", cid="c9"), b"[DONE]",
                chat_chunk("a") + b"\n" + chat_chunk("b")):
        assert tmpl.match_run([*plain[:2], odd, *plain[2:]]) is None
    # a payload cut short cannot borrow its neighbour's bytes
    assert tmpl.match_run([chat_chunk("a")[:-3], chat_chunk("b")]) is None


def test_run_of_coalesced_deltas_stamped_with_their_read() -> None:
    words = [f"w{i} " for i in range(30)]
    body = stream(words, 99, "c1")
    rec = play(body, [])  # the whole stream in one read
    assert rec.output_text == "".join(words)
    assert rec.chunk_ns == [1000] * 30 and rec.first_token_ns == 1000
    assert rec.output_tokens == 30 and rec.error is None


def test_template_follows_a_stream_whose_chunks_change(monkeypatch) -> None:
    """llama.cpp's chunks carry "created" in seconds: the template is relearned, not abandoned,
    and a token that cannot make a template (a quote) keeps the one there is."""
    adapter, calls = counting_adapter(monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        ex = new_exchange(loop, adapter)
        rec = ex.record
        texts = [f"t{i}" if i != 15 else 'say "x"' for i in range(40)]
        for i, text in enumerate(texts):  # one event per read, "created" ticks every 10 events
            ex.on_body(b"data: " + chat_chunk(text, created=i // 10) + b"\n\n", i + 1)
        ex.on_message_complete(99)
    finally:
        loop.close()
    assert rec.output_text == "".join(texts) and rec.chunk_ns == list(range(1, 41))
    # first event + its probe, then per tick one decode + probe, the quoted token once, no more
    assert len(calls) <= 2 + 3 * 2 + 1
