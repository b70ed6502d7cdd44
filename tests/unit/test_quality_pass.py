"""The quality pass (bench/quality.py) and its driver (bench/score_run.quality_section).

Synthetic items and records only (no network); expected numbers are worked out by hand in the
comments and, where a statistic is involved, cross-checked against bench/significance.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Optional

import orjson
import pytest

from bench.dataset import Dataset, Item, load_dataset
from bench.quality import ALL, QualityPass, ScoredResponse, canonical, instability, slice_table, write_scores
from bench.records import RecordWriter, RequestRecord
from bench.scenario import QualitySpec, load_scenario
from bench.score_run import quality_section
from bench.significance import bootstrap_mean_interval, wilson_interval

LABELS = ["set_timer", "play_music", "weather_query"]
LABEL_SCORER = {"name": "label", "labels_from_meta": "labels"}
WARN_4_OF_8 = "only 4 item(s) (< 8): intervals are wide, result is unstable"


# -- helpers ---------------------------------------------------------------------------
def item(item_id: str, reference: Any = "set_timer", slices: tuple[str, ...] = (),
         labels: Optional[list[str]] = LABELS) -> Item:
    meta = {"labels": labels} if labels is not None else {}
    return Item(item_id, [{"role": "user", "content": "x"}], None, reference, slices, None, meta)


def dataset(*items: Item) -> Dataset:
    return Dataset(Path("synthetic.jsonl"), tuple(items), "0" * 64)


_counter = iter(range(10**9))


def record(item_id: str, text: str = "", error: Optional[str] = None, target: str = "t", level: float = 1.0,
           repeat: int = 0, seq: int = 0, phase: str = "measure", request_id: Optional[str] = None) -> RequestRecord:
    return RequestRecord(target=target, level=level, phase=phase, seq=seq, item_id=item_id, repeat=repeat,
                         request_id=request_id or f"r{next(_counter)}", scheduled_ns=0, error=error,
                         output_text=text, finish_reason=None if error else "stop")


def qpass(items: list[Item], scorers: list[dict], primary: Optional[str] = None, base_dir: Path = Path(".")
          ) -> QualityPass:
    return QualityPass(QualitySpec(scorers=scorers, primary=primary), base_dir, dataset(*items))


def scored(item_id: str, answer: Optional[str], target: str = "t", level: float = 1.0, repeat: int = 0,
           seq: int = 0, transport_ok: bool = True) -> ScoredResponse:
    return ScoredResponse(f"{target}-{item_id}-{level}-{repeat}-{seq}", target, level, item_id, repeat, seq,
                          "ok" if transport_ok else "timeout", transport_ok, answer if transport_ok else None, {})


# -- 1. scoring: outcome classes, skipping ----------------------------------------------
def test_label_scores_and_ok_outcomes() -> None:
    qp = qpass([item("a")], [LABEL_SCORER])
    assert qp.primary == "label_correct"

    right = qp.score_record(record("a", "Set timer.", request_id="r-right", level=2.0, repeat=1, seq=7))
    assert right == ScoredResponse("r-right", "t", 2.0, "a", 1, 7, "ok", True, "set_timer",
                                   {"label_correct": True, "label_parsed": True, "predicted_label": "set_timer",
                                    "reference_label": "set_timer"})

    wrong = qp.score_record(record("a", "play_music"))
    assert (wrong.outcome, wrong.transport_ok, wrong.answer) == ("ok", True, "play_music")
    assert wrong.scores == {"label_correct": False, "label_parsed": True, "predicted_label": "play_music",
                            "reference_label": "set_timer"}


def test_unparseable_label_is_a_parse_failure_and_answer_falls_back_to_normalised_text() -> None:
    qp = qpass([item("a")], [LABEL_SCORER])
    r = qp.score_record(record("a", "  BANANA   Split "))
    assert r.outcome == "parse_failure"
    assert r.transport_ok is True
    assert r.answer == "banana split"
    assert r.scores == {"label_correct": False, "label_parsed": False, "predicted_label": None,
                        "reference_label": "set_timer"}


@pytest.mark.parametrize("error,outcome", [
    ("connect", "http_error"), ("http_4xx", "http_error"), ("http_5xx", "http_error"), ("timeout", "timeout"),
    ("truncated", "truncated"), ("empty", "empty"), ("broken_stream", "broken_stream"),
])
def test_transport_errors_map_to_outcomes_and_are_not_scored(error: str, outcome: str) -> None:
    qp = qpass([item("a")], [LABEL_SCORER, {"name": "refusal"}])
    # Even a correct-looking partial text is not scored when the transport failed.
    r = qp.score_record(record("a", "set_timer", error=error))
    assert (r.outcome, r.transport_ok, r.answer, r.scores) == (outcome, False, None, {})


def test_refusal_outcome_wins_over_an_unparsed_label() -> None:
    qp = qpass([item("a")], [LABEL_SCORER, {"name": "refusal"}])
    assert qp.primary == "label_correct"
    r = qp.score_record(record("a", "I'm sorry, but I cannot help with that."))
    assert r.outcome == "refusal"
    assert r.scores["refusal"] is True and r.scores["label_parsed"] is False
    ok = qp.score_record(record("a", "set_timer"))
    assert ok.outcome == "ok" and ok.scores["refusal"] is False and ok.scores["abstention"] is False


def test_primary_defaults_to_first_scorer_with_one_and_spec_overrides() -> None:
    assert qpass([item("a")], [{"name": "refusal"}, LABEL_SCORER]).primary == "label_correct"
    assert qpass([item("a")], [{"name": "refusal"}]).primary is None
    assert qpass([item("a")], [LABEL_SCORER], primary="label_parsed").primary == "label_parsed"


def test_json_scorer_parse_and_schema_failures(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps(
        {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}))
    qp = qpass([item("j", reference={"total": 3}, labels=None)], [{"name": "json", "schema": "s.json"}],
               base_dir=tmp_path)
    assert qp.primary == "field_exact"

    garbage = qp.score_record(record("j", "no json here"))
    assert garbage.outcome == "parse_failure"
    assert garbage.scores["json_lenient_ok"] is False and garbage.scores["schema_valid"] is None
    assert garbage.answer == "no json here"

    bad_type = qp.score_record(record("j", '{"total": "three"}'))
    assert bad_type.outcome == "schema_failure"
    assert bad_type.scores["json_strict_ok"] is True and bad_type.scores["schema_valid"] is False
    assert bad_type.scores["schema_error_keyword"] == "type"

    fenced = qp.score_record(record("j", '```json\n{"total": 3}\n```'))
    assert fenced.outcome == "ok"
    assert fenced.scores["json_strict_ok"] is False and fenced.scores["json_repairable"] is True
    assert fenced.scores["field_exact"] is True and fenced.scores["field_f1"] == 1.0

    refused = qpass([item("j", reference={"total": 3}, labels=None)],
                    [{"name": "json", "schema": "s.json"}, {"name": "refusal"}], base_dir=tmp_path)
    assert refused.score_record(record("j", "I cannot do that.")).outcome == "refusal"


def test_score_all_skips_cancelled_non_measure_and_unknown_items() -> None:
    qp = qpass([item("a"), item("b")], [LABEL_SCORER])
    records = [
        record("a", "set_timer", request_id="keep-1"),
        record("a", "set_timer", phase="warmup", request_id="warmup"),
        record("a", "set_timer", phase="cold", request_id="cold"),
        record("b", "", error="cancelled", request_id="cancelled"),
        record("zzz", "set_timer", request_id="unknown-item"),
        record("b", "", error="timeout", request_id="keep-2"),
        record("b", "weather_query", request_id="keep-3"),
    ]
    out = qp.score_all(records)
    assert [r.request_id for r in out] == ["keep-1", "keep-2", "keep-3"]
    assert [r.outcome for r in out] == ["ok", "timeout", "ok"]
    assert qp.score_record(record("zzz", "set_timer")) is None


# -- 2. canonical -------------------------------------------------------------------------
def test_canonical_picks_lowest_level_then_repeat_then_seq_per_target_and_item() -> None:
    responses = [
        scored("x", "l10", level=10.0, repeat=0, seq=0),
        scored("x", "l2-r1", level=2.0, repeat=1, seq=0),
        scored("x", "l2-r0-s5", level=2.0, repeat=0, seq=5),
        scored("x", "l2-r0-s3", level=2.0, repeat=0, seq=3),   # the canonical one
        scored("y", "y-r1", level=1.0, repeat=1, seq=0),
        scored("y", "y-r0", level=1.0, repeat=0, seq=9),      # lower repeat beats lower seq
        scored("x", "other-target", target="u", level=4.0, repeat=0, seq=0),
        scored("x", "other-target-l8", target="u", level=8.0, repeat=0, seq=0),
    ]
    for seed in range(5):
        shuffled = responses[:]
        random.Random(seed).shuffle(shuffled)
        canon = canonical(shuffled)
        assert set(canon) == {"t", "u"}
        assert {i: r.answer for i, r in canon["t"].items()} == {"x": "l2-r0-s3", "y": "y-r0"}
        assert {i: r.answer for i, r in canon["u"].items()} == {"x": "other-target"}


def test_canonical_keeps_a_transport_failure_when_it_is_first() -> None:
    # The canonical response is the first one sent, failed or not (no cherry-picking a later success).
    canon = canonical([scored("x", "later", level=2.0), scored("x", None, level=1.0, transport_ok=False)])
    assert canon["t"]["x"].transport_ok is False


# -- 3. slice_table ------------------------------------------------------------------------
def _ten_items_table(min_n: int = 8) -> dict[str, Any]:
    # 10 items, reference set_timer; slice "even" = i0, i2, i4, i6, i8.
    items = [item(f"i{k}", slices=("even",) if k % 2 == 0 else ()) for k in range(10)]
    texts = {0: None, 1: None, 8: "play_music", 9: "banana"}   # None: timeout; others correct
    qp = qpass(items, [LABEL_SCORER, {"name": "token_f1"}])
    records = [record(f"i{k}", error="timeout") if texts.get(k, "") is None
               else record(f"i{k}", texts.get(k, "set_timer")) for k in range(10)]
    canon = canonical(qp.score_all(records))
    return slice_table(qp.items, canon["t"], qp.primary, min_n)


def test_slice_table_model_only_vs_end_to_end() -> None:
    table = _ten_items_table()
    assert list(table) == [ALL, "even"]

    whole = table[ALL]
    assert whole["n_items"] == 10
    assert whole["outcomes"] == {"ok": 7, "parse_failure": 1, "timeout": 2}
    m = whole["metrics"]
    assert set(m) == {"label_correct", "label_parsed", "token_f1", "label_correct@e2e"}  # no str keys
    # model-only: the 8 answered, 6 correct
    assert m["label_correct"] == {"kind": "rate", "value": 0.75, "n": 8, "successes": 6,
                                  "ci95": list(wilson_interval(6, 8))}
    assert m["label_parsed"] == {"kind": "rate", "value": 7 / 8, "n": 8, "successes": 7,
                                 "ci95": list(wilson_interval(7, 8))}
    # end-to-end: the 2 timeouts count as wrong
    assert m["label_correct@e2e"] == {"kind": "rate", "value": 0.6, "n": 10, "successes": 6,
                                      "ci95": list(wilson_interval(6, 10))}
    # Wilson 6/10 by hand: center 0.572247, half-width 0.259573
    assert m["label_correct@e2e"]["ci95"] == pytest.approx([0.312674, 0.831820], abs=1e-6)


def test_slice_table_float_metric_gets_a_bootstrap_interval() -> None:
    m = _ten_items_table()[ALL]["metrics"]["token_f1"]
    # SQuAD tokens drop the underscore: "set_timer" == "settimer" -> 1.0; play_music, banana -> 0.0
    values = [1.0] * 6 + [0.0, 0.0]
    assert m == {"kind": "mean", "value": 0.75, "n": 8, "ci95": list(bootstrap_mean_interval(values))}
    assert 0.0 < m["ci95"][0] < 0.75 < m["ci95"][1] <= 1.0


def test_slice_table_per_slice_counts_and_small_slice_warning() -> None:
    even = _ten_items_table(min_n=8)["even"]
    # i0 timeout, i2 i4 i6 correct, i8 wrong label
    assert even["n_items"] == 5
    assert even["outcomes"] == {"ok": 4, "timeout": 1}
    lc, e2e = even["metrics"]["label_correct"], even["metrics"]["label_correct@e2e"]
    assert (lc["value"], lc["n"], lc["ci95"]) == (0.75, 4, list(wilson_interval(3, 4)))
    assert (e2e["value"], e2e["n"], e2e["ci95"]) == (0.6, 5, list(wilson_interval(3, 5)))
    assert lc["warning"] == WARN_4_OF_8
    assert e2e["warning"] == "only 5 item(s) (< 8): intervals are wide, result is unstable"
    assert even["metrics"]["token_f1"]["warning"] == WARN_4_OF_8
    # the whole set has n = 8 (model-only) and 10 (e2e): no warning at min_n 8
    whole = _ten_items_table(min_n=8)[ALL]["metrics"]
    assert "warning" not in whole["label_correct"] and "warning" not in whole["label_correct@e2e"]
    assert "warning" in _ten_items_table(min_n=9)[ALL]["metrics"]["label_correct"]


def test_slice_table_without_primary_has_no_e2e_metric() -> None:
    qp = qpass([item("a")], [{"name": "refusal"}])
    table = slice_table(qp.items, canonical(qp.score_all([record("a", "ok")]))["t"], qp.primary, 1)
    assert set(table[ALL]["metrics"]) == {"refusal", "abstention"}


def test_slice_table_all_transport_failures() -> None:
    qp = qpass([item("a"), item("b")], [LABEL_SCORER])
    canon = canonical(qp.score_all([record("a", error="timeout"), record("b", error="http_5xx")]))
    table = slice_table(qp.items, canon["t"], qp.primary, 1)
    assert table[ALL]["outcomes"] == {"http_error": 1, "timeout": 1}
    assert table[ALL]["metrics"] == {"label_correct@e2e": {"kind": "rate", "value": 0.0, "n": 2, "successes": 0,
                                                           "ci95": list(wilson_interval(0, 2))}}


def test_slice_table_e2e_excludes_not_applicable_items() -> None:
    # Regression (HEAD 8e87519 counted a transport-ok response whose primary is None -- the scorer does
    # not apply, e.g. no reference -- as wrong in @e2e). None is "excluded from aggregation"
    # (scoring/base.py) in both views; transport failures still count as wrong end to end.
    qp = qpass([item("a"), item("b", reference=None), item("c")], [LABEL_SCORER])
    canon = canonical(qp.score_all([record("a", "set_timer"), record("b", "set_timer"),
                                    record("c", error="timeout")]))
    metrics = slice_table(qp.items, canon["t"], qp.primary, 1)[ALL]["metrics"]
    assert (metrics["label_correct"]["n"], metrics["label_correct"]["successes"]) == (1, 1)
    assert metrics["label_correct@e2e"] == {"kind": "rate", "value": 0.5, "n": 2, "successes": 1,
                                            "ci95": list(wilson_interval(1, 2))}


# -- 4. instability -------------------------------------------------------------------------
def test_instability_counts_items_answered_differently() -> None:
    responses = [
        scored("a", "set_timer", level=1.0), scored("a", "set_timer", level=2.0),          # stable
        scored("b", "set_timer", repeat=0), scored("b", "play_music", repeat=1),           # changed (repeat)
        scored("c", "set_timer"),                                                           # one response
        scored("d", "set_timer", level=1.0), scored("d", None, level=2.0, transport_ok=False),  # one arrived
        scored("e", "banana", level=1.0), scored("e", "apple", level=4.0),                  # changed (level)
        scored("e", "banana", level=4.0, repeat=1),
    ]
    assert instability(responses) == {"items_with_several_responses": 3, "items_changed": 2,
                                      "instability": 2 / 3}


def test_instability_without_repeated_items() -> None:
    assert instability([scored("a", "x"), scored("b", "y")]) == {
        "items_with_several_responses": 0, "items_changed": 0, "instability": None}
    assert instability([]) == {"items_with_several_responses": 0, "items_changed": 0, "instability": None}


def test_write_scores_one_json_line_each(tmp_path: Path) -> None:
    qp = qpass([item("a")], [LABEL_SCORER])
    out = qp.score_all([record("a", "set_timer", request_id="r1"), record("a", error="timeout", request_id="r2")])
    write_scores(tmp_path / "scores.jsonl", out)
    lines = [orjson.loads(x) for x in (tmp_path / "scores.jsonl").read_bytes().splitlines()]
    assert lines == [
        {"request_id": "r1", "target": "t", "level": 1.0, "item_id": "a", "repeat": 0, "seq": 0, "outcome": "ok",
         "transport_ok": True, "answer": "set_timer",
         "scores": {"label_correct": True, "label_parsed": True, "predicted_label": "set_timer",
                    "reference_label": "set_timer"}},
        {"request_id": "r2", "target": "t", "level": 1.0, "item_id": "a", "repeat": 0, "seq": 0,
         "outcome": "timeout", "transport_ok": False, "answer": None, "scores": {}},
    ]


# -- 8. quality_section end to end ----------------------------------------------------------
SCENARIO = """\
name: quality-unit
dataset: data.jsonl
targets:
  - {name: base, role: baseline, url: "http://127.0.0.1:9", model: m}
  - {name: cand, role: candidate, url: "http://127.0.0.1:9", model: m}
  - {name: idle, role: candidate, url: "http://127.0.0.1:9", model: m}
load: {levels: [1, 2], requests: 4}
quality:
  scorers: [{name: label, labels_from_meta: labels}]
  primary: label_correct
  min_slice_n: 2
"""
DATA = [
    {"id": "d1", "prompt": "p1", "reference": "set_timer", "slices": ["short"], "meta": {"labels": LABELS}},
    {"id": "d2", "prompt": "p2", "reference": "play_music", "slices": ["short"], "meta": {"labels": LABELS}},
    {"id": "d3", "prompt": "p3", "reference": "weather_query", "meta": {"labels": LABELS}},
    {"id": "d4", "prompt": "p4", "reference": "set_timer", "meta": {"labels": LABELS}},
]


def _run_dir(tmp_path: Path, scenario: str = SCENARIO) -> tuple[Any, Dataset, Path]:
    (tmp_path / "scenario.yaml").write_text(scenario)
    (tmp_path / "data.jsonl").write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in DATA))
    loaded = load_scenario(tmp_path / "scenario.yaml")
    ds = load_dataset(loaded.resolve(loaded.scenario.dataset.path), loaded.scenario.dataset)
    run = tmp_path / "run"
    run.mkdir()
    writer = RecordWriter(run / "records.jsonl")
    recs = [
        # base: level 2 written first; canonical must still be level 1
        record("d1", "set_timer", target="base", level=2.0, seq=0, request_id="b-l2-d1"),
        record("d2", "weather_query", target="base", level=2.0, seq=1, request_id="b-l2-d2"),
        record("d1", "set_timer", target="base", phase="warmup", request_id="b-warm"),
        record("d1", "set_timer", target="base", seq=0, request_id="b-d1"),
        record("d2", "play_music", target="base", seq=1, request_id="b-d2"),
        record("d3", "", target="base", error="cancelled", seq=2, request_id="b-cancel"),
        record("d3", "weather query", target="base", seq=3, request_id="b-d3"),
        record("d4", "play_music", target="base", seq=4, request_id="b-d4"),
        # cand
        record("d1", "set_timer", target="cand", seq=0, request_id="c-d1"),
        record("d2", "play_music", target="cand", seq=1, request_id="c-d2"),
        record("d3", "", target="cand", error="timeout", seq=2, request_id="c-d3"),
        record("d4", "set_timer", target="cand", seq=3, request_id="c-d4"),
        record("zzz", "set_timer", target="cand", seq=4, request_id="c-unknown"),
        record("d1", "play_music", target="cand", level=2.0, seq=0, request_id="c-l2-d1"),
    ]
    for r in recs:
        writer.on_record(r)
    writer.close()
    return loaded, ds, run


def test_quality_section_writes_one_score_line_per_measured_record(tmp_path: Path) -> None:
    loaded, ds, run = _run_dir(tmp_path)
    quality_section(loaded, ds, run)
    lines = [orjson.loads(x) for x in (run / "scores.jsonl").read_bytes().splitlines()]
    assert [x["request_id"] for x in lines] == [
        "b-l2-d1", "b-l2-d2", "b-d1", "b-d2", "b-d3", "b-d4", "c-d1", "c-d2", "c-d3", "c-d4", "c-l2-d1"]
    by_id = {x["request_id"]: x for x in lines}
    assert by_id["b-d3"] == {
        "request_id": "b-d3", "target": "base", "level": 1.0, "item_id": "d3", "repeat": 0, "seq": 3,
        "outcome": "ok", "transport_ok": True, "answer": "weather_query",
        "scores": {"label_correct": True, "label_parsed": True, "predicted_label": "weather_query",
                   "reference_label": "weather_query"}}
    assert (by_id["c-d3"]["outcome"], by_id["c-d3"]["scores"], by_id["c-d3"]["answer"]) == ("timeout", {}, None)


def test_quality_section_returns_targets_fidelity_classes_stability(tmp_path: Path) -> None:
    loaded, ds, run = _run_dir(tmp_path)
    q = quality_section(loaded, ds, run)
    assert {k: q[k] for k in ("schema_version", "primary", "scorers", "baseline")} == {
        "schema_version": 1, "primary": "label_correct", "scorers": ["label"], "baseline": "base"}
    assert list(q["targets"]) == ["base", "cand"]          # "idle" sent nothing

    base, cand = q["targets"]["base"], q["targets"]["cand"]
    assert (base["role"], base["responses_scored"]) == ("baseline", 6)
    assert (cand["role"], cand["responses_scored"]) == ("candidate", 5)
    assert "vs_baseline" not in base and "by_level" not in base and "by_level" not in cand

    # base canonical (level 1): d1 right, d2 right, d3 right, d4 wrong -> 3/4 both views
    b_all = base["slices"][ALL]
    assert (b_all["n_items"], b_all["outcomes"]) == (4, {"ok": 4})
    assert b_all["metrics"]["label_correct"]["successes"] == 3 and b_all["metrics"]["label_correct"]["n"] == 4
    assert b_all["metrics"]["label_correct@e2e"]["value"] == 0.75
    assert base["slices"]["short"]["metrics"]["label_correct"]["value"] == 1.0
    # cand: d3 timed out; 3/3 answered, 3/4 end to end
    c_all = cand["slices"][ALL]
    assert (c_all["n_items"], c_all["outcomes"]) == (4, {"ok": 3, "timeout": 1})
    assert (c_all["metrics"]["label_correct"]["value"], c_all["metrics"]["label_correct"]["n"]) == (1.0, 3)
    assert (c_all["metrics"]["label_correct@e2e"]["value"], c_all["metrics"]["label_correct@e2e"]["n"]) == (0.75, 4)

    # stability: base d1 same at both levels, d2 changed; cand d1 changed
    assert base["stability"] == {"items_with_several_responses": 2, "items_changed": 1, "instability": 0.5,
                                 "repeat_variance": None}
    assert cand["stability"] == {"items_with_several_responses": 1, "items_changed": 1, "instability": 1.0,
                                 "repeat_variance": None}

    # vs_baseline over d1, d2, d4 (d3 timed out for cand)
    vs = cand["vs_baseline"]
    assert list(vs) == [ALL, "short"]
    assert vs[ALL]["n_pairs"] == 3
    assert vs[ALL]["agreement"] == {"value": 2 / 3, "ci95": list(wilson_interval(2, 3))}
    assert vs[ALL]["flips"] == {"right_to_wrong": 0, "wrong_to_right": 1, "both_right": 2, "both_wrong": 0}
    assert (vs[ALL]["baseline_rate"], vs[ALL]["candidate_rate"]) == (2 / 3, 1.0)
    assert vs[ALL]["difference"] == pytest.approx(1 / 3)
    assert vs[ALL]["mcnemar_p"] == 1.0
    assert vs["short"]["n_pairs"] == 2 and vs["short"]["agreement"]["value"] == 1.0
    assert vs["short"]["kappa"] == 1.0 and vs["short"]["label_shift_tvd"] == 0.0

    # classes (base): set_timer 1 of 2 (d4 said play_music), play_music 1/1 with precision 1/2
    classes = base["classes"]["classes"]
    assert list(classes) == ["play_music", "set_timer", "weather_query"]
    assert {k: (c["support"], c["recall"], c["precision"], c["rare"]) for k, c in classes.items()} == {
        "play_music": (1, 1.0, 0.5, False), "set_timer": (2, 0.5, 1.0, False), "weather_query": (1, 1.0, 1.0, False)}
    assert base["classes"]["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 3)
    assert (base["classes"]["rare_labels"], base["classes"]["rare_recall"]) == ([], None)
    assert cand["classes"]["classes"]["set_timer"]["recall"] == 1.0

    assert base["diagnosis"] == [] and cand["diagnosis"] == []


def test_quality_section_none_without_scorers(tmp_path: Path) -> None:
    no_quality = SCENARIO.split("quality:")[0]
    loaded, ds, run = _run_dir(tmp_path, no_quality)
    assert quality_section(loaded, ds, run) is None
    assert not (run / "scores.jsonl").exists()


def test_quality_section_by_level(tmp_path: Path) -> None:
    loaded, ds, run = _run_dir(tmp_path, SCENARIO + "  by_level: true\n")
    q = quality_section(loaded, ds, run)
    levels = q["targets"]["base"]["by_level"]
    assert list(levels) == ["1", "2"]
    assert levels["1"][ALL]["n_items"] == 4
    # level 2: d1 right, d2 wrong (weather_query)
    assert levels["2"][ALL]["n_items"] == 2
    assert levels["2"][ALL]["metrics"]["label_correct"]["value"] == 0.5


def test_repeat_variance_of_the_primary_across_passes() -> None:
    from bench.quality import repeat_variance

    def resp(item_id: str, repeat: int, ok: bool) -> ScoredResponse:
        return ScoredResponse(f"r{item_id}{repeat}", "t", 1.0, item_id, repeat, repeat * 10 + int(item_id[1:]),
                              "ok", True, "x", {"label_correct": ok})
    # pass 0: 3/4 right; pass 1: 1/4 right -> mean 0.5, sample sd sqrt(((0.25)^2 * 2) / 1) = 0.353553
    responses = [resp(f"i{k}", 0, k < 3) for k in range(4)] + [resp(f"i{k}", 1, k < 1) for k in range(4)]
    out = repeat_variance(responses, "label_correct")
    assert out["per_repeat"] == [0.75, 0.25] and out["mean"] == 0.5
    assert abs(out["sd"] - 0.3535533905932738) < 1e-12
    assert repeat_variance(responses[:4], "label_correct") is None  # one pass: no variance
    assert repeat_variance(responses, None) is None
