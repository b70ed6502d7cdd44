"""bench/gate_run.py: gates parsed from a scenario, evaluated over a run directory, written for CI.

Everything is synthetic and local: a scenario parsed from YAML bytes, a JSONL dataset, scores.jsonl
written from ScoredResponse objects, and a result dict shaped like the sweep's (levels + quality).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

import orjson
import pytest

from bench.dataset import Dataset, Item, load_dataset
from bench.fidelity import class_metrics
from bench.gate_run import junit, labels_of, markdown, parse_gates, read_scores, run_gates
from bench.gates import GateResult
from bench.quality import ScoredResponse, canonical, slice_table
from bench.scenario import LoadedScenario, ScenarioError, parse_scenario
from bench.significance import noninferiority_paired

N_ITEMS = 60
LABELS = ["lights_on", "lights_off", "set_timer"]


def scenario_yaml(gates: list[str], scorer: str = "{name: label, labels_from_meta: labels}",
                  with_candidate: bool = True) -> bytes:
    cand = '  - {name: cand, role: candidate, url: "http://127.0.0.1:9", model: m}\n' if with_candidate else ""
    gate_lines = "".join(f"  - {orjson.dumps(g).decode()}\n" for g in gates)
    return (
        "name: gatetest\n"
        "dataset: data.jsonl\n"
        "targets:\n"
        '  - {name: base, role: baseline, url: "http://127.0.0.1:9", model: m}\n'
        f"{cand}"
        "load: {pattern: concurrency, levels: [1, 4], requests: 100}\n"
        "quality:\n"
        "  scorers:\n"
        f"    - {scorer}\n"
        "  primary: label_correct\n"
        + (f"gates:\n{gate_lines}" if gates else "")
    ).encode()


def write_dataset(folder: Path, meta_key: str = "labels") -> Dataset:
    lines = []
    for i in range(N_ITEMS):
        item = {"id": f"i{i:03d}", "prompt": f"request {i}", "reference": LABELS[i % 3],
                "slices": ["hard"] if i % 2 else ["easy"], "meta": {meta_key: LABELS}}
        lines.append(orjson.dumps(item))
    path = folder / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return load_dataset(path)


def load(folder: Path, gates: list[str], **kw: Any) -> LoadedScenario:
    path = folder / "scenario.yaml"
    raw = scenario_yaml(gates, **kw)
    path.write_bytes(raw)
    return parse_scenario(path, raw)


def responses(dataset: Dataset, target: str, wrong: set[int]) -> list[ScoredResponse]:
    out = []
    for n, item in enumerate(dataset.items):
        for lvl in (1.0, 4.0):
            predicted = LABELS[(n + 1) % 3] if n in wrong else item.reference
            scores = {"label_correct": predicted == item.reference, "label_parsed": True,
                      "predicted_label": predicted, "reference_label": item.reference}
            out.append(ScoredResponse(f"{target}-{lvl}-{item.id}", target, lvl, item.id, 0, n, "ok", True,
                                      predicted, scores))
    return out


def write_scores(run_dir: Path, rs: list[ScoredResponse]) -> None:
    (run_dir / "scores.jsonl").write_bytes(
        b"".join(orjson.dumps(r, option=orjson.OPT_SERIALIZE_DATACLASS) + b"\n" for r in rs))


def level(target: str, lvl: float, ttft_p95: float, e2e_p95: float, failed: int = 0) -> dict[str, Any]:
    return {
        "target": target, "level": lvl, "pattern": "concurrency",
        "requests": {"measured": 100, "ok": 100 - failed, "failed": failed, "warmup": 0, "cold": 0,
                     "errors": {"http_5xx": failed} if failed else {}},
        "error_rate": failed / 100,
        "throughput": {"requests_per_s": 10.0, "output_tokens_per_s": 500.0, "achieved_rate_per_s": None},
        "metrics": {"ttft_ms": {"count": 100, "p50": ttft_p95 / 2, "p95": ttft_p95, "max": ttft_p95 * 2},
                    "itl_ms": {"count": 0}, "tpot_ms": {"count": 0},
                    "e2e_ms": {"count": 100, "p50": e2e_p95 / 2, "p95": e2e_p95, "max": e2e_p95 * 2}},
    }


def run_result(dataset: Dataset, rs: list[ScoredResponse], levels: list[dict]) -> dict[str, Any]:
    items = {i.id: i for i in dataset.items}
    canon = canonical(rs)
    targets = {t: {"slices": slice_table(items, per_item, "label_correct", 30),
                   "classes": class_metrics(per_item, 0.05)} for t, per_item in canon.items()}
    return {"levels": levels, "quality": {"schema_version": 1, "primary": "label_correct", "targets": targets}}


@pytest.fixture
def run(tmp_path: Path):
    """(dataset, run_dir, result) with base perfect and cand wrong on items 0 and 2."""
    dataset = write_dataset(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rs = responses(dataset, "base", set()) + responses(dataset, "cand", {0, 2})
    write_scores(run_dir, rs)
    levels = [level("base", 1.0, 200.0, 800.0), level("base", 4.0, 300.0, 900.0),
              level("cand", 1.0, 250.0, 700.0), level("cand", 4.0, 350.0, 1500.0)]
    return dataset, run_dir, run_result(dataset, rs, levels)


# -- parse_gates ---------------------------------------------------------------------------------------
def test_parse_gates_from_a_scenario(tmp_path):
    dataset = write_dataset(tmp_path)
    loaded = load(tmp_path, ["ttft.p95 < 400ms at concurrency 1", "accuracy >= baseline - 5pt",
                             "label_correct[hard] >= 90%", "recall[set_timer] >= 80%", "label_parsed >= 95%"])
    gates = parse_gates(loaded, dataset)
    assert [g.family for g in gates] == ["latency", "quality", "quality", "quality", "quality"]
    assert gates[2].selector == "hard" and gates[3].selector == "set_timer"
    assert parse_gates(load(tmp_path, []), dataset) == []


@pytest.mark.parametrize("gates, index, problem", [
    (["ttft.p95 < 400ms", "bleu > 1%"], 1, "unknown metric 'bleu'"),
    (["error_rate < 5ms"], 0, "not 'ms'"),
    (["ttft.p95 < 400ms at concurrency 8"], 0, "level 8 is not measured"),
    (["accuracy >= 90%", "error_rate < 1%", "label_correct[nope] >= 1%"], 2, "unknown slice 'nope'"),
    (["accuracy >= 90% at 1"], 0, "quality gates are over all items"),
    (["what"], 0, "expected '<metric>[slice] <op> <budget>"),
])
def test_parse_gates_error_names_index_and_path(tmp_path, gates, index, problem):
    dataset = write_dataset(tmp_path)
    loaded = load(tmp_path, gates)
    with pytest.raises(ScenarioError) as info:
        parse_gates(loaded, dataset)
    msg = str(info.value)
    assert msg.startswith(f"{loaded.path}: gates.{index}: ")
    assert problem in msg and "\n" not in msg


def test_parse_gates_malformed_number_is_a_scenario_error(tmp_path):
    dataset = write_dataset(tmp_path)
    with pytest.raises(ScenarioError, match=r"gates\.0"):
        parse_gates(load(tmp_path, ["e2e.p95 < 1.2.3s"]), dataset)


def test_labels_of_reads_item_labels(tmp_path):
    assert labels_of(write_dataset(tmp_path)) == set(LABELS)


def test_recall_gate_with_labels_in_the_scorer_config(tmp_path):
    dataset = write_dataset(tmp_path, meta_key="choices")
    loaded = load(tmp_path, ["recall[set_timer] >= 80%"],
                  scorer="{name: label, labels: [lights_on, lights_off, set_timer]}")
    assert parse_gates(loaded, dataset)[0].selector == "set_timer"


# -- scores round trip -------------------------------------------------------------------------------------
def test_read_scores_round_trip(tmp_path, run):
    dataset, run_dir, _ = run
    rs = read_scores(run_dir / "scores.jsonl")
    assert len(rs) == 2 * 2 * N_ITEMS and isinstance(rs[0], ScoredResponse)
    assert rs[0] == responses(dataset, "base", set())[0]
    assert read_scores(tmp_path / "missing.jsonl") == []


# -- run_gates ---------------------------------------------------------------------------------------------
def test_run_gates_writes_outputs_and_exit_code(tmp_path, run):
    dataset, run_dir, result = run
    gates = ["ttft.p95 < 400ms at concurrency 1", "e2e.p95 < 1s", "accuracy >= baseline - 5pt",
             "label_parsed >= 90%", "error_rate < 5%"]
    loaded = load(tmp_path, gates)
    results, code = run_gates(loaded, dataset, run_dir, result)

    # only the candidate is judged
    assert [r.target for r in results] == ["cand"] * 5
    verdicts = {r.gate: r.verdict for r in results}
    base_ok = [True] * N_ITEMS
    cand_ok = [n not in {0, 2} for n in range(N_ITEMS)]
    ni = noninferiority_paired(base_ok, cand_ok, 0.05)
    assert ni.verdict == "inconclusive"
    assert verdicts == {"ttft.p95 < 400ms at concurrency 1": "pass", "e2e.p95 < 1s": "fail",
                        "accuracy >= baseline - 5pt": ni.verdict, "label_parsed >= 90%": "pass",
                        "error_rate < 5%": "pass"}
    acc = next(r for r in results if r.gate.startswith("accuracy"))
    assert acc.measured == pytest.approx(-2 / N_ITEMS) and f"paired on {N_ITEMS} items" in acc.detail
    e2e = next(r for r in results if r.gate.startswith("e2e"))
    assert (e2e.measured, e2e.budget) == (1500.0, 1000.0) and "at level 4" in e2e.detail
    assert code == 1
    assert result["gates"]["exit_code"] == 1
    assert result["gates"]["results"] == [r.as_dict() for r in results]

    md = (run_dir / "gates.md").read_text()
    assert md == markdown(results, code)
    assert md.startswith("## benchbox gates: 3 pass, 1 fail, 1 inconclusive (exit 1)")
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| verdict")]
    assert len(rows) == len(results)
    for r, row in zip(results, rows):
        assert row.startswith(f"| {r.verdict.upper()} | cand | `{r.gate}` |")
    assert "| PASS | cand | `ttft.p95 < 400ms at concurrency 1` | 250.0 ms |" in md

    tree = ET.parse(run_dir / "gates.xml")
    suite = tree.getroot()
    assert suite.tag == "testsuite" and suite.get("name") == "benchbox gates: gatetest"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [f"cand: {g}" for g in gates]
    assert all(c.get("classname") == "benchbox.cand" for c in cases)
    by_name = {c.get("name"): c for c in cases}
    failed = by_name["cand: e2e.p95 < 1s"]
    assert failed.find("failure") is not None and failed.find("skipped") is None
    assert "e2e.p95 1500.0 ms at level 4" in failed.find("failure").get("message")
    skipped = by_name["cand: accuracy >= baseline - 5pt"]
    assert skipped.find("skipped").get("message").startswith("inconclusive: paired on 60 items")
    assert f"about {ni.items_needed} items would settle it" in skipped.find("skipped").get("message")
    assert len(suite.findall("testcase/failure")) == 1 and len(suite.findall("testcase/skipped")) == 1


def test_run_gates_all_pass_exit_0(tmp_path, run):
    dataset, run_dir, result = run
    loaded = load(tmp_path, ["ttft.p95 < 400ms", "label_parsed >= 90%"])
    results, code = run_gates(loaded, dataset, run_dir, result)
    assert code == 0 and [r.verdict for r in results] == ["pass", "pass"]
    root = ET.parse(run_dir / "gates.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("2", "0", "0")
    assert "(exit 0)" in (run_dir / "gates.md").read_text()


def test_run_gates_inconclusive_exit_3(tmp_path, run):
    dataset, run_dir, result = run
    loaded = load(tmp_path, ["ttft.p95 < 400ms", "error_rate < 0.5%"])  # 0/200: bound ~1.3 %
    results, code = run_gates(loaded, dataset, run_dir, result)
    assert code == 3 and [r.verdict for r in results] == ["pass", "inconclusive"]


def test_run_gates_without_candidate_judges_the_baseline(tmp_path, run):
    dataset, run_dir, result = run
    loaded = load(tmp_path, ["ttft.p95 < 400ms", "accuracy >= baseline - 5pt"], with_candidate=False)
    results, code = run_gates(loaded, dataset, run_dir, result)
    assert [r.target for r in results] == ["base", "base"]
    assert [r.verdict for r in results] == ["pass", "inconclusive"]
    assert "compares a candidate with the baseline" in results[1].detail and code == 3


def test_run_gates_without_gates_writes_nothing(tmp_path, run):
    dataset, run_dir, result = run
    assert run_gates(load(tmp_path, []), dataset, run_dir, result) == ([], 0)
    assert "gates" not in result
    assert not (run_dir / "gates.md").exists() and not (run_dir / "gates.xml").exists()


# -- markdown / junit on hand-made results ------------------------------------------------------------------
def _results() -> list[GateResult]:
    return [
        GateResult("ttft.p95 < 400ms", "cand", "pass", 350.0, 400.0, "ttft fine"),
        GateResult("error_rate < 1%", "cand", "fail", 0.05, 0.01, 'a | b "quoted" <tag> & more'),
        GateResult("accuracy >= baseline - 5pt", "cand", "inconclusive", -0.02, -0.05, "not sure", items_needed=400),
        GateResult("label_parsed >= 90%", "cand2", "inconclusive", None, 0.9, "no data"),
    ]


def test_markdown_one_row_per_result():
    md = markdown(_results(), 1)
    lines = md.splitlines()
    assert lines[0] == "## benchbox gates: 1 pass, 1 fail, 2 inconclusive (exit 1)"
    rows = lines[4:]
    assert len(rows) == 4
    assert rows[0] == "| PASS | cand | `ttft.p95 < 400ms` | 350.0 ms | ttft fine |"
    assert rows[1] == '| FAIL | cand | `error_rate < 1%` | 5.00% | a / b "quoted" <tag> & more |'
    assert rows[2] == ("| INCONCLUSIVE | cand | `accuracy >= baseline - 5pt` | -2.00% | "
                       "not sure; about 400 items would settle it |")
    assert rows[3] == "| INCONCLUSIVE | cand2 | `label_parsed >= 90%` | - | no data |"


def test_junit_parses_and_counts():
    xml = junit(_results(), "voice")
    root = ET.fromstring(xml.encode())
    assert root.tag == "testsuite" and root.get("name") == "benchbox gates: voice"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("4", "1", "2")
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == ["cand: ttft.p95 < 400ms", "cand: error_rate < 1%",
                                              "cand: accuracy >= baseline - 5pt", "cand2: label_parsed >= 90%"]
    assert list(cases[0]) == []
    assert cases[1].find("failure").get("message") == 'a | b "quoted" <tag> & more'
    assert cases[2].find("skipped").get("message") == "inconclusive: not sure; about 400 items would settle it"
    assert cases[3].find("skipped").get("message") == "inconclusive: no data"
    assert cases[3].get("classname") == "benchbox.cand2"


def test_junit_empty():
    root = ET.fromstring(junit([], "x").encode())
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("0", "0", "0")
