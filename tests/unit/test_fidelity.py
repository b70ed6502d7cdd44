"""Candidate vs baseline (bench/fidelity.py): compare_pair, class_metrics, diagnose.

Synthetic canonical responses; every expected number is worked out by hand in the comments and,
where a statistic is involved, cross-checked against bench/significance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest

from bench.dataset import Dataset, Item
from bench.fidelity import class_metrics, compare_pair, diagnose
from bench.quality import ALL, QualityPass, ScoredResponse, canonical
from bench.records import RequestRecord
from bench.scenario import QualitySpec
from bench.significance import cohens_kappa, mcnemar_exact, mcnemar_from_pairs, wilson_interval

PRIMARY = "label_correct"


def item(item_id: str, slices: tuple[str, ...] = (), reference: Any = "a", meta: Optional[dict] = None) -> Item:
    return Item(item_id, None, "p", reference, slices, None, meta or {})


def lab(item_id: str, pred: Optional[str], ref: Optional[str] = "a", ok: bool = True,
        target: str = "t") -> ScoredResponse:
    """A canonical response of a label scorer: predicted ``pred`` for reference ``ref``."""
    if not ok:
        return ScoredResponse(f"{target}-{item_id}", target, 1.0, item_id, 0, 0, "timeout", False, None, {})
    scores = {"label_correct": None if ref is None else pred == ref, "label_parsed": pred is not None,
              "predicted_label": pred, "reference_label": ref}
    return ScoredResponse(f"{target}-{item_id}", target, 1.0, item_id, 0, 0,
                          "ok" if pred is not None else "parse_failure", True,
                          pred if pred is not None else f"unparsed text {item_id}", scores)


def text(item_id: str, answer: str, correct: Optional[bool]) -> ScoredResponse:
    return ScoredResponse(f"t-{item_id}", "t", 1.0, item_id, 0, 0, "ok", True, answer, {"exact_match": correct})


# -- 5. compare_pair -----------------------------------------------------------------------
def _pair_fixture() -> tuple[dict[str, Item], dict[str, ScoredResponse], dict[str, ScoredResponse]]:
    # p0-p11 both answered (reference "a" throughout):
    #   p0, p1   base a / cand a   both right, agree
    #   p2       base a / cand b   right -> wrong (b = 1)
    #   p3-p10   base b / cand a   wrong -> right (c = 8)
    #   p11      base b / cand b   both wrong, agree
    # p12 base timed out, p13 only base, p14 cand broken: not paired.
    s1 = {"p0", "p2", "p3", "p12"}
    items = {f"p{k}": item(f"p{k}", ("s1",) if f"p{k}" in s1 else ()) for k in range(15)}
    items["p12"] = item("p12", ("s1", "ghost"))
    base_pred = {"p0": "a", "p1": "a", "p2": "a", **{f"p{k}": "b" for k in range(3, 12)}, "p13": "a", "p14": "a"}
    cand_pred = {"p0": "a", "p1": "a", "p2": "b", **{f"p{k}": "a" for k in range(3, 11)}, "p11": "b", "p12": "a"}
    base = {i: lab(i, p, target="base") for i, p in base_pred.items()}
    base["p12"] = lab("p12", None, ok=False, target="base")
    cand = {i: lab(i, p, target="cand") for i, p in cand_pred.items()}
    cand["p14"] = lab("p14", None, ok=False, target="cand")
    return items, base, cand


def test_compare_pair_overall() -> None:
    items, base, cand = _pair_fixture()
    out = compare_pair(items, base, cand, PRIMARY, min_n=5)
    assert list(out) == [ALL, "s1"]          # "ghost" only holds an unpaired item
    e = out[ALL]
    assert e["n_pairs"] == 12
    assert e["agreement"] == {"value": 0.25, "ci95": list(wilson_interval(3, 12))}
    # kappa: base a x3, b x9; cand a x10, b x2; agree 3; n^2 p_e = 3*10 + 9*2 = 48
    # (12*3 - 48) / (144 - 48) = -0.125
    ids = [f"p{k}" for k in range(12)]
    assert e["kappa"] == -0.125
    assert e["kappa"] == cohens_kappa([base[i].answer for i in ids], [cand[i].answer for i in ids])
    # TVD: 0.5 * (|3/12 - 10/12| + |9/12 - 2/12|) = 7/12
    assert e["label_shift_tvd"] == pytest.approx(7 / 12)
    assert e["flips"] == {"right_to_wrong": 1, "wrong_to_right": 8, "both_right": 2, "both_wrong": 1}
    assert e["baseline_rate"] == 0.25
    assert e["candidate_rate"] == pytest.approx(10 / 12)
    assert e["difference"] == pytest.approx(7 / 12)
    # exact McNemar, b=1, c=8: 2 * (C(9,0) + C(9,1)) / 2^9 = 20/512
    assert e["mcnemar_p"] == 0.0390625 == mcnemar_exact(1, 8)
    m = mcnemar_from_pairs([(True, True)] * 2 + [(True, False)] + [(False, True)] * 8 + [(False, False)])
    assert e["difference_ci95"] == [m.low, m.high]
    assert "warning" not in e


def test_compare_pair_per_slice() -> None:
    items, base, cand = _pair_fixture()
    s1 = compare_pair(items, base, cand, PRIMARY, min_n=5)["s1"]
    # s1 paired: p0 (agree, both right), p2 (right -> wrong), p3 (wrong -> right); p12 unpaired
    assert s1["n_pairs"] == 3
    assert s1["agreement"] == {"value": 1 / 3, "ci95": list(wilson_interval(1, 3))}
    assert s1["flips"] == {"right_to_wrong": 1, "wrong_to_right": 1, "both_right": 1, "both_wrong": 0}
    assert s1["mcnemar_p"] == 1.0
    assert s1["difference"] == 0.0
    # kappa: base a,a,b; cand a,b,a: agree 1, n^2 p_e = 2*2 + 1*1 = 5 -> (3 - 5) / (9 - 5) = -0.5
    assert s1["kappa"] == -0.5
    assert s1["label_shift_tvd"] == 0.0      # same label distribution, different items
    assert s1["warning"] == "only 3 item(s) (< 5): intervals are wide, result is unstable"


def test_compare_pair_mirror_drop() -> None:
    items, base, cand = _pair_fixture()
    e = compare_pair(items, cand, base, PRIMARY, min_n=5)[ALL]     # roles swapped
    assert e["flips"] == {"right_to_wrong": 8, "wrong_to_right": 1, "both_right": 2, "both_wrong": 1}
    assert e["mcnemar_p"] == 0.0390625
    assert e["difference"] == pytest.approx(-7 / 12)


def test_label_shift_tvd_hand_example() -> None:
    # base a a b b, cand a b b b: 0.5 * (|2/4 - 1/4| + |2/4 - 3/4|) = 0.25; agreement 3/4
    items = {f"x{k}": item(f"x{k}") for k in range(4)}
    base = {f"x{k}": lab(f"x{k}", p) for k, p in enumerate("aabb")}
    cand = {f"x{k}": lab(f"x{k}", p) for k, p in enumerate("abbb")}
    e = compare_pair(items, base, cand, PRIMARY, min_n=1)[ALL]
    assert e["label_shift_tvd"] == 0.25
    assert e["agreement"]["value"] == 0.75
    # kappa: agree 3, n^2 p_e = 2*1 + 2*3 = 8 -> (12 - 8) / (16 - 8) = 0.5
    assert e["kappa"] == 0.5
    assert "warning" not in e


def test_compare_pair_unparsed_labels_count_as_a_category() -> None:
    items = {f"x{k}": item(f"x{k}") for k in range(2)}
    base = {"x0": lab("x0", None), "x1": lab("x1", "a")}
    cand = {"x0": lab("x0", None), "x1": lab("x1", "a")}
    e = compare_pair(items, base, cand, PRIMARY, min_n=1)[ALL]
    assert e["kappa"] == 1.0 and e["label_shift_tvd"] == 0.0
    assert e["flips"] == {"right_to_wrong": 0, "wrong_to_right": 0, "both_right": 1, "both_wrong": 1}


def test_compare_pair_text_answers_without_labels() -> None:
    items = {i: item(i) for i in ("q1", "q2", "q3")}
    base = {"q1": text("q1", "paris", True), "q2": text("q2", "rome", False), "q3": text("q3", "x", None)}
    cand = {"q1": text("q1", "paris", True), "q2": text("q2", "milan", True), "q3": text("q3", "x", True)}
    e = compare_pair(items, base, cand, "exact_match", min_n=1)[ALL]
    assert "kappa" not in e and "label_shift_tvd" not in e
    assert e["n_pairs"] == 3
    assert e["agreement"]["value"] == pytest.approx(2 / 3)      # q1, q3 same answer
    # q3 has no primary for the baseline (not applicable): left out of the flips
    assert e["flips"] == {"right_to_wrong": 0, "wrong_to_right": 1, "both_right": 1, "both_wrong": 0}
    assert (e["baseline_rate"], e["candidate_rate"]) == (0.5, 1.0)
    no_primary = compare_pair(items, base, cand, None, min_n=1)[ALL]
    assert set(no_primary) == {"n_pairs", "agreement"}


def test_compare_pair_nothing_shared() -> None:
    items = {"a": item("a"), "b": item("b")}
    out = compare_pair(items, {"a": lab("a", "a")}, {"a": lab("a", None, ok=False), "b": lab("b", "a")},
                       PRIMARY, min_n=1)
    assert out == {ALL: {"n_pairs": 0, "agreement": {"value": None, "ci95": [0.0, 1.0]},
                         "warning": "only 0 item(s) (< 1): intervals are wide, result is unstable"}}


# -- 6. class_metrics ----------------------------------------------------------------------
def _class_fixture() -> dict[str, ScoredResponse]:
    # reference a x10: 8 -> a, 1 -> b, 1 unparsed; b x9: 6 -> b, 3 -> a; c x1 -> c; d x1 -> a
    preds = [("a", "a")] * 8 + [("a", "b"), ("a", None)] + [("b", "b")] * 6 + [("b", "a")] * 3 \
        + [("c", "c"), ("d", "a")]
    per_item = {f"k{n}": lab(f"k{n}", pred, ref) for n, (ref, pred) in enumerate(preds)}
    per_item["timeout"] = lab("timeout", None, ok=False)                 # transport failure: left out
    per_item["noref"] = lab("noref", "a", ref=None)                        # no reference: left out
    return per_item


def test_class_metrics_per_class() -> None:
    out = class_metrics(_class_fixture(), rare_share=0.1)
    classes = out["classes"]
    assert list(classes) == ["a", "b", "c", "d"]
    # a: tp 8, support 10, predicted a 8 + 3 + 1 = 12 -> P 2/3, R 0.8, F1 = 16 / (16 + 4 + 2) = 8/11
    a = classes["a"]
    assert (a["support"], a["recall"], a["rare"]) == (10, 0.8, False)
    assert a["precision"] == pytest.approx(2 / 3)
    assert a["f1"] == pytest.approx(8 / 11)
    assert a["recall_ci95"] == list(wilson_interval(8, 10))
    # b: tp 6, support 9, predicted b 1 + 6 = 7 -> P 6/7, R 2/3, F1 = 12 / (12 + 1 + 3) = 0.75
    b = classes["b"]
    assert (b["support"], b["rare"]) == (9, False)
    assert b["precision"] == pytest.approx(6 / 7)
    assert b["recall"] == pytest.approx(2 / 3)
    assert b["f1"] == pytest.approx(0.75)
    # c: 1/1 perfect; d: never predicted -> precision 0.0 (not a division by zero), F1 0.0
    assert {k: classes["c"][k] for k in ("support", "recall", "precision", "f1", "rare")} == {
        "support": 1, "recall": 1.0, "precision": 1.0, "f1": 1.0, "rare": True}
    assert {k: classes["d"][k] for k in ("support", "recall", "precision", "f1", "rare")} == {
        "support": 1, "recall": 0.0, "precision": 0.0, "f1": 0.0, "rare": True}
    assert classes["d"]["recall_ci95"] == [0.0, wilson_interval(0, 1)[1]]
    assert out["macro_f1"] == pytest.approx((8 / 11 + 0.75 + 1.0 + 0.0) / 4)


def test_class_metrics_rare_labels_and_rare_recall() -> None:
    # 21 pairs: c and d have share 1/21 < 0.1; a (10/21) and b (9/21) do not
    out = class_metrics(_class_fixture(), rare_share=0.1)
    assert out["rare_labels"] == ["c", "d"]
    assert out["rare_recall"] == {"value": 0.5, "n": 2, "ci95": list(wilson_interval(1, 2))}
    # with a threshold above 9/21 ~ 0.43 (and below 10/21 ~ 0.48) b becomes rare too: 7 of 11
    wide = class_metrics(_class_fixture(), rare_share=0.45)
    assert wide["rare_labels"] == ["b", "c", "d"]
    assert wide["rare_recall"] == {"value": 7 / 11, "n": 11, "ci95": list(wilson_interval(7, 11))}
    none_rare = class_metrics(_class_fixture(), rare_share=0.01)
    assert none_rare["rare_labels"] == [] and none_rare["rare_recall"] is None


def test_class_metrics_share_equal_to_threshold_is_not_rare() -> None:
    per_item = {f"k{n}": lab(f"k{n}", "a") for n in range(19)}
    per_item["z"] = lab("z", "z", ref="z")                       # share 1/20 == 0.05
    assert class_metrics(per_item, rare_share=0.05)["rare_labels"] == []
    assert class_metrics(per_item, rare_share=0.051)["rare_labels"] == ["z"]


def test_class_metrics_none_without_label_pairs() -> None:
    assert class_metrics({"x": lab("x", None, ok=False)}, 0.05) is None
    assert class_metrics({"x": text("x", "paris", True)}, 0.05) is None
    assert class_metrics({}, 0.05) is None


def _scored_via_pass(reference: str, answer: str, meta: dict) -> dict[str, ScoredResponse]:
    qp = QualityPass(QualitySpec(scorers=[{"name": "label", "labels_from_meta": "labels"}]), Path("."),
                     Dataset(Path("d.jsonl"), (item("x", reference=reference, meta=meta),), "0" * 64))
    rec = RequestRecord(target="t", level=1.0, phase="measure", seq=0, item_id="x", repeat=0, request_id="r",
                        scheduled_ns=0, output_text=answer, finish_reason="stop")
    return canonical(qp.score_all([rec]))["t"]



def test_class_metrics_agree_with_label_correct_on_label_spelling() -> None:
    # The label scorer matches "Set Timer" to set_timer; per-class counts must do the same.
    per_item = _scored_via_pass("Set Timer", "set_timer", {"labels": ["set_timer", "play_music"]})
    assert per_item["x"].scores["label_correct"] is True
    out = class_metrics(per_item, 0.05)
    assert out["classes"]["set_timer"]["recall"] == 1.0


def test_class_metrics_skip_items_the_label_scorer_does_not_apply_to() -> None:
    # No label set in meta: the scorer cannot judge (label_correct None) -> no class statistics.
    per_item = _scored_via_pass("set_timer", "set_timer", {})
    assert per_item["x"].scores["label_correct"] is None
    assert class_metrics(per_item, 0.05) is None


# -- 7. diagnose ---------------------------------------------------------------------------
def _slices(overall: tuple[int, int], **named: tuple[int, int]) -> dict[str, Any]:
    def m(k: int, n: int) -> dict[str, Any]:
        return {"metrics": {PRIMARY: {"kind": "rate", "value": k / n, "n": n}}}
    return {ALL: m(*overall), **{name: m(*kn) for name, kn in named.items()}}


def _fid(agreement: float, p: Optional[float] = None, diff: float = 0.0) -> dict[str, Any]:
    return {ALL: {"agreement": {"value": agreement}, "mcnemar_p": p, "difference": diff}}


def test_diagnose_baseline_is_the_ceiling() -> None:
    lines = diagnose("cand", _slices((10, 20)), _fid(0.95), PRIMARY, 5)
    assert len(lines) == 1 and "baseline is the ceiling" in lines[0]
    assert diagnose("cand", _slices((10, 20)), _fid(0.85), PRIMARY, 5) == []   # agreement too low
    assert diagnose("cand", _slices((14, 20)), _fid(0.95), PRIMARY, 5) == []   # accuracy not low


def test_diagnose_significant_drop() -> None:
    lines = diagnose("cand", _slices((14, 20)), _fid(0.5, p=0.01, diff=-0.2), PRIMARY, 5)
    assert len(lines) == 1 and "significantly lower" in lines[0] and "p=0.01" in lines[0]
    assert diagnose("cand", _slices((14, 20)), _fid(0.5, p=0.2, diff=-0.2), PRIMARY, 5) == []
    assert diagnose("cand", _slices((14, 20)), _fid(0.5, p=0.01, diff=0.2), PRIMARY, 5) == []  # better


def test_diagnose_weak_slice() -> None:
    lines = diagnose("t", _slices((16, 20), rare=(13, 20)), None, PRIMARY, 5)   # 80 % vs 65 %
    assert len(lines) == 1 and "'rare'" in lines[0] and "coverage problem" in lines[0]
    assert diagnose("t", _slices((16, 20), rare=(14, 20)), None, PRIMARY, 5) == []   # only 10 points
    assert diagnose("t", _slices((16, 20), rare=(1, 4)), None, PRIMARY, 5) == []     # slice under min_n


def test_diagnose_weak_slice_exactly_15_points() -> None:
    lines = diagnose("t", _slices((14, 20), hard=(11, 20)), None, PRIMARY, 5)   # 0.7 - 0.55 in floats
    assert len(lines) == 1 and "'hard'" in lines[0]


def test_diagnose_miscalibrated_but_accurate() -> None:
    calib = {"ece": 0.2, "mean_confidence": 0.99}
    lines = diagnose("t", _slices((16, 20)), None, PRIMARY, 5, calib)
    assert len(lines) == 1 and "recalibrate" in lines[0]
    assert diagnose("t", _slices((16, 20)), None, PRIMARY, 5, {"ece": 0.05, "mean_confidence": 0.8}) == []
    assert diagnose("t", _slices((10, 20)), None, PRIMARY, 5, calib) == []   # accuracy not good


def test_diagnose_without_primary_says_nothing() -> None:
    assert diagnose("t", _slices((0, 20)), _fid(1.0), None, 5) == []
