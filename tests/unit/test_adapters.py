"""Adapters: request bodies (sampling always explicit) and event/body parsing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.adapters import ADAPTERS, get_adapter
from bench.adapters.openai_chat import OpenAIChatAdapter
from bench.adapters.openai_completions import OpenAICompletionsAdapter
from bench.adapters.sse import SSEParser
from bench.dataset import Item
from bench.scenario import Sampling

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"

CHAT_ITEM = Item(id="q1", messages=[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Capital of France?"}], prompt=None)
PROMPT_ITEM = Item(id="q2", messages=None, prompt="The capital of France is")


def events_of(name: str) -> list[bytes]:
    p = SSEParser()
    evs = p.feed((TRANSCRIPTS / name).read_bytes()) + p.finish()
    return [data for _, data in evs if data != b"[DONE]"]


# --- registry ------------------------------------------------------------------


def test_registry_names_and_paths() -> None:
    assert set(ADAPTERS) == {"openai-chat", "openai-completions", "tgi-generate", "triton-generate", "triton-grpc"}
    assert isinstance(get_adapter("openai-chat"), OpenAIChatAdapter)
    assert get_adapter("openai-chat").path == "/v1/chat/completions"
    assert get_adapter("openai-completions").path == "/v1/completions"


def test_unknown_adapter_lists_known_ones() -> None:
    known = "openai-chat, openai-completions, tgi-generate, triton-generate, triton-grpc"
    with pytest.raises(ValueError, match=f"unknown protocol 'grpc'; known: {known}"):
        get_adapter("grpc")


# --- build_body ----------------------------------------------------------------


def test_chat_body_sends_sampling_explicitly() -> None:
    body = OpenAIChatAdapter().build_body(CHAT_ITEM, Sampling(), "m")
    assert body == {
        "model": "m",
        "messages": CHAT_ITEM.messages,
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 128,
        "seed": 0,
        "stop": [],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    orjson.dumps(body)  # serialisable as is


def test_chat_body_with_custom_sampling_and_stop() -> None:
    s = Sampling(temperature=0.7, top_p=0.9, max_tokens=64, seed=1234, stop=["\n\n", "</s>"])
    body = OpenAIChatAdapter().build_body(CHAT_ITEM, s, "qwen")
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.7, 0.9, 64, 1234)
    assert body["stop"] == ["\n\n", "</s>"]
    assert body["stream_options"] == {"include_usage": True}


def test_empty_stop_and_no_seed() -> None:
    body = OpenAIChatAdapter().build_body(CHAT_ITEM, Sampling(seed=None), "m")
    assert "seed" not in body  # seed: null means "let the server choose"
    assert body.get("stop", []) == []


def test_prompt_item_becomes_single_user_message() -> None:
    body = OpenAIChatAdapter().build_body(PROMPT_ITEM, Sampling(), "m")
    assert body["messages"] == [{"role": "user", "content": "The capital of France is"}]


@pytest.mark.parametrize("adapter", [OpenAIChatAdapter(), OpenAICompletionsAdapter()], ids=lambda a: a.name)
def test_item_max_tokens_overrides_sampling(adapter) -> None:
    item = Item(id="x", messages=None, prompt="p", max_tokens=7)
    assert adapter.build_body(item, Sampling(max_tokens=500), "m")["max_tokens"] == 7
    assert adapter.build_body(PROMPT_ITEM, Sampling(max_tokens=500), "m")["max_tokens"] == 500


@pytest.mark.parametrize("adapter", [OpenAIChatAdapter(), OpenAICompletionsAdapter()], ids=lambda a: a.name)
def test_non_streaming_body_has_no_stream_options(adapter) -> None:
    body = adapter.build_body(PROMPT_ITEM, Sampling(), "m", stream=False)
    assert body["stream"] is False
    assert "stream_options" not in body
    assert body["temperature"] == 0.0 and body["top_p"] == 1.0 and body["max_tokens"] == 128


def test_completions_body_uses_raw_prompt() -> None:
    body = OpenAICompletionsAdapter().build_body(PROMPT_ITEM, Sampling(stop=["."]), "base")
    assert body["prompt"] == "The capital of France is"
    assert "messages" not in body
    assert body["stop"] == ["."]
    assert body["stream_options"] == {"include_usage": True}


def test_completions_body_flattens_chat_item() -> None:
    body = OpenAICompletionsAdapter().build_body(CHAT_ITEM, Sampling(), "base")
    assert body["prompt"] == "system: Be brief.\n\nuser: Capital of France?\n\nassistant:"


# --- parse_event ---------------------------------------------------------------


def test_chat_role_chunk_has_no_content() -> None:
    d = OpenAIChatAdapter().parse_event(events_of("vllm_chat.sse")[0])
    assert (d.content, d.reasoning, d.finish_reason) == ("", "", None)
    assert (d.usage, d.error, d.malformed) == (None, None, False)


def test_chat_vllm_events() -> None:
    a = OpenAIChatAdapter()
    deltas = [a.parse_event(e) for e in events_of("vllm_chat.sse")]
    assert "".join(d.content for d in deltas) == "The capital of France is Paris."
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert deltas[-1].usage == {"prompt_tokens": 15, "total_tokens": 22, "completion_tokens": 7}
    assert all(d.usage is None for d in deltas[:-1])  # "usage": null is not usage
    assert not any(d.malformed or d.error for d in deltas)


def test_chat_llamacpp_timings_and_null_content() -> None:
    a = OpenAIChatAdapter()
    deltas = [a.parse_event(e) for e in events_of("llamacpp_chat.sse")]
    assert deltas[0].content == ""  # "content": null in the role chunk
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert last.usage["completion_tokens"] == 7
    assert last.timings["prompt_ms"] == 35.204
    assert last.timings["predicted_per_token_ms"] == 12.304


def test_chat_reasoning_kept_apart() -> None:
    a = OpenAIChatAdapter()
    deltas = [a.parse_event(e) for e in events_of("reasoning_chat.sse")]
    assert "".join(d.reasoning for d in deltas) == "Okay, the user asks for 2+2."
    assert "".join(d.content for d in deltas) == "2 + 2 = 4."
    assert a.parse_event(b'{"choices":[{"delta":{"reasoning":"hmm"}}]}').reasoning == "hmm"


def test_completions_events() -> None:
    a = OpenAICompletionsAdapter()
    deltas = [a.parse_event(e) for e in events_of("vllm_completions.sse")]
    assert "".join(d.content for d in deltas) == " Paris. It is also the largest city"
    assert deltas[-2].content == " city" and deltas[-2].finish_reason == "length"
    assert deltas[-1].usage["completion_tokens"] == 8


@pytest.mark.parametrize("adapter", [OpenAIChatAdapter(), OpenAICompletionsAdapter()], ids=lambda a: a.name)
@pytest.mark.parametrize("payload", [b'{"choices":[{"index":0,"delta":{"content":" wor',
                                     b"[1,2]", b'"x"', b"",
                                     b'{"choices":[null]}', b'{"choices":["text"]}'])
def test_malformed_events(adapter, payload: bytes) -> None:
    assert adapter.parse_event(payload).malformed is True


@pytest.mark.parametrize("adapter", [OpenAIChatAdapter(), OpenAICompletionsAdapter()], ids=lambda a: a.name)
def test_error_object(adapter) -> None:
    d = adapter.parse_event(
        b'{"error":{"message":"CUDA out of memory","type":"InternalServerError","code":500}}')
    assert d.error == "CUDA out of memory" and not d.malformed
    assert adapter.parse_event(b'{"error":{"type":"overloaded"}}').error == "overloaded"
    assert adapter.parse_event(b'{"error":"plain string"}').error == "plain string"
    assert adapter.parse_event(b'{"error":null,"choices":[]}').error is None
    assert len(adapter.parse_event(b'{"error":{"message":"' + b"x" * 1000 + b'"}}').error) == 300


@pytest.mark.parametrize("payload", [
    b'{"choices":[{"index":0,"delta":"oops"}]}',      # AttributeError: 'str' object has no attribute 'get'
    b'{"choices":{"0":{"delta":{"content":"a"}}}}',   # KeyError: 0
    b'{"choices":[{"index":0,"delta":{"content":5}}]}',  # passes through; Exchange's "".join fails later
])
def test_chat_wrong_shape_is_malformed_not_an_exception(payload: bytes) -> None:
    assert OpenAIChatAdapter().parse_event(payload).malformed is True


# --- parse_body (non-streamed responses) ---------------------------------------


def test_chat_parse_body() -> None:
    body = orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris.",
                                             "reasoning_content": "Easy."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    })
    d = OpenAIChatAdapter().parse_body(body)
    assert (d.content, d.reasoning, d.finish_reason) == ("Paris.", "Easy.", "stop")
    assert d.usage["completion_tokens"] == 2


def test_completions_parse_body() -> None:
    body = (b'{"choices":[{"text":" Paris.","finish_reason":"length"}],'
            b'"usage":{"prompt_tokens":5,"completion_tokens":2}}')
    d = OpenAICompletionsAdapter().parse_body(body)
    assert (d.content, d.finish_reason, d.usage["prompt_tokens"]) == (" Paris.", "length", 5)


@pytest.mark.parametrize("adapter", [OpenAIChatAdapter(), OpenAICompletionsAdapter()], ids=lambda a: a.name)
def test_parse_body_malformed_and_error(adapter) -> None:
    assert adapter.parse_body(b"<html>502 Bad Gateway</html>").malformed
    assert adapter.parse_body(b'{"error":{"message":"model not loaded"}}').error == "model not loaded"
