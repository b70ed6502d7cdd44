"""The simulator's Triton and TGI request parsing and payloads (bench/sim_protocols.py), without sockets."""

from __future__ import annotations

import orjson
import pytest

from bench.sim_protocols import ProtocolError, parse_tgi, parse_triton, protocol_route, triton_event


def vllm_body(**extra: object) -> bytes:
    return orjson.dumps({"text_input": "a b c", "stream": True, "exclude_input_in_output": True,
                         "sampling_parameters": orjson.dumps({"max_tokens": 7}).decode(), **extra})


def test_triton_vllm_flavor() -> None:
    p = parse_triton(vllm_body(return_finish_reason=True), "m", "", sse=True)
    assert (p.flavor, p.greq.max_tokens, p.greq.prompt_tokens, p.token_stream) == ("vllm", 7, 3, True)
    assert p.outputs == {"finish_reason"}
    ev = triton_event(p, " x", 1, None)
    assert ev == {"model_name": "m", "model_version": "1", "finish_reason": "None", "text_output": " x"}


def test_triton_tensorrtllm_flavor_needs_max_tokens() -> None:
    p = parse_triton(orjson.dumps({"text_input": "q", "max_tokens": 3, "top_k": 1}), "ensemble", "2", sse=False)
    assert (p.flavor, p.greq.max_tokens, p.model_version, p.greq.stream) == ("tensorrtllm", 3, "2", False)
    with pytest.raises(ProtocolError, match="max_tokens"):
        parse_triton(orjson.dumps({"text_input": "q"}), "ensemble", "", sse=True)


@pytest.mark.parametrize("body, message", [
    (vllm_body(max_tokens=3), "unexpected inference input 'max_tokens'"),
    (vllm_body(exclude_input_in_output=False), "exclude_input_in_output"),
    (b"[1]", "JSON object"),
    (orjson.dumps({"max_tokens": 3}), "expected 1 inputs"),
])
def test_triton_refusals(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as err:
        parse_triton(body, "vllm_model", "", sse=True)
    assert err.value.status == 400 and b'"error"' in err.value.body


@pytest.mark.parametrize("params, message", [
    ({"temperature": 0}, "temperature` must be strictly positive"),
    ({"top_p": 1.0}, "top_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "top_k` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "up to 4 stop sequences"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_tgi_validation_like_tgi(params: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as err:
        parse_tgi(orjson.dumps({"inputs": "x", "parameters": params}), sse=True)
    assert err.value.status == 422 and orjson.loads(err.value.body)["error_type"] == "validation"


def test_tgi_greedy_request_accepted() -> None:
    p = parse_tgi(orjson.dumps({"inputs": "x y", "parameters": {"do_sample": False, "max_new_tokens": 4,
                                                                 "details": True, "seed": 3}}), sse=True)
    assert (p.greq.max_tokens, p.details, p.seed) == (4, True, None)  # seed only matters when sampling


def test_routes() -> None:
    assert protocol_route(b"/v2/models/a%2Fb/versions/3/generate_stream")[0] == b"POST"
    assert protocol_route(b"/v2/models/m/ready")[0] == b"GET"
    assert protocol_route(b"/generate_stream")[0] == b"POST"
    assert protocol_route(b"/v2/nothing") is None and protocol_route(b"/v1/other") is None
