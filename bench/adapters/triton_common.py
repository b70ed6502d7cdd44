"""Triton Inference Server LLM requests, shared by the HTTP generate and the gRPC adapters.

A request is one dict of named inputs: exactly the JSON body of Triton's generate extension
(``POST /v2/models/<model>/generate_stream``, where each top-level key becomes the input tensor of
that name), which the gRPC adapter turns into typed tensors of a ``ModelInferRequest``. Which inputs
exist depends on the model behind Triton (``triton.backend`` in the scenario):

- ``vllm`` (Triton's vLLM backend): ``text_input``, ``stream``, ``exclude_input_in_output`` and
  ``sampling_parameters``, a JSON *string* of vLLM ``SamplingParams`` (``temperature``, ``top_p``,
  ``max_tokens``, ``seed``, ``stop``); with ``additional_outputs`` (r24.12+) also
  ``return_finish_reason`` and ``return_num_input_tokens`` (and, on gRPC, ``return_num_output_tokens``).
  Streamed responses carry the new text only; ``finish_reason`` is the string ``"None"`` until the
  last one.
- ``tensorrtllm`` (the TensorRT-LLM ``ensemble`` / ``tensorrt_llm_bls`` models): ``text_input``,
  ``max_tokens``, ``stream``, ``bad_words``, ``stop_words``, ``random_seed`` and, sampled,
  ``temperature`` / ``top_p`` / ``top_k: 0``; greedy is ``top_k: 1`` with no temperature.
  Responses have ``text_output`` and no finish reason or token counts.

Responses (a generate SSE event, or decoded gRPC output tensors) are read by :func:`outputs_delta`;
``{"error": "..."}`` is a failure. ``triton.inputs`` adds inputs verbatim (``end_id``, ``pad_id`` ...).
"""

from __future__ import annotations

from typing import Any, Optional

import orjson

from bench.adapters.base import Delta
from bench.adapters.prompt import prompt_text
from bench.dataset import Item
from bench.scenario import Sampling, TritonOptions


def triton_inputs(item: Item, sampling: Sampling, options: TritonOptions, stream: bool,
                  count_output_tokens: bool = False) -> dict[str, Any]:
    """The named inputs of one request (module docstring)."""
    max_tokens = item.max_tokens or sampling.max_tokens
    body: dict[str, Any] = {"text_input": prompt_text(item), "stream": stream}
    if options.backend == "vllm":
        params: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                                  "max_tokens": max_tokens}
        if sampling.seed is not None:
            params["seed"] = sampling.seed
        if sampling.stop:
            params["stop"] = list(sampling.stop)
        body["exclude_input_in_output"] = True
        body["sampling_parameters"] = orjson.dumps(params).decode()
        if options.additional_outputs:
            body["return_finish_reason"] = True
            body["return_num_input_tokens"] = True
            if count_output_tokens:
                body["return_num_output_tokens"] = True
    else:
        body["max_tokens"] = max_tokens
        body["bad_words"] = ""
        body["stop_words"] = list(sampling.stop) if sampling.stop else ""
        if sampling.temperature > 0:
            body.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            body["top_k"] = 1  # greedy
        if sampling.seed is not None:
            body["random_seed"] = sampling.seed
    body.update(options.inputs)
    return body


def set_triton_seed(body: dict[str, Any], seed: int) -> None:
    if "sampling_parameters" in body:
        params = orjson.loads(body["sampling_parameters"])
        params["seed"] = seed
        body["sampling_parameters"] = orjson.dumps(params).decode()
    else:
        body["random_seed"] = seed


def _first(value: Any) -> Any:
    """Outputs of shape [1] (or [1, 1]) come as a scalar or a one-element list."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def _count(value: Any) -> Optional[int]:
    value = _first(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def outputs_delta(obj: Any) -> Delta:
    """One response's outputs (``text_output`` [, ``finish_reason``, ``num_input_tokens``]) as a Delta.

    ``num_output_tokens`` (tokens in *this* response) is not read here: the HTTP client keeps the
    last ``usage`` it sees, so per-response counts are summed by the gRPC endpoint only."""
    delta = Delta()
    if not isinstance(obj, dict):
        delta.malformed = True
        return delta
    if obj.get("error"):
        err = obj["error"]
        delta.error = str(err.get("message", err) if isinstance(err, dict) else err)[:300]
        return delta
    text = obj.get("text_output")
    if isinstance(text, list):
        if not all(isinstance(t, str) for t in text):
            delta.malformed = True
            return delta
        text = "".join(text)
    if text is not None and not isinstance(text, str):
        delta.malformed = True
        return delta
    delta.content = text or ""
    reason = _first(obj.get("finish_reason"))
    if isinstance(reason, str) and reason not in ("", "None", "null"):
        delta.finish_reason = reason
    prompt_tokens = _count(obj.get("num_input_tokens"))
    if prompt_tokens is not None:
        delta.usage = {"prompt_tokens": prompt_tokens}
    return delta
