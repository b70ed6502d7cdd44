"""Fidelity of compressed GGUF models to their baseline with ``llama-perplexity``: the baseline's logits
once (cached), then each candidate's KL divergence against them.

The baseline logits file holds every scored token's full distribution (vocabulary × 2 bytes per token: about
120 MB for SmolLM2 and 630 MB for Gemma 3 on the bundled 12 kB text at ctx 128), so it is made once per
(model sha256, text sha256, ctx, chunks, llama.cpp version) and kept under ``<cache>/academic/``, with a
``.json`` sidecar holding the key and the baseline's own perplexity. A sidecar is written only after the
logits file is complete, so a run killed half-way leaves nothing that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from bench.academic.perplexity import AcademicError, parse_kld, parse_perplexity, perplexity_cmd, run_tool
from bench.catalog import cache_root

Say = Callable[[str], None]


@dataclass(frozen=True)
class Tool:
    """The llama-perplexity binary and the settings every run of one comparison shares."""

    binary: Path
    version: str
    text: Path
    text_sha256: str
    ctx: int = 128
    chunks: Optional[int] = None
    threads: int = 2
    timeout_s: float = 1800.0


def academic_cache() -> Path:
    return cache_root() / "academic"


def logits_key(model_sha256: str, tool: Tool) -> dict[str, Any]:
    return {"model_sha256": model_sha256, "text_sha256": tool.text_sha256, "ctx": tool.ctx,
            "chunks": tool.chunks, "llamacpp": tool.version}


def logits_path(key: dict[str, Any], cache: Optional[Path] = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return (cache or academic_cache()) / f"logits-{key['model_sha256'][:12]}-c{key['ctx']}-{digest}.kld"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def cached_baseline(key: dict[str, Any],
                    cache: Optional[Path] = None) -> Optional[tuple[Path, dict[str, Any]]]:
    """(logits file, baseline perplexity) if a complete cache entry with this exact key exists."""
    path = logits_path(key, cache)
    try:
        side = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    if side.get("key") != key or not path.is_file() or path.stat().st_size != side.get("size_bytes"):
        return None
    return path, side["perplexity"]


def baseline_logits(model: Path, model_sha256: str, tool: Tool, log_path: Path, say: Optional[Say] = None,
                    cache: Optional[Path] = None) -> tuple[Path, dict[str, Any], bool]:
    """(logits file, the baseline's perplexity, came from cache?). Runs the baseline once per key."""
    key = logits_key(model_sha256, tool)
    hit = cached_baseline(key, cache)
    if hit:
        return hit[0], hit[1], True
    path = logits_path(key, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if say:
        say(f"benchbox: baseline logits for {model.name} (ctx {tool.ctx}) -> {path}")
    try:
        out, seconds = run_tool(perplexity_cmd(tool.binary, model, tool.text, tool.ctx, tool.threads,
                                               chunks=tool.chunks, save_logits=tmp), log_path, tool.timeout_s)
        ppl = parse_perplexity(out) | {"seconds": round(seconds, 2)}
        if not tmp.is_file():
            raise AcademicError(f"llama-perplexity wrote no logits file ({tmp}); log: {log_path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    side = {"key": key, "size_bytes": path.stat().st_size, "model": str(model), "perplexity": ppl}
    side_tmp = _sidecar(path).with_name(_sidecar(path).name + f".{os.getpid()}.tmp")
    side_tmp.write_text(json.dumps(side, indent=2) + "\n")
    os.replace(side_tmp, _sidecar(path))
    return path, ppl, False


def candidate_vs_baseline(model: Path, logits: Path, tool: Tool, log_path: Path) -> dict[str, Any]:
    """The candidate's perplexity, KL divergence, Δp and same-top rate against the baseline's logits."""
    out, seconds = run_tool(perplexity_cmd(tool.binary, model, tool.text, tool.ctx, tool.threads,
                                           chunks=tool.chunks, kld_base=logits), log_path, tool.timeout_s)
    return parse_kld(out) | {"seconds": round(seconds, 2)}


def plain_perplexity(model: Path, tool: Tool, log_path: Path) -> dict[str, Any]:
    """Perplexity alone (no baseline to compare with): a temporary logits file is not needed."""
    out, seconds = run_tool(perplexity_cmd(tool.binary, model, tool.text, tool.ctx, tool.threads,
                                           chunks=tool.chunks), log_path, tool.timeout_s)
    return parse_perplexity(out) | {"seconds": round(seconds, 2)}


def fidelity(baseline: Optional[tuple[str, Path, str]], candidates: list[tuple[str, Path, str]], tool: Tool,
             log_dir: Path, say: Optional[Say] = None, cache: Optional[Path] = None) -> dict[str, Any]:
    """Per target (name -> entry) for (name, model path, model sha256) triples.

    The baseline's entry has its perplexity; each candidate's has perplexity, ``kld``, ``same_top``,
    ``delta_p`` and the baseline perplexity on the same tokens. Without a baseline each target gets its
    perplexity alone. A failure is the entry's ``error`` (one line), never an exception."""
    targets: dict[str, Any] = {}
    logits: Optional[Path] = None
    if baseline is not None:
        name, model, sha = baseline
        try:
            logits, ppl, cached = baseline_logits(model, sha, tool, log_dir / f"perplexity-{name}.log", say,
                                                  cache)
            targets[name] = {"role": "baseline", "model": model.name, "model_sha256": sha,
                             "ppl": {"value": ppl["ppl"], "err": ppl["ppl_err"]}, "chunks": ppl.get("chunks"),
                             "n_ctx": ppl.get("n_ctx"), "logits_cached": cached, "logits_file": str(logits)}
        except AcademicError as e:
            targets[name] = {"role": "baseline", "model": model.name, "model_sha256": sha, "error": str(e)}
    for name, model, sha in candidates:
        entry: dict[str, Any] = {"role": "candidate", "model": model.name, "model_sha256": sha}
        log = log_dir / f"perplexity-{name}.log"
        try:
            if logits is not None:
                if say:
                    say(f"benchbox: KL divergence of {name} ({model.name}) against the baseline")
                entry |= candidate_vs_baseline(model, logits, tool, log)
                if baseline is not None and sha == baseline[2]:
                    entry["note"] = "same file as the baseline (identical sha256)"
            else:
                if say:
                    say(f"benchbox: perplexity of {name} ({model.name})")
                ppl = plain_perplexity(model, tool, log)
                entry |= {"ppl": {"value": ppl["ppl"], "err": ppl["ppl_err"]}, "chunks": ppl.get("chunks"),
                          "n_ctx": ppl.get("n_ctx"), "seconds": ppl["seconds"]}
        except AcademicError as e:
            entry["error"] = str(e).splitlines()[0]
        targets[name] = entry
    return targets
