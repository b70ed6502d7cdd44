"""``llama-perplexity``: command lines, running one, and parsing what it prints.

Two modes are used. Plain (``--kl-divergence-base FILE`` alone) scores the text and *writes* the model's
logits for every scored token to FILE; its result is "Final estimate: PPL = x +/- e" (on stderr). KL mode
(``--kl-divergence --kl-divergence-base FILE``) reads those logits back while running another model over the
same tokens and prints (on stdout) the candidate's and the baseline's perplexity, KL divergence statistics,
Δp statistics and the "same top p" rate. Both streams are captured together and parsed as one text.

Units in the parsed dicts: perplexities as printed; KLD in nats; Δp and "same top" as fractions (the tool
prints percent). A value the tool did not print is absent (never 0).
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from bench.procs import tail_file


class AcademicError(Exception):
    """An academic measurement could not be made. ``str()`` is one line for the user."""


def perplexity_cmd(binary: Path, model: Path, text: Path, ctx: int, threads: int, *,
                   chunks: Optional[int] = None, save_logits: Optional[Path] = None,
                   kld_base: Optional[Path] = None) -> list[str]:
    """The argv. ``save_logits``: plain mode writing the logits file; ``kld_base``: KL mode reading it."""
    if save_logits is not None and kld_base is not None:
        raise ValueError("either save_logits (the baseline) or kld_base (a candidate), not both")
    cmd = [str(binary), "-m", str(model), "-f", str(text), "-c", str(ctx), "-t", str(threads),
           "-b", str(max(ctx, 512))]
    if chunks is not None:
        cmd += ["--chunks", str(chunks)]
    if save_logits is not None:
        cmd += ["--kl-divergence-base", str(save_logits)]
    if kld_base is not None:
        cmd += ["--kl-divergence", "--kl-divergence-base", str(kld_base)]
    return cmd


def run_tool(cmd: list[str], log_path: Path, timeout_s: float = 1800.0) -> tuple[str, float]:
    """Run ``cmd`` with stdout+stderr appended to ``log_path``; (its output, seconds).

    Raises AcademicError (one line: the tool's own error lines, else its exit code) on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = log_path.stat().st_size if log_path.exists() else 0
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            raise AcademicError(f"{Path(cmd[0]).name} ran past {timeout_s:g} s; log: {log_path}") from None
        except OSError as e:
            raise AcademicError(f"cannot run {cmd[0]}: {e.strerror}") from None
    seconds = time.monotonic() - t0
    with open(log_path, "rb") as f:
        f.seek(start)
        out = f.read().decode("utf-8", "replace")
    if rc != 0:
        errors = tool_errors(out)
        why = "; ".join(errors[-2:]) if errors else f"exit code {rc}"
        raise AcademicError(f"{Path(cmd[0]).name} failed ({why}); log: {log_path}\n" + tail_file(log_path, 8))
    return out, seconds


_ERROR_LINE = re.compile(r"^\s*(?:[\d.]+\s+)?E\s+(.*\S)\s*$")


def tool_errors(text: str) -> list[str]:
    """The tool's error-level log lines (``0.00.204 E perplexity: ...``), without the timestamp."""
    return [m[1] for line in text.splitlines() if (m := _ERROR_LINE.match(line))]


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_FINAL = re.compile(rf"Final estimate: PPL = ({_NUM}) \+/- ({_NUM})")
_CHUNKS = re.compile(r"(?:calculating perplexity|computing) over (\d+) chunks, n_ctx=(\d+)")


def _f(s: str) -> Optional[float]:
    v = float(s)
    return v if math.isfinite(v) else None


def _pct(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v / 100, 10)


def _shape(text: str) -> dict[str, int]:
    m = _CHUNKS.search(text)
    return {"chunks": int(m[1]), "n_ctx": int(m[2])} if m else {}


def parse_perplexity(text: str) -> dict[str, Any]:
    """Plain mode: {"ppl", "ppl_err", "chunks", "n_ctx"}. Raises AcademicError if no final estimate."""
    m = _FINAL.search(text)
    if not m:
        errors = tool_errors(text)
        raise AcademicError("llama-perplexity printed no final estimate"
                            + (f": {errors[-1]}" if errors else ""))
    return {"ppl": _f(m[1]), "ppl_err": _f(m[2]), **_shape(text)}


# "Mean PPL(Q)                   : 128.200984 ±   7.691900" · "99.9%   KLD:   2.977620"
# "Same top p: 55.192 ± 0.904 %"
_ROW = re.compile(rf"^\s*(?P<label>[^:\n]*?)\s*:\s*(?P<v>{_NUM})\s*%?\s*(?:±\s*(?P<e>{_NUM})\s*%?)?\s*$")
_PPL_ROWS = {
    "Mean PPL(Q)": "ppl", "Mean PPL(base)": "ppl_base", "Mean ln(PPL(Q)/PPL(base))": "ln_ppl_ratio",
    "Mean PPL(Q)/PPL(base)": "ppl_ratio", "Mean PPL(Q)-PPL(base)": "ppl_diff",
}
_STAT_NAMES = {"Mean": "mean", "Maximum": "max", "Minimum": "min", "Median": "median", "RMS": "rms"}


def _stat_key(label: str, unit: str) -> Optional[str]:
    """'99.9%   KLD' -> 'p99.9'; 'Mean    KLD' -> 'mean'; 'RMS Δp' -> 'rms'."""
    head = label.replace(unit, "").strip()
    if head.endswith("%"):
        return "p" + head[:-1].strip()
    return _STAT_NAMES.get(head)


def parse_kld(text: str) -> dict[str, Any]:
    """KL mode: the statistics block. Raises AcademicError when it is missing.

    {"ppl": {"value", "err"}, "ppl_base": ..., "ln_ppl_ratio": ..., "ppl_ratio": ..., "ppl_diff": ...,
     "cor_ln_ppl": fraction, "kld": {"mean", "mean_err", "max", "p99.9", ..., "median", ..., "min"},
     "delta_p": {same keys + "rms", "rms_err"; fractions}, "same_top": {"value", "err"} (fraction),
     "chunks", "n_ctx"}"""
    if "====== KL divergence statistics" not in text:
        errors = tool_errors(text)
        raise AcademicError("llama-perplexity printed no KL divergence statistics"
                            + (f": {errors[-1]}" if errors else ""))
    out: dict[str, Any] = {"kld": {}, "delta_p": {}, **_shape(text)}
    section = ""
    for line in text.splitlines():
        if line.startswith("======"):
            section = line.strip("= ").split()[0].lower()  # perplexity | kl | token
            continue
        m = _ROW.match(line)
        if not m or not section:
            continue
        label, v, e = m["label"], _f(m["v"]), (_f(m["e"]) if m["e"] else None)
        if section == "perplexity":
            if label in _PPL_ROWS:
                out[_PPL_ROWS[label]] = {"value": v, "err": e}
            elif label.startswith("Cor(") and v is not None:
                out["cor_ln_ppl"] = _pct(v)
        elif section == "kl" and label.endswith("KLD"):
            key = _stat_key(label, "KLD")
            if key:
                out["kld"][key] = v
                if e is not None:
                    out["kld"][f"{key}_err"] = e
        elif section == "token":
            if label == "Same top p":
                out["same_top"] = {"value": _pct(v), "err": _pct(e)}
            elif "Δp" in label:
                key = _stat_key(label, "Δp")
                if key:
                    out["delta_p"][key] = _pct(v)
                    if e is not None:
                        out["delta_p"][f"{key}_err"] = _pct(e)
    if "mean" not in out["kld"]:
        raise AcademicError("llama-perplexity's KL divergence block has no 'Mean KLD' line")
    return out
