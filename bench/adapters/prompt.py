"""The text prompt of an item, for protocols that take one string (completions, TGI native, Triton)."""

from __future__ import annotations

from typing import Any

from bench.dataset import Item


def flatten_messages(messages: list[dict[str, Any]]) -> str:
    """A chat item rendered plainly ("role: content" blocks, then "assistant:"), not with the model's
    chat template: a raw-text endpoint cannot be told which template applies. Chat-tuned models are
    better measured through their chat route or with prompt items already templated."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"


def prompt_text(item: Item) -> str:
    return item.prompt if item.prompt is not None else flatten_messages(item.messages or [])
