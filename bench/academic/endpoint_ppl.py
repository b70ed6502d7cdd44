"""Perplexity through an endpoint, and the probe that decides whether the endpoint can give it.

Loglikelihood needs the log-probability of every *prompt* token. OpenAI-style completions give that only
with ``echo: true`` plus ``logprobs`` (vLLM does); llama-server ignores ``echo`` and returns logprobs for the
generated tokens only, so a harness that slices prompt logprobs out of its answer gets nothing, sums to 0 and
scores every choice alike: silently at chance. The probe asks for echo + logprobs on a short prompt and
accepts the endpoint only if the answer holds a log-probability for (nearly) every prompt token.

The judging functions take a parsed response and are pure (unit-tested on recorded answers); ``post_json``
is the one network call (stdlib urllib, loopback or the scenario's URL, never in a timing path).
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import orjson

PROBE_PROMPT = "The library opens at nine in the morning and closes at six in the evening."

Post = Callable[[str, dict[str, Any]], dict[str, Any]]


class EndpointError(Exception):
    """The endpoint could not be asked (connection, HTTP status, not JSON). One line."""


@dataclass(frozen=True)
class Probe:
    """Whether an endpoint returns prompt logprobs. ``reason`` is one line for the user."""

    supported: bool
    reason: str
    prompt_tokens: Optional[int] = None   # as the server counted them (usage), None if it did not say
    prompt_logprobs: int = 0              # prompt positions that came back with a log-probability
    shape: str = "unknown"                # "completions" (token_logprobs) | "content" (llama-server) | ...
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"supported": self.supported, "reason": self.reason, "prompt_tokens": self.prompt_tokens,
                "prompt_logprobs": self.prompt_logprobs, "response_shape": self.shape}


def echo_request(model: str, prompt: str) -> dict[str, Any]:
    """The completions body that asks for the prompt's own logprobs (vLLM: echo + logprobs)."""
    return {"model": model, "prompt": prompt, "max_tokens": 1, "echo": True, "logprobs": 1,
            "temperature": 0, "stream": False}


def post_json(base_url: str, path: str, body: dict[str, Any], headers: dict[str, str],
              timeout_s: float = 60.0) -> dict[str, Any]:
    """POST ``body`` as JSON and parse the JSON answer; EndpointError (one line) otherwise."""
    req = urllib.request.Request(base_url.rstrip("/") + path, data=orjson.dumps(body), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - validated http(s) URL
            raw = resp.read(64 << 20)
    except urllib.error.HTTPError as e:
        text = e.read(2000).decode("utf-8", "replace") if e.fp else ""
        raise EndpointError(f"POST {path}: HTTP {e.code}: {' '.join(text.split())[:300]}") from None
    except (urllib.error.URLError, OSError) as e:
        raise EndpointError(f"POST {path}: {getattr(e, 'reason', None) or e}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise EndpointError(f"POST {path}: the answer is not JSON") from None
    if not isinstance(data, dict):
        raise EndpointError(f"POST {path}: the answer is not a JSON object")
    return data


def prompt_positions(response: dict[str, Any],
                     prompt: str) -> tuple[str, Optional[int], list[Optional[float]]]:
    """(response shape, server's prompt token count, the logprobs of the prompt's positions).

    With echo honoured (``tokens``/``token_logprobs``/``text_offset``), prompt positions are those whose
    text offset lies inside the prompt, else the first ``usage.prompt_tokens``. The first prompt token has
    no logprob (None). llama-server's ``logprobs.content`` list covers generated tokens only: no position."""
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    n_prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None
    choices = response.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return ("none" if lp is None else "unknown"), n_prompt, []
    if isinstance(lp.get("token_logprobs"), list):
        values = lp["token_logprobs"]
        text = choice.get("text") if isinstance(choice.get("text"), str) else ""
        if not text.startswith(prompt):
            return "completions", n_prompt, []  # echo ignored: these are generated tokens only
        offsets = lp.get("text_offset")
        if isinstance(offsets, list) and len(offsets) == len(values):
            keep = [v for v, o in zip(values, offsets) if isinstance(o, int) and o < len(prompt)]
        elif n_prompt is not None:
            keep = values[:n_prompt]
        else:
            keep = values[:-1]
        return "completions", n_prompt, [v if isinstance(v, (int, float)) else None for v in keep]
    if isinstance(lp.get("content"), list):
        return "content", n_prompt, []  # chat-style logprobs: generated tokens only
    return "unknown", n_prompt, []


def judge_probe(response: dict[str, Any], prompt: str = PROBE_PROMPT) -> Probe:
    """Decide from a parsed answer to ``echo_request`` whether prompt logprobs came back."""
    shape, n_prompt, values = prompt_positions(response, prompt)
    got = sum(1 for v in values if v is not None and math.isfinite(v))
    expected = (n_prompt or len(values) or 2) - 1  # the first prompt token never has a logprob
    if got >= 1 and got >= expected:
        return Probe(True, f"prompt logprobs returned for {got} of {expected + 1} prompt tokens",
                     n_prompt, got, shape)
    said = f"{n_prompt}-token prompt" if n_prompt else "prompt"
    if shape == "content":
        why = "it returned logprobs for generated tokens only (echo ignored)"
    elif shape == "none":
        why = "it returned no logprobs at all"
    elif shape == "completions" and not values:
        why = "it did not echo the prompt"
    else:
        why = f"it returned {got} prompt-token logprobs"
    return Probe(False, f"no prompt logprobs: asked for echo + logprobs on a {said}, {why}; loglikelihood "
                        "numbers (perplexity, multiple-choice tasks) would be silently at chance",
                 n_prompt, got, shape)


def probe(post: Post, model: str) -> Probe:
    """Ask once (``post(path, body)``); a server that rejects echo/logprobs is unsupported, not an error."""
    try:
        return judge_probe(post("/v1/completions", echo_request(model, PROBE_PROMPT)))
    except EndpointError as e:
        return Probe(False, f"no prompt logprobs: the echo + logprobs request failed ({e}); loglikelihood "
                            "numbers cannot be computed through this endpoint", shape="error")


def windows(text: str, max_chars: int = 1500) -> list[str]:
    """The text cut at paragraph breaks into pieces of at most ``max_chars`` (a longer paragraph is cut at
    sentence ends, a longer sentence at ``max_chars``). Paragraphs inside a piece keep their blank line,
    sentences their space. Each piece is scored on its own: its first token has no context, no logprob."""
    units: list[tuple[str, str]] = []  # (separator before it, text)
    for para in [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]:
        sentences = [para] if len(para) <= max_chars else re.split(r"(?<=[.!?])\s+", para)
        for i, sentence in enumerate(sentences):
            for j in range(0, len(sentence), max_chars):
                units.append(("\n\n" if i == 0 and j == 0 else " " if j == 0 else "",
                              sentence[j:j + max_chars]))
    out: list[str] = []
    current = ""
    for sep, unit in units:
        if current and len(current) + len(sep) + len(unit) <= max_chars:
            current += sep + unit
        else:
            if current:
                out.append(current)
            current = unit
    if current:
        out.append(current)
    return out


def endpoint_perplexity(post: Post, model: str, text: str, max_chars: int = 1500) -> dict[str, Any]:
    """exp(mean negative log-likelihood) over every prompt token that came back with a logprob, in the
    endpoint's own tokenization (comparable between quantizations of one model, not across tokenizers).

    Call only after ``probe`` said yes; raises EndpointError if a window comes back without logprobs."""
    total, n, pieces = 0.0, 0, windows(text, max_chars)
    for piece in pieces:
        _, _, values = prompt_positions(post("/v1/completions", echo_request(model, piece)), piece)
        scored = [v for v in values if v is not None and math.isfinite(v)]
        if not scored:
            raise EndpointError("a window came back without prompt logprobs (it did in the probe)")
        total += -sum(scored)
        n += len(scored)
    return {"ppl": math.exp(total / n), "nll_mean": total / n, "tokens": n, "windows": len(pieces),
            "max_chars": max_chars}
