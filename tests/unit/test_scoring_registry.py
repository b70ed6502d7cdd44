"""The scorer registry, config errors, the output contract, and robustness to arbitrary model output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.dataset import Item
from bench.scoring import SCORERS, ScoreInput, Scorer, ScorerConfigError, build_scorer, build_scorers

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
LABELS = ["set_timer", "play_music", "weather_query", "cancel"]
TOOLS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                "required": ["city"]}}]

SPECS = {
    "judge": ({"name": "judge", "url": "http://127.0.0.1:9", "rubric": "../quality/judge/rubric_equivalence.md",
               "human_labels": "../quality/judge/human_labels.jsonl"}, "set_timer", {}),
    "exact": ({"name": "exact", "strip_punctuation": True}, "Paris", {}),
    "label": ({"name": "label", "labels_from_meta": "labels"}, "set_timer", {"labels": LABELS}),
    "token_f1": ({"name": "token_f1"}, "the Eiffel tower", {}),
    "regex": ({"name": "regex", "pattern": r"\d+"}, None, {}),
    "contains": ({"name": "contains", "contains": ["a"], "ignore_case": True}, None, {}),
    "json": ({"name": "json", "schema": "../quality/schemas/invoice.schema.json"},
             {"vendor": "A", "total": 1.0, "due_date": None}, {}),
    "refusal": ({"name": "refusal"}, None, {}),
    "tool_call": ({"name": "tool_call"}, {"name": "get_weather", "arguments": {"city": "Paris"}}, {"tools": TOOLS}),
    "code": ({"name": "code", "timeout_s": 2}, None, {"entry_point": "f", "tests": ["assert f(1) == 2"]}),
}
PRIMARY = {"exact": "exact_match", "label": "label_correct", "token_f1": None, "regex": "regex_match",
           "contains": "contains_match", "json": "field_exact", "refusal": None, "tool_call": "tool_call_valid",
           "code": "code_pass", "judge": "judge_equivalent"}
KIND = {"bool": bool, "float": float, "str": str}


def test_registry_names_and_primaries():
    assert sorted(SCORERS) == sorted(SPECS)
    for name, (spec, _, _) in SPECS.items():
        scorer = build_scorer(spec, SCENARIOS)
        assert isinstance(scorer, Scorer) and scorer.name == name
        assert scorer.primary == PRIMARY[name]
        assert scorer.primary is None or scorer.keys[scorer.primary] == "bool"


def test_keys_are_globally_unique_with_default_configs():
    build_scorers([spec for spec, _, _ in SPECS.values()], SCENARIOS)
    with pytest.raises(ScorerConfigError, match="both produce 'regex_match'"):
        build_scorers([{"name": "regex", "pattern": "a"}, {"name": "regex", "pattern": "b"}], SCENARIOS)
    build_scorers([{"name": "regex", "pattern": "a"}, {"name": "regex", "pattern": "b", "key": "has_b"}], SCENARIOS)


@pytest.mark.parametrize("spec,match", [
    ({"name": "bleu"}, r"unknown scorer 'bleu' \(valid: code, contains, exact, json, judge, label, refusal, regex, "),
    ({}, "unknown scorer None"),
    ("exact", "must be a mapping"),
    ({"name": "exact", "strip_punctuation": "maybe"}, "scorer 'exact': strip_punctuation: "),
    ({"name": "json", "shema": "x.json"}, "scorer 'json': shema: unknown key"),
    ({"name": "code", "timeout_s": 0}, "scorer 'code': timeout_s: Input should be greater than 0"),
    ({"name": "code", "memory_mb": 1}, "scorer 'code': memory_mb: "),
    ({"name": "refusal", "within_chars": 0}, "scorer 'refusal': within_chars: "),
])
def test_config_errors_are_one_line(spec, match):
    with pytest.raises(ScorerConfigError, match=match) as e:
        build_scorer(spec, SCENARIOS)
    assert "\n" not in str(e.value)


def test_checked_in_scenarios_build():
    for path in sorted(SCENARIOS.rglob("*.yaml")):
        quality = yaml.safe_load(path.read_text()).get("quality")
        if quality is None:  # a scenario may measure speed only (e.g. scenarios/academic.yaml)
            continue
        scorers = build_scorers(quality["scorers"], path.parent)
        assert quality["primary"] in {s.primary for s in scorers}, path


def _check_contract(scorer, out: dict) -> None:
    assert set(out) == set(scorer.keys)
    for key, value in out.items():
        assert value is None or type(value) is KIND[scorer.keys[key]], (key, value)


TEXTS = ["", " ", "\x00", "}{", "{", '{"a": "\\', "```", "```json\n", "```python\n", "[" * 3000, "{" * 3000,
         '{"a": 1}' * 50, "\ud800", "I'm sorry, but no.", "set_timer", '{"name": "get_weather", "arguments": 5}',
         '{"vendor": [1, {"x": null}], "total": 1e400}', "def f(x):\n    return x + 1\n", "🙂" * 100]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_never_raises_on_garbage(name):
    spec, reference, meta = SPECS[name]
    scorer = build_scorer(spec, SCENARIOS)
    it = Item("x", None, "p", reference, (), None, meta)
    for text in TEXTS:
        _check_contract(scorer, scorer.score(ScoreInput(it, text, None)))
    # Items lacking what the scorer needs: "not applicable", never an exception.
    bare = Item("x", None, "p", None, (), None, {"labels": 5, "tools": "x", "tests": [1]})
    _check_contract(scorer, scorer.score(ScoreInput(bare, "anything", "length")))


_json_like = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                          max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=300), _json_like.map(json.dumps),
                      _json_like.map(lambda v: "Answer:\n```json\n" + json.dumps(v)[:40])))
def test_fuzz_text_scorers(text):
    for name, (spec, reference, meta) in SPECS.items():
        if name == "code":
            continue
        scorer = build_scorer(spec, SCENARIOS)
        _check_contract(scorer, scorer.score(ScoreInput(Item("x", None, "p", reference, (), None, meta), text, None)))


@settings(max_examples=15, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("def f(x):\n return+1-*/()[]{}'\"#\\ \tabc0"), max_size=60))
def test_fuzz_code_scorer(text):
    spec, _, meta = SPECS["code"]
    scorer = build_scorer(spec, SCENARIOS)
    _check_contract(scorer, scorer.score(ScoreInput(Item("x", None, "p", None, (), None, meta), text, None)))
