"""OpenAI-compatible ``/v1/chat/completions`` (vLLM, SGLang, llama.cpp, TGI, Ollama)."""

from __future__ import annotations

from typing import Any, Optional

from bench.adapters.base import Delta
from bench.adapters.openai_common import (
    chat_logprobs, fast_chat_content, finish_field, open_event, sampling_fields, set_openai_seed, text_field,
    tool_call_fragments,
)
from bench.dataset import Item
from bench.scenario import Sampling


def openai_tool(tool: Any) -> Any:
    """An item's tool as the API wants it: OpenAI definitions pass through, a bare
    ``{"name", "description", "parameters"}`` is wrapped as a function tool."""
    if isinstance(tool, dict) and "function" not in tool and isinstance(tool.get("name"), str):
        return {"type": "function", "function": tool}
    return tool


class OpenAIChatAdapter:
    name = "openai-chat"
    path = "/v1/chat/completions"
    end_marker = True
    set_seed = staticmethod(set_openai_seed)

    def build_body(self, item: Item, sampling: Sampling, model: str, stream: bool = True) -> dict[str, Any]:
        messages = item.messages if item.messages is not None else [{"role": "user", "content": item.prompt}]
        body = {"model": model, "messages": messages, **sampling_fields(item, sampling, stream)}
        if sampling.tools == "api" and isinstance(item.meta.get("tools"), list) and item.meta["tools"]:
            body["tools"] = [openai_tool(t) for t in item.meta["tools"]]
        return body

    def parse_event(self, data: bytes) -> Delta:
        return self._parse(data, "delta")

    def parse_body(self, body: bytes) -> Delta:
        return self._parse(body, "message")

    # A plain content delta's text, or None: then ``parse_event`` decides.
    fast_content = staticmethod(fast_chat_content)

    @staticmethod
    def _parse(data: bytes, field: str) -> Delta:
        """A stream chunk carries ``choices[0].delta``, a whole body ``choices[0].message``."""
        delta, choice = open_event(data)
        if choice is None:
            return delta
        part = choice.get(field) or {}
        if not isinstance(part, dict):
            delta.malformed = True
            return delta
        delta.content = text_field(part.get("content"), delta)
        # vLLM/SGLang send `reasoning_content`; some servers `reasoning`. Kept apart from the answer.
        delta.reasoning = text_field(part.get("reasoning_content") or part.get("reasoning"), delta)
        # Tool calls stream as fragments (name first, then pieces of the arguments string): they are
        # tokens of the answer, kept apart from the text and assembled per request by the client.
        delta.tool_calls = tool_call_fragments(part, delta)
        delta.finish_reason = finish_field(choice, delta)
        delta.logprobs = chat_logprobs(choice)
        return delta
