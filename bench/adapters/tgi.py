"""Hugging Face TGI's native ``/generate_stream`` (its OpenAI-compatible route is ``openai-chat``).

Request: ``{"inputs": prompt, "parameters": {...}}``. TGI validates sampling strictly:
``temperature`` must be > 0 and ``top_p`` in (0, 1), and *any* of temperature / top_p / top_k turns
sampling on. So greedy (``temperature: 0``) is ``do_sample: false`` with none of them sent, and
``top_p: 1`` (no nucleus cut) is simply left out. ``details: true`` makes the last event carry
``finish_reason`` and ``generated_tokens``, the server's token count.

Stream events::

    {"index": 3, "token": {"id": 264, "text": " a", "logprob": -0.41, "special": false},
     "top_tokens": [...], "generated_text": null, "details": null}

The last event has ``generated_text`` (the whole answer, not added again) and ``details``
``{"finish_reason": "length" | "eos_token" | "stop_sequence", "generated_tokens", "seed", "input_length"}``.
A special token (the final ``</s>``) is not answer text. Finish reasons are mapped to the OpenAI
words (``eos_token`` and ``stop_sequence`` -> ``stop``) so records compare across protocols.
Errors arrive as ``{"error": "...", "error_type": "..."}``, as the body of a 4xx/5xx or as an event.
"""

from __future__ import annotations

from typing import Any, Optional

from bench.adapters.base import Delta
from bench.adapters.openai_common import load_json
from bench.adapters.prompt import prompt_text
from bench.dataset import Item
from bench.scenario import Sampling

FINISH_REASONS = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}


class TGIGenerateAdapter:
    name = "tgi-generate"
    path = "/generate_stream"
    end_marker = True

    def build_body(self, item: Item, sampling: Sampling, model: str, stream: bool = True) -> dict[str, Any]:
        params: dict[str, Any] = {
            "max_new_tokens": item.max_tokens or sampling.max_tokens,
            "details": True,
            "return_full_text": False,
            "stop": list(sampling.stop),
        }
        if sampling.temperature > 0:
            params["do_sample"] = True
            params["temperature"] = sampling.temperature
            if sampling.top_p < 1:
                params["top_p"] = sampling.top_p
        else:
            params["do_sample"] = False  # greedy: TGI rejects temperature 0
        if sampling.seed is not None:
            params["seed"] = sampling.seed
        if sampling.logprobs:
            params["top_n_tokens"] = sampling.logprobs  # TGI's --max-top-n-tokens (default 5) caps it
        return {"inputs": prompt_text(item), "parameters": params}

    def set_seed(self, body: dict[str, Any], seed: int) -> None:
        body["parameters"]["seed"] = seed

    def parse_event(self, data: bytes) -> Delta:
        obj = load_json(data)
        delta = Delta()
        if not isinstance(obj, dict):
            delta.malformed = True
            return delta
        if obj.get("error"):
            kind = obj.get("error_type")
            delta.error = (f"{kind}: " if isinstance(kind, str) else "") + str(obj["error"])[:300]
            return delta
        token = obj.get("token")
        if token is not None:
            if not isinstance(token, dict) or not isinstance(token.get("text", ""), str):
                delta.malformed = True
                return delta
            if not token.get("special"):
                delta.content = token.get("text") or ""
                delta.logprobs = _logprobs(token, obj.get("top_tokens"))
        _details(obj.get("details"), delta)
        return delta

    def parse_body(self, body: bytes) -> Delta:
        """``/generate``: ``{"generated_text", "details"}`` (a one-element list from TGI's ``/`` route)."""
        obj = load_json(body)
        if isinstance(obj, list) and len(obj) == 1:
            obj = obj[0]
        delta = Delta()
        if not isinstance(obj, dict) or not isinstance(obj.get("generated_text", ""), str):
            delta.malformed = True
            return delta
        if obj.get("error"):
            delta.error = str(obj["error"])[:300]
            return delta
        delta.content = obj.get("generated_text") or ""
        _details(obj.get("details"), delta)
        return delta


def _details(details: Any, delta: Delta) -> None:
    if details is None:
        return
    if not isinstance(details, dict):
        delta.malformed = True
        return
    reason = details.get("finish_reason")
    if isinstance(reason, str):
        delta.finish_reason = FINISH_REASONS.get(reason, reason)
    usage: dict[str, Any] = {}
    if isinstance(details.get("generated_tokens"), int):
        usage["completion_tokens"] = details["generated_tokens"]
    if isinstance(details.get("input_length"), int):
        usage["prompt_tokens"] = details["input_length"]
    if usage:
        delta.usage = usage


def _logprobs(token: dict[str, Any], top: Any) -> Optional[dict[str, Any]]:
    lp = token.get("logprob")
    if not isinstance(lp, (int, float)) or isinstance(lp, bool):
        return None
    alts = []
    if isinstance(top, list):
        # top_tokens: one list per position (newer TGI) or the alternatives of this position.
        first = top[0] if top and isinstance(top[0], list) else top
        alts = [[t.get("text"), t.get("logprob")] for t in first
                if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
    return {"token": token.get("text"), "logprob": float(lp), "top": alts}
