"""The prompt-logprob probe and endpoint perplexity: recorded answers (llama-server's real one, a vLLM-style
echo), then the real HTTP path against small loopback fakes of both kinds."""

from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.academic.endpoint_ppl import (
    PROBE_PROMPT, EndpointError, echo_request, endpoint_perplexity, judge_probe, post_json, probe,
    prompt_positions, windows,
)

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "academic"
PARIS = "The capital of France is Paris."


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIX / name).read_text())


def test_llama_server_answer_is_refused_with_the_reason():
    p = judge_probe(_fixture("llama_server_echo_response.json"), PARIS)
    assert not p.supported and p.shape == "content" and p.prompt_tokens == 7 and p.prompt_logprobs == 0
    assert p.reason.startswith("no prompt logprobs: asked for echo + logprobs on a 7-token prompt, it "
                               "returned "
                               "logprobs for generated tokens only (echo ignored)")
    assert "silently at chance" in p.reason and "\n" not in p.reason


def test_vllm_echo_answer_is_accepted():
    resp = _fixture("vllm_echo_response.json")
    shape, n, values = prompt_positions(resp, PARIS)
    assert (shape, n) == ("completions", 7) and values[0] is None and len(values) == 7  # "\n" was generated
    p = judge_probe(resp, PARIS)
    assert p.supported and p.prompt_logprobs == 6
    assert p.reason == "prompt logprobs returned for 6 of 7 prompt tokens"
    # Without text_offset the server's prompt count decides; without echo nothing counts.
    del resp["choices"][0]["logprobs"]["text_offset"]
    assert len(prompt_positions(resp, PARIS)[2]) == 7
    resp["choices"][0]["text"] = "\n"
    resp["choices"][0]["logprobs"] = {"tokens": ["\n"], "token_logprobs": [-1.06]}
    p = judge_probe(resp, PARIS)
    assert not p.supported and "did not echo the prompt" in p.reason


def test_no_logprobs_at_all():
    p = judge_probe({"choices": [{"text": "x", "logprobs": None}], "usage": {"prompt_tokens": 5}}, PARIS)
    assert not p.supported and "no logprobs at all" in p.reason and p.as_dict()["response_shape"] == "none"


def test_probe_turns_an_http_error_into_unsupported():
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise EndpointError("POST /v1/completions: HTTP 400: echo is not supported")

    p = probe(post, "m")
    assert not p.supported and p.shape == "error" and "HTTP 400: echo is not supported" in p.reason


def test_windows_cut_at_paragraphs_and_sentences():
    sentences = " ".join(f"Sentence {i} is here." for i in range(40))
    text = "one two.\n\nthree four.\n\n" + sentences + " " + "x" * 300
    parts = windows(text, max_chars=120)
    assert parts[0].startswith("one two.\n\nthree four.\n\nSentence 0 is here. Sentence 1 is here.")
    assert all(len(p) <= 120 for p in parts) and parts[-1] == "x" * 60
    assert "".join(" ".join(parts).split()) == "".join(text.split())
    body = (Path(__file__).resolve().parents[2] / "quality" / "heldout" / "plain_en.txt").read_text()
    assert all(len(p) <= 1500 for p in windows(body)) and 5 <= len(windows(body)) <= 12


# -- loopback fakes -------------------------------------------------------------------------------
def _tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+", text)


def _logprob(tok: str) -> float:
    return -0.5 - (len(tok.strip()) % 4) * 0.25


class _Fake(BaseHTTPRequestHandler):
    mode = "vllm"  # or "llama"
    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        prompt, toks = body["prompt"], _tokens(body["prompt"])
        if self.mode == "vllm" and body.get("echo"):
            offsets, pos = [], 0
            for t in toks + ["\n"]:
                offsets.append(pos)
                pos += len(t)
            lp: dict[str, Any] = {"tokens": toks + ["\n"], "text_offset": offsets,
                                  "token_logprobs": [None] + [_logprob(t) for t in toks[1:]] + [-1.0]}
            choice = {"index": 0, "text": prompt + "\n", "logprobs": lp, "finish_reason": "length"}
        else:
            choice = {"index": 0, "text": "\n", "finish_reason": "length",
                      "logprobs": {"content": [{"id": 198, "token": "\n", "logprob": -1.0,
                                                "top_logprobs": []}]}}
        out = json.dumps({"choices": [choice], "usage": {"prompt_tokens": len(toks), "completion_tokens": 1}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out.encode())


@pytest.fixture()
def fake_server() -> Iterator[Any]:
    servers = []

    def start(mode: str) -> str:
        handler = type(f"Fake_{mode}", (_Fake,), {"mode": mode, "seen": []})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append((srv, handler))
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv, _ in servers:
        srv.shutdown()
        srv.server_close()


def test_probe_and_perplexity_through_a_vllm_style_endpoint(fake_server):
    url = fake_server("vllm")

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return post_json(url, path, body, {"Authorization": "Bearer k"}, 5)

    p = probe(post, "m")
    assert p.supported and p.prompt_tokens == len(_tokens(PROBE_PROMPT))
    text = "Alpha beta gamma delta.\n\nEpsilon zeta eta theta iota."
    res = endpoint_perplexity(post, "m", text, max_chars=30)
    pieces = windows(text, 30)
    scored = [_logprob(t) for piece in pieces for t in _tokens(piece)[1:]]
    assert res["windows"] == len(pieces) == 2 and res["tokens"] == len(scored)
    assert res["ppl"] == pytest.approx(math.exp(-sum(scored) / len(scored)))
    assert echo_request("m", "x") == {"model": "m", "prompt": "x", "max_tokens": 1, "echo": True,
                                      "logprobs": 1,
                                      "temperature": 0, "stream": False}


def test_llama_style_endpoint_is_refused_and_perplexity_would_fail(fake_server):
    url = fake_server("llama")

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return post_json(url, path, body, {}, 5)

    p = probe(post, "m")
    assert not p.supported and "generated tokens only" in p.reason
    with pytest.raises(EndpointError, match="without prompt logprobs"):
        endpoint_perplexity(post, "m", "some text here")


def test_post_json_errors_are_one_line():
    with pytest.raises(EndpointError, match="POST /v1/completions: .*refused"):
        post_json("http://127.0.0.1:9", "/v1/completions", {}, {}, 2)
