"""TGI native ``/generate_stream``: request bodies (greedy without temperature) and recorded streams."""

from __future__ import annotations

import orjson
import pytest

from bench.adapters import get_adapter
from bench.adapters.sse import SSEParser
from bench.adapters.tgi import TGIGenerateAdapter
from bench.dataset import Item
from bench.scenario import Sampling
from tests.unit.transcript_play import T0, at, play, transcript

PROMPT = Item(id="q", messages=None, prompt="The capital of France is")
CHAT = Item(id="c", messages=[{"role": "user", "content": "Capital of France?"}], prompt=None)


def events(name: str) -> list[bytes]:
    p = SSEParser()
    return [d for _, d in p.feed(transcript(name)) + p.finish()]


def test_registered() -> None:
    adapter = get_adapter("tgi-generate")
    assert isinstance(adapter, TGIGenerateAdapter)
    assert adapter.path == "/generate_stream" and adapter.end_marker is True


def test_greedy_sends_do_sample_false_and_no_temperature() -> None:
    # TGI rejects temperature 0 ("must be strictly positive") and top_p 1 ("must be > 0.0 and < 1.0").
    body = TGIGenerateAdapter().build_body(PROMPT, Sampling(temperature=0, top_p=1, max_tokens=16, seed=7), "m")
    assert body == {"inputs": "The capital of France is",
                    "parameters": {"max_new_tokens": 16, "details": True, "return_full_text": False, "stop": [],
                                   "do_sample": False, "seed": 7}}


def test_sampled_sends_temperature_and_top_p_below_one_only() -> None:
    a = TGIGenerateAdapter()
    p = a.build_body(PROMPT, Sampling(temperature=0.7, top_p=1.0, stop=["\n"]), "m")["parameters"]
    assert p["do_sample"] is True and p["temperature"] == 0.7 and "top_p" not in p and p["stop"] == ["\n"]
    p = a.build_body(PROMPT, Sampling(temperature=0.7, top_p=0.9, logprobs=3), "m")["parameters"]
    assert p["top_p"] == 0.9 and p["top_n_tokens"] == 3


def test_item_max_tokens_and_chat_items_flattened() -> None:
    item = Item(id="x", messages=CHAT.messages, prompt=None, max_tokens=5)
    body = TGIGenerateAdapter().build_body(item, Sampling(), "m")
    assert body["parameters"]["max_new_tokens"] == 5
    assert body["inputs"] == "user: Capital of France?\n\nassistant:"


def test_set_seed_for_sampled_repeats() -> None:
    a = TGIGenerateAdapter()
    body = a.build_body(PROMPT, Sampling(temperature=1.0, seed=0), "m")
    a.set_seed(body, 3)
    assert body["parameters"]["seed"] == 3


def test_stream_events_tokens_special_eos_and_details() -> None:
    deltas = [TGIGenerateAdapter().parse_event(e) for e in events("tgi_generate_stream.sse")]
    assert [d.content for d in deltas] == [" Paris", " is", " the", " capital", " of", " France.", ""]
    last = deltas[-1]
    # generated_text (the whole answer) is not content again; the special EOS token is not text
    assert last.finish_reason == "stop"
    assert last.usage == {"completion_tokens": 7, "prompt_tokens": 14}
    assert deltas[0].logprobs == {"token": " Paris", "logprob": -0.11, "top": []}


def test_record_from_stream() -> None:
    rec = play(transcript("tgi_generate_stream.sse"), "tgi-generate")
    assert rec.error is None
    assert rec.output_text == " Paris is the capital of France."
    assert rec.first_token_ns == at(0)
    assert rec.chunk_ns == [at(i) for i in range(6)]  # the EOS event carries no text: not a chunk
    assert (rec.output_tokens, rec.prompt_tokens, rec.finish_reason) == (7, 14, "stop")
    assert rec.end_ns == at(7)


def test_length_finish_with_top_tokens() -> None:
    rec = play(transcript("tgi_generate_stream_length.sse"), "tgi-generate")
    assert rec.error is None and rec.output_text == " One two three four"
    assert rec.finish_reason == "length" and rec.output_tokens == 4 and len(rec.chunk_ns) == 4
    d = TGIGenerateAdapter().parse_event(events("tgi_generate_stream_length.sse")[0])
    assert d.logprobs == {"token": " One", "logprob": -0.5, "top": [[" One", -0.5], [" x", -2.5]]}


def test_error_event_is_broken_stream() -> None:
    rec = play(transcript("tgi_error_midstream.sse"), "tgi-generate")
    assert rec.error == "broken_stream"
    assert "generation: Request failed during generation" in rec.error_detail
    assert rec.output_text == " Hello"


def test_stream_without_details_is_truncated() -> None:
    body = b'data:{"index":1,"token":{"id":1,"text":" Hi","logprob":-0.1,"special":false},"generated_text":null,"details":null}\n\n'
    rec = play(body, "tgi-generate")
    assert rec.error == "truncated"


def test_validation_error_body_is_http_4xx() -> None:
    body = b'{"error":"Input validation error: `temperature` must be strictly positive","error_type":"validation"}'
    rec = play(body, "tgi-generate", status=422, content_type=b"application/json", reads=[body])
    assert rec.error == "http_4xx" and "strictly positive" in rec.error_detail


def test_non_streamed_body() -> None:
    body = orjson.dumps({"generated_text": " Paris.", "details": {"finish_reason": "eos_token", "generated_tokens": 3}})
    d = TGIGenerateAdapter().parse_body(body)
    assert (d.content, d.finish_reason, d.usage) == (" Paris.", "stop", {"completion_tokens": 3})
    assert TGIGenerateAdapter().parse_body(b"[" + body + b"]").content == " Paris."


@pytest.mark.parametrize("payload", [b"not json", b'{"token": "x"}', b'{"token": {"text": 3}}', b'{"details": 1}'])
def test_malformed_events(payload: bytes) -> None:
    assert TGIGenerateAdapter().parse_event(payload).malformed


def test_first_stamp_constant() -> None:
    assert at(0) == T0 + 10_000_000
