"""The ``judge`` scorer with the real SmolLM2 baseline as a managed judge (needs `benchbox server install`).

A 135M model is not expected to be a trustworthy judge; the test checks that the trust check runs end to
end, that its verdict follows from the numbers it reports, and that no llama-server outlives close().
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import psutil
import pytest

from bench import provision as pv
from bench.dataset import Item
from bench.scoring import ScoreInput, build_scorer
from bench.scoring.judge import MIN_KAPPA, JudgeScorer
from bench.significance import cohens_kappa, wilson_interval

pytestmark = [
    pytest.mark.integration, pytest.mark.llamacpp,
    pytest.mark.skipif(pv.installed_llamacpp() is None,
                       reason=f"llama-server not built in {pv.llamacpp_dir()}/bin "
                              "(run `benchbox server install`)"),
]

ROOT = Path(__file__).resolve().parents[2]
LABELS = ROOT / "quality" / "judge" / "human_labels.jsonl"
RUBRIC = ROOT / "quality" / "judge" / "rubric_equivalence.md"


def _llama_servers() -> set[int]:
    """llama-server processes started by this test process (other sessions may run their own)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if any("llama-server" in a for a in p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def _sample(n_each: int = 6) -> list[dict]:
    rows = [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]
    yes = [r for r in rows if r["equivalent"]][:n_each]
    no = [r for r in rows if not r["equivalent"]][:n_each]
    return [r for pair in zip(yes, no) for r in pair]


def test_smollm2_as_managed_judge(tmp_path: Path, capsys):
    sample = _sample()
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sample))
    assert _llama_servers() == set()
    spec = {"name": "judge", "server": {"definition": "llamacpp", "model": "smollm2-135m-q4_1"},
            "rubric": str(RUBRIC), "human_labels": "labels.jsonl", "timeout_s": 120}
    scorer = build_scorer(spec, tmp_path)
    assert isinstance(scorer, JudgeScorer)
    try:
        assert _llama_servers() == set()  # lazy
        items = [Item(f"x-{i}", [{"role": "user", "content": r["question"]}], None, r["reference"], (), None,
                      {}) for i, r in enumerate(sample[:4])]
        inputs = [ScoreInput(it, text, "stop")
                  for it, text in zip(items, ["set_timer", "weather_query", "Volume change", "navigation"])]
        many = scorer.score_many(inputs)
        pid = scorer.describe()["server"]["pid"]
        assert _llama_servers() == {pid}
        one = scorer.score(inputs[0])
    finally:
        scorer.close()

    trust = scorer.trust
    assert trust is not None and "error" not in trust, trust
    n = len(sample)
    assert trust["n"] == n == 12 and trust["errors"] == 0
    assert trust["model"] == "smollm2-135m-q4_1"
    # the verdict follows from the reported numbers, recomputed from the per-pair calibration
    human = [c["human"] for c in scorer.calibration]
    judged = [c["judge"] if c["judge"] is not None else "unparsed" for c in scorer.calibration]
    assert human == [r["equivalent"] for r in sample]
    agree = sum(h == j for h, j in zip(human, judged))
    assert math.isclose(trust["agreement"], agree / n)
    assert math.isclose(trust["kappa"], cohens_kappa(judged, human))
    assert trust["agreement_ci95"] == list(wilson_interval(agree, n))
    assert trust["unparsed"] == sum(1 for c in scorer.calibration if not c["parsed"])
    assert trust["min_agreement"] == 0.8 and trust["min_kappa"] == MIN_KAPPA
    assert trust["trusted"] is (trust["agreement"] >= 0.8 and trust["kappa"] >= MIN_KAPPA)
    c = trust["confusion"]
    assert c["tp"] + c["tn"] == agree and sum(c.values()) == n - trust["unparsed"]
    # every record carries the verdict; the answers are well-formed
    for out in [*many, one]:
        assert out["judge_trusted"] is trust["trusted"] and out["judge_error"] is None
        assert out["judge_parsed"] is (out["judge_equivalent"] is not None)
    with capsys.disabled():
        print(f"\nSmolLM2-135M Q4_1 as judge on {n} human-labelled pairs: agreement {trust['agreement']:.3f} "
              f"(95% CI {trust['agreement_ci95'][0]:.2f}-{trust['agreement_ci95'][1]:.2f}), "
              f"kappa {trust['kappa']:.3f}, unparsed {trust['unparsed']}, confusion {c}, "
              f"trusted={trust['trusted']} ({trust['reason']}); verdicts {judged}")
    # nothing left running
    assert _llama_servers() == set()
