"""Shared pieces of the OpenAI-compatible chat and completions adapters."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from bench.adapters.base import Delta
from bench.dataset import Item
from bench.scenario import Sampling


def sampling_fields(item: Item, sampling: Sampling, stream: bool, chat: bool = True) -> dict[str, Any]:
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
    if sampling.logprobs is not None:
        if chat:
            body["logprobs"] = True
            body["top_logprobs"] = sampling.logprobs
        else:
            body["logprobs"] = sampling.logprobs
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


def chat_logprobs(choice: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The first token's logprob and top alternatives from a chat chunk, in one small shape:
    ``{"token", "logprob", "top": [[token, logprob], ...]}``; None when absent or malformed."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    first = content[0]
    if not isinstance(first.get("logprob"), (int, float)):
        return None
    top = [[t.get("token"), t.get("logprob")] for t in first.get("top_logprobs") or []
           if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
    return {"token": first.get("token"), "logprob": float(first["logprob"]), "top": top}


def completions_logprobs(choice: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Same shape from the legacy completions format (tokens / token_logprobs / top_logprobs)."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    tokens, values, tops = lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or not tokens or not values:
        return None
    if not isinstance(values[0], (int, float)):
        return None
    top = []
    if isinstance(tops, list) and tops and isinstance(tops[0], dict):
        top = [[t, v] for t, v in tops[0].items() if isinstance(v, (int, float))]
    return {"token": tokens[0], "logprob": float(values[0]), "top": top}


def fast_chat_content(data: bytes) -> Optional[str]:
    """The hot path's shortcut for the event that is 99 % of a chat stream: one plain text delta.

    Returns ``choices[0].delta.content`` (possibly "") when the event is exactly that — no
    finish_reason, logprobs, usage, timings, error, reasoning or tool calls — and None for anything
    else, which then goes through the adapter's full ``parse_event``."""
    try:
        obj = orjson.loads(data)
        choice = obj["choices"][0]
        part = choice["delta"]
        text = part["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if len(part) != 1 and (part.get("reasoning_content") is not None or part.get("reasoning") is not None
                           or part.get("tool_calls") is not None):
        return None
    if (type(text) is not str or choice.get("finish_reason") is not None or choice.get("logprobs") is not None
            or obj.get("usage") or obj.get("timings") or obj.get("error")):
        return None
    return text


def fast_completion_text(data: bytes) -> Optional[str]:
    """Same for a completions stream: ``choices[0].text`` of a plain chunk, else None."""
    try:
        obj = orjson.loads(data)
        choice = obj["choices"][0]
        text = choice["text"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if (type(text) is not str or choice.get("finish_reason") is not None or choice.get("logprobs") is not None
            or obj.get("usage") or obj.get("timings") or obj.get("error")):
        return None
    return text


def open_event(data: bytes) -> tuple[Delta, Optional[dict[str, Any]]]:
    """Decode one event or body: the Delta with usage/timings/error filled in, and ``choices[0]``
    (None when the JSON is malformed — flagged on the Delta — or the event carries no choice)."""
    obj = load_json(data)
    delta = Delta()
    if not isinstance(obj, dict):
        delta.malformed = True
        return delta, None
    common_fields(obj, delta)
    return delta, first_choice(obj, delta)


def tool_call_fragments(part: dict[str, Any], delta: Delta) -> Optional[list[dict[str, Any]]]:
    """``tool_calls`` of a chat delta or message (the legacy ``function_call`` as call 0);
    None when absent, flagged malformed when not a list of objects."""
    calls = part.get("tool_calls")
    if calls is None or calls == []:
        legacy = part.get("function_call")
        return [{"index": 0, "type": "function", "function": legacy}] if isinstance(legacy, dict) else None
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        delta.malformed = True
        return None
    return calls


def assemble_tool_calls(fragments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Streamed tool-call fragments -> complete calls in the OpenAI shape
    ``{"id", "type", "function": {"name", "arguments"}}``, in order of first appearance.

    Fragments of one call share an ``index``: the first usually carries ``id``, ``type`` and the
    name, the following ones pieces of the JSON ``arguments`` string, concatenated here. A fragment
    without an index (a whole non-streamed call) is a call of its own. A name repeated in later
    fragments (some servers resend it) is kept once; arguments sent as an object are serialised.
    """
    calls: dict[Any, dict[str, Any]] = {}
    for position, frag in enumerate(fragments):
        index = frag.get("index")
        key = index if isinstance(index, int) and not isinstance(index, bool) else ("whole", position)
        call = calls.get(key)
        if call is None:
            call = calls[key] = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        if isinstance(frag.get("id"), str) and frag["id"]:
            call["id"] = frag["id"]
        if isinstance(frag.get("type"), str) and frag["type"]:
            call["type"] = frag["type"]
        fn = frag.get("function")
        if not isinstance(fn, dict):
            continue
        name, args, out = fn.get("name"), fn.get("arguments"), call["function"]
        if isinstance(name, str) and name and name != out["name"]:
            out["name"] += name
        if isinstance(args, str):
            out["arguments"] += args
        elif isinstance(args, dict):
            out["arguments"] = orjson.dumps(args).decode()
    return list(calls.values())


def set_openai_seed(body: dict[str, Any], seed: int) -> None:
    body["seed"] = seed
