"""TLS: certificates are verified by default; a CA file or --insecure are the ways to accept others.

A TLS-terminating proxy (this file, asyncio + ssl) fronts `benchbox sim` with a self-signed certificate
made by `openssl` for 127.0.0.1. By default every request fails as a classified ``connect`` error that
names the certificate problem; with the certificate as CA (scenario ``tls.ca_file`` or ``--ca-file``)
or with ``--insecure`` every request succeeds.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from tests.conftest import load_records, only_run_dir, run_cli, write_scenario

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")]


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class TlsProxy:
    """https://127.0.0.1:<port> -> the plain-HTTP upstream, on its own thread and event loop."""

    def __init__(self, upstream_port: int, cert: Path, key: Path):
        self.upstream_port = upstream_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.handshake_failures = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.ctx, ssl_handshake_timeout=5))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def https_sim(tmp_path: Path, start_sim: Any) -> Iterator[tuple[str, Path]]:
    sim = start_sim("--ttft-ms", "1", "--itl-ms", "1", "--output-tokens", "4", truth=False)
    cert, key = make_cert(tmp_path)
    proxy = TlsProxy(int(sim.url.rsplit(":", 1)[1]), cert, key)
    yield f"https://127.0.0.1:{proxy.port}", cert
    proxy.close()


def scenario(tmp_path: Path, url: str, **target: Any) -> Path:
    return write_scenario(tmp_path, {
        "name": "tls",
        "targets": [{"name": "secure", "role": "baseline", "url": url, "model": "sim-model", "timeout_s": 10,
                     **target}],
        "sampling": {"max_tokens": 4},
        "load": {"pattern": "concurrency", "levels": [1], "requests": 3},
    })


def sweep(path: Path, out: Path, *flags: str) -> tuple[Any, dict, list[dict]]:
    proc = run_cli("sweep", str(path), "--out", str(out), "--quiet", *flags)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    run_dir = only_run_dir(out)
    return proc, orjson.loads((run_dir / "result.json").read_bytes()), load_records(run_dir)


def test_self_signed_certificate_is_refused_by_default(tmp_path: Path, https_sim: tuple[str, Path]) -> None:
    url, _ = https_sim
    proc, result, records = sweep(scenario(tmp_path, url), tmp_path / "runs")
    measured = [r for r in records if r["phase"] == "measure"]
    assert measured and all(r["error"] == "connect" for r in measured), [r["error"] for r in measured]
    assert all("CERTIFICATE_VERIFY_FAILED" in r["error_detail"] for r in measured), measured[0]["error_detail"]
    assert result["levels"][0]["requests"]["errors"] == {"connect": 3}


@pytest.mark.parametrize("how", ["scenario ca_file", "--ca-file", "--insecure"])
def test_ca_file_or_insecure_accepts_it(tmp_path: Path, https_sim: tuple[str, Path], how: str) -> None:
    url, cert = https_sim
    if how == "scenario ca_file":
        shutil.copy(cert, tmp_path / "ca.pem")
        path, flags = scenario(tmp_path, url, tls={"ca_file": "ca.pem"}), ()
    elif how == "--ca-file":
        path, flags = scenario(tmp_path, url), ("--ca-file", str(cert))
    else:
        path, flags = scenario(tmp_path, url), ("--insecure",)
    proc, result, records = sweep(path, tmp_path / "runs", *flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    level = result["levels"][0]
    assert level["requests"]["ok"] == level["requests"]["measured"] == 3, records
    # the manifest's GET /v1/models goes through the same TLS context as the load
    manifest = orjson.loads(next((tmp_path / "runs").iterdir()).joinpath("manifest.json").read_bytes())
    assert "error" not in manifest["targets"]["secure"]["reported_models"], manifest["targets"]["secure"]
    if how == "--insecure":
        assert "not verified" in proc.stdout


def test_a_bad_ca_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    path = scenario(tmp_path, "https://127.0.0.1:9", tls={"ca_file": "ca.pem"})
    proc = run_cli("sweep", str(path), "--out", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 2 and "ca.pem" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "runs").exists()
    path = scenario(tmp_path, "https://127.0.0.1:9", tls={"ca_file": "missing.pem"})
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2 and "tls.ca_file" in proc.stderr
