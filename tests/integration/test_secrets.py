"""Secrets never leave the process: a planted API key and header value are grepped for everywhere.

The key goes in through ``api_key_env``, a second secret through a header written ``${VAR}``. Three
targets use them: `benchbox sim` (requests succeed), a hostile server that answers 401/500 with the
request's headers echoed in the body (the classic way a key ends up in an error message), and an
unreachable port. The live Prometheus exporter runs all along and is scraped. Afterwards every file of
the run directory, the captured stdout/stderr, `benchbox report`'s output and every /metrics scrape
must be free of both secrets (in any case, and base64-encoded too).
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.serving import free_port
from tests.conftest import REPO, only_run_dir, run_cli, write_scenario

pytestmark = pytest.mark.integration

KEY = "sk-planted-KEY-7f3a9c2e51"
HEADER_SECRET = "hdr-planted-SECRET-88b1d4"
ENV = {"BB_TEST_API_KEY": KEY, "BB_TEST_HEADER_SECRET": HEADER_SECRET}


class EchoingServer:
    """HTTP/1.1 on loopback: every request gets 401 (odd) or 500 (even) with its own headers as the body."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.n = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                buf = rest[length:]
                self.n += 1
                status = b"401 Unauthorized" if self.n % 2 else b"500 Internal Server Error"
                body = b"bad request, you sent: " + head
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def echoing() -> Iterator[EchoingServer]:
    server = EchoingServer()
    yield server
    server.close()


def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, raw.lower(), raw.upper(), base64.b64encode(raw), base64.b64encode(b"Bearer " + raw)]


def assert_clean(blob: bytes, where: str) -> None:
    for secret in (KEY, HEADER_SECRET):
        for form in forms(secret):
            assert form not in blob, f"{secret!r} ({form[:12]!r}...) leaked into {where}"


def test_planted_secrets_appear_nowhere(tmp_path: Path, start_sim: Any, echoing: EchoingServer) -> None:
    sim = start_sim("--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4", "--error-rate", "0.3", truth=False)
    auth = {"api_key_env": "BB_TEST_API_KEY", "headers": {"X-Api-Key": "${BB_TEST_HEADER_SECRET}",
                                                          "X-Team": "voice"}}
    port = free_port()
    path = write_scenario(tmp_path, {
        "name": "secrets",
        "targets": [
            {"name": "sim", "role": "baseline", "url": sim.url, "model": "sim-model", **auth},
            {"name": "echo", "role": "candidate", "url": f"http://127.0.0.1:{echoing.port}", "model": "m",
             "timeout_s": 5, **auth},
            {"name": "down", "role": "candidate", "url": "http://127.0.0.1:9", "model": "m", "timeout_s": 2,
             **auth},
        ],
        "sampling": {"max_tokens": 4},
        "load": {"pattern": "concurrency", "levels": [1, 2], "requests": 6},
        "slo": {"ttft_p95_ms": 500},
        "quality": {"scorers": [{"name": "exact"}]},
        "gates": ["error_rate < 50%"],
        "observability": {"grace_s": 2, "scrape_interval_s": 0.2},
    })
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(path), "--out", str(tmp_path / "runs"),
                             "--prometheus-port", str(port)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**__import__("os").environ, **ENV})
    scrapes: list[bytes] = []
    try:
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    scrapes.append(resp.read())
            except OSError:
                pass
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 1), stderr.decode()[-2000:]
    assert b"Traceback" not in stderr + stdout
    assert scrapes and any(b"benchbox_requests_total" in s for s in scrapes), "the exporter was never scraped"
    assert echoing.n > 0, "the echoing server was never asked"
    run_dir = only_run_dir(tmp_path / "runs")
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"manifest.json", "records.jsonl", "result.json", "report.html", "scores.jsonl"} <= {p.name for p in files}
    for p in files:
        assert_clean(p.read_bytes(), str(p.relative_to(run_dir)))
    assert_clean(stdout + stderr, "the sweep's output")
    for i, text in enumerate(scrapes):
        assert_clean(text, f"/metrics scrape {i}")
    report = run_cli("report", str(run_dir), env=ENV)
    assert_clean((report.stdout + report.stderr).encode(), "benchbox report's output")
    # The echoing server's errors are kept, classified, with the secrets cut out of their detail.
    records = (run_dir / "records.jsonl").read_bytes()
    assert b"http_4xx" in records and b"http_5xx" in records and b"[redacted]" in records
    # What is kept about authentication: the names, never the values.
    manifest = (run_dir / "manifest.json").read_text()
    assert "BB_TEST_API_KEY" in manifest and "X-Api-Key" in manifest


def test_exporter_binds_to_loopback_by_default() -> None:
    from bench.exporter import LiveExporter
    from bench.scenario import Observability

    assert Observability().prometheus_host == "127.0.0.1"
    exporter = LiveExporter("s", port=0)
    try:
        exporter.start()
        assert exporter._server.server_address[0] == "127.0.0.1"
    finally:
        exporter.close(wait_grace=False)
