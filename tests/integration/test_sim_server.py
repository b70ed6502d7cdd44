"""The simulator over real loopback sockets: ``python -m bench.sim`` subprocesses plus one in-process run.

The client is a raw blocking socket with ``httptools.HttpResponseParser`` so
that keep-alive, pipelining and truncated bodies are visible as they are on
the wire. Timing checks use generous tolerances: CI is a shared 2-core box.
"""

from __future__ import annotations

import asyncio
import collections
import json
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httptools
import orjson
import pytest

from bench.sim import LISTEN_PREFIX, SimConfig, start_sim

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TTFT_MS, ITL_MS, N_TOKENS = 50.0, 5.0, 8
CHAT = "/v1/chat/completions"


# --- subprocess management -----------------------------------------------------------


@dataclass
class SimProc:
    proc: subprocess.Popen[bytes]
    port: int
    truth: Path
    stderr_path: Path
    _stderr: IO[bytes]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the sim, wait for exit (kill after 5 s) and close our pipe ends; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode

    def truth_records(self, n: int, timeout: float = 3.0) -> list[dict[str, Any]]:
        """Wait until the truth log has ``n`` lines (the sim writes each as its response ends)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.truth.read_bytes().splitlines() if self.truth.exists() else []
            if len(lines) >= n or time.monotonic() > deadline:
                return [orjson.loads(line) for line in lines]
            time.sleep(0.01)

    def record_for(self, request_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for rec in self.truth_records(0):
                if rec["request_id"] == request_id:
                    return rec
            time.sleep(0.01)
        raise AssertionError(f"no truth record for {request_id}")


def launch(directory: Path, *args: str) -> SimProc:
    """Start ``python -m bench.sim --port 0`` and read its one listening line to learn the port."""
    truth, stderr_path = directory / "truth.jsonl", directory / "stderr.txt"
    stderr = open(stderr_path, "wb")  # noqa: SIM115  # closed by SimProc.stop
    cmd = [sys.executable, "-m", "bench.sim", "--port", "0", "--truth-log", str(truth), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr)
    sim = SimProc(proc, 0, truth, stderr_path, stderr)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith(LISTEN_PREFIX + "http://127.0.0.1:"):
        sim.stop(signal.SIGKILL)
        raise AssertionError(f"sim did not start: {line!r} {stderr_path.read_text()}")
    sim.port = int(line.strip().rsplit(":", 1)[1])
    return sim


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProc]:
    proc = launch(tmp_path_factory.mktemp("sim"), "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS),
                  "--output-tokens", str(N_TOKENS), "--model", "default-model")
    yield proc
    proc.stop()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Any]:
    started: list[SimProc] = []

    def start(*args: str) -> SimProc:
        directory = tmp_path / f"sim{len(started)}"
        directory.mkdir()
        started.append(launch(directory, *args))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


# --- a raw HTTP/1.1 client --------------------------------------------------------------


@dataclass
class Resp:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    pieces: list[tuple[int, bytes]] = field(default_factory=list)  # (perf_counter_ns on arrival, body bytes)
    complete: bool = False
    sent_ns: int = 0

    @property
    def body(self) -> bytes:
        return b"".join(p for _, p in self.pieces)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def events(self) -> list[tuple[int, str | dict[str, Any]]]:
        """SSE events with the arrival time of their last byte; ``: comments`` kept as strings."""
        out: list[tuple[int, str | dict[str, Any]]] = []
        buf = b""
        for ns, piece in self.pieces:
            buf += piece
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if event.startswith(b":"):
                    out.append((ns, event.decode()))
                else:
                    assert event.startswith(b"data: "), event
                    data = event[6:]
                    out.append((ns, "[DONE]" if data == b"[DONE]" else orjson.loads(data)))
        assert buf == b"", "body ended inside an SSE event"
        return out

    def payloads(self) -> list[str | dict[str, Any]]:
        return [e for _, e in self.events()]


class RawConn:
    """One keep-alive connection; responses are parsed as they arrive, in order (pipelining works)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.parser = httptools.HttpResponseParser(self)
        self.ready: collections.deque[Resp] = collections.deque()
        self.sent: collections.deque[int] = collections.deque()  # send times of requests not yet answered
        self.cur = Resp()
        self.now = 0
        self.eof = False

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.cur = Resp(sent_ns=self.sent.popleft())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.cur.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.cur.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.cur.pieces.append((self.now, body))

    def on_message_complete(self) -> None:
        self.cur.complete = True
        self.ready.append(self.cur)

    def send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
        lines = [f"{method} {path} HTTP/1.1", "Host: sim", f"Content-Length: {len(data)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sent.append(time.perf_counter_ns())
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    def read(self) -> Resp:
        """Next complete response, or the partial one if the server closed first."""
        while not self.ready and not self.eof:
            data = self.sock.recv(65536)
            self.now = time.perf_counter_ns()
            if not data:
                self.eof = True
                break
            self.parser.feed_data(data)
        return self.ready.popleft() if self.ready else self.cur

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Resp:
        self.send(method, path, body, headers)
        return self.read()


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "asked-model", "messages": [{"role": "user", "content": "say something nice"}],
            "stream": True, **extra}


def content_events(resp: Resp) -> list[dict[str, Any]]:
    return [e for e in resp.payloads() if isinstance(e, dict) and e["choices"]
            and ("content" in e["choices"][0].get("delta", {}) or "text" in e["choices"][0])]


# --- protocol ----------------------------------------------------------------------------


def test_streaming_chat_full_protocol(sim: SimProc) -> None:
    rid = f"t-{uuid.uuid4()}"
    with RawConn(sim.port) as conn:
        resp = conn.request("POST", CHAT, chat_body(stream_options={"include_usage": True}),
                            {"X-Request-Id": rid})
    assert resp.complete and resp.status == 200
    assert resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["transfer-encoding"] == "chunked" and resp.headers["x-request-id"] == rid
    events = resp.payloads()
    assert isinstance(events[0], dict) and events[0]["choices"][0]["delta"] == {"role": "assistant"}
    content = content_events(resp)
    assert len(content) == N_TOKENS == len(events) - 3  # role + N content + usage + [DONE]
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "asked-model" for e in content)
    assert [e["choices"][0]["finish_reason"] for e in content] == [None] * (N_TOKENS - 1) + ["stop"]
    text = "".join(e["choices"][0]["delta"]["content"] for e in content)
    assert len(text.split()) == N_TOKENS and text.startswith(" ")
    usage = events[-2]
    assert isinstance(usage, dict) and usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": N_TOKENS, "total_tokens": 3 + N_TOKENS}
    assert events[-1] == "[DONE]"


def test_streaming_completions_without_usage(sim: SimProc) -> None:
    with RawConn(sim.port) as conn:
        resp = conn.request("POST", "/v1/completions", {"prompt": "once upon", "stream": True})
    events = resp.payloads()
    assert resp.status == 200 and events[-1] == "[DONE]"
    assert len(events) == N_TOKENS + 1  # no role chunk, no usage chunk
    assert all(isinstance(e, dict) and e["object"] == "text_completion" and e["model"] == "default-model"
               for e in events[:-1])


def test_max_tokens_caps_output_with_length_finish(sim: SimProc) -> None:
    with RawConn(sim.port) as conn:
        resp = conn.request("POST", CHAT, chat_body(max_tokens=3, stream_options={"include_usage": True}))
    content = content_events(resp)
    assert len(content) == 3 and content[-1]["choices"][0]["finish_reason"] == "length"
    usage = resp.payloads()[-2]
    assert isinstance(usage, dict) and usage["usage"]["completion_tokens"] == 3


def test_non_streaming_waits_for_full_generation(sim: SimProc) -> None:
    with RawConn(sim.port) as conn:
        resp = conn.request("POST", CHAT, chat_body(stream=False))
        cmpl = conn.request("POST", "/v1/completions", {"prompt": "x y", "max_tokens": 2})
    elapsed_ms = (resp.pieces[-1][0] - resp.sent_ns) / 1e6
    assert elapsed_ms >= TTFT_MS + (N_TOKENS - 1) * ITL_MS - 1  # the whole simulated generation
    obj = resp.json()
    assert obj["object"] == "chat.completion" and obj["model"] == "asked-model"
    assert obj["choices"][0]["message"]["role"] == "assistant"
    assert len(obj["choices"][0]["message"]["content"].split()) == N_TOKENS
    assert obj["usage"]["completion_tokens"] == N_TOKENS and obj["choices"][0]["finish_reason"] == "stop"
    c = cmpl.json()
    assert c["object"] == "text_completion" and c["choices"][0]["finish_reason"] == "length"
    assert c["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


def test_keep_alive_and_pipelining_on_one_connection(sim: SimProc) -> None:
    with RawConn(sim.port) as conn:
        first = conn.request("POST", CHAT, chat_body())
        second = conn.request("POST", CHAT, chat_body(max_tokens=2))
        # pipelined: requests written back to back, answered in order on the same socket
        tag = uuid.uuid4().hex
        conn.send("POST", CHAT, chat_body(max_tokens=1), {"X-Request-Id": f"pipe-0-{tag}"})
        conn.send("POST", CHAT, chat_body(max_tokens=1), {"X-Request-Id": f"pipe-1-{tag}"})
        conn.send("GET", "/health")
        third, fourth, health = conn.read(), conn.read(), conn.read()
        assert not conn.eof
    assert first.complete and second.complete and third.complete and fourth.complete
    assert first.headers["connection"] == "keep-alive"
    assert len(content_events(second)) == 2
    assert third.headers["x-request-id"] == f"pipe-0-{tag}"
    assert fourth.headers["x-request-id"] == f"pipe-1-{tag}"
    assert health.status == 200 and health.json() == {"status": "ok"}
    # the queued request's schedule starts when it is dispatched, after the one ahead of it
    ahead, queued = sim.record_for(f"pipe-0-{tag}"), sim.record_for(f"pipe-1-{tag}")
    assert ahead["start_ns"] == ahead["received_ns"]
    assert queued["start_ns"] >= ahead["chunk_ns"][-1] > queued["received_ns"]
    assert (queued["chunk_ns"][0] - queued["start_ns"]) / 1e6 >= TTFT_MS - 0.01


def test_connection_close_is_honoured(sim: SimProc) -> None:
    with RawConn(sim.port) as conn:
        resp = conn.request("POST", CHAT, chat_body(max_tokens=1), {"Connection": "close"})
        assert resp.complete and resp.headers["connection"] == "close"
        assert conn.sock.recv(10) == b""  # server closed its end


def test_models_health_metrics(sim: SimProc) -> None:
    with RawConn(sim.port) as conn:
        models = conn.request("GET", "/v1/models")
        conn.request("POST", CHAT, chat_body(max_tokens=2))
        metrics = conn.request("GET", "/metrics")
    assert models.json() == {"object": "list", "data": [
        {"id": "default-model", "object": "model", "created": 0, "owned_by": "benchbox-sim"}]}
    assert metrics.headers["content-type"].startswith("text/plain")
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.body.decode().splitlines()
              if line and not line.startswith("#")}
    assert values["sim_requests_total"] >= 1 and values["sim_requests_running"] == 0
    assert values["sim_tokens_generated_total"] >= 2


def test_errors_unknown_path_method_and_bad_json(sim: SimProc) -> None:
    with RawConn(sim.port) as conn:
        missing = conn.request("GET", "/v2/nothing")
        wrong_method = conn.request("GET", CHAT)
        bad = conn.request("POST", CHAT, b"{not json")
        bad_max = conn.request("POST", CHAT, chat_body(max_tokens=0))
        still_ok = conn.request("GET", "/health")  # errors do not kill the connection
    assert missing.status == 404 and "error" in missing.json()
    assert wrong_method.status == 405
    for resp in (bad, bad_max):
        assert resp.status == 400
        assert resp.json()["error"]["type"] == "invalid_request_error"
        assert isinstance(resp.json()["error"]["message"], str)
    assert still_ok.status == 200


def test_http_upgrade_is_answered_as_http11_then_closed(sim: SimProc) -> None:
    upgrade = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
               "HTTP2-Settings": "AAMAAABkAAQAoAAA"}
    with RawConn(sim.port) as conn:
        health = conn.request("GET", "/health", headers=upgrade)
        assert health.status == 200 and health.headers["connection"] == "close"
        assert conn.sock.recv(10) == b""
    with RawConn(sim.port) as conn:
        post = conn.request("POST", CHAT, chat_body(), upgrade)
    assert post.status == 400 and "Upgrade" in post.json()["error"]["message"]


def test_port_in_use_is_a_clean_cli_error(sim: SimProc) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.sim", "--port", str(sim.port)], cwd=REPO,
                         capture_output=True, timeout=30)
    assert out.returncode == 1
    assert b"address already in use" in out.stderr and b"Traceback" not in out.stderr


# --- faults and pings ---------------------------------------------------------------------


def test_error_rate_one_gives_immediate_500(launcher: Any) -> None:
    proc = launcher("--error-rate", "1", "--ttft-ms", "500")
    with RawConn(proc.port) as conn:
        resp = conn.request("POST", CHAT, chat_body())
        again = conn.request("POST", "/v1/completions", {"prompt": "x"})
    assert resp.status == 500 and again.status == 500
    assert resp.json()["error"]["type"] == "server_error" and resp.json()["error"]["message"]
    assert (resp.pieces[-1][0] - resp.sent_ns) / 1e6 < 250  # immediate, not after the 500 ms TTFT
    assert [r["status"] for r in proc.truth_records(2)] == [500, 500]


def test_abort_rate_one_cuts_stream_without_done(launcher: Any) -> None:
    proc = launcher("--abort-rate", "1", "--output-tokens", "10", "--ttft-ms", "10", "--itl-ms", "2")
    with RawConn(proc.port) as conn:
        resp = conn.request("POST", CHAT, chat_body())
        assert conn.eof
    assert resp.status == 200 and not resp.complete
    assert "[DONE]" not in resp.payloads() and len(content_events(resp)) == 5
    (rec,) = proc.truth_records(1)
    assert (rec["fault"], rec["tokens"]) == ("abort", 5)


def test_keepalive_pings_before_first_token(launcher: Any) -> None:
    proc = launcher("--keepalive-ms", "20", "--ttft-ms", "110", "--output-tokens", "2")
    with RawConn(proc.port) as conn:
        resp = conn.request("POST", CHAT, chat_body())
    events = resp.payloads()
    first_content = next(i for i, e in enumerate(events) if isinstance(e, dict) and e in content_events(resp))
    pings = [e for e in events[:first_content] if e == ": ping"]
    assert len(pings) >= 3  # ~5 expected at 20 ms over 110 ms
    assert events[-1] == "[DONE]"


# --- timing truth -------------------------------------------------------------------------


def test_truth_log_matches_schedule_and_client_view(sim: SimProc) -> None:
    rid = f"truth-{uuid.uuid4()}"
    with RawConn(sim.port) as conn:
        resp = conn.request("POST", CHAT, chat_body(), {"X-Request-Id": rid})
    rec = sim.record_for(rid)
    assert (rec["status"], rec["tokens"], rec["fault"], rec["stream"]) == (200, N_TOKENS, "none", True)
    chunk_ns = rec["chunk_ns"]
    assert len(chunk_ns) == N_TOKENS and chunk_ns == sorted(chunk_ns)
    assert rec["received_ns"] >= resp.sent_ns  # one clock (CLOCK_MONOTONIC) for both processes
    # the sim never writes a token before its deadline, and is close to it
    offsets_ms = [(c - rec["received_ns"]) / 1e6 for c in chunk_ns]
    planned_ms = [TTFT_MS + k * ITL_MS for k in range(N_TOKENS)]
    assert all(o >= p - 0.01 for o, p in zip(offsets_ms, planned_ms))
    gaps = [b - a for a, b in zip(offsets_ms, offsets_ms[1:])]
    assert abs(statistics.median(gaps) - ITL_MS) < 2.0
    assert abs(offsets_ms[0] - TTFT_MS) < 15
    # the client saw each content event about when the sim wrote it
    arrivals = [ns for ns, e in resp.events() if isinstance(e, dict) and e in content_events(resp)]
    assert statistics.median(abs(a - c) / 1e6 for a, c in zip(arrivals, chunk_ns)) < 5


def test_client_ttft_matches_configured_at_low_load(sim: SimProc) -> None:
    ttfts = []
    with RawConn(sim.port) as conn:
        for _ in range(3):
            resp = conn.request("POST", CHAT, chat_body())
            first = next(ns for ns, e in resp.events() if isinstance(e, dict) and e in content_events(resp))
            ttfts.append((first - resp.sent_ns) / 1e6)
    assert abs(statistics.median(ttfts) - TTFT_MS) < 15, ttfts


def test_concurrent_streams_all_complete(sim: SimProc) -> None:
    n = 32

    async def one(i: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        body = orjson.dumps(chat_body())
        writer.write(b"POST %b HTTP/1.1\r\nHost: s\r\nX-Request-Id: conc-%d\r\nContent-Length: %d\r\n\r\n%b"
                     % (CHAT.encode(), i, len(body), body))
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = await reader.read(65536)
            assert chunk, "server closed early"
            data += chunk
        writer.close()
        await writer.wait_closed()
        return data.count(b'"content":"')

    async def main() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(n)))

    assert asyncio.run(main()) == [N_TOKENS] * n
    recs = {r["request_id"]: r for r in sim.truth_records(0) if r["request_id"].startswith("conc-")}
    deadline = time.monotonic() + 3
    while len(recs) < n and time.monotonic() < deadline:
        time.sleep(0.01)
        recs = {r["request_id"]: r for r in sim.truth_records(0) if r["request_id"].startswith("conc-")}
    assert len(recs) == n and all(r["tokens"] == N_TOKENS and r["status"] == 200 for r in recs.values())


# --- lifecycle ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_exit_cleanly(launcher: Any, sig: int) -> None:
    proc = launcher()
    with RawConn(proc.port) as conn:
        assert conn.request("GET", "/health").status == 200
    assert proc.stop(sig) == 0
    err = proc.stderr_path.read_text()
    assert "Traceback" not in err, err


def test_in_process_api_and_close_with_stream_in_flight(tmp_path: Path) -> None:
    truth = tmp_path / "inproc.jsonl"

    async def main() -> tuple[str, bytes]:
        server = await start_sim(SimConfig(port=0, ttft_ms=5, itl_ms=200, output_tokens=50, truth_log=truth))
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = orjson.dumps(chat_body())
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: s\r\nContent-Length: %d\r\n\r\n%b"
                     % (len(body), body))
        data = b""
        while data.count(b'"content":"') < 1:  # the first token arrived; the rest are 200 ms apart
            data += await reader.read(65536)
        await server.close()  # drops the connection mid-stream
        data += await reader.read()  # EOF
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
        return server.url, data

    _, data = asyncio.run(main())
    assert b"[DONE]" not in data
    (rec,) = [json.loads(line) for line in truth.read_text().splitlines()]
    assert rec["status"] == 499 and rec["tokens"] == 1
