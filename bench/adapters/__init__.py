"""Protocol adapters, registered by name. One file per protocol."""

from __future__ import annotations

from bench.adapters.base import Adapter, Delta
from bench.adapters.openai_chat import OpenAIChatAdapter
from bench.adapters.openai_completions import OpenAICompletionsAdapter

ADAPTERS: dict[str, type] = {
    OpenAIChatAdapter.name: OpenAIChatAdapter,
    OpenAICompletionsAdapter.name: OpenAICompletionsAdapter,
}


def get_adapter(name: str) -> Adapter:
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None


__all__ = ["Adapter", "Delta", "ADAPTERS", "get_adapter"]
