"""OpenAI-compatible ``/v1/chat/completions`` (vLLM, SGLang, llama.cpp, TGI, Ollama)."""

from __future__ import annotations

from typing import Any

from bench.adapters.base import Delta
from bench.adapters.openai_common import common_fields, load_json, sampling_fields
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
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            if not isinstance(choice, dict):
                delta.malformed = True
                return delta
            d = choice.get("delta") or {}
            content = d.get("content")
            if content:
                delta.content = content
            # vLLM/SGLang send `reasoning_content`; some servers `reasoning`. Kept apart from the answer.
            reasoning = d.get("reasoning_content") or d.get("reasoning")
            if reasoning:
                delta.reasoning = reasoning
            if choice.get("finish_reason"):
                delta.finish_reason = choice["finish_reason"]
        return delta

    def parse_body(self, body: bytes) -> Delta:
        obj = load_json(body)
        delta = Delta()
        if not isinstance(obj, dict):
            delta.malformed = True
            return delta
        common_fields(obj, delta)
        choices = obj.get("choices")
        if choices and isinstance(choices[0], dict):
            msg = choices[0].get("message") or {}
            delta.content = msg.get("content") or ""
            delta.reasoning = msg.get("reasoning_content") or msg.get("reasoning") or ""
            delta.finish_reason = choices[0].get("finish_reason")
        return delta
