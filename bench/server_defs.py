"""Server definitions: parse, validate and find ``servers/*.yaml`` files, and render their templates.

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
scenario are appended verbatim (not rendered). Launching and stopping a server is ``bench.serving``'s job.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

REPO_SERVERS = Path(__file__).resolve().parent.parent / "servers"
COMPUTED = {"port", "metrics_port", "model_path", "model_dir", "model_file", "llama_server", "container"}
OVERRIDABLE = {"host": "127.0.0.1", "threads": "auto", "model": None, "hf_cache": None}
BUILTIN = COMPUTED | set(OVERRIDABLE)
STOP_GRACE_S = 10.0
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
