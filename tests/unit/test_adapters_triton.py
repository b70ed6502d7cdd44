"""Triton: generate-extension bodies per backend, recorded generate_stream transcripts, and the gRPC
adapter's tensor encoding / decoding (tritonclient's protobuf classes, no server)."""

from __future__ import annotations

import struct

import orjson
import pytest

from bench.adapters import get_adapter
from bench.adapters.triton_common import outputs_delta
from bench.adapters.triton_grpc import TritonGrpcAdapter, decode_outputs, final_response
from bench.adapters.triton_http import TritonGenerateAdapter
from bench.dataset import Item
from bench.scenario import Sampling, Target, TritonOptions
from tests.unit.transcript_play import at, play, transcript

PROMPT = Item(id="q", messages=None, prompt="The capital of France is")
TRT = TritonOptions(backend="tensorrtllm")


def test_registry_builds_from_the_target() -> None:
    t = Target(name="t", role="baseline", url="http://h:8000", protocol="triton-generate", model="llm/v2",
               triton={"backend": "tensorrtllm", "model_version": "3"})
    a = get_adapter("triton-generate", t)
    assert isinstance(a, TritonGenerateAdapter)
    assert a.path == "/v2/models/llm%2Fv2/versions/3/generate_stream"
    assert a.end_marker is False and a.options.backend == "tensorrtllm"
    g = get_adapter("triton-grpc", Target(name="g", role="baseline", url="grpc://h:8001",
                                          protocol="triton-grpc", model="vllm_model"))
    assert isinstance(g, TritonGrpcAdapter) and g.model == "vllm_model" and g.model_version == ""


def test_vllm_backend_body() -> None:
    body = TritonGenerateAdapter("m").build_body(PROMPT, Sampling(temperature=0, max_tokens=16, seed=0, stop=["\n"]), "m")
    params = orjson.loads(body.pop("sampling_parameters"))
    assert params == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 16, "seed": 0, "stop": ["\n"]}
    assert body == {"text_input": "The capital of France is", "stream": True, "exclude_input_in_output": True,
                    "return_finish_reason": True, "return_num_input_tokens": True}


def test_vllm_backend_without_additional_outputs_and_extra_inputs() -> None:
    opts = TritonOptions(additional_outputs=False, inputs={"image": "x"})
    body = TritonGenerateAdapter("m", opts).build_body(PROMPT, Sampling(), "m")
    assert "return_finish_reason" not in body and body["image"] == "x"


def test_tensorrtllm_body_greedy_and_sampled() -> None:
    a = TritonGenerateAdapter("ensemble", TRT)
    greedy = a.build_body(PROMPT, Sampling(temperature=0, max_tokens=8, seed=5), "ensemble")
    assert greedy == {"text_input": "The capital of France is", "stream": True, "max_tokens": 8,
                      "bad_words": "", "stop_words": "", "top_k": 1, "random_seed": 5}
    sampled = a.build_body(PROMPT, Sampling(temperature=0.8, top_p=0.95, stop=["</s>"]), "ensemble")
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (0.8, 0.95, 0)
    assert sampled["stop_words"] == ["</s>"]


def test_set_seed_per_backend() -> None:
    a = TritonGenerateAdapter("m")
    body = a.build_body(PROMPT, Sampling(temperature=1.0, seed=0), "m")
    a.set_seed(body, 4)
    assert orjson.loads(body["sampling_parameters"])["seed"] == 4
    t = TritonGenerateAdapter("e", TRT)
    body = t.build_body(PROMPT, Sampling(temperature=1.0, seed=0), "e")
    t.set_seed(body, 4)
    assert body["random_seed"] == 4


def test_vllm_stream_record() -> None:
    rec = play(transcript("triton_vllm_generate_stream.sse"), TritonGenerateAdapter("vllm_model"))
    assert rec.error is None
    assert rec.output_text == " Paris is the capital of France."
    assert rec.first_token_ns == at(0) and rec.chunk_ns == [at(i) for i in range(7)]
    assert rec.finish_reason == "stop"           # "None" on every response before the last
    assert rec.prompt_tokens == 14 and rec.output_tokens is None  # counted from chunks, flagged


def test_trtllm_stream_ends_without_marker_and_is_complete() -> None:
    rec = play(transcript("triton_trtllm_generate_stream.sse"), TritonGenerateAdapter("ensemble", TRT))
    assert rec.error is None and rec.finish_reason is None
    assert rec.output_text == " Paris is the capital of France." and len(rec.chunk_ns) == 7
    assert rec.end_ns == at(7)


def test_error_event_under_200() -> None:
    rec = play(transcript("triton_error_midstream.sse"), TritonGenerateAdapter("m"))
    assert rec.error == "broken_stream" and "illegal memory access" in rec.error_detail
    assert rec.output_text == " Paris"


def test_error_before_inference_is_http_4xx() -> None:
    body = b'{"error":"unexpected inference input \'max_tokens\' for model \'vllm_model\'"}'
    rec = play(body, TritonGenerateAdapter("vllm_model"), status=400, content_type=b"application/json", reads=[body])
    assert rec.error == "http_4xx" and "unexpected inference input" in rec.error_detail


def test_non_streamed_generate_body() -> None:
    body = b'{"model_name":"m","model_version":"1","text_output":"Paris.","finish_reason":["length"]}'
    rec = play(body, TritonGenerateAdapter("m"), content_type=b"application/json", reads=[body])
    assert rec.error is None and rec.output_text == "Paris." and rec.finish_reason == "length"


@pytest.mark.parametrize("obj", [[1], {"text_output": 3}, {"text_output": ["a", 1]}])
def test_malformed_outputs(obj: object) -> None:
    assert outputs_delta(obj).malformed


def test_outputs_lists_and_counts() -> None:
    d = outputs_delta({"text_output": ["a", "b"], "finish_reason": ["length"], "num_input_tokens": [9]})
    assert (d.content, d.finish_reason, d.usage) == ("ab", "length", {"prompt_tokens": 9})


# --- gRPC tensors ------------------------------------------------------------------------------


def test_grpc_request_types_from_metadata_and_defaults() -> None:
    a = TritonGrpcAdapter("ensemble", TRT)
    inputs = a.build_body(PROMPT, Sampling(temperature=0, max_tokens=8, seed=5, stop=["a", "b"]), "ensemble")
    meta = {"text_input": ("BYTES", [-1, 1]), "max_tokens": ("INT32", [-1, 1]), "stop_words": ("BYTES", [-1, -1])}
    req = a.request(inputs, "rid-1", meta)
    assert req.model_name == "ensemble" and req.id == "rid-1"
    assert req.parameters["triton_enable_empty_final_response"].bool_param is True
    t = {x.name: x for x in req.inputs}
    assert (t["text_input"].datatype, list(t["text_input"].shape)) == ("BYTES", [1, 1])
    assert list(t["text_input"].contents.bytes_contents) == [b"The capital of France is"]
    assert (t["max_tokens"].datatype, list(t["max_tokens"].contents.int_contents)) == ("INT32", [8])
    assert list(t["stop_words"].shape) == [1, 2]
    # without metadata: the usual types of these inputs
    assert (t["random_seed"].datatype, list(t["random_seed"].contents.uint64_contents)) == ("UINT64", [5])
    assert (t["stream"].datatype, list(t["stream"].shape)) == ("BOOL", [1])
    assert t["top_k"].datatype == "INT32"


def test_grpc_vllm_request_counts_output_tokens() -> None:
    inputs = TritonGrpcAdapter("m").build_body(PROMPT, Sampling(), "m")
    assert inputs["return_num_output_tokens"] is True  # summed by the endpoint per response


def test_grpc_unsendable_datatype() -> None:
    with pytest.raises(ValueError, match="FP16"):
        TritonGrpcAdapter("m").request({"temperature": 0.5}, "r", {"temperature": ("FP16", [1])})


def test_decode_raw_outputs_and_final_flag() -> None:
    from tritonclient.grpc import service_pb2

    resp = service_pb2.ModelInferResponse(model_name="m")
    resp.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    resp.outputs.add(name="finish_reason", datatype="BYTES", shape=[1])
    resp.outputs.add(name="num_output_tokens", datatype="UINT32", shape=[1])
    text, reason = " Paris".encode(), b"None"
    resp.raw_output_contents.extend([struct.pack("<I", len(text)) + text, struct.pack("<I", len(reason)) + reason,
                                     struct.pack("<I", 2)])
    assert decode_outputs(resp) == {"text_output": " Paris", "finish_reason": "None", "num_output_tokens": 2}
    assert final_response(resp) is False
    resp.parameters["triton_final_response"].bool_param = True
    assert final_response(resp) is True
    typed = service_pb2.ModelInferResponse()
    out = typed.outputs.add(name="text_output", datatype="BYTES", shape=[2])
    out.contents.bytes_contents.extend([b"a", b"b"])
    assert decode_outputs(typed) == {"text_output": ["a", "b"]}


# --- scenario: Triton targets -----------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"url": "grpc://h:8001", "protocol": "openai-chat"}, "grpc:// URLs need protocol triton-grpc"),
    ({"url": "http://h:8001", "protocol": "triton-grpc"}, "triton-grpc takes url: grpc://host:port"),
    ({"url": "grpc://h", "protocol": "triton-grpc"}, "expected an http"),
    ({"server": {"definition": "triton"}, "protocol": "triton-grpc"}, "managed Triton targets"),
    ({"url": "http://h:8000", "protocol": "openai-chat", "triton": {}}, "'triton' options apply"),
    ({"url": "http://h:8000", "protocol": "triton-generate", "triton": {"backend": "onnx"}}, "backend"),
])
def test_triton_target_validation(fields: dict, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Target(name="t", role="baseline", model="m", **fields)


def test_managed_triton_target_names_its_model() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs 'model': the model's name in its model repository"):
        Target(name="t", role="baseline", protocol="triton-generate", server={"definition": "triton", "model": "/r"})
    t = Target(name="t", role="baseline", protocol="triton-generate", model="vllm_model",
               server={"definition": "triton", "model": "/r"})
    assert get_adapter("triton-generate", t).path == "/v2/models/vllm_model/generate_stream"


def test_triton_targets_accepted() -> None:
    g = Target(name="g", role="baseline", url="grpcs://triton.example.com:443", protocol="triton-grpc", model="m",
               metrics_url="http://triton.example.com:8002/metrics")
    assert g.url == "grpcs://triton.example.com:443"
    h = Target(name="h", role="baseline", url="http://h:8000/", protocol="triton-generate", model="m",
               triton={"backend": "tensorrtllm", "inputs": {"end_id": 2}})
    assert h.url == "http://h:8000" and h.triton.inputs == {"end_id": 2}
