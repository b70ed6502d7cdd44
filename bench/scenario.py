"""The scenario file: pydantic models of user input, loading, and one-line errors.

Validation happens here, at the boundary; everything downstream receives a frozen
``Scenario`` and may trust it. Unknown keys are rejected everywhere (``extra="forbid"``)
because a misspelt key that is silently ignored produces a benchmark of the wrong thing.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.academic.spec import AcademicSpec
from bench.records import ERROR_CLASSES


def _check_name(v: str) -> str:
    """Names end up in file names, metric labels and reports: a safe, short alphabet only."""
    if not _NAME.fullmatch(v):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '-', '.'")
    return v


class ScenarioError(Exception):
    """A scenario (or something it names) is unusable. ``str()`` is one line for the user."""


class _Strict(BaseModel):
    # No inf/nan anywhere: a bound such as `le=86_400` is all that stands between `.inf` and a hang.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Load-plan ceilings: past them a typo (10**12 users) exhausts memory or file descriptors before it measures.
MAX_CONCURRENCY = 100_000
MAX_RATE_PER_S = 100_000.0
MAX_LEVELS = 1_000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")  # an RFC 9110 token
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "x-request-id"}
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]{0,127})\}")  # `${NAME}` in a header value: from the environment
_CREDENTIAL_HEADER = re.compile(r"^(authorization|proxy-authorization|cookie)$|key|token|secret|passw|auth", re.I)


def _check_headers(v: dict[str, str]) -> dict[str, str]:
    """Names and values go verbatim onto the wire: tokens, no line breaks (request smuggling), latin-1.

    A value is never echoed in the error: it may be a credential."""
    if len(v) > 64:
        raise ValueError("at most 64 headers")
    for name, value in v.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name[:40]!r} is not a valid HTTP token")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by benchbox itself")
        if _CREDENTIAL_HEADER.search(name) and not ENV_REF.search(value):
            raise ValueError(f"header {name!r} carries a credential: write its value as ${{ENV_VAR}} (read from "
                             "the environment at run time, never stored) or use api_key_env")
        if len(value) > 8192 or not value.isprintable() or any(ord(c) > 255 for c in value):
            raise ValueError(f"header {name!r}: the value must be printable latin-1 text without line breaks, "
                             "at most 8192 characters")
    return v


def _netloc(url: str) -> str:
    rest = url.split("://", 1)[1] if "://" in url else ""
    return rest.split("/", 1)[0]


def _check_url_port(v: str) -> None:
    port = urlsplit(v).port if "[" not in v else None
    if port == 0:
        raise ValueError("port 0 is not a port to connect to")


_URL = re.compile(r"^https?://[^\s/:@]+(:\d{1,5})?(/\S*)?$")  # no user:password@: URLs are logged
_GRPC_URL = re.compile(r"^grpcs?://[^\s/:]+:\d{1,5}$")  # triton-grpc targets: host and port, nothing else
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class ManagedServerSpec(_Strict):
    """A server benchbox launches itself (see ``servers/*.yaml``) instead of a URL."""

    definition: str = Field(description="name of servers/<definition>.yaml, or a path to a definition file")
    model: Optional[str] = Field(None, description="bundled model name (benchbox server models) or a GGUF path")
    args: list[str] = Field(default_factory=list, description="extra command-line arguments")
    env: dict[str, str] = Field(default_factory=dict)
    startup_timeout_s: Optional[float] = Field(None, gt=0, le=86_400)
    cold_requests: int = Field(3, ge=0, le=1000, description="first requests after ready, reported as cold")


class TritonOptions(_Strict):
    """Triton targets (protocols triton-generate, triton-grpc): which backend's inputs to send."""

    backend: Literal["vllm", "tensorrtllm"] = Field(
        "vllm", description="vllm: text_input + sampling_parameters; tensorrtllm: the ensemble/BLS inputs")
    model_version: str = Field("", description="empty: the server's version policy")
    additional_outputs: bool = Field(
        True, description="vllm backend r24.12+: ask for finish_reason and token counts")
    inputs: dict[str, Any] = Field(default_factory=dict, description="extra inputs sent as they are")


class Target(_Strict):
    name: str
    role: Literal["baseline", "candidate"]
    url: Optional[str] = None
    server: Optional[ManagedServerSpec] = None
    protocol: Literal["openai-chat", "openai-completions", "tgi-generate", "triton-generate",
                      "triton-grpc"] = "openai-chat"
    model: Optional[str] = Field(None, description="model name sent in each request (managed: the server's model)")
    api_key_env: Optional[str] = Field(None, description="environment variable holding the API key")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(120.0, gt=0, le=86_400)
    max_response_bytes: Optional[int] = Field(
        None, ge=1024, le=1 << 36,
        description="cap on the bytes read for one response (default: derived from max_tokens)")
    metrics_url: Optional[str] = None
    tls: "Tls" = Field(default_factory=lambda: Tls(), description="certificate checks for https URLs")
    triton: Optional[TritonOptions] = None
    # What the scenario author knows about the model (compression facts for the manifest).
    facts: dict[str, Any] = Field(default_factory=dict)

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))
    _headers = field_validator("headers")(classmethod(lambda cls, v: _check_headers(v)))

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _ENV_NAME.fullmatch(v):
            raise ValueError("must be the name of an environment variable (letters, digits, '_')")
        return v

    @field_validator("url", "metrics_url")
    @classmethod
    def _url(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and _GRPC_URL.fullmatch(v):
            return v  # allowed for triton-grpc only (checked below)
        if v is not None and "@" in _netloc(v):
            raise ValueError("credentials in a URL would be written to the manifest and logs; "
                             "use api_key_env (or headers) instead of user:password@")
        if v is not None and not _URL.fullmatch(v):
            raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:8080, got {v[:200]!r}")
        if v is not None:
            _check_url_port(v)
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _url_or_server(self) -> "Target":
        if (self.url is None) == (self.server is None):
            raise ValueError("give exactly one of 'url' (an existing endpoint) or 'server' (launched by benchbox)")
        grpc = self.url is not None and self.url.startswith("grpc")
        if self.protocol == "triton-grpc" and self.server is not None:
            raise ValueError("protocol triton-grpc needs url: grpc://host:port (managed Triton targets "
                             "use protocol triton-generate)")
        if grpc != (self.protocol == "triton-grpc"):
            raise ValueError("protocol triton-grpc takes url: grpc://host:port (grpcs:// for TLS), "
                             "and grpc:// URLs need protocol triton-grpc")
        if self.metrics_url is not None and self.metrics_url.startswith("grpc"):
            raise ValueError("metrics_url: expected an http(s) URL such as http://127.0.0.1:8002/metrics")
        if self.triton is not None and not self.protocol.startswith("triton"):
            raise ValueError("'triton' options apply to protocols triton-generate and triton-grpc only")
        if self.protocol.startswith("triton") and self.server is not None and self.model is None:
            raise ValueError("a managed Triton target needs 'model': the model's name in its model repository "
                             "(server.model is the repository folder), e.g. model: vllm_model")
        if self.model is None:
            if self.server is None:
                raise ValueError("'model' is required for a target given by url (the name sent in each request)")
            # Managed servers are launched with --alias <model>, so the catalog name is the served name.
            object.__setattr__(self, "model", self.server.model or self.server.definition)
        return self


class Sampling(_Strict):
    """Always sent explicitly: servers apply hidden defaults otherwise."""

    temperature: float = Field(0.0, ge=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(128, ge=1, le=1_000_000)
    seed: Optional[int] = 0
    stop: list[str] = Field(default_factory=list)
    logprobs: Optional[int] = Field(
        None, ge=0, le=20,
        description="ask for the top-k logprobs of each token (confidence for calibration, fidelity)")
    tools: Literal["prompt", "api"] = Field(
        "prompt", description="prompt: items describe their tools in the messages; api: an item's "
                              "meta.tools go out as the OpenAI `tools` field (chat), answers come back as tool_calls")


class Warmup(_Strict):
    """Excluded from statistics (kept in records, flagged). Either or both may be set."""

    seconds: float = Field(0.0, ge=0, le=86_400)
    requests: int = Field(0, ge=0, le=10_000_000)


class Retries(_Strict):
    """Opt-in retries (default: none, a 429 is a counted failure). Every attempt is its own record;
    an attempt that a retry replaced is marked ``retried`` and kept out of the latencies, the error
    rate and quality, so a retry never hides in the numbers."""

    max: int = Field(2, ge=1, le=10, description="retries after the first attempt")
    on: list[Union[int, str]] = Field(
        default_factory=lambda: [429, 503], min_length=1,
        description="HTTP statuses (e.g. 429, 503) and/or error classes (e.g. connect) that are retried")
    respect_retry_after: bool = Field(True, description="wait what the server's Retry-After says")
    max_wait_s: float = Field(10.0, ge=0, le=600, description="cap on any one wait")
    backoff_s: float = Field(0.5, ge=0, le=600, description="without Retry-After: wait backoff_s * 2^(n-1)")

    @field_validator("on")
    @classmethod
    def _known(cls, v: list[Union[int, str]]) -> list[Union[int, str]]:
        classes = [c for c in ERROR_CLASSES if c != "cancelled"]
        for x in v:
            if isinstance(x, int) and not 400 <= x <= 599:
                raise ValueError(f"HTTP statuses to retry are 400-599, got {x}")
            if isinstance(x, str) and x not in classes:
                raise ValueError(f"unknown error class {x!r}; valid: {', '.join(classes)}")
        return v


class Load(_Strict):
    pattern: Literal["concurrency", "rate"] = "concurrency"
    levels: list[float] = Field(min_length=1, max_length=MAX_LEVELS)
    arrival: Literal["constant", "poisson"] = Field("poisson", description="rate mode only")
    max_in_flight: Optional[int] = Field(None, ge=1, le=MAX_CONCURRENCY,
                                         description="rate mode: cap on requests in flight")
    warmup: Warmup = Field(default_factory=Warmup)
    duration_s: Optional[float] = Field(None, gt=0, le=86_400)
    requests: Optional[int] = Field(None, ge=1, le=100_000_000)
    cooldown_s: float = Field(0.0, ge=0, le=3_600)
    stop_error_rate: Optional[float] = Field(None, gt=0, le=1)
    retries: Optional[Retries] = Field(None, description="retry failed requests; default never")
    seed: int = 0

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup_shorthand(cls, v: Any) -> Any:
        # `warmup: 5` means five seconds; `warmup: {requests: 10}` is explicit.
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return {"seconds": v}
        return v

    @model_validator(mode="after")
    def _check(self) -> "Load":
        if self.duration_s is None and self.requests is None:
            raise ValueError("set 'duration_s' and/or 'requests' to say when a level ends")
        for level in self.levels:
            if not math.isfinite(level) or level <= 0:
                raise ValueError("levels must be positive, finite numbers")
            if self.pattern == "concurrency" and level != int(level):
                raise ValueError("concurrency levels must be whole numbers")
            if self.pattern == "concurrency" and level > MAX_CONCURRENCY:
                raise ValueError(f"concurrency levels must be at most {MAX_CONCURRENCY} users")
            if self.pattern == "rate" and level > MAX_RATE_PER_S:
                raise ValueError(f"rate levels must be at most {MAX_RATE_PER_S:g} requests/s")
        return self


class Slo(_Strict):
    """Service-level objective; stored now, used for capacity and gates."""

    ttft_p95_ms: Optional[float] = Field(None, gt=0)
    ttft_p99_ms: Optional[float] = Field(None, gt=0)
    itl_p95_ms: Optional[float] = Field(None, gt=0)
    e2e_p95_ms: Optional[float] = Field(None, gt=0)
    error_rate: Optional[float] = Field(None, ge=0, le=1)


class QualitySpec(_Strict):
    """The quality pass over the captured responses (after the sweep, never in the hot path)."""

    scorers: list[dict[str, Any]] = Field(
        default_factory=list, description="each {name: <scorer>, ...config}; see bench/scoring")
    primary: Optional[str] = Field(None, description="key of the headline outcome (default: first scorer's)")
    by_level: bool = Field(False, description="also aggregate quality per load level")
    min_slice_n: int = Field(30, ge=1, description="slices with fewer items get a stability warning")
    rare_label_share: float = Field(0.05, gt=0, lt=1, description="labels rarer than this share are 'rare'")

    @field_validator("scorers")
    @classmethod
    def _named(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, spec in enumerate(v):
            if not isinstance(spec.get("name"), str):
                raise ValueError(f"scorer {i} needs a 'name'")
        return v


class Observability(_Strict):
    """Live metrics for Grafana and server-side metrics during the run."""

    prometheus_port: Optional[int] = Field(None, ge=0, le=65535, description="serve live metrics (0: any port)")
    prometheus_host: str = "127.0.0.1"
    grace_s: float = Field(15.0, ge=0, le=3600, description="keep serving after the run for a last scrape")
    pushgateway: Optional[str] = Field(None, description="also push the final values here (short runs)")
    scrape_server_metrics: bool = Field(True, description="poll each target's /metrics during the levels")
    scrape_interval_s: float = Field(1.0, gt=0, le=60)


class Tls(_Strict):
    """Certificate checks for an https target: on by default; ``benchbox sweep --insecure`` turns them off."""

    verify: bool = Field(True, description="verify the server's certificate chain and host name")
    ca_file: Optional[str] = Field(None, description="PEM file of CA certificates to trust (relative: scenario folder)")


class DatasetSpec(_Strict):
    path: str
    limit: Optional[int] = Field(None, ge=1, description="use the first N items (after slice filter)")
    slices: list[str] = Field(default_factory=list, description="keep items having any of these slices")


class Scenario(_Strict):
    name: str
    description: str = ""
    dataset: DatasetSpec
    targets: list[Target] = Field(min_length=1)
    sampling: Sampling = Field(default_factory=Sampling)
    load: Load
    repeats: int = Field(1, ge=1, le=100)
    slo: Slo = Field(default_factory=Slo)
    gates: list[str] = Field(default_factory=list, description="acceptance gates, product language")
    quality: QualitySpec = Field(default_factory=QualitySpec)
    observability: Observability = Field(default_factory=Observability)
    pricing: Optional["Pricing"] = None
    router: Optional["Router"] = None
    academic: Optional[AcademicSpec] = None  # `benchbox academic` (bench/academic): informational, never a gate

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @model_validator(mode="after")
    def _targets(self) -> "Scenario":
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {', '.join(dupes)}")
        if sum(t.role == "baseline" for t in self.targets) > 1:
            raise ValueError("at most one target may have role 'baseline'")
        return self


class LoadedScenario:
    """A validated scenario plus where it came from (for relative paths and hashing)."""

    def __init__(self, scenario: Scenario, path: Path, raw_bytes: bytes):
        self.scenario = scenario
        self.path = path
        self.sha256 = hashlib.sha256(raw_bytes).hexdigest()

    @property
    def folder(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """Resolve a path named in the scenario relative to the scenario's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.folder / p)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    lines = {}
    for key_node, _ in node.value:
        try:
            lines[loader.construct_object(key_node)] = key_node.start_mark.line + 1
        except Exception:  # unhashable keys are reported by pydantic later
            pass
    loader.key_lines[id(mapping)] = (node.start_mark.line + 1, lines)
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# What a scenario file may be. Aliases are fine, but a "billion laughs" document (aliases of aliases)
# would expand to more nodes than any scenario has: the *expanded* size is bounded, before constructing.
MAX_SCENARIO_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp", "map",
                                                    "seq", "merge")}
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(root: yaml.Node, loader: yaml.SafeLoader) -> Optional[tuple[int, str]]:
    """(line, problem) for the first thing no scenario needs, else None. Iterative (no recursion limit)."""
    sizes: dict[int, int] = {}  # id(node) -> expanded size; aliased nodes are shared objects, counted once
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        line = node.start_mark.line + 1
        if children_done:
            kids = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
            sizes[id(node)] = 1 + sum(sizes[id(k)] for k in kids)
            if sizes[id(node)] > MAX_NODES:
                return line, f"the document expands to more than {MAX_NODES} values (alias bomb?)"
            continue
        if id(node) in sizes:
            continue
        if depth > MAX_DEPTH:
            return line, f"nested more than {MAX_DEPTH} levels deep"
        if node.tag not in _PLAIN_TAGS:
            return line, f"unsupported YAML type {node.tag!r} (plain mappings, lists and scalars only)"
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _INT_TAG:
                value = loader.construct_yaml_int(node)
                if not -(2**63) <= value < 2**63:
                    return line, "integer out of the 64-bit range"
            sizes[id(node)] = 1
            continue
        stack.append((node, depth, True))
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    k = (key.tag, key.value)
                    if k in seen:
                        return key.start_mark.line + 1, f"duplicate key {key.value[:60]!r} (first on line {seen[k]})"
                    seen[k] = key.start_mark.line + 1
                stack.append((key, depth + 1, False))
                stack.append((value, depth + 1, False))
        else:
            stack.extend((child, depth + 1, False) for child in node.value)
    return None


def _line_of(data: Any, loc: tuple, key_lines: dict) -> Optional[int]:
    """Best-effort YAML line for a pydantic error location."""
    line = None
    node = data
    for part in loc:
        if isinstance(node, dict):
            entry = key_lines.get(id(node))
            if entry:
                line = entry[1].get(part, entry[0])
            node = node.get(part) if part in node else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            if isinstance(node, dict) and id(node) in key_lines:
                line = key_lines[id(node)][0]
        else:
            break
    return line


def format_validation_error(path: Path, err: ValidationError, data: Any, key_lines: dict) -> str:
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    field = ".".join(repr(p)[1:-1] if isinstance(p, str) else str(p) for p in loc) or "(top level)"
    line = _line_of(data, loc, key_lines)
    where = f"{path}:{line}" if line else str(path)
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (not part of the scenario format)"
    elif first["type"] == "missing":
        msg = "required field is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    msg = " ".join(msg.split())[:300]  # always one short line
    more = len(err.errors()) - 1
    suffix = f" (+{more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {field}: {msg}{suffix}"


def parse_scenario(path: Path, raw: bytes) -> LoadedScenario:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if len(raw) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{path}: {len(raw)} bytes; a scenario file is at most {MAX_SCENARIO_BYTES} bytes")
    try:
        loader = _LineLoader(text)  # the reader rejects control characters here already
    except yaml.YAMLError as e:
        line = text.count("\n", 0, getattr(e, "position", 0)) + 1
        raise ScenarioError(f"{path}:{line}: invalid YAML: {' '.join(str(e).split())[:200]}") from None
    loader.key_lines = {}
    try:
        node = loader.get_single_node()
        problem = _check_nodes(node, loader) if node is not None else None
        if problem is not None:
            raise ScenarioError(f"{path}:{problem[0]}: {problem[1]}")
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ScenarioError(f"{where}: invalid YAML: {' '.join(str(problem).split())[:200]}") from None
    except (RecursionError, MemoryError):
        raise ScenarioError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping of scenario fields at the top level")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(format_validation_error(path, e, data, loader.key_lines)) from None
    return LoadedScenario(scenario, path, raw)


def load_scenario(path: Union[str, Path], allow_paths: tuple[Union[str, Path], ...] = ()) -> LoadedScenario:
    """Read and validate a scenario file; the dataset (and every file it names) must exist and lie
    where scenarios may read (see ``check_file_references``).

    Raises ScenarioError with one line naming file, field path (and line) and the problem.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SCENARIO_BYTES + 1)  # never slurp /dev/zero
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
    loaded = parse_scenario(path, raw)
    ds = loaded.resolve(loaded.scenario.dataset.path)
    if not ds.is_file():
        raise ScenarioError(f"{path}: dataset.path: no such file {ds}")
    check_file_references(loaded, allow_paths)
    return loaded


# -- where a scenario may read files ----------------------------------------------------------------------
# A scenario names files whose *contents are sent* to the endpoints (the dataset's prompts, a judge's
# rubric) or echoed into reports. A scenario from elsewhere (a pull request, a colleague) must not be able
# to turn `dataset: ~/.ssh/id_rsa` into prompts sent to a URL of its choosing. So every such file must
# resolve (symlinks followed) inside one of: the scenario's project folder (the nearest folder above the
# scenario holding pyproject.toml or .git, else the scenario's own folder), benchbox's bundled quality/
# folder, or a folder the *user* allowed: `--allow-path DIR` or BENCHBOX_ALLOW_PATHS (os.pathsep-separated).
# Not covered: managed-server definitions and model files (a definition is a command line: a scenario
# that launches servers is code, review it like code) and tls.ca_file (read for verification, never sent).
ALLOW_PATHS_ENV = "BENCHBOX_ALLOW_PATHS"
BUNDLED_QUALITY = Path(__file__).resolve().parent.parent / "quality"
_SCORER_FILE_KEYS = ("schema", "rubric", "human_labels")


def project_root(scenario_path: Path) -> Path:
    folder = scenario_path.resolve().parent
    for d in (folder, *folder.parents):
        if (d / "pyproject.toml").is_file() or (d / ".git").exists():
            return d
    return folder


def file_references(sc: "Scenario") -> list[tuple[str, str]]:
    """(field, path as written) of every file the scenario reads data from."""
    refs = [("dataset.path", sc.dataset.path)]
    for i, spec in enumerate(sc.quality.scorers):
        refs += [(f"quality.scorers.{i}.{k}", spec[k]) for k in _SCORER_FILE_KEYS if isinstance(spec.get(k), str)]
    return refs


def check_file_references(loaded: "LoadedScenario", allow_paths: tuple[Union[str, Path], ...] = ()) -> None:
    """Raise ScenarioError for the first data file outside the allowed folders (see above)."""
    env = [p for p in os.environ.get(ALLOW_PATHS_ENV, "").split(os.pathsep) if p]
    allowed = (Path(p).expanduser().resolve() for p in (*allow_paths, *env))
    roots = [project_root(loaded.path), BUNDLED_QUALITY, *allowed]
    for field_name, written in file_references(loaded.scenario):
        target = loaded.resolve(written).resolve()
        if not any(target == r or target.is_relative_to(r) for r in roots):
            raise ScenarioError(
                f"{loaded.path}: {field_name}: {written[:200]!r} resolves to {target}, outside the scenario's "
                f"project folder {roots[0]}; allow it with --allow-path DIR or {ALLOW_PATHS_ENV}")
    for i, t in enumerate(loaded.scenario.targets):
        if t.tls.ca_file and not loaded.resolve(t.tls.ca_file).is_file():
            raise ScenarioError(f"{loaded.path}: targets.{i}.tls.ca_file: no such file {loaded.resolve(t.tls.ca_file)}")


class Pricing(_Strict):
    """What serving costs (bench/cost.py). Keys are target names; ``default`` applies to every
    target not named. Both kinds of price may be given; a target's cost per request is their sum."""

    # inf/nan reach _prices, whose message names the target.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=True)

    per_instance_hour: dict[str, float] = Field(
        default_factory=dict, description="target name (or 'default') -> price of one instance per hour")
    per_million_output_tokens: dict[str, float] = Field(
        default_factory=dict, description="target name (or 'default') -> price per million output tokens")
    currency: str = Field("USD", min_length=1, max_length=16)

    @field_validator("per_instance_hour", "per_million_output_tokens")
    @classmethod
    def _prices(cls, v: dict[str, float]) -> dict[str, float]:
        for name, price in v.items():
            if not math.isfinite(price) or price < 0:
                raise ValueError(f"{name}: prices must be finite and >= 0")
        return v

    @model_validator(mode="after")
    def _some(self) -> "Pricing":
        if not self.per_instance_hour and not self.per_million_output_tokens:
            raise ValueError("give 'per_instance_hour' and/or 'per_million_output_tokens'")
        return self


class Router(_Strict):
    """A blended system: every request goes to ``small`` first and falls back to ``large`` when
    the small model's response triggers one of ``policies`` (bench/router.py)."""

    small: str = Field(description="the candidate target tried first")
    large: str = Field(description="the target (usually the baseline) answering the fallbacks")
    policies: list[
        Literal["parse_failure", "schema_failure", "refusal", "low_confidence", "transport_error"]
    ] = Field(default_factory=lambda: ["parse_failure", "schema_failure", "refusal", "transport_error"],
              min_length=1, description="what in the small model's response sends the request to the large")
    confidence_threshold: Optional[float] = Field(
        None, ge=0, le=1, description="low_confidence: fall back when confidence < this")
    thresholds: list[float] = Field(
        default_factory=lambda: [round(i * 0.05, 2) for i in range(21)], min_length=1,
        description="confidence thresholds of the coverage-vs-accuracy sweep")

    @field_validator("thresholds")
    @classmethod
    def _unit(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= t <= 1.0 for t in v):
            raise ValueError("thresholds must lie in [0, 1]")
        return sorted(set(v))

    @model_validator(mode="after")
    def _check(self) -> "Router":
        if self.small == self.large:
            raise ValueError("'small' and 'large' must be different targets")
        if "low_confidence" in self.policies and self.confidence_threshold is None:
            raise ValueError("policy 'low_confidence' needs 'confidence_threshold'")
        return self
