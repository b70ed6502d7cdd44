"""Shared pieces of the OpenAI-compatible chat and completions adapters."""

from __future__ import annotations

from typing import Any

import orjson

from bench.adapters.base import Delta
from bench.dataset import Item
from bench.scenario import Sampling


def sampling_fields(item: Item, sampling: Sampling, stream: bool) -> dict[str, Any]:
    """Sampling is always sent explicitly: servers apply hidden defaults otherwise."""
    body: dict[str, Any] = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": item.max_tokens or sampling.max_tokens,
        "stream": stream,
    }
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if stream:
        # Token counts must come from the server, not from counting chunks.
        body["stream_options"] = {"include_usage": True}
    return body


def error_message(obj: Any) -> str:
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or err)[:300]
    return str(err)[:300]


def load_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def common_fields(obj: dict[str, Any], delta: Delta) -> None:
    usage = obj.get("usage")
    if isinstance(usage, dict):
        delta.usage = usage
    timings = obj.get("timings")
    if isinstance(timings, dict):
        delta.timings = timings
    if "error" in obj and obj["error"]:
        delta.error = error_message(obj)
