"""OpenAI-compatible ``/v1/completions`` (raw prompt in, text out)."""

from __future__ import annotations

from typing import Any

from bench.adapters.base import Delta
from bench.adapters.openai_common import common_fields, load_json, sampling_fields
from bench.dataset import Item
from bench.scenario import Sampling


def _flatten(messages: list[dict[str, Any]]) -> str:
    # Completions endpoints take one string; a chat item is rendered plainly rather than refused.
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"


class OpenAICompletionsAdapter:
    name = "openai-completions"
    path = "/v1/completions"

    def build_body(self, item: Item, sampling: Sampling, model: str, stream: bool = True) -> dict[str, Any]:
        prompt = item.prompt if item.prompt is not None else _flatten(item.messages or [])
        return {"model": model, "prompt": prompt, **sampling_fields(item, sampling, stream)}

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
            text = choice.get("text")
            if text:
                delta.content = text
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
            delta.content = choices[0].get("text") or ""
            delta.finish_reason = choices[0].get("finish_reason")
        return delta
