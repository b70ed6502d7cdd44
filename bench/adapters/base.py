"""The adapter seam: build a request body, parse one stream event. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from bench.dataset import Item
from bench.scenario import Sampling


@dataclass(slots=True)
class Delta:
    """What one stream event (or a whole non-streamed body) contributed."""

    content: str = ""
    reasoning: str = ""
    finish_reason: Optional[str] = None
    usage: Optional[dict[str, Any]] = None
    error: Optional[str] = None             # an error object sent by the server
    timings: Optional[dict[str, Any]] = None  # server-side timings when the server reports them (llama.cpp)
    malformed: bool = False                 # not valid JSON / not the expected shape
    logprobs: Optional[dict[str, Any]] = None  # first token of this event: {token, logprob, top}
    # OpenAI ``tool_calls`` fragments as sent (streamed: pieces keyed by ``index``, arguments split
    # across events; whole body: complete calls). Assembled per request by ``assemble_tool_calls``.
    tool_calls: Optional[list[dict[str, Any]]] = None


class Adapter(Protocol):
    name: str
    path: str  # request path appended to the target's base URL, e.g. "/v1/chat/completions"
    # True: a clean end of the body without ``[DONE]`` or a finish reason is ``truncated`` (OpenAI,
    # TGI). False: the end of the body is the end of the answer (Triton's generate_stream ends its
    # SSE body after the final response and has no end marker).
    end_marker: bool

    def build_body(self, item: Item, sampling: Sampling, model: str, stream: bool = True) -> dict[str, Any]:
        """The JSON request body for one item."""

    def parse_event(self, data: bytes) -> Delta:
        """One SSE ``data:`` payload (never ``[DONE]``)."""

    def parse_body(self, body: bytes) -> Delta:
        """A complete non-streamed response body."""

    def set_seed(self, body: dict[str, Any], seed: int) -> None:
        """Put another sampling seed into a body from ``build_body`` (sampled repeats)."""
