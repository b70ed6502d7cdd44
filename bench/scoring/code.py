"""``code``: run the answer's Python and the item's asserts in a separate, limited subprocess.

The code is the fenced ```python (or ```py, or untagged) block of the response that defines
``item.meta["entry_point"]`` (else the first such block; an unclosed fence from a truncated response
runs to the end), or the whole text when there is no such block. It runs with ``sys.executable -s -S -B``
in a fresh temp dir as cwd, stdin/stdout/stderr on /dev/null, an environment of ``PATH`` and
``PYTHONHASHSEED=0`` only (re-scoring gives the same result), a wall timeout (``timeout_s``) and, set
by the child itself before the answer runs (``_code_harness``; not a ``preexec_fn``, which can deadlock when
the caller scores from threads): CPU seconds, address space, file size, no core
dumps, no new processes or threads (RLIMIT_NPROC, not enforced for root), 64 open files; spawning and
deleting functions of ``os`` are disabled and files may be written only inside the temp dir. No network:
the child runs in a new, empty network namespace (``unshare --net``; ``--map-root-user`` too when not
root) wherever the host allows it (``network_isolation()`` says), and in any case its ``socket`` module
refuses to create sockets. It dies with the scorer (PR_SET_PDEATHSIG). This is an accident guard, not a
security boundary: score untrusted models in a container, not as root.

Each test line runs separately in the answer's namespace, so ``code_tests_passed_frac`` counts them;
``code_pass`` (pass@1) needs every test. ``code_error`` names the first failure: the exception class
("SyntaxError", "AssertionError", "NameError", "MemoryError", ...), "timeout" (wall or CPU limit),
"exited" (the answer ended the process), or "signal:<NAME>". Items without ``meta.tests`` or
``meta.entry_point`` score None.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from bench.scoring.base import BaseScorer, ScoreInput, ScorerConfig, Value
from bench.scoring.normalize import fenced_blocks

HARNESS = Path(__file__).with_name("_code_harness.py").read_text(encoding="utf-8")
_PY_LANGS = {"python", "py", "python3", "py3", ""}
_MISSING: Any = object()
_KEYS = {"code_pass": "bool", "code_tests_passed_frac": "float", "code_syntax_ok": "bool", "code_error": "str"}


def extract_code(text: str, entry_point: Optional[str] = None) -> str:
    blocks = [b for b in fenced_blocks(text) if b.lang in _PY_LANGS]
    if not blocks:
        return text
    if entry_point:
        defines = re.compile(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", re.MULTILINE)
        for b in blocks:
            if defines.search(b.body):
                return b.body
    return blocks[0].body


def syntax_error(code: str) -> Optional[str]:
    """The compile error's class name ("SyntaxError", "IndentationError", ...) or None; nothing runs."""
    try:
        compile(code, "<answer>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
        return type(e).__name__ if isinstance(e, SyntaxError) else "SyntaxError"
    return None


@functools.lru_cache(maxsize=1)
def network_isolation() -> tuple[str, ...]:
    """argv prefix that runs a command in a new network namespace with no interfaces up (so no network),
    or () where this host cannot (no ``unshare``, user namespaces disabled): then only the harness's
    socket guard stops the code. Probed once per process."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for prefix in ((exe, "--net"), (exe, "--map-root-user", "--net")):
        try:
            ok = subprocess.run([*prefix, "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    return ()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class CodeScorer(BaseScorer):
    name = "code"
    primary = "code_pass"
    keys = _KEYS

    class Config(ScorerConfig):
        timeout_s: float = Field(5.0, gt=0, le=600, description="wall-clock limit per item")
        memory_mb: int = Field(512, ge=64, le=65536, description="address-space limit")
        file_size_mb: float = Field(1.0, ge=0, le=1024, description="largest file the code may write")

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        meta = inp.item.meta
        tests, entry = meta.get("tests"), meta.get("entry_point")
        if not (isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests)
                and isinstance(entry, str) and entry):
            return {k: None for k in _KEYS}
        code = extract_code(inp.text, entry)
        err = syntax_error(code)
        if err is not None:
            return {"code_pass": False, "code_tests_passed_frac": 0.0, "code_syntax_ok": False, "code_error": err}
        results, timed_out, rc = self._run(code, tests)
        outcomes = [results.get(i) for i in range(len(tests))]  # (error|None,), or None: never reported
        passed = sum(1 for o in outcomes if o == (None,))
        died = f"signal:{signal.Signals(-rc).name}" if rc is not None and rc < 0 else "exited"
        load = results.get("load", _MISSING)
        first_fail = next((o for o in outcomes if o != (None,)), _MISSING)
        error: Optional[str]
        if timed_out or rc == -signal.SIGXCPU:
            error = "timeout"
        elif load is _MISSING:
            error = died              # the process ended while the answer was loading
        elif load is not None:
            error = load              # the answer raised at module level: every test fails
        elif first_fail is _MISSING:
            error = None if results.get("done") else died
        else:
            error = died if first_fail is None else first_fail[0]
        return {"code_pass": error is None and passed == len(tests),
                "code_tests_passed_frac": passed / len(tests), "code_syntax_ok": True, "code_error": error}

    def _run(self, code: str, tests: list[str]) -> tuple[dict[Any, Any], bool, Optional[int]]:
        """({"load": err|None, i: (err|None,), "done": True}, timed_out, returncode)."""
        cfg = self.config
        nonce = secrets.token_hex(12)
        payload = {"nonce": nonce, "code": code, "tests": tests, "parent": os.getpid(), "limits": {
            "cpu_s": math.ceil(cfg.timeout_s) + 1, "memory_bytes": cfg.memory_mb * 2**20,
            "file_bytes": int(cfg.file_size_mb * 2**20)}}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"}
        timed_out = False
        with tempfile.TemporaryDirectory(prefix="benchbox-code-", ignore_cleanup_errors=True) as tmp:
            path = os.path.join(tmp, "payload.json")
            with open(path, "w", encoding="ascii") as f:
                json.dump(payload, f)
            argv = [*network_isolation(), sys.executable, "-s", "-S", "-B", "-c", HARNESS, path]
            with subprocess.Popen(argv, cwd=tmp, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  start_new_session=True) as proc:
                try:
                    out, _ = proc.communicate(timeout=cfg.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc)
                    try:
                        out, _ = proc.communicate(timeout=2.0)
                    except subprocess.TimeoutExpired:  # an escaped grandchild holds the pipe
                        out = b""
                finally:
                    _kill_group(proc)  # stragglers the answer may have started
            rc = proc.returncode
        return _parse(out, nonce), timed_out, rc


def _parse(out: bytes, nonce: str) -> dict[Any, Any]:
    results: dict[Any, Any] = {}
    prefix = nonce.encode() + b" "
    for line in out.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            obj = json.loads(line[len(prefix):])
        except ValueError:
            continue
        if "load" in obj:
            results["load"] = obj["load"]
        elif "t" in obj:
            results[obj["t"]] = (obj["e"],)
        elif obj.get("done"):
            results["done"] = True
    return results
