"""Triton over gRPC (KServe v2 ``ModelStreamInfer``): the same named inputs as the HTTP generate
adapter, as typed tensors; responses decoded back into the same dict of outputs.

Pure (no I/O): :class:`bench.grpc_endpoint.GrpcEndpoint` does the streaming. Tensor types and shapes
come from the model's metadata (``ModelMetadata``: e.g. ``[-1, 1]`` for a batching TensorRT-LLM
ensemble, ``[1]`` for the vLLM backend) when the endpoint could read it, otherwise from the usual
types of these inputs. Every request asks for ``triton_enable_empty_final_response`` so the last
response of a decoupled model is marked (``triton_final_response``) — which tritonclient's asyncio
``stream_infer`` cannot request (``triton_*`` parameters are reserved there), hence requests are
built here on tritonclient's own generated protobuf classes. ``tritonclient[grpc]`` is imported
lazily: ``pip install 'benchbox[triton]'``.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Optional

from bench.adapters.base import Delta
from bench.adapters.triton_common import outputs_delta
from bench.adapters.triton_http import TritonGenerateAdapter

# Datatypes of the inputs benchbox sends, when the model's metadata is not available.
KNOWN_INPUTS = {
    "text_input": "BYTES", "sampling_parameters": "BYTES", "bad_words": "BYTES", "stop_words": "BYTES",
    "stream": "BOOL", "exclude_input_in_output": "BOOL", "return_finish_reason": "BOOL",
    "return_num_input_tokens": "BOOL", "return_num_output_tokens": "BOOL", "return_log_probs": "BOOL",
    "max_tokens": "INT32", "top_k": "INT32", "end_id": "INT32", "pad_id": "INT32", "beam_width": "INT32",
    "min_length": "INT32", "random_seed": "UINT64", "temperature": "FP32", "top_p": "FP32",
    "repetition_penalty": "FP32", "presence_penalty": "FP32", "frequency_penalty": "FP32",
    "length_penalty": "FP32",
}
_CONTENTS = {  # datatype -> InferTensorContents field
    "BYTES": "bytes_contents", "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
}
_RAW = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
        "UINT32": "I", "UINT64": "Q", "FP32": "f", "FP64": "d"}

InputMeta = dict[str, tuple[str, list[int]]]  # input name -> (datatype, shape with -1 for free dims)


class TritonGrpcAdapter(TritonGenerateAdapter):
    name = "triton-grpc"
    count_output_tokens = True  # summed per response by the endpoint

    def __init__(self, model: str = "model", options: Any = None):
        super().__init__(model, options)
        self.path = ""  # no URL path: the model travels in the request
        self.model_version = self.options.model_version

    def request(self, inputs: dict[str, Any], request_id: str, meta: Optional[InputMeta] = None) -> Any:
        """A ``ModelInferRequest`` for these named inputs. Raises ValueError for an input that cannot be
        encoded (unknown datatype, FP16/BF16)."""
        from tritonclient.grpc import service_pb2

        req = service_pb2.ModelInferRequest(model_name=self.model, model_version=self.model_version,
                                            id=request_id)
        for name, value in inputs.items():
            values = value if isinstance(value, list) else [value]
            dtype, shape = (meta or {}).get(name) or (KNOWN_INPUTS.get(name) or _dtype_of(value), [-1])
            field = _CONTENTS.get(dtype)
            if field is None:
                raise ValueError(f"input {name!r}: datatype {dtype} cannot be sent by benchbox")
            tensor = req.inputs.add(name=name, datatype=dtype, shape=_shape(shape, len(values)))
            if dtype == "BYTES":
                values = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
            getattr(tensor.contents, field).extend(values)
        req.parameters["triton_enable_empty_final_response"].bool_param = True
        return req

    def parse_outputs(self, outputs: dict[str, Any]) -> Delta:
        return outputs_delta(outputs)


def _dtype_of(value: Any) -> str:
    v = value[0] if isinstance(value, list) and value else value
    if isinstance(v, bool):
        return "BOOL"
    if isinstance(v, int):
        return "INT32"
    if isinstance(v, float):
        return "FP32"
    return "BYTES"


def _shape(meta_shape: list[int], n: int) -> list[int]:
    """Free dims (-1) become 1 (the batch of one), except the last free dim, which holds the values."""
    shape = [1 if d < 0 else d for d in meta_shape] or [1]
    if math.prod(shape) != n:
        free = [i for i, d in enumerate(meta_shape) if d < 0]
        i = free[-1] if free else len(shape) - 1
        shape[i] = 1
        shape[i] = n // max(1, math.prod(shape))
    return shape


def final_response(infer_response: Any) -> bool:
    params = infer_response.parameters
    return "triton_final_response" in params and params["triton_final_response"].bool_param


def decode_outputs(infer_response: Any) -> dict[str, Any]:
    """Output tensors -> {name: value} (a one-element tensor as its value, else a list); BYTES as text.
    Triton sends ``raw_output_contents`` (one per output, in order); typed ``contents`` also work."""
    out: dict[str, Any] = {}
    raws = infer_response.raw_output_contents
    for i, tensor in enumerate(infer_response.outputs):
        if i < len(raws):
            values = _from_raw(tensor.datatype, raws[i])
        else:
            field = _CONTENTS.get(tensor.datatype)
            values = list(getattr(tensor.contents, field)) if field else []
            if tensor.datatype == "BYTES":
                values = [v.decode("utf-8", "replace") for v in values]
        out[tensor.name] = values[0] if len(values) == 1 else values
    return out


def _from_raw(dtype: str, raw: bytes) -> list[Any]:
    if dtype == "BYTES":  # each element: 4-byte little-endian length, then the bytes
        values, pos = [], 0
        while pos + 4 <= len(raw):
            (n,) = struct.unpack_from("<I", raw, pos)
            values.append(raw[pos + 4:pos + 4 + n].decode("utf-8", "replace"))
            pos += 4 + n
        return values
    fmt = _RAW.get(dtype)
    if fmt is None:
        return []
    size = struct.calcsize(fmt)
    return [v for (v,) in struct.iter_unpack("<" + fmt, raw[: len(raw) - len(raw) % size])]
