"""Shared pieces of the OpenAI-compatible chat and completions adapters."""

from __future__ import annotations

from typing import Any, Optional

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


def first_choice(obj: dict[str, Any], delta: Delta) -> Optional[dict[str, Any]]:
    """``choices[0]`` when well-formed; None when absent (usage-only chunk) or malformed (flagged)."""
    choices = obj.get("choices")
    if choices is None or choices == []:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        delta.malformed = True
        return None
    return choices[0]


def text_field(value: Any, delta: Delta) -> str:
    """A text delta: a string, or nothing. Anything else marks the event malformed."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        delta.malformed = True
        return ""
    return value


def finish_field(choice: dict[str, Any], delta: Delta) -> Optional[str]:
    reason = choice.get("finish_reason")
    if reason is None:
        return None
    if not isinstance(reason, str):
        delta.malformed = True
        return None
    return reason
