"""bench/compare.py: runs side by side on the same frozen eval set.

Every run directory is synthetic (manifest.json, result.json, scores.jsonl, records.jsonl written
here); expected numbers are worked out by hand in the comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import orjson
import pytest
from click.testing import CliRunner
from rich.console import Console

from bench.compare import CompareError, compare_command, compare_runs, relative_change, render_compare
from bench.quality import ScoredResponse
from bench.records import RequestRecord, record_as_dict
from bench.significance import mcnemar_exact

SHA_A = "a" * 64
SHA_B = "b" * 64
SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8, "seed": 0, "stop": []}


def level(target: str, lv: float, ttft=(100.0, 200.0, 300.0), e2e_p95=400.0, itl_p50=20.0,
          tok_s: Optional[float] = 50.0, error_rate: Optional[float] = 0.0, measured: int = 40) -> dict[str, Any]:
    p50, p95, p99 = ttft
    return {"target": target, "level": lv, "pattern": "concurrency",
            "requests": {"measured": measured, "ok": measured, "failed": 0, "errors": {}},
            "error_rate": error_rate, "throughput": {"output_tokens_per_s": tok_s},
            "metrics": {"ttft_ms": {"p50": p50, "p95": p95, "p99": p99}, "e2e_ms": {"p95": e2e_p95},
                        "itl_ms": {"p50": itl_p50}}}


def make_run(root: Path, name: str, targets: list[str], levels: list[dict[str, Any]],
             dataset_sha: str = SHA_A, sampling: Optional[dict[str, Any]] = None, scenario_sha: str = "s" * 64,
             scores: Optional[list[ScoredResponse]] = None, primary: Optional[str] = "label_correct",
             run_id: Optional[str] = None, write_result: bool = True) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    manifest = {
        "schema_version": 1, "run_id": run_id or name,
        "scenario": {"name": "sc", "path": "sc.yaml", "sha256": scenario_sha,
                     "load": {"pattern": "concurrency", "levels": [1.0, 4.0]}},
        "dataset": {"path": "data.jsonl", "sha256": dataset_sha, "items": 10, "slices": {}},
        "sampling": SAMPLING if sampling is None else sampling,
        "targets": {t: {"configured": {"name": t}} for t in targets},
    }
    (run_dir / "manifest.json").write_bytes(orjson.dumps(manifest))
    if write_result:
        result = {"schema_version": 1, "run_id": run_id or name, "dataset_sha256": dataset_sha, "complete": True,
                  "levels": levels, "targets": {t: {} for t in targets}, "quality": {"primary": primary}}
        (run_dir / "result.json").write_bytes(orjson.dumps(result))
    if scores is not None:
        (run_dir / "scores.jsonl").write_bytes(b"".join(
            orjson.dumps(r, option=orjson.OPT_SERIALIZE_DATACLASS) + b"\n" for r in scores))
    return run_dir


def resp(target: str, item_id: str, answer: Optional[str], correct: Optional[bool], lv: float = 1.0,
         ok: bool = True) -> ScoredResponse:
    if not ok:
        return ScoredResponse(f"{target}-{item_id}-{lv}", target, lv, item_id, 0, 0, "timeout", False, None, {})
    return ScoredResponse(f"{target}-{item_id}-{lv}", target, lv, item_id, 0, 0, "ok", True, answer,
                          {"label_correct": correct, "predicted_label": answer})


# -- refusal and warnings ----------------------------------------------------------------------------
def test_different_dataset_hashes_refuse_naming_both(tmp_path: Path) -> None:
    a = make_run(tmp_path, "run-a", ["m"], [level("m", 1.0)], dataset_sha=SHA_A)
    b = make_run(tmp_path, "run-b", ["m"], [level("m", 1.0)], dataset_sha=SHA_B)
    with pytest.raises(CompareError) as exc:
        compare_runs([a, b], None)
    msg = str(exc.value)
    assert SHA_A in msg and SHA_B in msg and "run-a" in msg and "run-b" in msg
    assert "\n" not in msg


def test_sampling_difference_warns_with_the_keys(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0)])
    b = make_run(tmp_path, "b", ["m"], [level("m", 1.0)],
                 sampling={**SAMPLING, "temperature": 0.7, "logprobs": 5})
    report = compare_runs([a, b], None)
    [warning] = report["warnings"]
    assert "sampling" in warning and "temperature" in warning and "logprobs" in warning
    assert "max_tokens" not in warning and "top_p" not in warning
    assert report["comparisons"]  # a warning, not a refusal


def test_absent_sampling_key_equals_none_and_same_settings_do_not_warn(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0)])
    b = make_run(tmp_path, "b", ["m"], [level("m", 1.0)], sampling={**SAMPLING, "logprobs": None})
    assert compare_runs([a, b], None)["warnings"] == []


def test_scenario_hash_difference_warns(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0)], scenario_sha="1" * 64)
    b = make_run(tmp_path, "b", ["m"], [level("m", 1.0)], scenario_sha="2" * 64)
    [warning] = compare_runs([a, b], None)["warnings"]
    assert "scenario" in warning and "111111111111" in warning and "222222222222" in warning


# -- latency -----------------------------------------------------------------------------------------
def test_relative_change() -> None:
    assert relative_change(100.0, 80.0) == pytest.approx(-20.0)
    assert relative_change(200.0, 250.0) == pytest.approx(25.0)
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0.0, 0.1) is None
    assert relative_change(None, 1.0) is None and relative_change(1.0, None) is None


def test_latency_side_by_side_with_relative_changes(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0, error_rate=0.02), level("m", 4.0)])
    b = make_run(tmp_path, "b", ["m"], [
        # p50 100 -> 80 (-20%), p95 200 -> 250 (+25%), p99 300 -> 300 (0), e2e 400 -> 300 (-25%),
        # itl 20 -> 30 (+50%), tok/s 50 -> 75 (+50%), error rate 2% -> 1% (-50%)
        level("m", 1.0, ttft=(80.0, 250.0, 300.0), e2e_p95=300.0, itl_p50=30.0, tok_s=75.0, error_rate=0.01),
        level("m", 8.0, error_rate=0.1),
    ])
    report = compare_runs([a, b], None)
    [c] = report["comparisons"]
    assert (c["reference_run"], c["run"], c["target"]) == ("a", "b", "m")
    lat = c["latency"]
    [lv] = lat["levels"]
    assert lv["level"] == 1.0 and lv["requests"] == [40, 40]
    m = lv["metrics"]
    expected = {"ttft_p50_ms": (100, 80, -20), "ttft_p95_ms": (200, 250, 25), "ttft_p99_ms": (300, 300, 0),
                "e2e_p95_ms": (400, 300, -25), "itl_p50_ms": (20, 30, 50), "output_tok_s": (50, 75, 50),
                "error_rate": (0.02, 0.01, -50)}
    assert set(m) == set(expected)
    for key, (ref, value, pct) in expected.items():
        assert m[key]["reference"] == pytest.approx(ref) and m[key]["value"] == pytest.approx(value)
        assert m[key]["change_pct"] == pytest.approx(pct), key
    assert m["error_rate"]["delta"] == pytest.approx(-0.01)
    # levels present in only one run are named, not compared
    assert lat["only_in_reference"] == [{"pattern": "concurrency", "level": 4.0}]
    assert lat["only_in_run"] == [{"pattern": "concurrency", "level": 8.0}]

    console = Console(record=True, width=200)
    render_compare(report, console)
    out = console.export_text()
    for text in ("TTFT p95 (ms)", "-20.0%", "+25.0%", "+50.0%", "-50.0%", "levels only in a (m): concurrency 4",
                 "levels only in b (m): concurrency 8"):
        assert text in out


def test_error_rate_from_zero_shows_points(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0, error_rate=0.0, tok_s=None)])
    b = make_run(tmp_path, "b", ["m"], [level("m", 1.0, error_rate=0.05)])
    report = compare_runs([a, b], None)
    m = report["comparisons"][0]["latency"]["levels"][0]["metrics"]
    assert m["error_rate"]["change_pct"] is None and m["error_rate"]["delta"] == pytest.approx(0.05)
    assert m["output_tok_s"]["reference"] is None and m["output_tok_s"]["change_pct"] is None
    console = Console(record=True, width=200)
    render_compare(report, console)
    assert "+5.00pt" in console.export_text()


# -- targets -----------------------------------------------------------------------------------------
def test_target_missing_from_one_run(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["base", "cand"], [level("base", 1.0), level("cand", 1.0)])
    b = make_run(tmp_path, "b", ["cand"], [level("cand", 1.0, ttft=(50.0, 100.0, 150.0))])
    report = compare_runs([a, b], None)
    assert [c["target"] for c in report["comparisons"]] == ["cand"]
    assert report["missing_targets"] == [{"target": "base", "present_in": ["a"], "absent_from": ["b"]}]
    console = Console(record=True, width=200)
    render_compare(report, console)
    assert "target base: present in a; absent from b" in console.export_text()
    # --target restricts; an unknown name is a usage error
    assert compare_runs([a, b], ["cand"])["missing_targets"] == []
    with pytest.raises(CompareError, match="nope"):
        compare_runs([a, b], ["nope"])


def test_reference_is_first_run_holding_the_target(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["x"], [level("x", 1.0)])
    b = make_run(tmp_path, "b", ["x", "y"], [level("x", 1.0), level("y", 1.0)])
    c = make_run(tmp_path, "c", ["x", "y"], [level("x", 1.0), level("y", 1.0, ttft=(200.0, 200.0, 300.0))])
    report = compare_runs([a, b, c], None)
    pairs = [(c["target"], c["reference_run"], c["run"]) for c in report["comparisons"]]
    assert pairs == [("x", "a", "b"), ("x", "a", "c"), ("y", "b", "c")]
    y = report["comparisons"][2]["latency"]["levels"][0]["metrics"]["ttft_p50_ms"]
    assert y["change_pct"] == pytest.approx(100.0)


def test_candidate_vs_baseline_from_separate_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["fp16"], [level("fp16", 1.0)])
    b = make_run(tmp_path, "b", ["q4"], [level("q4", 1.0, ttft=(50.0, 200.0, 300.0))])
    assert compare_runs([a, b], None)["comparisons"] == []  # no shared name: nothing paired by default
    [c] = compare_runs([a, b], ["fp16=q4"])["comparisons"]
    assert (c["reference_target"], c["target"]) == ("fp16", "q4")
    assert c["latency"]["levels"][0]["metrics"]["ttft_p50_ms"]["change_pct"] == pytest.approx(-50.0)


# -- quality -----------------------------------------------------------------------------------------
def _quality_runs(tmp_path: Path) -> tuple[Path, Path]:
    # Reference "a" (label "a" is right). Items i0-i9 both answered:
    #   i0-i2  a / a  both right, agree
    #   i3-i5  a / b  right -> wrong (b = 3)
    #   i6     b / a  wrong -> right (c = 1)
    #   i7-i9  b / b  both wrong, agree
    # rates 6/10 vs 4/10, difference -0.2, agreement 6/10, McNemar p = 2 * (1 + 4) / 16 = 0.625.
    # i10 only in the reference; i11 timed out in the new run (not a pair).
    # A later, wrong response of the reference at level 4 to i0 is not canonical: ignored.
    ref_ans = {**{f"i{k}": "a" for k in range(6)}, **{f"i{k}": "b" for k in range(6, 10)}, "i10": "a", "i11": "a"}
    new_ans = {**{f"i{k}": "a" for k in range(3)}, **{f"i{k}": "b" for k in range(3, 6)}, "i6": "a",
               **{f"i{k}": "b" for k in range(7, 10)}}
    ref = [resp("m", i, ans, ans == "a") for i, ans in ref_ans.items()] + [resp("m", "i0", "b", False, lv=4.0)]
    new = [resp("m", i, ans, ans == "a") for i, ans in new_ans.items()] + [resp("m", "i11", None, None, ok=False)]
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0)], scores=ref)
    b = make_run(tmp_path, "b", ["m"], [level("m", 1.0)], scores=new)
    return a, b


def test_quality_flips_and_mcnemar_on_hand_made_pairs(tmp_path: Path) -> None:
    a, b = _quality_runs(tmp_path)
    report = compare_runs([a, b], None)
    q = report["comparisons"][0]["quality"]
    assert q["available"] and q["primary"] == "label_correct" and report["primary"] == "label_correct"
    assert q["n_pairs"] == 10
    assert q["flips"] == {"right_to_wrong": 3, "wrong_to_right": 1, "both_right": 3, "both_wrong": 3}
    assert q["baseline_rate"] == pytest.approx(0.6) and q["candidate_rate"] == pytest.approx(0.4)
    assert q["difference"] == pytest.approx(-0.2)
    assert q["mcnemar_p"] == pytest.approx(0.625) == pytest.approx(mcnemar_exact(3, 1))
    assert q["agreement"]["value"] == pytest.approx(0.6)
    assert q["items_only_in_reference"] == 1 and q["items_only_in_run"] == 0
    assert q["pairs_with_transport_failure"] == 1
    console = Console(record=True, width=250)
    render_compare(report, console)
    out = console.export_text()
    assert "3 / 1" in out and "0.625" in out and "60.0%" in out and "-20.0%" in out


def test_quality_direction_follows_reference(tmp_path: Path) -> None:
    a, b = _quality_runs(tmp_path)
    q = compare_runs([b, a], None)["comparisons"][0]["quality"]
    assert q["flips"]["right_to_wrong"] == 1 and q["flips"]["wrong_to_right"] == 3
    assert q["difference"] == pytest.approx(0.2)


def test_quality_skipped_without_scores_in_both(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0)], scores=[resp("m", "i0", "a", True)])
    b = make_run(tmp_path, "b", ["m"], [level("m", 1.0)])
    q = compare_runs([a, b], None)["comparisons"][0]["quality"]
    assert q["available"] is False and "b" in q["note"]


# -- result rebuilt from records ---------------------------------------------------------------------
def test_result_rebuilt_from_records_when_absent(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0, ttft=(100.0, 100.0, 100.0))])
    b = make_run(tmp_path, "b", ["m"], [], write_result=False)
    ms = 1_000_000
    records = [RequestRecord(target="m", level=1.0, phase="measure", seq=k, item_id=f"i{k}", repeat=0,
                             request_id=f"r{k}", scheduled_ns=k * 1000 * ms, sent_ns=k * 1000 * ms,
                             first_token_ns=k * 1000 * ms + 50 * ms, end_ns=k * 1000 * ms + 90 * ms,
                             chunk_ns=[k * 1000 * ms + 50 * ms, k * 1000 * ms + 90 * ms], output_tokens=2)
               for k in range(1, 5)]
    (b / "records.jsonl").write_bytes(b"".join(orjson.dumps(record_as_dict(r)) + b"\n" for r in records))
    report = compare_runs([a, b], None)
    m = report["comparisons"][0]["latency"]["levels"][0]["metrics"]["ttft_p50_ms"]
    assert m["value"] == pytest.approx(50.0, rel=0.01) and m["change_pct"] == pytest.approx(-50.0, abs=1)
    assert any("rebuilt from records" in w for w in report["warnings"])


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    a = make_run(tmp_path, "a", ["m"], [level("m", 1.0)], run_id="run[bold]a")
    b = make_run(tmp_path, "b", ["m"], [level("m", 1.0, ttft=(100.0, 250.0, 300.0))])
    out_json = tmp_path / "cmp.json"
    res = runner.invoke(compare_command, [str(a), str(b), "--json", str(out_json)])
    assert res.exit_code == 0, res.output
    assert "+25.0%" in res.output and "run[bold]a" in res.output  # data escaped, not read as markup
    saved = orjson.loads(out_json.read_bytes())
    assert saved["reference"] == "run[bold]a" and saved["comparisons"][0]["target"] == "m"

    res = runner.invoke(compare_command, [str(a), str(b), "--json", "-"])
    assert res.exit_code == 0 and orjson.loads(res.stdout)["runs"][1]["run_id"] == "b"

    c = make_run(tmp_path, "c", ["m"], [level("m", 1.0)], dataset_sha=SHA_B)
    for args, needle in (([str(a), str(c)], SHA_B),                     # different eval sets
                         ([str(a), str(tmp_path / "missing")], "missing"),  # no such directory
                         ([str(a), str(tmp_path)], "manifest.json"),     # not a run directory
                         ([str(a)], "at least two"),                     # one run only
                         ([str(a), str(b), "--target", "zz"], "zz")):    # unknown target
        res = runner.invoke(compare_command, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.startswith("benchbox: error: ") and needle in res.stderr
        assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    res = runner.invoke(compare_command, [])
    assert res.exit_code == 2  # click's own usage error: no run directory at all
