"""Triton's gRPC streaming inference (KServe v2 ``ModelStreamInfer``) behind the same seam as the HTTP
``Endpoint``: ``stream(path, body, record, adapter, timeout_s)`` fills a ``RequestRecord`` and never
raises for request failures; ``close()``.

One bidirectional ``ModelStreamInfer`` call per request (an HTTP/2 stream), all on one ``grpc.aio``
channel created in the runner's event loop. The request asks for ``triton_enable_empty_final_response``
so the end of a decoupled model's answer is known (``triton_final_response``); the request side stays
open until then, so the server never sees a half-closed stream with work in flight.

Timing: ``perf_counter_ns()`` is stamped as each response is handed to this coroutine, *before* its
tensors are decoded. Unlike the raw HTTP client this is after gRPC's C core has reassembled the
HTTP/2 frames and protobuf has parsed the message (microseconds per response), which is the closest
a gRPC client gets to "when bytes arrive"; ``first_byte_ns`` is the first response's stamp.

Errors: an ``error_message`` in a response (Triton's per-request errors, e.g. an unknown input) is
``broken_stream``; RPC failures map to the record's classes through the gRPC status: UNAVAILABLE
before any response is ``connect``, DEADLINE_EXCEEDED ``timeout``, others ``http_4xx``/``http_5xx`` with
``status`` set to the equivalent HTTP code (gRPC's own mapping) and the gRPC code name in the detail.
A stream that ends without the final flag is complete (no end marker, as Triton's HTTP stream);
output tokens are the sum of the vLLM backend's per-response ``num_output_tokens`` when present.
"""

from __future__ import annotations

import asyncio
from time import perf_counter_ns
from typing import Any, Optional
from urllib.parse import urlsplit

import orjson

from bench.adapters.triton_grpc import InputMeta, decode_outputs, final_response
from bench.records import ERROR_CLASSES, RequestRecord

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_DRAIN_S = 2.0
# gRPC status -> HTTP status (the mapping in grpc-gateway / Google APIs).
GRPC_TO_HTTP = {
    "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503,
    "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class GrpcEndpoint:
    """A ``grpc://host:port`` (``grpcs://`` for TLS) Triton target. ``extra_headers`` become gRPC
    metadata (names lower-cased); like HTTP headers they may hold secrets and go nowhere else."""

    def __init__(self, url: str, extra_headers: Optional[dict[str, str]] = None,
                 max_response_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        parts = urlsplit(url)
        if parts.scheme not in ("grpc", "grpcs") or not parts.hostname or not parts.port:
            raise ValueError(f"expected grpc://host:port, got {url!r}")
        self.address = f"{parts.hostname}:{parts.port}"
        self.tls = parts.scheme == "grpcs"
        self.max_response_bytes = max_response_bytes
        self.metadata = tuple((k.lower(), v) for k, v in (extra_headers or {}).items())
        self._channel: Any = None
        self._stub: Any = None
        self._inputs: dict[tuple[str, str], InputMeta] = {}

    def _connect(self) -> None:
        import grpc  # lazy: only gRPC targets need grpcio / tritonclient
        from tritonclient.grpc import service_pb2_grpc

        options = [("grpc.max_receive_message_length", self.max_response_bytes),
                   ("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if self.tls:
            self._channel = grpc.aio.secure_channel(self.address, grpc.ssl_channel_credentials(), options)
        else:
            self._channel = grpc.aio.insecure_channel(self.address, options)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def _input_meta(self, model: str, version: str, timeout_s: float) -> Optional[InputMeta]:
        """Input datatypes and shapes from ``ModelMetadata``, read once per model (None if unreadable:
        the adapter then uses the usual types of the inputs it sends)."""
        key = (model, version)
        if key not in self._inputs:
            from tritonclient.grpc import service_pb2

            try:
                meta = await self._stub.ModelMetadata(
                    service_pb2.ModelMetadataRequest(name=model, version=version),
                    metadata=self.metadata, timeout=timeout_s)
            except Exception:  # unreachable or no such model: the stream itself reports it
                return None
            self._inputs[key] = {t.name: (t.datatype, list(t.shape)) for t in meta.inputs}
        return self._inputs[key]

    async def stream(self, path: str, body: bytes, record: RequestRecord, adapter: Any, timeout_s: float) -> None:
        """Send one request and fill ``record`` from its responses (``path`` is unused: the model is
        named in the request). Re-raises CancelledError after marking the record ``cancelled``."""
        record.sent_ns = perf_counter_ns()
        if self._channel is None:
            self._connect()
        state = _StreamState()
        try:
            await asyncio.wait_for(self._exchange(body, record, adapter, timeout_s, state), timeout_s)
        except asyncio.TimeoutError:
            _fail(record, state, "timeout", f"no complete response within {timeout_s:g} s")
        except asyncio.CancelledError:
            _fail(record, state, "cancelled", "run interrupted while the request was in flight")
            raise
        except Exception as e:  # noqa: BLE001  (classified onto the record, never raised)
            _fail_rpc(record, state, e)
        finally:
            state.done.set()
            if state.call is not None and not state.call.done():
                state.call.cancel()

    async def _exchange(self, body: bytes, record: RequestRecord, adapter: Any, timeout_s: float,
                        state: "_StreamState") -> None:
        meta = await self._input_meta(adapter.model, adapter.model_version, timeout_s)
        try:
            request = adapter.request(orjson.loads(body), record.request_id, meta)
        except ValueError as e:
            record.end_ns = perf_counter_ns()
            record.error, record.error_detail = "http_4xx", f"request not sendable: {e}"[:500]
            return

        async def requests() -> Any:
            yield request
            await state.done.wait()  # keep the request side open until the final response

        state.call = call = self._stub.ModelStreamInfer(requests(), metadata=self.metadata)
        async for response in call:
            now = perf_counter_ns()  # stamp first: decoding follows
            if record.first_byte_ns is None:
                record.first_byte_ns = now
                record.status = 200
            if response.error_message:
                _fail(record, state, "broken_stream", f"error in stream: {response.error_message[:300]}", now)
                return
            infer = response.infer_response
            outputs = decode_outputs(infer)
            delta = adapter.parse_outputs(outputs)
            if delta.malformed or delta.error:
                _fail(record, state, "broken_stream", f"error in stream: {delta.error or 'malformed outputs'}", now)
                return
            state.add(record, delta, outputs, now)
            if final_response(infer):
                state.end(record, now)
                state.done.set()
                await _drain(call)
                return
        state.end(record, perf_counter_ns())  # the server ended the RPC without marking a final response

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None


class _StreamState:
    __slots__ = ("call", "done", "parts", "reasoning", "counted", "output_tokens", "resolved")

    def __init__(self) -> None:
        self.call: Any = None
        self.done = asyncio.Event()
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.output_tokens = 0
        self.counted = False
        self.resolved = False

    def add(self, rec: RequestRecord, delta: Any, outputs: dict[str, Any], now: int) -> None:
        """One response, as ``Exchange._on_event`` treats one SSE event."""
        if delta.content:
            if rec.first_token_ns is None:
                rec.first_token_ns = now
            rec.chunk_ns.append(now)
            self.parts.append(delta.content)
        if delta.reasoning:
            self.reasoning.append(delta.reasoning)
            if rec.first_reasoning_ns is None:
                rec.first_reasoning_ns = now
        if delta.finish_reason:
            rec.finish_reason = delta.finish_reason
        if delta.usage and isinstance(delta.usage.get("prompt_tokens"), int):
            rec.prompt_tokens = delta.usage["prompt_tokens"]
        n = outputs.get("num_output_tokens")
        n = n[0] if isinstance(n, list) and len(n) == 1 else n
        if isinstance(n, int) and not isinstance(n, bool):
            self.output_tokens += n
            self.counted = True

    def end(self, rec: RequestRecord, now: int) -> None:
        rec.end_ns = now
        self.finish_texts(rec)
        if self.counted:
            rec.output_tokens = self.output_tokens
        if not rec.output_text and not rec.reasoning_text:
            rec.error, rec.error_detail = "empty", "no content tokens in a complete response"
        self.resolved = True

    def finish_texts(self, rec: RequestRecord) -> None:
        rec.output_text = "".join(self.parts)
        rec.reasoning_text = "".join(self.reasoning)


def _fail(rec: RequestRecord, state: _StreamState, error_class: str, detail: str,
          now: Optional[int] = None) -> None:
    if state.resolved:
        return
    rec.end_ns = perf_counter_ns() if now is None else now
    rec.error, rec.error_detail = error_class, detail[:500]
    state.finish_texts(rec)
    state.resolved = True


def _fail_rpc(rec: RequestRecord, state: _StreamState, exc: Exception) -> None:
    code_fn = getattr(exc, "code", None)
    code = code_fn() if callable(code_fn) else None
    name = getattr(code, "name", None) or type(exc).__name__
    details_fn = getattr(exc, "details", None)
    details = (details_fn() if callable(details_fn) else None) or str(exc)
    detail = f"gRPC {name}: {details}"
    if name == "UNAVAILABLE" and rec.first_byte_ns is None:
        _fail(rec, state, "connect", detail)
    elif name == "DEADLINE_EXCEEDED":
        _fail(rec, state, "timeout", detail)
    elif name in GRPC_TO_HTTP:
        rec.status = status = GRPC_TO_HTTP[name]
        limited = status == 429 and "http_429" in ERROR_CLASSES
        _fail(rec, state, "http_5xx" if status >= 500 else "http_429" if limited else "http_4xx", detail)
    else:
        _fail(rec, state, "broken_stream", detail)


async def _drain(call: Any) -> None:
    """After the final response the request side closes; wait briefly for the server to end the RPC
    (the record is already final), then cancel whatever is left."""
    try:
        await asyncio.wait_for(call.code(), _DRAIN_S)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001
        call.cancel()
