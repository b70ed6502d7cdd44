"""Ctrl-C / SIGTERM at any moment, and `benchbox sweep --resume`.

A sweep with a managed server (`benchbox sim` launched from a test server definition) and a plain
endpoint is interrupted at seeded random moments and at chosen ones (start-up, mid-level, the quality
pass). Every time: no traceback; exit 130 (or 0 if the run had ended); records.jsonl is all valid JSON
lines; result.json is valid and says ``complete: false`` when interrupted; no server process is left.
A second signal exits at once. An interrupted run resumed with `--resume` ends complete, with the same
levels and items an uninterrupted run would have measured; a changed scenario or eval set is refused.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson
import psutil
import pytest
import yaml

from bench.records import read_records
from tests.conftest import REPO, run_cli, wait_for, write_scenario

pytestmark = pytest.mark.integration


def code_items(path: Path, n: int) -> None:
    """Items the `code` scorer runs (the sim's one-word answers compile, so each is a real subprocess)."""
    with open(path, "wb") as fh:
        for i in range(n):
            fh.write(orjson.dumps({"id": f"c{i}", "prompt": f"write f {i}",
                                   "meta": {"entry_point": "f", "tests": ["assert f() == 1"]}}) + b"\n")


class CodeServer:
    """A minimal OpenAI-compatible streaming endpoint whose every answer is `def f(): return 1` (after
    ``delay_s``), so the `code` scorer really runs each response: a quality pass that takes seconds."""

    ANSWER = orjson.dumps({"choices": [{"index": 0, "delta": {"content": "def f():\n    return 1\n"},
                                        "finish_reason": None}]})
    END = orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 8}})

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
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
        conn.settimeout(30)
        buf = b""
        try:
            while not self.stop.is_set():
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
                if head.startswith(b"GET"):
                    body, ctype = b'{"object": "list", "data": [{"id": "code-model"}]}', b"application/json"
                else:
                    time.sleep(self.delay_s)
                    body = b"data: " + self.ANSWER + b"\n\ndata: " + self.END + b"\n\ndata: [DONE]\n\n"
                    ctype = b"text/event-stream"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
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
def code_server() -> Iterator[CodeServer]:
    server = CodeServer(delay_s=0.1)
    yield server
    server.close()


def managed_sim(folder: Path, marker: str, health: str = "/health", startup_s: float = 30) -> None:
    """servers/simsrv.yaml next to the scenario: `benchbox sim` as a managed server, tagged by --model."""
    (folder / "servers").mkdir(exist_ok=True)
    (folder / "servers" / "simsrv.yaml").write_text(yaml.safe_dump({
        "name": "simsrv", "description": "benchbox sim for tests",
        "command": [sys.executable, "-m", "bench.sim", "--host", "{host}", "--port", "{port}", "--model", marker,
                    "--ttft-ms", "100", "--itl-ms", "1", "--output-tokens", "1"],
        "health_url": "http://{host}:{port}" + health, "base_url": "http://{host}:{port}",
        "startup_timeout_s": startup_s,
    }))


def processes_with(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


def no_orphans(marker: str) -> bool:
    return wait_for(lambda: not processes_with(marker), timeout=15)


class Sweep:
    """`benchbox sweep` as a subprocess whose stdout is collected line by line."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.stderr = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 120) -> int:
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        self.reader.join(5)
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return "".join(self.lines)


def records_count(out: Path) -> int:
    files = list(out.glob("*/records.jsonl")) if out.exists() else []
    return files[0].read_bytes().count(b"\n") if files else 0


def check_files(out: Path, rc: int, sweep: Sweep) -> Optional[dict]:
    """The run directory (if any) is valid whatever the moment of the interrupt; returns result.json."""
    assert "Traceback" not in sweep.stderr + sweep.stdout, sweep.stderr[-3000:]
    dirs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    if not dirs:
        assert rc == 130 and "nothing was written" in sweep.stdout + sweep.stderr, (rc, sweep.stdout, sweep.stderr)
        return None
    (run_dir,) = dirs
    orjson.loads((run_dir / "manifest.json").read_bytes())
    raw = (run_dir / "records.jsonl").read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "torn last record"
    records = [orjson.loads(line) for line in raw.splitlines()]  # every line is valid JSON
    result = orjson.loads((run_dir / "result.json").read_bytes())
    if (run_dir / "scores.jsonl").exists():
        [orjson.loads(line) for line in (run_dir / "scores.jsonl").read_bytes().splitlines()]
    if rc == 130:
        assert result["complete"] is False and result["interrupted"] in ("SIGINT", "SIGTERM"), result
        # A cancelled request is a record of its own; none is an error of the server's.
        for lv in result["levels"]:
            judged = lv["requests"]["measured"] - lv["requests"]["errors"].get("cancelled", 0)
            assert lv["requests"]["errors"].get("cancelled", 0) <= 4 and judged >= 0
    else:
        assert rc == 0, (rc, sweep.stderr[-2000:])
        assert result["complete"] is True
    assert all(r["error"] in (None, "cancelled") for r in records if r["target"] != "down"), \
        {r["error"] for r in records}
    return result


@pytest.fixture
def setup(tmp_path: Path, code_server: CodeServer) -> Iterator[dict]:
    marker = f"orphan-check-{uuid.uuid4().hex[:10]}"
    managed_sim(tmp_path, marker)
    code_items(tmp_path / "items.jsonl", 30)
    path = write_scenario(tmp_path, {
        "name": "interrupt",
        "dataset": "items.jsonl",
        "targets": [{"name": "managed", "role": "baseline", "server": {"definition": "simsrv", "cold_requests": 1}},
                    {"name": "plain", "role": "candidate", "url": code_server.url, "model": "code-model"}],
        "sampling": {"max_tokens": 8},
        "load": {"pattern": "concurrency", "levels": [2, 4], "requests": 20},
        "quality": {"scorers": [{"name": "code", "timeout_s": 5}]},
        "gates": ["error_rate < 50%"],
    })
    yield {"path": path, "marker": marker, "tmp": tmp_path}
    for p in processes_with(marker):  # never leave one behind, whatever the test found
        p.kill()


# From 0.3 s: earlier, the signal lands in the interpreter's own start-up (Python's default handling).
_RNG = random.Random(8)
POINTS = sorted(_RNG.uniform(0.3, 9.0) for _ in range(6))


@pytest.mark.parametrize("i", range(len(POINTS)))
def test_interrupt_at_random_moments(setup: dict, i: int) -> None:
    out = setup["tmp"] / f"runs-{i}"
    sweep = Sweep(str(setup["path"]), "--out", str(out), "--quiet")
    time.sleep(POINTS[i])
    sweep.signal(signal.SIGINT if i % 2 == 0 else signal.SIGTERM)
    rc = sweep.wait()
    print(f"signal after {POINTS[i]:.2f} s: exit {rc}, {records_count(out)} records")
    check_files(out, rc, sweep)
    assert no_orphans(setup["marker"]), "the managed server outlived the sweep"


@pytest.mark.parametrize("moment", ["start-up", "managed server starting", "mid-level", "quality pass"])
def test_interrupt_at_chosen_moments(setup: dict, moment: str) -> None:
    out = setup["tmp"] / "runs"
    sweep = Sweep(str(setup["path"]), "--out", str(out), "--quiet")
    if moment == "start-up":  # benchbox's code runs (reading the scenario), no run directory yet
        time.sleep(0.3)
    elif moment == "managed server starting":
        assert wait_for(lambda: processes_with(setup["marker"]), timeout=30)
    elif moment == "mid-level":
        assert wait_for(lambda: records_count(out) >= 6, timeout=30)
    else:
        assert wait_for(lambda: sweep.saw("quality pass"), timeout=60, interval=0.01)
        time.sleep(0.3)
    sweep.signal(signal.SIGINT)
    rc = sweep.wait()
    result = check_files(out, rc, sweep)
    if moment == "quality pass":
        assert rc == 130 and result is not None and result["complete"] is False
        assert any("--resume" in n for n in result["notes"])
        assert len(result["levels"]) == 4  # every level was measured before the signal
    if moment in ("mid-level", "managed server starting"):
        assert rc == 130
    assert no_orphans(setup["marker"])


def test_second_signal_exits_at_once(setup: dict) -> None:
    out = setup["tmp"] / "runs"
    sweep = Sweep(str(setup["path"]), "--out", str(out), "--quiet")
    assert wait_for(lambda: records_count(out) >= 4, timeout=30)
    sweep.signal(signal.SIGINT)
    time.sleep(0.05)
    t0 = time.monotonic()
    sweep.signal(signal.SIGINT)
    rc = sweep.wait(timeout=30)
    assert rc == 130 and time.monotonic() - t0 < 5, (rc, time.monotonic() - t0)
    run_dir = next(out.iterdir())
    [orjson.loads(line) for line in (run_dir / "records.jsonl").read_bytes().splitlines()]
    result = orjson.loads((run_dir / "result.json").read_bytes())  # the checkpoint written at the start
    assert result["complete"] is False
    assert no_orphans(setup["marker"])


def test_a_server_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    marker = f"orphan-check-{uuid.uuid4().hex[:10]}"
    managed_sim(tmp_path, marker, health="/never-200", startup_s=2)
    path = write_scenario(tmp_path, {
        "name": "notready", "targets": [{"name": "m", "role": "baseline", "server": {"definition": "simsrv"}}],
        "load": {"levels": [1], "requests": 2},
    })
    proc = run_cli("sweep", str(path), "--out", str(tmp_path / "runs"), "--quiet")
    assert proc.returncode == 4 and "not ready" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert no_orphans(marker)


# ------------------------------------------------------------------------------------------------- resume
def resume_setup(tmp_path: Path, url: str) -> Path:
    code_items(tmp_path / "items.jsonl", 10)
    return write_scenario(tmp_path, {
        "name": "resume",
        "dataset": "items.jsonl",
        "targets": [{"name": "a", "role": "baseline", "url": url, "model": "sim-model"},
                    {"name": "b", "role": "candidate", "url": url, "model": "sim-model"}],
        "sampling": {"max_tokens": 10},
        "load": {"pattern": "concurrency", "levels": [1, 2, 3], "requests": 6, "warmup": {"requests": 1}},
        "quality": {"scorers": [{"name": "exact"}]},
    })


def interrupt_when(path: Path, out: Path, predicate: Any) -> Path:
    sweep = Sweep(str(path), "--out", str(out), "--quiet")
    assert wait_for(lambda: predicate(sweep), timeout=60, interval=0.01)
    sweep.signal(signal.SIGINT)
    assert sweep.wait() == 130, sweep.stderr
    (run_dir,) = list(out.iterdir())
    return run_dir


def test_resume_continues_from_the_first_unfinished_level(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim("--ttft-ms", "40", "--itl-ms", "5", "--output-tokens", "10", truth=False)
    path = resume_setup(tmp_path, sim.url)
    run_dir = interrupt_when(path, tmp_path / "runs", lambda s: records_count(tmp_path / "runs") >= 10)
    before = orjson.loads((run_dir / "result.json").read_bytes())
    assert before["complete"] is False and before["progress"]["levels_done"] == [["a", 1]]
    lines_before = (run_dir / "records.jsonl").read_bytes().count(b"\n")

    # Refused: the scenario or the eval set changed since the run began. Nothing is written.
    keep = path.read_bytes(), (tmp_path / "items.jsonl").read_bytes()
    path.write_bytes(keep[0] + b"# edited\n")
    proc = run_cli("sweep", "--resume", str(run_dir))
    assert proc.returncode == 2 and "scenario changed" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    path.write_bytes(keep[0])
    code_items(tmp_path / "items.jsonl", 11)
    proc = run_cli("sweep", "--resume", str(run_dir))
    assert proc.returncode == 2 and "eval set changed" in proc.stderr, proc.stderr
    (tmp_path / "items.jsonl").write_bytes(keep[1])
    assert (run_dir / "records.jsonl").read_bytes().count(b"\n") == lines_before

    proc = run_cli("sweep", "--resume", str(run_dir), "--quiet")  # FILE from the manifest
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resume 1" in proc.stdout
    result = orjson.loads((run_dir / "result.json").read_bytes())
    assert result["complete"] is True and result["interrupted"] is None
    assert [(lv["target"], lv["level"]) for lv in result["levels"]] == [
        ("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]
    for lv in result["levels"]:
        assert lv["requests"]["measured"] == lv["requests"]["ok"] == 6, lv
    assert result["quality"]["targets"]["b"]["responses_scored"] == 18

    # Every old record is kept; the cut-short level's are superseded by its re-run.
    everything = list(read_records(run_dir / "records.jsonl", superseded=True))
    counted = list(read_records(run_dir / "records.jsonl"))
    assert len(everything) > len(counted) and sum(1 for _ in everything if _.resume == 0) >= lines_before - 1
    assert {(r.target, r.level) for r in everything if r not in counted} == {("a", 2)}
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert len(manifest["resumes"]) == 1 and manifest["resumes"][0]["levels_done"] == [["a", 1]]
    # The items each level measured are those an uninterrupted sweep sends (the walk continues).
    items = [f"c{i}" for i in range(10)]
    for target in ("a", "b"):
        for index, level in enumerate((1, 2, 3)):
            got = sorted(r.item_id for r in counted if (r.target, r.level, r.phase) == (target, level, "measure"))
            assert got == sorted(items[(index * 6 + j) % 10] for j in range(6)), (target, level, got)
    # The report rebuilt from records alone agrees.
    assert run_cli("report", str(run_dir), "--rebuild").returncode == 0
    rebuilt = orjson.loads((run_dir / "result.json").read_bytes())
    assert [lv["requests"] for lv in rebuilt["levels"]] == [lv["requests"] for lv in result["levels"]]

    proc = run_cli("sweep", "--resume", str(run_dir))
    assert proc.returncode == 2 and "complete" in proc.stderr


def test_resume_after_an_interrupted_quality_pass(tmp_path: Path) -> None:
    server = CodeServer()
    code_items(tmp_path / "items.jsonl", 40)
    path = write_scenario(tmp_path, {
        "name": "resume-q", "dataset": "items.jsonl",
        "targets": [{"name": "a", "role": "baseline", "url": server.url, "model": "code-model"}],
        "sampling": {"max_tokens": 8},
        "load": {"levels": [4], "requests": 80},
        "quality": {"scorers": [{"name": "code", "timeout_s": 5}]},
    })
    run_dir = interrupt_when(path, tmp_path / "runs", lambda s: s.saw("quality pass"))
    lines = (run_dir / "records.jsonl").read_bytes()
    proc = run_cli("sweep", str(path), "--resume", str(run_dir), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run_dir / "records.jsonl").read_bytes() == lines  # nothing left to measure
    result = orjson.loads((run_dir / "result.json").read_bytes())
    assert result["complete"] is True and result["quality"]["targets"]["a"]["responses_scored"] == 80
    assert result["quality"]["targets"]["a"]["slices"]["all"]["metrics"]["code_pass"]["value"] == 1.0
    server.close()


def test_resume_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    shutil.copy(REPO / "scenarios" / "ci" / "voice.yaml", tmp_path / "voice.yaml")
    (tmp_path / "empty").mkdir()
    proc = run_cli("sweep", "--resume", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "not a benchbox run directory" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
