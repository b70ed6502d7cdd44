"""llama-perplexity output parsing (recorded real output) and the baseline-logits cache (a fake tool)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from bench.academic import kld
from bench.academic.perplexity import (
    AcademicError, parse_kld, parse_perplexity, perplexity_cmd, run_tool, tool_errors,
)

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "academic"


def test_plain_mode_final_estimate_from_real_output():
    # Recorded: SmolLM2 Q4_1 on quality/heldout/plain_en.txt, -c 128, saving logits (stderr, then stdout).
    out = parse_perplexity((FIX / "ppl_smollm2_q4_1.txt").read_text())
    assert out == {"ppl": 27.9853, "ppl_err": 2.12946, "chunks": 20, "n_ctx": 128}


def test_kld_mode_statistics_from_real_output():
    out = parse_kld((FIX / "kld_smollm2_q2_k.txt").read_text())
    assert out["ppl"] == {"value": 38.590764, "err": 2.781201}
    assert out["ppl_base"] == {"value": 27.985204, "err": 2.129452}
    assert out["ln_ppl_ratio"] == {"value": 0.321337, "err": 0.025626}
    assert out["ppl_ratio"]["value"] == 1.37897 and out["ppl_diff"]["value"] == 10.60556
    assert out["cor_ln_ppl"] == pytest.approx(0.9416)
    k = out["kld"]
    assert (k["mean"], k["mean_err"], k["max"], k["min"]) == (0.414037, 0.007385, 2.494431, 0.004457)
    assert (k["p99.9"], k["p99.0"], k["p95.0"], k["median"], k["p1.0"]) == (
        1.666562, 1.365112, 0.880654, 0.364344, 0.041571)
    dp = out["delta_p"]  # percent on screen, fractions here
    assert dp["mean"] == pytest.approx(-0.0612) and dp["mean_err"] == pytest.approx(0.00358)
    assert dp["rms"] == pytest.approx(0.14111) and dp["rms_err"] == pytest.approx(0.00508)
    assert dp["p75.0"] == pytest.approx(0.00025) and dp["min"] == pytest.approx(-0.7456)
    assert out["same_top"] == {"value": pytest.approx(0.60476), "err": pytest.approx(0.01378)}
    assert (out["chunks"], out["n_ctx"]) == (20, 128)


def test_missing_blocks_raise_one_line_with_the_tools_error():
    text = ("0.00.204.383 E perplexity: you need at least 256 tokens to evaluate perplexity with a context "
            "of 128\n"
            "0.00.204.384 E perplexity: the data file you provided tokenizes to only 92 tokens\n")
    assert tool_errors(text)[0].startswith("perplexity: you need at least 256 tokens")
    with pytest.raises(AcademicError, match="no final estimate: perplexity: the data file .* only 92 tokens"):
        parse_perplexity(text)
    with pytest.raises(AcademicError, match="no KL divergence statistics"):
        parse_kld((FIX / "ppl_smollm2_q4_1.txt").read_text())


def test_command_lines():
    b, m, t = Path("/bin/llama-perplexity"), Path("/m.gguf"), Path("/t.txt")
    base = perplexity_cmd(b, m, t, 128, 2, save_logits=Path("/x.kld"))
    assert base[:11] == [str(b), "-m", "/m.gguf", "-f", "/t.txt", "-c", "128", "-t", "2", "-b", "512"]
    assert base[-2:] == ["--kl-divergence-base", "/x.kld"] and "--kl-divergence" not in base
    cand = perplexity_cmd(b, m, t, 1024, 4, chunks=5, kld_base=Path("/x.kld"))
    assert cand[cand.index("--chunks") + 1] == "5" and cand[cand.index("-b") + 1] == "1024"
    assert cand[-3:] == ["--kl-divergence", "--kl-divergence-base", "/x.kld"]
    with pytest.raises(ValueError):
        perplexity_cmd(b, m, t, 128, 2, save_logits=Path("/a"), kld_base=Path("/b"))


# -- a fake llama-perplexity: writes the logits file in plain mode, replays recorded output ------------
FAKE = f"""#!{sys.executable}
import sys, os
args = sys.argv[1:]
log = os.environ.get("FAKE_PPL_CALLS")
if log:
    open(log, "a").write(" ".join(args) + "\\n")
if os.environ.get("FAKE_PPL_FAIL"):
    print("0.00.1 E perplexity: you need at least 256 tokens to evaluate perplexity with a context of 128")
    sys.exit(1)
fix = {str(FIX)!r}
if "--kl-divergence" in args:
    sys.stdout.write(open(os.path.join(fix, "kld_smollm2_q2_k.txt")).read())
else:
    out = args[args.index("--kl-divergence-base") + 1] if "--kl-divergence-base" in args else None
    if out:
        open(out, "wb").write(b"\\0" * 1000)
    sys.stdout.write(open(os.path.join(fix, "ppl_smollm2_q4_1.txt")).read())
"""


@pytest.fixture()
def tool(tmp_path, monkeypatch):
    exe = tmp_path / "llama-perplexity"
    exe.write_text(FAKE)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    text = tmp_path / "text.txt"
    text.write_text("some held-out text\n")
    monkeypatch.setenv("FAKE_PPL_CALLS", str(tmp_path / "calls.txt"))
    return kld.Tool(exe, "11434.0.0", text, "t" * 64, ctx=128, threads=2)


def _calls(tmp_path: Path) -> list[str]:
    p = tmp_path / "calls.txt"
    return p.read_text().splitlines() if p.exists() else []


def test_baseline_logits_are_cached_per_key(tmp_path, tool):
    cache = tmp_path / "cache"
    path, ppl, cached = kld.baseline_logits(Path("/m.gguf"), "a" * 64, tool, tmp_path / "b.log", cache=cache)
    assert not cached and path.stat().st_size == 1000 and ppl["ppl"] == 27.9853 and ppl["chunks"] == 20
    assert path.parent == cache and not list(cache.glob(".*tmp"))
    again = kld.baseline_logits(Path("/m.gguf"), "a" * 64, tool, tmp_path / "b.log", cache=cache)
    assert again[0] == path and again[2] is True and again[1]["ppl"] == 27.9853 and len(_calls(tmp_path)) == 1
    # Another ctx, another model or another llama.cpp version is another key; a truncated file is not trusted.
    other = kld.Tool(tool.binary, tool.version, tool.text, tool.text_sha256, ctx=256, threads=2)
    assert kld.baseline_logits(Path("/m.gguf"), "a" * 64, other, tmp_path / "b.log", cache=cache)[0] != path
    assert kld.baseline_logits(Path("/m.gguf"), "b" * 64, tool, tmp_path / "b.log", cache=cache)[0] != path
    with open(path, "r+b") as f:
        f.truncate(10)
    assert kld.baseline_logits(Path("/m.gguf"), "a" * 64, tool, tmp_path / "b.log", cache=cache)[2] is False
    assert len(_calls(tmp_path)) == 4


def test_failed_baseline_leaves_no_cache_entry(tmp_path, tool, monkeypatch):
    monkeypatch.setenv("FAKE_PPL_FAIL", "1")
    cache = tmp_path / "cache"
    with pytest.raises(AcademicError, match="you need at least 256 tokens"):
        kld.baseline_logits(Path("/m.gguf"), "a" * 64, tool, tmp_path / "b.log", cache=cache)
    assert not cache.exists() or not list(cache.iterdir())
    key = kld.logits_key("a" * 64, tool)
    assert kld.cached_baseline(key, cache) is None


def test_fidelity_entries(tmp_path, tool):
    cache = tmp_path / "cache"
    out = kld.fidelity(("base", Path("/b.gguf"), "a" * 64),
                       [("c1", Path("/c1.gguf"), "c" * 64), ("same", Path("/b2.gguf"), "a" * 64)],
                       tool, tmp_path / "logs", cache=cache)
    assert out["base"]["role"] == "baseline" and out["base"]["ppl"] == {"value": 27.9853, "err": 2.12946}
    assert out["c1"]["kld"]["mean"] == 0.414037 and out["c1"]["same_top"]["value"] == pytest.approx(0.60476)
    assert out["same"]["note"].startswith("same file as the baseline")
    calls = _calls(tmp_path)
    assert sum("--kl-divergence " in c + " " for c in calls) == 2
    assert (tmp_path / "logs" / "perplexity-c1.log").exists()
    # Without a baseline: perplexity only, and a failure is the entry's one-line error.
    os.environ["FAKE_PPL_FAIL"] = "1"
    try:
        alone = kld.fidelity(None, [("c1", Path("/c1.gguf"), "c" * 64)], tool, tmp_path / "logs", cache=cache)
    finally:
        del os.environ["FAKE_PPL_FAIL"]
    assert "you need at least 256 tokens" in alone["c1"]["error"] and "\n" not in alone["c1"]["error"]


def test_run_tool_reports_timeout_and_missing_binary(tmp_path):
    with pytest.raises(AcademicError, match="cannot run"):
        run_tool([str(tmp_path / "nope")], tmp_path / "x.log")
    with pytest.raises(AcademicError, match="ran past 0.5 s"):
        run_tool([sys.executable, "-c", "import time; time.sleep(5)"], tmp_path / "x.log", timeout_s=0.5)
