"""The code scorer's sandbox has no network and leaves no process behind.

Model code tries to reach a TCP server this test runs on loopback (and to resolve a name); the server
must never see a connection. Checked twice: with the scorer's network namespace (where the host allows
``unshare --net``) and with only the harness's socket guard (the fallback elsewhere).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.dataset import Item
from bench.scoring import ScoreInput, build_scorer
from bench.scoring import code as code_mod

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback TCP server that records every connection it accepts."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    seen.append(conn.recv(100) or b"<connected>")
                except OSError:
                    seen.append(b"<connected>")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], seen
    stop.set()
    t.join(2)
    srv.close()


PROBE = '''
import socket

def probe(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"LEAKED")
        s.close()
        return "connected"
    except OSError as e:
        return type(e).__name__

def resolve():
    try:
        socket.getaddrinfo("example.com", 80)
        return "resolved"
    except OSError as e:
        return type(e).__name__
'''


def score(text: str, tests: list[str], **config: Any) -> dict:
    scorer = build_scorer({"name": "code", **config}, ROOT / "scenarios")
    meta = {"entry_point": "probe", "tests": tests}
    return scorer.score(ScoreInput(Item("c", None, "p", None, (), None, meta), text, "stop"))


@pytest.mark.parametrize("isolation", ["namespace", "guard only"])
def test_model_code_cannot_open_a_socket(listener: tuple[int, list[bytes]], isolation: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    port, seen = listener
    if isolation == "namespace":
        if not code_mod.network_isolation():
            pytest.skip("this host cannot create network namespaces (unshare): only the guard applies")
    else:
        monkeypatch.setattr(code_mod, "network_isolation", lambda: ())
    out = score(PROBE, [f"assert probe({port}) != 'connected'", "assert resolve() != 'resolved'",
                        f"assert probe({port}) in ('PermissionError', 'OSError')"])
    assert out["code_pass"] is True, out
    time.sleep(0.3)
    assert seen == [], "the model's code reached the loopback server"


def test_sockets_are_refused_even_when_imported_the_raw_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code_mod, "network_isolation", lambda: ())
    text = textwrap.dedent('''
        def probe():
            import _socket
            try:
                _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
                return "created"
            except PermissionError:
                return "refused"
    ''')
    assert score(text, ["assert probe() == 'refused'"])["code_pass"] is True


def test_asyncio_still_works_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard refuses new sockets but lets socketpair() through: asyncio's loop needs it."""
    monkeypatch.setattr(code_mod, "network_isolation", lambda: ())
    text = textwrap.dedent('''
        import asyncio
        def probe(x):
            async def twice():
                await asyncio.sleep(0)
                return 2 * x
            return asyncio.run(twice())
    ''')
    assert score(text, ["assert probe(21) == 42"])["code_pass"] is True


def test_harness_dies_with_the_scorer(tmp_path: Path) -> None:
    """Kill the scoring process with SIGKILL mid-item: the answer's process must not outlive it."""
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from bench.dataset import Item
        from bench.scoring import ScoreInput, build_scorer
        scorer = build_scorer({{"name": "code", "timeout_s": 120}}, Path("."))
        meta = {{"entry_point": "f", "tests": ["assert True"]}}
        scorer.score(ScoreInput(Item("c", None, "p", None, (), None, meta), "import time\\ntime.sleep(600)\\n", "stop"))
    ''')
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, start_new_session=True)
    try:
        child = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child is None:
            child = _harness_child(proc.pid)
            time.sleep(0.05)
        assert child is not None, "the harness never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.05)
        assert not _alive(child), f"harness {child} outlived its scorer"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _harness_child(parent: int) -> int | None:
    import psutil

    try:
        for child in psutil.Process(parent).children():
            if "-c" in child.cmdline() and any("payload.json" in a for a in child.cmdline()):
                return child.pid
    except psutil.Error:
        return None
    return None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
