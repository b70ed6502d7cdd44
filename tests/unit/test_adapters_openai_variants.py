"""OpenAI-compatible variants on recorded streams: streamed tool calls assembled, reasoning kept apart
(with its own first-token time), role-only first chunks, usage in the last chunk or absent."""

from __future__ import annotations

import orjson
import pytest

from bench.adapters import get_adapter
from bench.adapters.openai_common import assemble_tool_calls
from bench.records import RequestRecord, record_from_dict
from bench.stats import LevelAccumulator
from tests.unit.transcript_play import T0, at, play, transcript


def test_streamed_tool_call_is_assembled_and_counts_as_answer() -> None:
    rec = play(transcript("vllm_chat_tool_calls.sse"))
    assert rec.error is None  # no text, but a tool call: not "empty"
    assert rec.output_text == ""
    assert rec.tool_calls == [{"id": "chatcmpl-tool-3f2a", "type": "function",
                               "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]
    assert orjson.loads(rec.tool_calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    # the role chunk (read 0) is not a token; the first tool-call fragment (read 1) is
    assert rec.first_token_ns == at(1)
    assert rec.chunk_ns == [at(i) for i in range(1, 6)]
    assert (rec.finish_reason, rec.output_tokens, rec.prompt_tokens) == ("tool_calls", 18, 180)


def test_parallel_tool_calls_by_index_with_a_resent_name() -> None:
    rec = play(transcript("chat_parallel_tool_calls.sse"))
    assert rec.error is None
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in rec.tool_calls] == [
        ("call_a", "lookup", '{"q": 1}'), ("call_b", "convert", '{"to": "EUR"}')]


def test_assemble_whole_calls_and_object_arguments() -> None:
    calls = assemble_tool_calls([
        {"id": "x", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
        {"id": "y", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ])
    assert [c["function"] for c in calls] == [{"name": "f", "arguments": '{"a":1}'}, {"name": "g", "arguments": "{}"}]


def test_non_streamed_tool_call_body() -> None:
    body = orjson.dumps({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 2}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9}})
    rec = play(body, content_type=b"application/json", reads=[body])
    assert rec.error is None and rec.tool_calls[0]["function"] == {"name": "f", "arguments": '{"x": 2}'}
    assert rec.first_token_ns == rec.end_ns


def test_legacy_function_call_delta() -> None:
    d = get_adapter("openai-chat").parse_event(orjson.dumps(
        {"choices": [{"index": 0, "delta": {"function_call": {"name": "f", "arguments": ""}}}]}))
    assert d.tool_calls == [{"index": 0, "type": "function", "function": {"name": "f", "arguments": ""}}]


def test_malformed_tool_calls() -> None:
    d = get_adapter("openai-chat").parse_event(b'{"choices":[{"index":0,"delta":{"tool_calls":"x"}}]}')
    assert d.malformed


def test_reasoning_kept_apart_with_both_first_token_times() -> None:
    rec = play(transcript("reasoning_chat.sse"))
    assert rec.error is None
    assert rec.reasoning_text == "Okay, the user asks for 2+2."
    assert rec.output_text == "2 + 2 = 4."
    # read 0 is the role chunk (content ""), reads 1-4 reasoning, 5-6 the answer
    assert rec.first_reasoning_ns == at(1)
    assert rec.first_token_ns == at(5)
    assert rec.chunk_ns == [at(5), at(6)]


def test_role_only_first_chunk_is_not_the_first_token() -> None:
    rec = play(transcript("vllm_chat.sse"))
    assert rec.first_token_ns == at(1) and rec.first_reasoning_ns is None


def test_usage_absent_is_counted_and_flagged() -> None:
    rec = play(transcript("chat_no_usage.sse"))
    assert rec.error is None and rec.output_text == "The answer is 4."
    assert rec.output_tokens is None and rec.finish_reason == "stop"
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec)
    s = acc.summary()
    assert s["tokens"]["usage_missing"] == 1 and s["tokens"]["output_total"] == 4  # chunk count, flagged
    assert "ttft_reasoning_ms" not in s["metrics"]


def test_usage_in_last_chunk_is_used() -> None:
    rec = play(transcript("vllm_chat.sse"))
    acc = LevelAccumulator("t", 1, "concurrency")
    acc.add(rec)
    assert acc.summary()["tokens"]["usage_missing"] == 0


def test_reasoning_ttft_in_level_stats() -> None:
    acc = LevelAccumulator("t", 1, "concurrency")
    for i in range(3):
        r = RequestRecord(target="t", level=1, phase="measure", seq=i, item_id="i", repeat=0, request_id=f"r{i}",
                          scheduled_ns=T0, sent_ns=T0, first_reasoning_ns=T0 + 50_000_000,
                          first_token_ns=T0 + 400_000_000, end_ns=T0 + 500_000_000,
                          chunk_ns=[T0 + 400_000_000, T0 + 500_000_000], output_tokens=40)
        acc.add(r)
    m = acc.summary()["metrics"]
    assert m["ttft_reasoning_ms"]["p50"] == pytest.approx(50.0, rel=1e-3)  # HDR: 3 significant digits
    assert m["ttft_ms"]["p50"] == pytest.approx(400.0, rel=1e-3)


def test_records_round_trip_new_fields() -> None:
    rec = play(transcript("vllm_chat_tool_calls.sse"))
    back = record_from_dict(orjson.loads(rec.to_json()))
    assert back.tool_calls == rec.tool_calls and back.first_reasoning_ns is None


def test_completions_vs_chat_same_text_fields() -> None:
    chat = play(transcript("vllm_chat.sse"))
    comp = play(transcript("vllm_completions.sse"), "openai-completions")
    for rec in (chat, comp):
        assert rec.error is None and rec.output_text and rec.tool_calls is None and rec.first_token_ns is not None
