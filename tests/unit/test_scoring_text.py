"""Scorers over plain text answers: exact, label, token_f1, regex/contains, refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.dataset import Item
from bench.scoring import ScoreInput, ScorerConfigError, build_scorer
from bench.scoring.f1 import token_f1

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["set_timer", "play_music", "weather_query", "call_contact", "send_message", "navigation",
          "smart_home_lights", "add_to_shopping_list", "cancel", "volume_change", "check_balance",
          "report_fraud", "medical_emergency"]


def item(reference=None, meta=None) -> Item:
    return Item("t-1", [{"role": "user", "content": "x"}], None, reference, (), None, meta or {})


def run(spec: dict, text: str, reference=None, meta=None) -> dict:
    return build_scorer(spec, ROOT / "scenarios").score(ScoreInput(item(reference, meta), text, "stop"))


# --- exact ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,ok", [
    ("Paris", True), ("  paris\n", True), ("ＰＡＲＩＳ", True), ("Paris.", False), ("Paris, France", False),
])
def test_exact_normalises_case_width_and_whitespace(text, ok):
    assert run({"name": "exact"}, text, "Paris") == {"exact_match": ok}


def test_exact_strip_punctuation_and_list_and_missing_reference():
    assert run({"name": "exact", "strip_punctuation": True}, "«Paris»!", "Paris")["exact_match"] is True
    assert run({"name": "exact"}, "new  york", ["NYC", "New York"])["exact_match"] is True
    assert run({"name": "exact"}, "42", 42)["exact_match"] is True
    assert run({"name": "exact"}, "anything", None) == {"exact_match": None}
    assert run({"name": "exact"}, "anything", {"a": 1}) == {"exact_match": None}


# --- label ----------------------------------------------------------------------------------------

LABEL = {"name": "label", "labels": LABELS}


@pytest.mark.parametrize("text,predicted", [
    ("set_timer", "set_timer"),
    ("SET_TIMER", "set_timer"),
    ("set timer", "set_timer"),
    (" set-timer.\n", "set_timer"),
    ("**set_timer**", "set_timer"),
    ("`set_timer`", "set_timer"),
    ("The intent is set_timer.", "set_timer"),
    ("Label: set timer", "set_timer"),
    ("I think it's set_timer, not cancel", "set_timer"),
    ("intent = call_contact", "call_contact"),
])
def test_label_parses_disfluent_answers(text, predicted):
    out = run(LABEL, text, "set_timer" if predicted == "set_timer" else "cancel")
    assert out["predicted_label"] == predicted and out["label_parsed"] is True
    assert out["label_correct"] is (predicted == "set_timer")


@pytest.mark.parametrize("text", ["weather", "timer", "reset_timer", "set_timers", "", "   ", "I'm not sure.",
                                  "musica por favor"])
def test_label_unparseable_is_none_and_wrong(text):
    out = run(LABEL, text, "weather_query")
    assert out == {"label_correct": False, "label_parsed": False, "predicted_label": None,
                   "reference_label": "weather_query"}


def test_label_on_multiple_none_refuses_to_guess_between_two_labels():
    spec = {**LABEL, "on_multiple": "none"}
    assert run(spec, "set_timer or cancel", "set_timer")["predicted_label"] is None
    assert run(spec, "the answer is set_timer", "set_timer")["label_correct"] is True


def test_label_longer_label_wins_at_the_same_position():
    out = run({"name": "label", "labels": ["call", "call_contact"]}, "it is call contact", "call_contact")
    assert out["predicted_label"] == "call_contact"
    assert run({"name": "label", "labels": ["call", "call_contact"], "on_multiple": "none"},
               "it is call contact", "call_contact")["label_correct"] is True


def test_label_from_meta_and_missing_meta():
    spec = {"name": "label", "labels_from_meta": "labels"}
    assert run(spec, "Navigation", "navigation", {"labels": LABELS})["label_correct"] is True
    assert run(spec, "navigation", "navigation", {})["label_correct"] is None
    assert run(LABEL, "navigation", None)["label_correct"] is None  # no reference


def test_label_config_errors():
    with pytest.raises(ScorerConfigError, match="exactly one of 'labels' or 'labels_from_meta'"):
        build_scorer({"name": "label", "labels": ["a"], "labels_from_meta": "labels"}, ROOT)
    with pytest.raises(ScorerConfigError, match="on_multiple"):
        build_scorer({"name": "label", "labels": ["a"], "on_multiple": "last"}, ROOT)


def test_voice_references_score_correct_and_rare_label_in_prose():
    scorer = build_scorer({"name": "label", "labels_from_meta": "labels"}, ROOT / "scenarios")
    lines = (ROOT / "quality" / "voice.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines]
    for obj in items:
        it = Item(obj["id"], obj["messages"], None, obj["reference"], tuple(obj["slices"]), 8, obj["meta"])
        assert scorer.score(ScoreInput(it, obj["reference"], "stop"))["label_correct"] is True
        spoken = f"The intent is {obj['reference'].replace('_', ' ').upper()}."
        assert scorer.score(ScoreInput(it, spoken, "stop"))["predicted_label"] == obj["reference"]


# --- token_f1 -------------------------------------------------------------------------------------

def test_token_f1_hand_computed():
    assert token_f1("The Eiffel Tower", "eiffel tower") == 1.0  # article and case removed
    # pred: {in, paris, france}, ref: {paris}: P = 1/3, R = 1, F1 = 0.5
    assert token_f1("in Paris, France", "Paris") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0 and token_f1("a", "Paris") == 0.0  # "a" normalises to nothing
    assert run({"name": "token_f1"}, "Paris!", ["London", "paris"]) == {"token_f1": 1.0}
    assert run({"name": "token_f1"}, "Paris", None) == {"token_f1": None}


# --- regex / contains -----------------------------------------------------------------------------

def test_regex_and_contains():
    assert run({"name": "regex", "pattern": r"\b\d{4}-\d{2}-\d{2}\b"}, "due 2025-01-23.") == {"regex_match": True}
    assert run({"name": "regex", "pattern": "yes|no", "fullmatch": True, "key": "yes_no"}, " maybe ") == {
        "yes_no": False}
    assert run({"name": "regex", "pattern": "^ok$", "ignore_case": True, "multiline": True}, "x\nOK\n")[
        "regex_match"] is True
    spec = {"name": "contains", "contains": ["Paris", "France"]}
    assert run(spec, "Paris is in France") == {"contains_match": True}
    assert run(spec, "paris is in france") == {"contains_match": False}
    assert run({**spec, "ignore_case": True}, "PARIS is in FRANCE") == {"contains_match": True}
    assert build_scorer({**spec, "key": "mentions_city"}, ROOT).primary == "mentions_city"


@pytest.mark.parametrize("spec,match", [
    ({"name": "regex", "pattern": "(unclosed"}, "scorer 'regex': pattern: invalid regular expression"),
    ({"name": "regex", "pattern": "x", "key": "Bad Key"}, "scorer 'regex': key"),
    ({"name": "contains", "contains": []}, "scorer 'contains': contains"),
    ({"name": "contains", "contains": [""]}, "non-empty"),
])
def test_regex_config_errors(spec, match):
    with pytest.raises(ScorerConfigError, match=match):
        build_scorer(spec, ROOT)


# --- refusal --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,refusal,abstention", [
    ("I’m sorry, but I can’t help with that.", True, False),
    ("As an AI language model, I cannot browse the web.", True, False),
    ("I am unable to provide medical advice.", True, False),
    ("I don't know the answer to that.", False, True),
    ("I'm not sure; there is not enough information in the document.", False, True),
    ("set_timer", False, False),
    ('{"vendor": "Acme", "total": 12.5}', False, False),
])
def test_refusal_defaults(text, refusal, abstention):
    assert run({"name": "refusal"}, text) == {"refusal": refusal, "abstention": abstention}


def test_refusal_custom_patterns_and_window():
    spec = {"name": "refusal", "patterns": [r"\bno puedo\b"], "abstain_patterns": [r"\bno s[eé]\b"]}
    assert run(spec, "Lo siento, no puedo ayudar. No sé.") == {"refusal": True, "abstention": True}
    late = "x" * 50 + " I cannot do that"
    assert run({"name": "refusal", "within_chars": 40}, late)["refusal"] is False
    with pytest.raises(ScorerConfigError, match="scorer 'refusal': patterns: invalid regular expression"):
        build_scorer({"name": "refusal", "patterns": ["("]}, ROOT)
