"""Triton's generate extension over HTTP: ``POST /v2/models/<model>[/versions/<v>]/generate_stream``.

The body is the dict of named inputs from :mod:`bench.adapters.triton_common`; each response is one
SSE ``data:`` event with the output tensors as JSON fields (``text_output``, ...) next to
``model_name`` / ``model_version``. There is no ``[DONE]``: Triton ends the SSE body after the
final response, so a clean end of the body is the end of the answer (``end_marker = False``); an
error after the first response comes as an ``{"error": "..."}`` event under status 200, an error
before inference as a JSON body with a 4xx/5xx status.

Token counts: Triton has no usage object. With the vLLM backend's additional outputs the prompt
length is reported (``num_input_tokens``); output tokens are counted from the responses (one per
decoding step when streaming) and flagged ``usage_missing`` in the results.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from bench.adapters.base import Delta
from bench.adapters.openai_common import load_json
from bench.adapters.triton_common import outputs_delta, set_triton_seed, triton_inputs
from bench.dataset import Item
from bench.scenario import Sampling, Target, TritonOptions


def model_path(model: str, version: str = "") -> str:
    """``/v2/models/<model>[/versions/<version>]``, names percent-encoded."""
    out = f"/v2/models/{quote(model, safe='')}"
    return out + (f"/versions/{quote(version, safe='')}" if version else "")


class TritonGenerateAdapter:
    name = "triton-generate"
    end_marker = False
    count_output_tokens = False

    def __init__(self, model: str = "model", options: Optional[TritonOptions] = None):
        self.model = model
        self.options = options or TritonOptions()
        self.path = model_path(model, self.options.model_version) + "/generate_stream"

    @classmethod
    def for_target(cls, target: Target) -> "TritonGenerateAdapter":
        return cls(target.model or "model", target.triton)

    def build_body(self, item: Item, sampling: Sampling, model: str, stream: bool = True) -> dict[str, Any]:
        return triton_inputs(item, sampling, self.options, stream, self.count_output_tokens)

    def set_seed(self, body: dict[str, Any], seed: int) -> None:
        set_triton_seed(body, seed)

    def parse_event(self, data: bytes) -> Delta:
        return outputs_delta(load_json(data))

    parse_body = parse_event  # /generate answers with the same object, once
