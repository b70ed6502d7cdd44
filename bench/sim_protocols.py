"""`benchbox sim` speaking other servers' protocols: Triton's generate extension and KServe v2 model
endpoints, and TGI's native routes. Same plans, timing and truth log as the OpenAI routes
(:func:`bench.sim_stream.plan_request`, :class:`bench.sim_stream.Generation`); only request parsing
and payloads differ. Every simulator answers all of them (``bench.sim`` asks :func:`protocol_route`
for paths it does not know).

Triton (``/v2/...``): ``POST /v2/models/<m>[/versions/<v>]/generate_stream`` (SSE, one ``data:`` event
per response, no end marker: the chunked body ends) and ``/generate`` (one JSON object); ``GET /v2``,
``/v2/health/{live,ready}``, ``/v2/models/<m>``, ``/v2/models/<m>/ready``, ``/v2/models/<m>/config``.
The model behaves like Triton's vLLM backend when the request carries ``sampling_parameters`` (its
additional outputs ``finish_reason`` / ``num_input_tokens`` / ``num_output_tokens`` on request) and like
a TensorRT-LLM ensemble otherwise (``max_tokens`` required, ``text_output`` only). Inputs the flavor
does not have are refused with HTTP 400 ``{"error": "unexpected inference input ..."}``, as Triton does.

TGI: ``POST /generate_stream`` (token events, ``details`` on the last), ``POST /generate``,
``GET /info``. Parameters are validated as TGI does (HTTP 422, ``error_type: validation``):
``temperature`` > 0, ``top_p`` in (0, 1), ``top_k`` > 0, at most 4 stop sequences. A natural end is
an extra special end-of-sequence token event (``finish_reason: eos_token``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import unquote

import orjson

from bench.sim_stream import (
    JSON_TYPE, LAST_HTTP_CHUNK, GenRequest, Generation, HttpRequest, count_prompt_tokens, http_chunk, plan_request,
    plan_text, token_text,
)

if TYPE_CHECKING:
    from bench.sim import SimConnection

TRITON = "triton"
TGI = "tgi"
TRITON_VERSION = "2.59.0"
VLLM_INPUTS = frozenset({
    "text_input", "image", "stream", "sampling_parameters", "exclude_input_in_output", "return_finish_reason",
    "return_cumulative_logprob", "return_logprobs", "return_num_input_tokens", "return_num_output_tokens",
})
TRTLLM_INPUTS = frozenset({
    "text_input", "max_tokens", "stream", "bad_words", "stop_words", "end_id", "pad_id", "top_k", "top_p",
    "temperature", "length_penalty", "repetition_penalty", "min_length", "presence_penalty", "frequency_penalty",
    "random_seed", "return_log_probs", "return_context_logits", "return_generation_logits", "beam_width",
    "exclude_input_in_output", "embedding_bias_words", "embedding_bias_weights", "num_draft_tokens",
})
VLLM_DEFAULT_MAX_TOKENS = 16  # vLLM's SamplingParams default
TGI_MAX_STOP_SEQUENCES = 4
EOS_TEXT = "</s>"

Handler = Callable[["SimConnection", HttpRequest], None]


class ProtocolError(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(str(body))
        self.status, self.body = status, orjson.dumps(body)


@dataclass(frozen=True)
class ProtoRequest:
    """A parsed Triton / TGI generation request: the common ``GenRequest`` plus what shapes the payloads."""

    protocol: str
    greq: GenRequest
    token_stream: bool = True          # False: one response with the whole text (Triton ``stream: false``)
    flavor: str = ""                   # Triton: "vllm" | "tensorrtllm"
    model_version: str = "1"
    outputs: frozenset = frozenset()   # Triton vLLM additional outputs asked for
    prepend_prompt: str = ""           # Triton vLLM non-streamed, exclude_input_in_output false
    details: bool = False              # TGI
    top_n: int = 0                     # TGI top_n_tokens
    seed: Optional[int] = None         # TGI: echoed in details when sampling
    extra: dict[str, Any] = field(default_factory=dict)


def _object(raw: bytes, error: Callable[[str], ProtocolError]) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(body, dict):
        raise error("the request body must be a JSON object")
    return body


# ----------------------------------------------------------------------------------------- Triton
def _triton_error(message: str, status: int = 400) -> ProtocolError:
    return ProtocolError(status, {"error": message})


def parse_triton(raw: bytes, model: str, version: str, sse: bool) -> ProtoRequest:
    body = _object(raw, _triton_error)
    text = body.get("text_input")
    if not isinstance(text, str):
        raise _triton_error(f"expected 1 inputs but got 0 inputs for model '{model}'" if text is None
                            else "unable to parse 'text_input': expected a string")
    flavor = "vllm" if "sampling_parameters" in body else "tensorrtllm"
    allowed = VLLM_INPUTS if flavor == "vllm" else TRTLLM_INPUTS
    for name in body:
        if name not in allowed and name not in ("parameters", "id"):
            raise _triton_error(f"unexpected inference input '{name}' for model '{model}'")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _triton_error("unable to parse 'stream': expected a boolean")
    outputs: set[str] = set()
    prepend = ""
    if flavor == "vllm":
        try:
            params = orjson.loads(body["sampling_parameters"])
        except (orjson.JSONDecodeError, TypeError):
            raise _triton_error("Error generating stream: 'sampling_parameters' is not a JSON string") from None
        if not isinstance(params, dict):
            raise _triton_error("Error generating stream: 'sampling_parameters' must be a JSON object")
        max_tokens = params.get("max_tokens", VLLM_DEFAULT_MAX_TOKENS)
        exclude = body.get("exclude_input_in_output")
        if stream and exclude is False:
            raise _triton_error("Error generating stream: When streaming, `exclude_input_in_output` = False "
                                "is not allowed.")
        if not stream and exclude is not True:
            prepend = text
        outputs = {n[len("return_"):] for n in ("return_finish_reason", "return_num_input_tokens",
                                                "return_num_output_tokens") if body.get(n) is True}
    else:
        if "max_tokens" not in body:
            raise _triton_error(f"expected 2 inputs but got 1 inputs for model '{model}': missing 'max_tokens'")
        max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _triton_error("max_tokens must be a positive integer")
    greq = GenRequest(kind=TRITON, model=model, stream=sse, include_usage=False, max_tokens=max_tokens,
                      prompt_tokens=count_prompt_tokens({"prompt": text}, "completion"))
    return ProtoRequest(TRITON, greq, token_stream=stream, flavor=flavor, model_version=version or "1",
                        outputs=frozenset(outputs), prepend_prompt=prepend)


def triton_event(proto: ProtoRequest, text: str, n_tokens: int, finish: Optional[str]) -> dict[str, Any]:
    """One response of the simulated model, as the generate extension writes it."""
    out: dict[str, Any] = {"model_name": proto.greq.model, "model_version": proto.model_version}
    if proto.flavor == "tensorrtllm":
        out.update(cum_log_probs=0.0, output_log_probs=[0.0] * max(1, n_tokens), sequence_end=False,
                   sequence_id=0, sequence_start=False)
    if "finish_reason" in proto.outputs:
        out["finish_reason"] = finish or "None"  # vLLM's str(None) until the last response
    if "num_input_tokens" in proto.outputs:
        out["num_input_tokens"] = proto.greq.prompt_tokens
    if "num_output_tokens" in proto.outputs:
        out["num_output_tokens"] = n_tokens
    out["text_output"] = text
    return out


def _model_io(model: str) -> dict[str, Any]:
    inputs = [{"name": "text_input", "datatype": "BYTES", "shape": [1]},
              {"name": "stream", "datatype": "BOOL", "shape": [1]},
              {"name": "sampling_parameters", "datatype": "BYTES", "shape": [1]},
              {"name": "exclude_input_in_output", "datatype": "BOOL", "shape": [1]},
              {"name": "return_finish_reason", "datatype": "BOOL", "shape": [1]},
              {"name": "return_num_input_tokens", "datatype": "BOOL", "shape": [1]},
              {"name": "return_num_output_tokens", "datatype": "BOOL", "shape": [1]}]
    outputs = [{"name": "text_output", "datatype": "BYTES", "shape": [-1]},
               {"name": "finish_reason", "datatype": "BYTES", "shape": [-1]},
               {"name": "num_input_tokens", "datatype": "UINT32", "shape": [1]},
               {"name": "num_output_tokens", "datatype": "UINT32", "shape": [-1]}]
    return {"name": model, "versions": ["1"], "platform": "python", "inputs": inputs, "outputs": outputs}


def _model_config(model: str) -> dict[str, Any]:
    io = _model_io(model)
    types = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL", "UINT32": "TYPE_UINT32"}

    def conv(t: dict[str, Any], optional: bool) -> dict[str, Any]:
        return {"name": t["name"], "data_type": types[t["datatype"]], "dims": t["shape"],
                **({"optional": True} if optional and t["name"] != "text_input" else {})}
    return {"name": model, "backend": "vllm", "max_batch_size": 0,
            "model_transaction_policy": {"decoupled": True},
            "input": [conv(t, True) for t in io["inputs"]], "output": [conv(t, False) for t in io["outputs"]],
            "instance_group": [{"name": model, "kind": "KIND_MODEL", "count": 1}],
            "parameters": {"simulated_by": {"string_value": "benchbox-sim"}}}


# -------------------------------------------------------------------------------------------- TGI
def _tgi_error(message: str, status: int = 422, kind: str = "validation") -> ProtocolError:
    return ProtocolError(status, {"error": message, "error_type": kind})


def parse_tgi(raw: bytes, sse: bool) -> ProtoRequest:
    body = _object(raw, lambda m: _tgi_error(f"Failed to deserialize the JSON body: {m}", 422))
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise _tgi_error("Failed to deserialize the JSON body into the target type: missing field `inputs`")
    if not inputs:
        raise _tgi_error("Input validation error: `inputs` cannot be empty")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise _tgi_error("Failed to deserialize the JSON body: `parameters` must be an object")

    def number(name: str) -> Optional[float]:
        v = params.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _tgi_error(f"Failed to deserialize the JSON body: `{name}` must be a number")
        return v
    temperature, top_p, top_k = number("temperature"), number("top_p"), number("top_k")
    if temperature is not None and temperature <= 0:
        raise _tgi_error("Input validation error: `temperature` must be strictly positive")
    if top_p is not None and not 0 < top_p < 1:
        raise _tgi_error("Input validation error: `top_p` must be > 0.0 and < 1.0")
    if top_k is not None and top_k <= 0:
        raise _tgi_error("Input validation error: `top_k` must be strictly positive")
    stop = params.get("stop") or []
    if not isinstance(stop, list) or len(stop) > TGI_MAX_STOP_SEQUENCES:
        raise _tgi_error(f"Input validation error: `stop` supports up to {TGI_MAX_STOP_SEQUENCES} stop sequences. "
                         f"Given: {len(stop) if isinstance(stop, list) else stop}")
    max_new = params.get("max_new_tokens")
    if max_new is not None and (isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1):
        raise _tgi_error("Input validation error: `max_new_tokens` must be strictly positive")
    top_n = params.get("top_n_tokens") or 0
    if not isinstance(top_n, int) or top_n > 5:
        raise _tgi_error(f"Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: {top_n}")
    sampling = bool(params.get("do_sample")) or any(v is not None for v in (temperature, top_p, top_k))
    seed = params.get("seed") if sampling and isinstance(params.get("seed"), int) else None
    greq = GenRequest(kind=TGI, model=None, stream=sse, include_usage=False, max_tokens=max_new,
                      prompt_tokens=count_prompt_tokens({"prompt": inputs}, "completion"))
    return ProtoRequest(TGI, greq, details=bool(params.get("details")), top_n=top_n, seed=seed)


def _tgi_token(plan: Any, i: int, top_n: int, index: int) -> dict[str, Any]:
    text = token_text(plan.vocab_start, i)
    out: dict[str, Any] = {"index": index, "token": {"id": 1000 + (plan.vocab_start + i) % 16, "text": text,
                                                      "logprob": -0.25, "special": False}}
    if top_n:
        out["top_tokens"] = [{"id": 1000 + k, "text": f" alt{k}", "logprob": -0.25 - k, "special": False}
                             for k in range(top_n)]
    return out


def tgi_details(proto: ProtoRequest, finish: str, generated: int) -> dict[str, Any]:
    return {"finish_reason": finish, "generated_tokens": generated, "seed": proto.seed,
            "input_length": proto.greq.prompt_tokens}


# ---------------------------------------------------------------------------------------- writer
class ProtocolGeneration(Generation):
    """A :class:`Generation` whose events and bodies are Triton's or TGI's."""

    def __init__(self, conn: "SimConnection", req: HttpRequest, proto: ProtoRequest, plan: Any,
                 request_id: str, start_ns: Optional[int] = None) -> None:
        super().__init__(conn, req, proto.greq, plan, request_id, start_ns)
        self.proto = proto
        if not proto.token_stream and plan.n_tokens:
            self.events = [(0, plan.n_tokens)]  # one response, when the last token is due

    def _burst_ok(self) -> bool:  # the zero-delay fast path writes OpenAI events
        return False

    def _events(self, start: int, end: int, last: bool) -> bytes:
        plan, proto = self.plan, self.proto
        finish = plan.finish_reason if last else None
        if proto.protocol == TRITON:
            obj = triton_event(proto, plan_text(plan, start, end), end - start, finish)
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        out = []
        for i in range(start, end):
            ev = _tgi_token(plan, i, proto.top_n, i + 1)
            ev["generated_text"], ev["details"] = None, None
            if last and i == end - 1 and finish == "length":
                ev["generated_text"] = plan_text(plan)
                ev["details"] = tgi_details(proto, "length", plan.n_tokens) if proto.details else None
            out.append(ev)
        if last and finish == "stop":  # the end-of-sequence token: special, not text
            out.append({"index": plan.n_tokens + 1,
                        "token": {"id": 2, "text": EOS_TEXT, "logprob": -0.01, "special": True},
                        "generated_text": plan_text(plan),
                        "details": tgi_details(proto, "eos_token", plan.n_tokens + 1) if proto.details else None})
        return b"".join(b"data:" + orjson.dumps(ev) + b"\n\n" for ev in out)

    def _emit(self) -> None:
        """One response (Triton) or token events (TGI), stamped; no end marker: the body just ends."""
        if self.done:
            return
        transport = self.conn.transport
        if transport.is_closing():
            self.cancel()
            return
        start, end = self.events[self.next_event]
        self.next_event += 1
        last = self.next_event == len(self.events)
        transport.write(http_chunk(self._events(start, end, last)))
        self.chunk_ns.append(time.perf_counter_ns())
        self.tokens_sent = end
        self.sim.tokens_total += end - start
        if self.plan.abort_after_tokens is not None and end >= self.plan.abort_after_tokens:
            self._abort()
        elif not last:
            self._arm_next_event()
        else:
            transport.write(LAST_HTTP_CHUNK)
            self._finish(200)

    def _send_full(self) -> None:
        if self.done:
            return
        if self.plan.abort_after_tokens is not None:
            self._abort()
            return
        plan, proto = self.plan, self.proto
        text = plan_text(plan)
        if proto.protocol == TRITON:
            obj = triton_event(proto, proto.prepend_prompt + text, plan.n_tokens, plan.finish_reason)
        else:
            eos = plan.finish_reason == "stop"
            obj = {"generated_text": text}
            if proto.details:
                obj["details"] = tgi_details(proto, "eos_token" if eos else "length", plan.n_tokens + eos)
        self.conn.write_simple(200, orjson.dumps(obj), JSON_TYPE, self.req.keep_alive, self._id_header())
        self.chunk_ns.append(time.perf_counter_ns())
        self.tokens_sent = plan.n_tokens
        self.sim.tokens_total += plan.n_tokens
        self._finish(200)


# ---------------------------------------------------------------------------------------- routes
def _generate(conn: "SimConnection", req: HttpRequest, parse: Callable[[], ProtoRequest]) -> None:
    sim = conn.sim
    index = sim.next_index()
    request_id = req.headers.get(b"x-request-id", b"").decode("latin-1") or f"sim-{index}"
    try:
        proto = parse()
    except ProtocolError as exc:
        sim.record({"request_id": request_id, "path": req.path.decode("latin-1"), "stream": None,
                    "received_ns": req.received_ns, "start_ns": conn.start_ns, "chunk_ns": [], "tokens": 0,
                    "status": exc.status, "fault": "none", "prompt_tokens": 0, "end_ns": time.perf_counter_ns()})
        conn._simple(req, exc.status, exc.body)
        return
    plan = plan_request(sim.config, index, proto.greq.max_tokens)
    conn.gen = ProtocolGeneration(conn, req, proto, plan, request_id, conn.start_ns)
    conn.gen.start()


def _json(body: Any) -> Handler:
    return lambda conn, req: conn._simple(req, 200, orjson.dumps(body))


def _empty_ok(conn: "SimConnection", req: HttpRequest) -> None:
    conn._simple(req, 200, b"")


def _tgi_info(conn: "SimConnection", req: HttpRequest) -> None:
    conn._simple(req, 200, orjson.dumps({
        "model_id": conn.sim.config.model, "model_sha": None, "model_dtype": "torch.float16",
        "model_device_type": "cuda", "max_concurrent_requests": 128, "max_best_of": 2,
        "max_stop_sequences": TGI_MAX_STOP_SEQUENCES, "max_input_tokens": 4095, "max_total_tokens": 4096,
        "validation_workers": 2, "max_client_batch_size": 4, "router": "text-generation-router",
        "version": "3.3.4 (benchbox-sim)", "sha": None, "docker_label": None}))


_TRITON_SERVER = {"name": "triton", "version": TRITON_VERSION,
                  "extensions": ["classification", "sequence", "model_repository", "schedule_policy",
                                 "model_configuration", "system_shared_memory", "cuda_shared_memory",
                                 "binary_tensor_data", "parameters", "statistics", "trace", "logging", "generate"]}
_MODEL_PATH = re.compile(rb"^/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(generate|generate_stream|ready|config))?$")
_STATIC: dict[bytes, tuple[bytes, Handler]] = {
    b"/v2": (b"GET", _json(_TRITON_SERVER)),
    b"/v2/health/live": (b"GET", _empty_ok),
    b"/v2/health/ready": (b"GET", _empty_ok),
    b"/generate": (b"POST", lambda conn, req: _generate(conn, req, lambda: parse_tgi(req.body, sse=False))),
    b"/generate_stream": (b"POST", lambda conn, req: _generate(conn, req, lambda: parse_tgi(req.body, sse=True))),
    b"/info": (b"GET", _tgi_info),
}


def protocol_route(path: bytes) -> Optional[tuple[bytes, Handler]]:
    """(method, handler) for a Triton or TGI path, or None."""
    route = _STATIC.get(path)
    if route is not None:
        return route
    m = _MODEL_PATH.match(path)
    if m is None:
        return None
    model = unquote(m[1].decode("latin-1"))
    version = unquote(m[2].decode("latin-1")) if m[2] else ""
    action = m[3]
    if action in (b"generate", b"generate_stream"):
        sse = action == b"generate_stream"
        return b"POST", lambda conn, req: _generate(conn, req, lambda: parse_triton(req.body, model, version, sse))
    if action == b"ready":
        return b"GET", _empty_ok
    if action == b"config":
        return b"GET", _json(_model_config(model))
    return b"GET", _json(_model_io(model))
