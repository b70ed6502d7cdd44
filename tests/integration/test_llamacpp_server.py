"""Real llama-server + bundled SmolLM2 models through ManagedServer (needs `benchbox server install`)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import psutil
import pytest
import yaml

from bench import provision as pv
from bench import serving as sv
from bench.scenario import ManagedServerSpec

pytestmark = [pytest.mark.integration, pytest.mark.llamacpp]

_BUILD = pv.installed_llamacpp()
needs_build = pytest.mark.skipif(
    _BUILD is None,
    reason=f"llama-server not built in {pv.llamacpp_dir()}/bin (run `benchbox server install` first)")


def _server(tmp_path: Path, model: str, name: str = "t") -> sv.ManagedServer:
    spec = ManagedServerSpec(definition="llamacpp", model=model)
    return sv.ManagedServer(spec, name, tmp_path / f"{name}.log", [sv.REPO_SERVERS])


def _group(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def _gone(procs: list[psutil.Process]) -> bool:
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


async def _stream_chat(base_url: str, model: str) -> tuple[list[str], dict]:
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 16,
            "temperature": 0, "seed": 0, "messages": [{"role": "user", "content": "Name three colours."}]}
    pieces, usage = [], {}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = orjson.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        pieces.append(choice["delta"]["content"])
                usage = chunk.get("usage") or usage
    return pieces, usage


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            return resp.status, await resp.text()


@needs_build
def test_baseline_serves_streams_and_exports_metrics(tmp_path):
    s = _server(tmp_path, "smollm2-135m-q4_1", "baseline")

    async def go():
        await s.start()
        try:
            status, text = await _get(f"{s.base_url}/v1/models")
            assert status == 200 and "smollm2-135m-q4_1" in text
            pieces, usage = await _stream_chat(s.base_url, "smollm2-135m-q4_1")
            assert len(pieces) >= 2 and "".join(pieces).strip()
            assert usage.get("completion_tokens", 0) >= 1
            status, metrics = await _get(s.metrics_url)
            assert status == 200 and "llamacpp:" in metrics
            assert "llamacpp:prompt_tokens_total" in metrics
            return _group(s.describe()["pid"])
        finally:
            await s.stop()

    procs = asyncio.run(go())
    assert s.launch_to_ready_s is not None and 0 < s.launch_to_ready_s < 60
    assert _gone(procs)
    d = s.describe()
    assert d["definition"] == "llamacpp" and d["launch_to_ready_s"] == s.launch_to_ready_s
    assert d["model_facts"]["quantization"] == "Q4_1"
    assert d["model_facts"]["sha256"] == pv.CATALOG["smollm2-135m-q4_1"].sha256
    assert d["model_facts"]["size_bytes"] == 98_362_432
    assert d["llamacpp"]["version"] == pv.LLAMACPP_VERSION and d["llamacpp"]["server_version"]
    assert "--metrics" in d["command"] and str(s.port) in d["command"]
    print(f"\nbaseline launch->ready {s.launch_to_ready_s:.2f} s")


@needs_build
def test_q2_k_candidate_and_external_kill(tmp_path):
    s = _server(tmp_path, "smollm2-135m-q2_k", "cand")

    async def go():
        await s.start()
        try:
            pieces, _ = await _stream_chat(s.base_url, "smollm2-135m-q2_k")
            assert pieces
            assert s.describe()["model_facts"]["quantization"] == "Q2_K"
            procs = _group(s.describe()["pid"])
            assert s.exited() is None
            os.kill(s.describe()["pid"], signal.SIGKILL)  # the server dies under us
            for _ in range(100):
                if s.exited() is not None:
                    break
                await asyncio.sleep(0.05)
            assert s.exited() == -signal.SIGKILL
            return procs
        finally:
            await s.stop()

    procs = asyncio.run(go())
    assert _gone(procs)
    print(f"\nQ2_K launch->ready {s.launch_to_ready_s:.2f} s")


@needs_build
def test_stop_leaves_no_process(tmp_path):
    s = _server(tmp_path, "smollm2-135m-q3_k_s", "stopme")

    async def go():
        await s.start()
        procs = _group(s.describe()["pid"])
        t0 = time.monotonic()
        await s.stop()
        return procs, time.monotonic() - t0

    procs, took = asyncio.run(go())
    assert _gone(procs) and took < sv.STOP_GRACE_S
    assert not psutil.pid_exists(procs[0].pid)
    assert s not in sv._LIVE and s.exited() is not None


def test_definition_exiting_immediately_reports_log_tail(tmp_path):
    servers = tmp_path / "servers"
    servers.mkdir()
    (servers / "broken.yaml").write_text(yaml.safe_dump({
        "name": "broken",
        "command": [sys.executable, "-c",
                    "import sys; print('loading...'); print('error: invalid argument: --bogus'); "
                    "sys.exit(1)"],
        "health_url": "http://{host}:{port}/health", "base_url": "http://{host}:{port}"}))
    s = sv.ManagedServer(ManagedServerSpec(definition="broken"), "bad", tmp_path / "bad.log", [servers])
    with pytest.raises(sv.ServerError) as e:
        asyncio.run(s.start())
    msg = str(e.value)
    assert msg.splitlines()[0].startswith("server 'bad' (broken) exited with code 1 before it was ready")
    assert "error: invalid argument: --bogus" in msg and "loading..." in msg
