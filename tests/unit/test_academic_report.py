"""The academic section: findings in words, report.html and terminal rendering, the scenario's
``academic:`` block, and ``benchbox academic`` end to end against loopback fakes (no llama.cpp)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.academic import compare
from bench.academic.report import fidelity_rows, render_terminal
from bench.report.html import render_report
from bench.scenario import ScenarioError, parse_scenario
from tests.unit.test_academic_endpoint import fake_server  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]


def _cand(kld: float, err: float = 0.005, quant: str = "Q4_0", sha: str = "c", size: float = 8e7,
          ppl: float = 30.0, same: float = 0.8) -> dict[str, Any]:
    return {"role": "candidate", "kld": {"mean": kld, "mean_err": err, "p99.0": kld * 4},
            "same_top": {"value": same, "err": 0.01}, "ppl": {"value": ppl, "err": 2.0},
            "ppl_base": {"value": 28.0, "err": 2.0}, "delta_p": {"rms": 0.1}, "quantization": quant,
            "model_sha256": sha, "size_bytes": size}


def _quality(**vs: dict[str, Any]) -> dict[str, Any]:
    return {"primary": "label_correct", "targets": {n: {"vs_baseline": {"all": v}} for n, v in vs.items()}}


def _vs(n: int, agree: float, r2w: int, w2r: int, p: float, diff: float) -> dict[str, Any]:
    return {"n_pairs": n, "agreement": {"value": agree, "ci95": [agree - 0.05, min(1, agree + 0.05)]},
            "flips": {"right_to_wrong": r2w, "wrong_to_right": w2r}, "mcnemar_p": p, "difference": diff}


def test_identical_candidates_and_label_order_are_stated():
    llama = {"base": {"role": "baseline", "ppl": {"value": 28.0}},
             "q3": _cand(0.41, quant="Q3_K_S", sha="x"), "q2": _cand(0.41, quant="Q2_K", sha="y"),
             "g3": _cand(0.55, 0.012, quant="Q3_K_S", sha="g3", size=236.7e6, ppl=47.6),
             "g2": _cand(0.48, 0.011, quant="Q2_K", sha="g2", size=237.1e6, ppl=45.5)}
    out = compare.statements(llama, {})
    kinds = {(s["kind"], s["targets"]) for s in out}
    assert ("identical", "q2,q3") in kinds
    ident = next(s for s in out if s["kind"] == "identical")
    assert "different files, most likely holding the same tensors" in ident["text"]
    order = next(s for s in out if s["kind"] == "label_order" and s["targets"] == "g2,g3")
    assert order["text"].startswith("g2 (Q2_K) is closer to the baseline than g3 (Q3_K_S) despite fewer "
                                    "nominal bits")
    assert "g2 226.1 MiB; g3 225.7 MiB" in order["text"]
    noisy = compare.statements(llama, _quality(q2=_vs(120, 0.3, 21, 3, 0.001, -0.15),
                                               q3=_vs(120, 0.31, 20, 3, 0.001, -0.14)))
    ident = next(s for s in noisy if s["kind"] == "identical")
    assert "still differ (21/3 vs 20/3 flips right→wrong/wrong→right): a gap of that size is serving noise" \
        in ident["text"]
    # KLD orders q4_0 ahead of q2_k, the quality pass the other way: said, with whether it is beyond noise.
    ranked = {"q4_0": _cand(0.363, 0.0067), "q2_k": _cand(0.415, 0.0074, quant="Q2_K")}
    q = _quality(q4_0=_vs(120, 0.29, 24, 1, 1e-6, -0.192), q2_k=_vs(120, 0.3, 21, 3, 3e-4, -0.15))
    q["targets"]["q4_0"]["vs_baseline"]["all"]["difference_ci95"] = [-0.27, -0.12]
    q["targets"]["q2_k"]["vs_baseline"]["all"]["difference_ci95"] = [-0.23, -0.07]
    rank = next(s for s in compare.statements(ranked, q) if s["targets"] == "q4_0,q2_k")
    assert rank["kind"] == "rank" and "within noise" in rank["text"]
    assert rank["text"].startswith("KLD puts q4_0 closer to the baseline than q2_k (0.3630 vs 0.4150), but "
                                   "the quality pass has q4_0 further below it (-19.2 vs -15.0 points)")
    q["targets"]["q4_0"]["vs_baseline"]["all"]["difference_ci95"] = [-0.30, -0.25]
    rank = next(s for s in compare.statements(ranked, q) if s["targets"] == "q4_0,q2_k")
    assert rank["kind"] == "disagree" and "beyond noise" in rank["text"]
    # Within noise: no claim.
    close = {"a": _cand(0.50, 0.02, quant="Q2_K"), "b": _cand(0.51, 0.02, quant="Q3_K_S")}
    assert not [s for s in compare.statements(close, {}) if s["kind"] == "label_order"]


def test_disagreement_with_the_quality_pass_in_words():
    llama = {"low": _cand(0.02), "high": _cand(0.6), "bad": _cand(0.7)}
    quality = _quality(low=_vs(120, 0.9, 9, 1, 0.02, -0.07), high=_vs(120, 0.97, 2, 2, 1.0, 0.0),
                       bad=_vs(120, 0.6, 30, 3, 1e-6, -0.22))
    by = {s["targets"]: s for s in compare.statements(llama, quality)}
    assert by["low"]["kind"] == "disagree"
    low = by["low"]["text"]
    assert "low KLD (0.0200 nats) but 9 right→wrong flips in 120 items and a significant drop" in low
    assert by["high"]["kind"] == "disagree" and "97% agreement" in by["high"]["text"]
    assert by["bad"]["kind"] == "agree"
    # lm-eval and the quality pass moving in opposite directions
    lm = {"base": {"score": 0.4, "stderr": 0.01, "metric": "exact_match"},
          "low": {"score": 0.6, "stderr": 0.01, "metric": "exact_match"}}
    llama["base"] = {"role": "baseline"}
    found = [s for s in compare.statements(llama, quality, lm) if "lm-eval" in s["text"]]
    assert found and found[0]["text"].startswith("low: lm-eval exact_match moves +0.200")
    # a significant product drop that a 20-item benchmark cannot see
    lm["bad"] = {"score": 0.4, "stderr": 0.11, "metric": "exact_match", "n": 20}
    lm["base"]["stderr"] = 0.11
    said = compare.statements(llama, quality, lm)
    blind = next(s for s in said if s["targets"] == "bad" and "lm-eval" in s["text"])
    assert ("significant drop (-22.0 points) that lm-eval exact_match does not resolve (+0.000, noise ±0.311 "
            "on n=20)") in blind["text"]


def _section() -> dict[str, Any]:
    return {
        "informational": True, "settings": {"ctx": 128, "chunks": None},
        "text": {"path": "quality/heldout/plain_en.txt", "sha256": "ab" * 32, "bytes": 11727},
        "llamacpp": {"targets": {
            "base": {"role": "baseline", "ppl": {"value": 27.99, "err": 2.13}, "quantization": "Q4_1",
                     "size_bytes": 98_362_432},
            "q2<k>": _cand(0.414, 0.0074, quant="Q2_K", size=88_201_792, ppl=38.59, same=0.6048),
            "broken": {"role": "candidate", "error": "llama-perplexity failed (vocab mismatch)"}}},
        "endpoints": {"base": {"probe": {"supported": False, "reason": "no prompt logprobs: echo ignored"},
                               "perplexity": {"status": "unsupported"}, "refused": [],
                               "lmeval": {"status": "ok", "tasks": {"benchbox_voice_intent": {
                                   "metrics": {"exact_match": {"value": 0.4, "stderr": 0.11}}, "n": 20}}}}},
        "comparison": {"targets": {"q2<k>": {"quality": {"agreement": 0.9, "right_to_wrong": 5,
                                                         "wrong_to_right": 2,
                                                         "n_pairs": 120}, "lmeval": None}},
                       "statements": [{"kind": "disagree", "targets": "q2<k>",
                                       "text": "q2<k>: views <disagree>"}]},
    }


def test_report_section_html():
    html = render_report({"run_id": "r", "targets": {"base": {}, "q2<k>": {}}},
                         {"run_id": "r", "complete": True, "academic": _section()})
    assert '<section id="academic">' in html and "Informational." in html and "never approve" in html
    assert "q2&lt;k&gt;" in html and "q2<k>" not in html
    assert "q2<k>: views" not in html and "q2&lt;k&gt;: views &lt;disagree&gt;" in html
    assert "0.4140 ± 0.0074" in html and "60.5% ± 1.0" in html and "+37.8%" in html
    assert "vocab mismatch" in html and "no</span> <span class=\"hint\">echo ignored" in html
    assert "benchbox_voice_intent exact_match <b>0.400 ± 0.110</b>" in html
    assert 'class="callout warn">q2&lt;k&gt;' in html
    # Nothing academic: no section at all.
    assert 'id="academic"' not in render_report({}, {"run_id": "r", "complete": True})


def test_rows_and_terminal(capsys):
    rows = {r["name"]: r for r in fidelity_rows(_section())}
    assert list(rows)[0] == "base" and rows["q2<k>"]["ppl_delta"] == pytest.approx(38.59 / 28.0 - 1)
    assert rows["q2<k>"]["r2w"] == 5 and rows["broken"]["error"]
    render_terminal(_section())
    out = capsys.readouterr().out
    assert "0.4140 ± 0.0074" in out and "q2<k>: views <disagree>" in out and "prompt logprobs: no" in out


SCENARIO = """
name: s
dataset: items.jsonl
targets:
  - {name: a, role: baseline, url: "http://127.0.0.1:1", model: m}
load: {levels: [1], requests: 1}
"""


def test_scenario_academic_block():
    block = "academic: {ctx: 256, endpoint_perplexity: off, lmeval: {tasks: [voice_x], limit: 5}}\n"
    loaded = parse_scenario(Path("s.yaml"), (SCENARIO + block).encode())
    ac = loaded.scenario.academic
    assert ac.ctx == 256 and ac.endpoint_perplexity == "off"
    assert ac.lmeval.tasks == ["voice_x"] and ac.lmeval.limit == 5
    assert ac.lmeval.include_path == "../quality/lmeval"
    assert parse_scenario(Path("s.yaml"), SCENARIO.encode()).scenario.academic is None
    with pytest.raises(ScenarioError, match=r"s.yaml:8: academic.kld: unknown key"):
        parse_scenario(Path("s.yaml"), (SCENARIO + "academic:\n  kld: true\n").encode())
    with pytest.raises(ScenarioError,
                       match=r"s.yaml:7: academic.lmeval.tasks: task name .a b.: letters, digits"):
        parse_scenario(Path("s.yaml"), (SCENARIO + "academic: {lmeval: {tasks: ['a b']}}\n").encode())


# -- benchbox academic end to end, endpoints only (no llama.cpp target) ---------------------------------
def _write(tmp_path: Path, url: str, extra: str) -> Path:
    (tmp_path / "items.jsonl").write_bytes(orjson.dumps({"id": "i", "prompt": "p", "reference": "r"}) + b"\n")
    (tmp_path / "held.txt").write_text("Alpha beta gamma.\n\nDelta epsilon zeta eta.\n")
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("http://127.0.0.1:1", url) + f"academic: {{text: held.txt, {extra}}}\n")
    return path


def test_cli_endpoint_perplexity_through_a_vllm_style_endpoint(tmp_path, fake_server):  # noqa: F811
    from bench.academic.cli import academic_main

    scen = _write(tmp_path, fake_server("vllm"), "endpoint_perplexity: require")
    said: list[str] = []
    code = academic_main(str(scen), None, tmp_path / "runs", frozenset(), say=said.append)
    assert code == 0, said
    run = next((tmp_path / "runs").iterdir())
    result = orjson.loads((run / "result.json").read_bytes())
    ep = result["academic"]["endpoints"]["a"]
    assert ep["probe"]["supported"] and ep["perplexity"]["status"] == "ok" and ep["perplexity"]["tokens"] > 3
    assert result["academic"]["llamacpp"]["skipped"].startswith("no managed llama.cpp target")
    assert result["academic"]["text"]["path"].endswith("held.txt") and result["notes"]
    assert orjson.loads((run / "manifest.json").read_bytes())["kind"] == "academic"
    assert 'id="academic"' in (run / "report.html").read_text()


def test_cli_refuses_what_needs_prompt_logprobs(tmp_path, fake_server, capsys):  # noqa: F811
    from bench.academic.cli import academic_main

    url = fake_server("llama")
    scen = _write(tmp_path, url, "endpoint_perplexity: require")
    code = academic_main(str(scen), None, tmp_path / "runs", frozenset(), say=lambda m: None)
    assert code == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("benchbox: refused:"))
    assert "a: refused: endpoint perplexity: no prompt logprobs" in line and "generated tokens only" in line
    # auto: reported as unsupported, not an error.
    scen = _write(tmp_path, url, "endpoint_perplexity: auto")
    assert academic_main(str(scen), None, tmp_path / "runs2", frozenset(), say=lambda m: None) == 0
    result = orjson.loads((next((tmp_path / "runs2").iterdir()) / "result.json").read_bytes())
    assert result["academic"]["endpoints"]["a"]["perplexity"]["status"] == "unsupported"


def test_cli_loglikelihood_task_refused_before_lm_eval_runs(tmp_path, fake_server, capsys):  # noqa: F811
    from bench.academic import cli

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mc.yaml").write_text("task: tiny_mc\noutput_type: multiple_choice\n")
    scen = _write(tmp_path, fake_server("llama"), f"endpoint_perplexity: off, lmeval: {{tasks: [tiny_mc], "
                                                  f"include_path: {tasks}}}")
    import bench.academic.lmeval as lm

    real = lm.missing
    lm.missing = lambda: None  # lm-eval itself never runs: the only task is refused first
    try:
        code = cli.academic_main(str(scen), None, tmp_path / "runs", frozenset(), say=lambda m: None)
    finally:
        lm.missing = real
    assert code == 2
    err = capsys.readouterr().err
    assert "a: refused: lm-eval tiny_mc (multiple_choice): no prompt logprobs" in err
    run = next((tmp_path / "runs").iterdir())
    ep = orjson.loads((run / "result.json").read_bytes())["academic"]["endpoints"]["a"]
    assert ep["lmeval_refused"] == {"tiny_mc": "multiple_choice"} and "lmeval" not in ep


def test_cli_usage_errors_are_one_line(tmp_path, monkeypatch):
    from bench.academic import lmeval
    from tests.conftest import run_cli

    scen = _write(tmp_path, "http://127.0.0.1:9", "lmeval: {tasks: [benchbox_voice_intent]}")
    monkeypatch.setattr(lmeval, "missing", lambda: "lm-eval is not installed (pip install -e '.[academic]')")
    from click.testing import CliRunner

    from bench.cli import main

    res = CliRunner().invoke(main, ["academic", str(scen)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1].endswith(
        "academic.lmeval: lm-eval is not installed (pip install -e '.[academic]'); or run with --skip lmeval")
    missing = tmp_path / "t.yaml"
    missing.write_text(scen.read_text().replace("text: held.txt", "text: nope.txt"))
    proc = run_cli("academic", str(missing), "--skip", "lmeval", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(f"academic.text: no such file {tmp_path / 'nope.txt'}")


def test_lmeval_score_vs_size_chart():
    from bench.academic.report import section_html

    sec = _section()
    sec["comparison"]["targets"]["base"] = {"quality": {}, "lmeval": {"score": 0.4, "stderr": 0.1,
                                                                      "metric": "exact_match"}}
    sec["comparison"]["targets"]["q2<k>"]["lmeval"] = {"score": 0.3, "stderr": 0.1, "metric": "exact_match"}
    html = section_html(sec, {}, lambda n: str(n))
    assert "lm-eval exact_match vs size on disk" in html and "Pareto frontier" in html
    assert "lm-eval exact_match vs size" not in section_html(_section(), {}, lambda n: str(n))
