"""Managed servers: launch one from a ``servers/*.yaml`` definition, wait until ready, stop without orphans.

Definitions and their placeholders (``{host}``, ``{port}``, ``{model_path}``, ...) are described and parsed in
``bench.server_defs``; its public names are re-exported here.

The server runs in its own session (process group); stop() sends SIGTERM to the group, waits up to 10 s,
then SIGKILLs it (docker kinds first run ``stop_command``, ``docker stop``). Servers still running at
interpreter exit are stopped by an ``atexit`` hook, and (Linux) the direct child also gets SIGTERM if this
process dies without running it (``docker run`` passes that on to its container).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

from bench.procs import cpu_count, tail_file  # noqa: F401 - re-exported
from bench.scenario import ManagedServerSpec
from bench.server_defs import (  # noqa: F401 - re-exported: callers and tests use bench.serving.<name>
    BUILTIN, COMPUTED, OVERRIDABLE, REPO_SERVERS, STOP_GRACE_S, ServerDefinition, ServerError,
    default_search_dirs, list_definitions, load_definition, parse_definition, placeholders, redact, render,
)

Progress = Callable[[str], None]

_BIND_FAILED = re.compile(r"couldn't bind|address already in use", re.I)


# ---------------------------------------------------------------------------------------------- helpers
def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def http_status(url: str, timeout: float = 2.0) -> Optional[int]:
    """HTTP status of a GET (None if the connection fails). Tiny on purpose: no client library needed."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    writer: Optional[asyncio.StreamWriter] = None

    async def get() -> bytes:
        nonlocal writer
        reader, writer = await asyncio.open_connection(host, port, ssl=True if u.scheme == "https" else None)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        return await reader.readline()

    try:
        line = await asyncio.wait_for(get(), timeout)
        m = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", line)
        return int(m[1]) if m else None
    except (OSError, asyncio.TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _pdeathsig() -> Optional[Callable[[], None]]:
    """preexec_fn: the child gets SIGTERM if the thread that started it dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_LIVE: set["ManagedServer"] = set()


def stop_all_servers(grace_s: float = 5.0) -> None:
    """Stop every managed server this process still runs (at exit; on a second Ctrl-C with a short grace)."""
    for server in list(_LIVE):
        server.stop_sync(grace_s=grace_s)


@atexit.register
def _stop_all_at_exit() -> None:
    stop_all_servers(grace_s=5.0)


# ---------------------------------------------------------------------------------------------- the server
class ManagedServer:
    """One server process benchbox owns: provision, launch, wait for ready, stop.

    ``base_url``, ``metrics_url`` and ``port`` are known once start() has picked the port.
    """

    def __init__(self, spec: ManagedServerSpec, target_name: str, log_path: Path,
                 search_dirs: Optional[list[Path]] = None, progress: Optional[Progress] = None,
                 port: Optional[int] = None):
        self.spec = spec
        self.target_name = target_name
        self.log_path = Path(log_path)
        self.progress = progress
        self.definition = load_definition(spec.definition, search_dirs)
        self.startup_timeout_s = spec.startup_timeout_s or self.definition.startup_timeout_s
        self.port: Optional[int] = port
        self.metrics_port: Optional[int] = None
        self.host = str(self.definition.defaults.get("host", OVERRIDABLE["host"]))
        self.base_url: Optional[str] = None
        self.health_url: Optional[str] = None
        self.metrics_url: Optional[str] = None
        self.launch_to_ready_s: Optional[float] = None
        self.argv: Optional[list[str]] = None
        self.model_facts: Optional[dict] = None
        self.llamacpp: Optional[dict] = None
        self._values: dict[str, str] = {}
        self._env: dict[str, str] = {}
        self._stop_argv: Optional[list[str]] = None
        self._proc: Optional[subprocess.Popen] = None
        self._t_launch: Optional[float] = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"<ManagedServer {self.target_name} ({self.definition.name}) {self.base_url or 'not started'}>"

    def _label(self) -> str:
        return f"server '{self.target_name}' ({self.definition.name})"

    # -- preparation (blocking: provisioning may build llama.cpp or download models) --
    def prepare(self) -> None:
        d = self.definition
        used = d.used()
        v: dict[str, str] = {k: _s(x) for k, x in d.defaults.items()}
        v.setdefault("host", OVERRIDABLE["host"])
        if v.get("threads", "auto") == "auto":
            v["threads"] = str(cpu_count())
        v["hf_cache"] = (v.get("hf_cache") or os.environ.get("HF_HOME")
                         or str(Path("~/.cache/huggingface").expanduser()))
        model = self.spec.model or v.get("model")
        needs_model = used & {"model", "model_path", "model_dir", "model_file"}
        if needs_model and not model:
            raise ServerError(f"{self._label()}: the definition needs a model; "
                              "set server.model in the scenario")
        if model:
            is_path = (model.endswith(".gguf") or model.startswith(("/", ".", "~"))
                       or Path(model).expanduser().exists())
            v["model"] = Path(model).stem if is_path else model
        if d.provision == "llamacpp" or "llama_server" in used:
            from bench.provision import ProvisionError, ensure_llamacpp
            try:
                build = ensure_llamacpp(self.progress)
            except ProvisionError as e:
                raise ServerError(f"{self._label()}: {e}") from None
            v["llama_server"] = str(build.server)
            self.llamacpp = {k: build.info.get(k)
                             for k in ("version", "server_version", "cmake_flags", "built_at")}
        if used & {"model_path", "model_dir", "model_file"}:
            from bench.provision import ProvisionError, model_facts, resolve_model
            try:
                path = resolve_model(model, self.progress)
                self.model_facts = model_facts(path)
            except (ProvisionError, OSError) as e:
                raise ServerError(f"{self._label()}: {e}") from None
            v.update(model_path=str(path), model_dir=str(path.parent), model_file=path.name)
        if d.kind == "docker" and not shutil.which("docker"):
            raise ServerError(f"{self._label()}: the definition runs docker, which is not installed here")
        self.port = self.port or free_port(v["host"])
        v["port"] = str(self.port)
        if "metrics_port" in used:
            self.metrics_port = free_port(v["host"])
            v["metrics_port"] = str(self.metrics_port)
        v["container"] = re.sub(r"[^A-Za-z0-9_.-]", "-", f"benchbox-{self.target_name}-{self.port}")
        self.host = v["host"]
        self._values = v
        self.argv = [render(c, v) for c in d.command] + list(self.spec.args)
        self.health_url = render(d.health_url, v)
        self.base_url = render(d.base_url, v).rstrip("/")
        self.metrics_url = render(d.metrics_url, v) if d.metrics_url else None
        stop = d.effective_stop_command()
        self._stop_argv = [render(c, v) for c in stop] if stop else None
        self._env = {k: render(x, v) for k, x in d.env.items()} | dict(self.spec.env)

    # -- lifecycle --
    async def start(self) -> None:
        """Provision if needed, launch, and poll health until ready; sets ``launch_to_ready_s``."""
        if self._proc is not None:
            raise ServerError(f"{self._label()}: already started")
        picked = self.port is None
        for attempt in range(3):
            try:
                await asyncio.to_thread(self.prepare)
                self._launch()
                await self._wait_ready()
                return
            except ServerError:
                await self.stop()
                # Another process took the free port between our check and the server's bind: pick again.
                launched = self._proc is not None
                if not (launched and picked and attempt < 2 and _BIND_FAILED.search(self.log_tail(5))):
                    raise
                self._say(f"{self._label()}: port {self.port} was taken, retrying on another")
                self._proc, self._stopped, self.port = None, False, None
            except BaseException:
                await self.stop()
                raise

    def _launch(self) -> None:
        assert self.argv is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        exe = shutil.which(self.argv[0]) if os.sep not in self.argv[0] else self.argv[0]
        if not exe or not os.access(exe, os.X_OK):
            raise ServerError(f"{self._label()}: command not found or not executable: {self.argv[0]}")
        with open(self.log_path, "ab") as log:
            log.write(f"# benchbox {stamp}: {self._label()}: {shlex.join(redact(self.argv))}\n".encode())
            log.flush()
            self._t_launch = time.perf_counter()
            try:
                self._proc = subprocess.Popen(
                    self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, **self._env}, start_new_session=True,
                    preexec_fn=_pdeathsig())
            except OSError as e:
                raise ServerError(f"{self._label()}: cannot run {self.argv[0]}: {e.strerror}") from None
        _LIVE.add(self)
        self._say(f"started {self._label()} pid {self._proc.pid} on {self.base_url} (log: {self.log_path})")

    async def _wait_ready(self) -> None:
        assert self._t_launch is not None and self.health_url
        deadline = self._t_launch + self.startup_timeout_s
        last: Optional[int] = None
        while True:
            rc = self.exited()
            if rc is not None:
                raise ServerError(f"{self._label()} exited with code {rc} before it was ready; "
                                  f"last lines of {self.log_path}:\n{self.log_tail(20)}")
            status = await http_status(self.health_url, timeout=2.0)
            if status == 200:
                self.launch_to_ready_s = time.perf_counter() - self._t_launch
                self._say(f"{self._label()} ready in {self.launch_to_ready_s:.2f} s")
                return
            last = status if status is not None else last
            if time.perf_counter() > deadline:
                raise ServerError(f"{self._label()} was not ready after {self.startup_timeout_s:g} s "
                                  f"({self.health_url} last answered {last or 'nothing'}); "
                                  f"last lines of {self.log_path}:\n{self.log_tail(20)}")
            await asyncio.sleep(0.05)

    def exited(self) -> Optional[int]:
        """The return code if the process has died (negative: killed by that signal), else None.

        Does not reap the child, so its process group id stays reserved until stop()."""
        p = self._proc
        if p is None:
            return None
        if p.returncode is not None:
            return p.returncode
        try:
            info = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return p.poll()
        if info is None or info.si_pid == 0:
            return None
        return -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status

    def log_tail(self, n: int = 20) -> str:
        return tail_file(self.log_path, n)

    def _signal_group(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _run_stop_command(self) -> None:
        if self._stop_argv and self.exited() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(self._stop_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, timeout=STOP_GRACE_S + 20)

    async def stop(self) -> None:
        """SIGTERM the process group, wait up to 10 s, then SIGKILL; idempotent."""
        if self._proc is None or self._stopped:
            return
        self._stopped = True
        try:
            await asyncio.to_thread(self._run_stop_command)
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while self.exited() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            self._finish()

    def stop_sync(self, grace_s: float = STOP_GRACE_S) -> None:
        """Blocking stop() for atexit handlers and signal-free contexts."""
        if self._proc is None or self._stopped:
            return
        self._stopped = True
        try:
            self._run_stop_command()
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.exited() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            self._finish()

    def _finish(self) -> None:
        # SIGKILL whatever is left in the group (the leader, if it ignored SIGTERM, and any stragglers);
        # the unreaped leader keeps the group id reserved, so this cannot hit an unrelated group.
        assert self._proc is not None
        self._signal_group(signal.SIGKILL)
        self._proc.wait()
        _LIVE.discard(self)
        self._say(f"stopped {self._label()} (exit {self._proc.returncode})")

    def _say(self, msg: str) -> None:
        if self.progress:
            self.progress(f"benchbox: {msg}")

    # -- reporting --
    def describe(self) -> dict[str, Any]:
        d = self.definition
        return {
            "definition": d.name,
            "definition_path": str(d.path) if d.path else None,
            "kind": d.kind,
            "command": redact(self.argv) if self.argv else None,
            "env_keys": sorted(self._env),
            "host": self.host,
            "port": self.port,
            "metrics_port": self.metrics_port,
            "base_url": self.base_url,
            "health_url": self.health_url,
            "metrics_url": self.metrics_url,
            "model": self._values.get("model") or self.spec.model,
            "model_facts": self.model_facts,
            "llamacpp": self.llamacpp,
            "threads": self._values.get("threads"),
            "startup_timeout_s": self.startup_timeout_s,
            "launch_to_ready_s": self.launch_to_ready_s,
            "pid": self._proc.pid if self._proc else None,
            "log_path": str(self.log_path),
        }


def _s(x: Union[str, int, float, bool]) -> str:
    return ("true" if x else "false") if isinstance(x, bool) else str(x)
