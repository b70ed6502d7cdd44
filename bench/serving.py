"""Managed servers: launch one from a ``servers/*.yaml`` definition, wait until ready, stop without orphans.

A definition is a command line with placeholders. The set is small on purpose:

    {host}          bind address (default 127.0.0.1; may be set in ``defaults``)
    {port}          a free TCP port benchbox picks (or ``--port``)
    {metrics_port}  a second free port, for servers that expose metrics separately (Triton: 8002)
    {model}         the model as named (catalog name or HF id; a file path becomes its stem)
    {model_path}    absolute path of the model, provisioned on demand (``bench.provision.resolve_model``)
    {model_dir} {model_file}   the folder and file name of {model_path} (for docker volume mounts)
    {llama_server}  the llama-server binary built by ``benchbox server install``
    {threads}       CPU threads ("auto" = the CPUs this process may use; may be set in ``defaults``)
    {container}     a unique docker container name (benchbox-<target>-<port>)
    {hf_cache}      the Hugging Face cache folder ($HF_HOME or ~/.cache/huggingface)

Every key of ``defaults`` is a placeholder too (``{parallel}``, ``{ctx}``, ``{image}`` ...). Anything else
is an error when the definition is loaded. ``{{`` and ``}}`` are literal braces. Extra ``args`` from the
scenario are appended verbatim (not rendered).

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
import string
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from bench.scenario import ManagedServerSpec

Progress = Callable[[str], None]

REPO_SERVERS = Path(__file__).resolve().parent.parent / "servers"
COMPUTED = {"port", "metrics_port", "model_path", "model_dir", "model_file", "llama_server", "container"}
OVERRIDABLE = {"host": "127.0.0.1", "threads": "auto", "model": None, "hf_cache": None}
BUILTIN = COMPUTED | set(OVERRIDABLE)
STOP_GRACE_S = 10.0
_BIND_FAILED = re.compile(r"couldn't bind|address already in use", re.I)
_SECRET = re.compile(r"(key|token|secret|password|passwd|auth)", re.I)


class ServerError(Exception):
    """A managed server could not be defined, started or kept alive. The first line of ``str()`` says what
    happened; the last lines of the server log may follow."""


# ---------------------------------------------------------------------------------------------- definitions
def placeholders(template: str) -> set[str]:
    """Names used in a template; raises ValueError on positional, attribute or format-spec fields."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"bad template {template!r}: {e}") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"bad placeholder {{{name}}} in {template!r}: use {{name}} (letters, digits, _)")
        if spec or conv:
            raise ValueError(f"placeholder {{{name}}} in {template!r}: "
                             "format specs/conversions are not supported")
        names.add(name)
    return names


def render(template: str, values: dict[str, str]) -> str:
    missing = placeholders(template) - set(values)
    if missing:
        raise ServerError(f"unknown placeholder {{{sorted(missing)[0]}}} in {template!r} "
                          f"(known: {', '.join(sorted(values))})")
    return template.format_map(values)


class ServerDefinition(BaseModel):
    """One ``servers/<name>.yaml`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    description: str = ""
    kind: Literal["command", "docker"] = "command"
    command: list[str] = Field(min_length=1)
    health_url: str = Field(description="polled until it answers HTTP 200, e.g. http://{host}:{port}/health")
    base_url: str = Field(description="what clients use; OpenAI routes live under <base_url>/v1")
    metrics_url: Optional[str] = None
    env: dict[str, str] = Field(default_factory=dict)
    startup_timeout_s: float = Field(120.0, gt=0, le=86_400)
    defaults: dict[str, Union[str, int, float, bool]] = Field(default_factory=dict)
    provision: Optional[Literal["llamacpp"]] = None
    stop_command: Optional[list[str]] = Field(
        None, description="run before signalling (docker kind default: docker stop --time 10 {container})")

    _path: Optional[Path] = PrivateAttr(None)

    @model_validator(mode="after")
    def _check_placeholders(self) -> "ServerDefinition":
        clash = sorted(set(self.defaults) & COMPUTED)
        if clash:
            raise ValueError(f"defaults.{clash[0]}: computed by benchbox, cannot be set")
        known = BUILTIN | set(self.defaults)
        for where, template in self._templates():
            unknown = sorted(placeholders(template) - known)
            if unknown:
                raise ValueError(f"{where}: unknown placeholder {{{unknown[0]}}} in {template!r}; known: "
                                 f"{', '.join(sorted(known))} (add it to 'defaults' to define a new one)")
        return self

    def _templates(self) -> list[tuple[str, str]]:
        out = [(f"command[{i}]", c) for i, c in enumerate(self.command)]
        out += [("health_url", self.health_url), ("base_url", self.base_url)]
        out += [("metrics_url", self.metrics_url)] if self.metrics_url else []
        out += [(f"env.{k}", v) for k, v in self.env.items()]
        out += [(f"stop_command[{i}]", c) for i, c in enumerate(self.stop_command or [])]
        return out

    def used(self) -> set[str]:
        return set().union(*(placeholders(t) for _, t in self._templates()))

    @property
    def path(self) -> Optional[Path]:
        return self._path

    def effective_stop_command(self) -> Optional[list[str]]:
        if self.stop_command is not None:
            return self.stop_command or None
        if self.kind == "docker":
            return ["docker", "stop", "--time", str(int(STOP_GRACE_S)), "{container}"]
        return None


def parse_definition(path: Path) -> ServerDefinition:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ServerError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ServerError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML: "
                          f"{getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ServerError(f"{path}: expected a mapping of definition fields")
    try:
        d = ServerDefinition.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        msg = "unknown key" if first["type"] == "extra_forbidden" else msg
        raise ServerError(f"{path}: {field + ': ' if field else ''}{msg}") from None
    d._path = path
    return d


def default_search_dirs() -> list[Path]:
    return [Path.cwd() / "servers", REPO_SERVERS]


def _dedupe(dirs: list[Path]) -> list[Path]:
    seen, out = set(), []
    for d in dirs:
        key = Path(d).expanduser().resolve()
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def list_definitions(
        search_dirs: Optional[list[Path]] = None) -> list[tuple[str, Path, Union[ServerDefinition, str]]]:
    """(name, path, definition or the error text) for each *.yaml in the search dirs; earlier dirs win."""
    found: dict[str, tuple[str, Path, Union[ServerDefinition, str]]] = {}
    for d in _dedupe(search_dirs or default_search_dirs()):
        for p in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]) if d.is_dir() else []:
            if p.stem in found:
                continue
            try:
                found[p.stem] = (p.stem, p, parse_definition(p))
            except ServerError as e:
                found[p.stem] = (p.stem, p, str(e))
    return sorted(found.values(), key=lambda t: t[0])


def load_definition(name_or_path: str, search_dirs: Optional[list[Path]] = None) -> ServerDefinition:
    """A definition by name (``<dir>/<name>.yaml`` in the search dirs) or by path."""
    dirs = _dedupe(search_dirs or default_search_dirs())
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        candidates = [p] if p.is_absolute() else [p, *(d / p for d in dirs), *(d.parent / p for d in dirs)]
        for c in candidates:
            if c.is_file():
                return parse_definition(c)
        raise ServerError(f"server definition file not found: {name_or_path}")
    for d in dirs:
        for ext in (".yaml", ".yml"):
            if (d / f"{name_or_path}{ext}").is_file():
                return parse_definition(d / f"{name_or_path}{ext}")
    names = sorted({n for n, _, _ in list_definitions(dirs)})
    raise ServerError(f"no server definition {name_or_path!r} in {', '.join(map(str, dirs))}"
                      f" (available: {', '.join(names) or 'none'})")


# ---------------------------------------------------------------------------------------------- helpers
def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def redact(argv: list[str]) -> list[str]:
    """Hide values that look like secrets (``--api-key X``, ``--token=X``, ``HF_TOKEN=X``)."""
    out, hide_next = [], False
    for a in argv:
        if hide_next:
            out.append("***")
            hide_next = False
        elif a.startswith("-") and _SECRET.search(a.split("=", 1)[0]):
            out.append(a.split("=", 1)[0] + "=***" if "=" in a else a)
            hide_next = "=" not in a
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", a) and _SECRET.search(a.split("=", 1)[0]):
            out.append(a.split("=", 1)[0] + "=***")
        else:
            out.append(a)
    return out


def tail_file(path: Path, n: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


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


@atexit.register
def _stop_all_at_exit() -> None:
    for server in list(_LIVE):
        server.stop_sync(grace_s=5.0)


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
