"""OpenAI-compatible ``/v1/chat/completions`` (vLLM, SGLang, llama.cpp, TGI, Ollama)."""

from __future__ import annotations

from typing import Any

from bench.adapters.base import Delta
from bench.adapters.openai_common import (
    chat_logprobs, common_fields, finish_field, first_choice, load_json, sampling_fields, text_field,
)
from bench.dataset import Item
from bench.scenario import Sampling


class OpenAIChatAdapter:
    name = "openai-chat"
    path = "/v1/chat/completions"

    def build_body(self, item: Item, sampling: Sampling, model: str, stream: bool = True) -> dict[str, Any]:
        messages = item.messages if item.messages is not None else [{"role": "user", "content": item.prompt}]
        return {"model": model, "messages": messages, **sampling_fields(item, sampling, stream)}

    def parse_event(self, data: bytes) -> Delta:
        obj = load_json(data)
        delta = Delta()
        if not isinstance(obj, dict):
            delta.malformed = True
            return delta
        common_fields(obj, delta)
        choice = first_choice(obj, delta)
        if choice is None:
            return delta
        d = choice.get("delta") or {}
        if not isinstance(d, dict):
            delta.malformed = True
            return delta
        delta.content = text_field(d.get("content"), delta)
        # vLLM/SGLang send `reasoning_content`; some servers `reasoning`. Kept apart from the answer.
        delta.reasoning = text_field(d.get("reasoning_content") or d.get("reasoning"), delta)
        delta.finish_reason = finish_field(choice, delta)
        delta.logprobs = chat_logprobs(choice)
        return delta

    def parse_body(self, body: bytes) -> Delta:
        obj = load_json(body)
        delta = Delta()
        if not isinstance(obj, dict):
            delta.malformed = True
            return delta
        common_fields(obj, delta)
        choice = first_choice(obj, delta)
        if choice is None:
            return delta
        msg = choice.get("message") or {}
        if not isinstance(msg, dict):
            delta.malformed = True
            return delta
        delta.content = text_field(msg.get("content"), delta)
        delta.reasoning = text_field(msg.get("reasoning_content") or msg.get("reasoning"), delta)
        delta.finish_reason = finish_field(choice, delta)
        delta.logprobs = chat_logprobs(choice)
        return delta
