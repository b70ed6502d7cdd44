"""Protocol adapters, registered by name. One file per protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from bench.adapters.base import Adapter, Delta
from bench.adapters.openai_chat import OpenAIChatAdapter
from bench.adapters.openai_completions import OpenAICompletionsAdapter
from bench.adapters.tgi import TGIGenerateAdapter
from bench.adapters.triton_grpc import TritonGrpcAdapter
from bench.adapters.triton_http import TritonGenerateAdapter

if TYPE_CHECKING:
    from bench.scenario import Target

ADAPTERS: dict[str, type] = {
    OpenAIChatAdapter.name: OpenAIChatAdapter,
    OpenAICompletionsAdapter.name: OpenAICompletionsAdapter,
    TGIGenerateAdapter.name: TGIGenerateAdapter,
    TritonGenerateAdapter.name: TritonGenerateAdapter,
    TritonGrpcAdapter.name: TritonGrpcAdapter,
}


def get_adapter(name: str, target: Optional["Target"] = None) -> Adapter:
    """The adapter for a protocol; adapters that depend on the target (Triton: the model is in the
    URL or request, ``triton:`` options) are built from it with ``for_target``."""
    try:
        cls = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None
    if target is not None and hasattr(cls, "for_target"):
        return cls.for_target(target)
    return cls()


__all__ = ["Adapter", "Delta", "ADAPTERS", "get_adapter"]
