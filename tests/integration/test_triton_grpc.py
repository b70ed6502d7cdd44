"""Triton's gRPC streaming inference, end to end: benchbox's ``triton-grpc`` target against a small
KServe v2 server built here from tritonclient's own service definitions
(``service_pb2_grpc.GRPCInferenceServiceServicer``: ``ModelStreamInfer``, ``ServerLive``,
``ServerReady``, ``ServerMetadata``, ``ModelReady``, ``ModelConfig``, ``ModelMetadata``).

The server behaves like Triton with its vLLM backend (a decoupled model): it streams one response per
token at known times (``--ttft-ms`` then ``--itl-ms``), marks the last with ``triton_final_response``
(or, with ``--empty-final``, sends an empty final response after it, as some backends do), returns
``finish_reason`` / ``num_input_tokens`` / ``num_output_tokens`` when asked, and refuses unknown inputs
with an ``error_message``. It runs in its own process (``python -m tests.integration.test_triton_grpc``)
and logs when it handed each response to gRPC (CLOCK_MONOTONIC, shared with the client).
Models: ``vllm_model`` (normal), ``broken`` (an error after two tokens), ``stall`` (never finishes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson
import pytest

from tests.conftest import REPO, load_records, only_run_dir, run_cli, write_scenario

pytestmark = pytest.mark.integration

VLLM_INPUTS = ("text_input", "stream", "sampling_parameters", "exclude_input_in_output", "return_finish_reason",
               "return_num_input_tokens", "return_num_output_tokens")
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


# ------------------------------------------------------------------------------------------------- server
def _servicer(args: argparse.Namespace, truth: Any) -> Any:
    from tritonclient.grpc import model_config_pb2 as mc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pbg

    def tensor_value(t: Any, raw: Optional[bytes]) -> Any:
        c = t.contents
        if t.datatype == "BYTES":
            return (list(c.bytes_contents) or [raw[4:] if raw else b""])[0].decode()
        if t.datatype == "BOOL":
            return (list(c.bool_contents) or [False])[0]
        for field in ("int_contents", "int64_contents", "uint_contents", "uint64_contents", "fp32_contents"):
            if getattr(c, field):
                return getattr(c, field)[0]
        return None

    def response(request: Any, outputs: dict[str, Any], final: bool) -> Any:
        resp = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        for name, value in outputs.items():
            if isinstance(value, str):
                data = value.encode()
                resp.outputs.add(name=name, datatype="BYTES", shape=[1])
                resp.raw_output_contents.append(struct.pack("<I", len(data)) + data)
            else:
                resp.outputs.add(name=name, datatype="UINT32", shape=[1])
                resp.raw_output_contents.append(struct.pack("<I", value))
        resp.parameters["triton_final_response"].bool_param = final
        return pb.ModelStreamInferResponse(infer_response=resp)

    class Servicer(pbg.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb.ServerMetadataResponse(name="triton", version="2.59.0 (test)", extensions=["generate"])

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=request.name != "missing")

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            types = {"text_input": "BYTES", "sampling_parameters": "BYTES"}
            return pb.ModelMetadataResponse(
                name=request.name, versions=["1"], platform="python",
                inputs=[pb.ModelMetadataResponse.TensorMetadata(name=n, datatype=types.get(n, "BOOL"), shape=[1])
                        for n in VLLM_INPUTS],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(name="text_output", datatype="BYTES", shape=[-1])])

        async def ModelConfig(self, request: Any, context: Any) -> Any:
            cfg = mc.ModelConfig(name=request.name, backend="vllm", max_batch_size=0,
                                 model_transaction_policy=mc.ModelTransactionPolicy(decoupled=True))
            for n in VLLM_INPUTS:
                cfg.input.add(name=n, data_type=mc.TYPE_STRING if n in ("text_input", "sampling_parameters")
                              else mc.TYPE_BOOL, dims=[1], optional=n != "text_input")
            return pb.ModelConfigResponse(config=cfg)

        async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Any:
            queue: asyncio.Queue = asyncio.Queue()
            tasks: list[asyncio.Task] = []

            async def read() -> None:
                async for request in request_iterator:
                    tasks.append(asyncio.ensure_future(generate(request, time.perf_counter_ns(), queue)))
                await asyncio.gather(*tasks)
                await queue.put(None)

            reader = asyncio.ensure_future(read())
            try:
                while (item := await queue.get()) is not None:
                    yield item
            finally:
                reader.cancel()
                for t in tasks:
                    t.cancel()

    async def generate(request: Any, received_ns: int, queue: asyncio.Queue) -> None:
        raws = list(request.raw_input_contents)
        inputs = {t.name: tensor_value(t, raws[i] if i < len(raws) else None) for i, t in enumerate(request.inputs)}
        log = {"request_id": request.id, "model": request.model_name, "received_ns": received_ns, "chunk_ns": []}
        unknown = sorted(set(inputs) - set(VLLM_INPUTS))
        if unknown or "text_input" not in inputs:
            what = f"unexpected inference input '{unknown[0]}'" if unknown else "expected 1 inputs but got 0"
            await queue.put(pb.ModelStreamInferResponse(error_message=f"{what} for model '{request.model_name}'"))
            return
        params = json.loads(inputs.get("sampling_parameters") or "{}")
        n = min(params.get("max_tokens", 16), args.output_tokens)
        finish = "length" if n < args.output_tokens else "stop"
        start = time.perf_counter_ns()
        for i in range(n):
            due = start + int((args.ttft_ms + i * args.itl_ms) * 1e6)
            await asyncio.sleep(max(0.0, (due - time.perf_counter_ns()) / 1e9))
            if request.model_name == "broken" and i == 2:
                await queue.put(pb.ModelStreamInferResponse(error_message="Error generating stream: engine died"))
                return
            if request.model_name == "stall" and i == 1:
                await asyncio.sleep(3600)
            last = i == n - 1
            outputs: dict[str, Any] = {"text_output": " " + WORDS[i % len(WORDS)]}
            if inputs.get("return_finish_reason"):
                outputs["finish_reason"] = finish if last else "None"
            if inputs.get("return_num_input_tokens"):
                outputs["num_input_tokens"] = len(inputs["text_input"].split())
            if inputs.get("return_num_output_tokens"):
                outputs["num_output_tokens"] = 1
            log["chunk_ns"].append(time.perf_counter_ns())
            await queue.put(response(request, outputs, last and not args.empty_final))
        if args.empty_final:
            await queue.put(response(request, {}, True))
        truth.write(json.dumps(log) + "\n")
        truth.flush()

    return Servicer()


async def serve(args: argparse.Namespace) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pbg

    with open(args.truth, "a") as truth:
        server = grpc.aio.server()
        pbg.add_GRPCInferenceServiceServicer_to_server(_servicer(args, truth), server)
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
        await server.start()
        print(f"listening on {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(0.5)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ttft-ms", type=float, default=40)
    p.add_argument("--itl-ms", type=float, default=5)
    p.add_argument("--output-tokens", type=int, default=16)
    p.add_argument("--empty-final", action="store_true")
    p.add_argument("--truth", required=True)
    asyncio.run(serve(p.parse_args()))


# -------------------------------------------------------------------------------------------------- tests
class FakeTriton:
    def __init__(self, tmp_path: Path, *args: str):
        self.truth_path = tmp_path / f"grpc-truth-{time.perf_counter_ns()}.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_triton_grpc", "--truth", str(self.truth_path), *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"fake Triton did not start: {line!r} {self.proc.stderr.read().decode()[-800:]}")
        self.url = f"grpc://127.0.0.1:{line.split()[-1]}"

    def truth(self) -> dict[str, dict]:
        return {r["request_id"]: r for r in map(json.loads, self.truth_path.read_text().splitlines())}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def fake_triton(tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip("tritonclient.grpc")
    started: list[FakeTriton] = []

    def start(*args: str) -> FakeTriton:
        started.append(FakeTriton(tmp_path, *args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def sweep(tmp_path: Path, target: dict, levels: list[int], requests: int = 8,
          **extra: Any) -> tuple[Path, dict, list[dict]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    scenario = write_scenario(tmp_path, {
        "name": "grpc",
        "targets": [{"name": "triton", "role": "baseline", "protocol": "triton-grpc", **target}],
        "sampling": {"temperature": 0, "max_tokens": 12},
        "load": {"pattern": "concurrency", "levels": levels, "requests": requests, "warmup": {"requests": 1},
                 **extra},
    })
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode in (0, 3), proc.stderr + proc.stdout
    run_dir = only_run_dir(tmp_path / "runs")
    measured = [r for r in load_records(run_dir) if r["phase"] == "measure"]
    return run_dir, orjson.loads((run_dir / "result.json").read_bytes()), measured


def test_grpc_stream_matches_server_truth(tmp_path: Path, fake_triton) -> None:
    server = fake_triton("--ttft-ms", "40", "--itl-ms", "5", "--output-tokens", "16")
    run_dir, result, measured = sweep(tmp_path, {"url": server.url, "model": "vllm_model"}, [1, 4])
    assert [lv["requests"]["ok"] for lv in result["levels"]] == [8, 8]
    truth = server.truth()
    deltas = []
    for r in measured:
        t = truth[r["request_id"]]
        assert r["error"] is None and r["status"] == 200
        assert r["output_text"] == "".join(" " + w for w in (WORDS * 2)[:12])
        assert (r["finish_reason"], r["output_tokens"]) == ("length", 12) and r["prompt_tokens"] > 0
        assert len(r["chunk_ns"]) == len(t["chunk_ns"]) == 12
        deltas += [(got - sent) / 1e6 for got, sent in zip(r["chunk_ns"], t["chunk_ns"])]
        assert r["first_byte_ns"] == r["first_token_ns"] == r["chunk_ns"][0] and r["end_ns"] == r["chunk_ns"][-1]
    # gRPC adds its C core and protobuf parsing before the stamp: still well under a millisecond typically
    assert max(abs(d) for d in deltas) < 50 and abs(sorted(deltas)[len(deltas) // 2]) < 5, sorted(deltas)[-5:]
    for lv in result["levels"]:
        assert lv["tokens"]["usage_missing"] == 0 and lv["tokens"]["output_total"] == 96  # summed per response
        assert 40 <= lv["metrics"]["ttft_ms"]["p50"] < 90 and 4 <= lv["metrics"]["itl_ms"]["p50"] < 15
    reported = orjson.loads((run_dir / "manifest.json").read_bytes())["targets"]["triton"]["reported_triton"]
    assert reported["transport"] == "grpc" and reported["model_ready"] is True
    assert reported["server"]["version"] == "2.59.0 (test)"
    assert reported["model_config"]["config"]["model_transaction_policy"] == {"decoupled": True}


def test_grpc_empty_final_response_is_not_a_token(tmp_path: Path, fake_triton) -> None:
    server = fake_triton("--ttft-ms", "10", "--itl-ms", "2", "--output-tokens", "6", "--empty-final")
    _, result, measured = sweep(tmp_path, {"url": server.url, "model": "vllm_model"}, [2], requests=4)
    for r in measured:
        assert r["error"] is None and r["finish_reason"] == "stop" and len(r["chunk_ns"]) == 6
        assert r["end_ns"] >= r["chunk_ns"][-1] and r["output_tokens"] == 6


def test_grpc_errors_are_classified(tmp_path: Path, fake_triton) -> None:
    server = fake_triton("--ttft-ms", "5", "--itl-ms", "1")
    _, _, broken = sweep(tmp_path / "a", {"url": server.url, "model": "broken"}, [1], requests=2)
    assert all(r["error"] == "broken_stream" and "engine died" in r["error_detail"] for r in broken)
    assert all(len(r["chunk_ns"]) == 2 and r["output_text"] for r in broken)  # what arrived is kept
    _, _, refused = sweep(tmp_path / "b", {"url": server.url, "model": "vllm_model",
                                           "triton": {"inputs": {"bogus": 1}}}, [1], requests=2)
    assert all(r["error"] == "broken_stream" and "unexpected inference input 'bogus'" in r["error_detail"]
               for r in refused)
    _, _, stalled = sweep(tmp_path / "c", {"url": server.url, "model": "stall", "timeout_s": 1}, [1], requests=1)
    assert [r["error"] for r in stalled] == ["timeout"]


def test_grpc_unreachable_is_connect(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, result, measured = sweep(tmp_path, {"url": f"grpc://127.0.0.1:{port}", "model": "m"}, [1], requests=3)
    assert measured and all(r["error"] == "connect" and "UNAVAILABLE" in r["error_detail"] for r in measured)



if __name__ == "__main__":
    main()
