"""OpenAI-compatible ``/v1/completions`` (raw prompt in, text out)."""

from __future__ import annotations

from typing import Any, Optional

from bench.adapters.base import Delta
from bench.adapters.openai_common import (
    completions_logprobs, fast_completion_text, finish_field, open_event, sampling_fields, set_openai_seed,
    text_field,
)
from bench.dataset import Item
from bench.scenario import Sampling


def _flatten(messages: list[dict[str, Any]]) -> str:
    # Completions endpoints take one string; a chat item is rendered plainly rather than refused.
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"


class OpenAICompletionsAdapter:
    name = "openai-completions"
    path = "/v1/completions"
    end_marker = True
    set_seed = staticmethod(set_openai_seed)

    def build_body(self, item: Item, sampling: Sampling, model: str, stream: bool = True) -> dict[str, Any]:
        prompt = item.prompt if item.prompt is not None else _flatten(item.messages or [])
        return {"model": model, "prompt": prompt, **sampling_fields(item, sampling, stream, chat=False)}

    def parse_event(self, data: bytes) -> Delta:
        """Stream chunks and whole bodies have the same shape: ``choices[0].text``."""
        delta, choice = open_event(data)
        if choice is None:
            return delta
        delta.content = text_field(choice.get("text"), delta)
        delta.finish_reason = finish_field(choice, delta)
        delta.logprobs = completions_logprobs(choice)
        return delta

    parse_body = parse_event

    # A plain text chunk's text, or None: then ``parse_event`` decides.
    fast_content = staticmethod(fast_completion_text)
