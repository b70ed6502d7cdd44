"""The json scorer (strict vs lenient parse, schema, field metrics) and the tool_call scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.dataset import Item, load_dataset
from bench.scoring import ScoreInput, ScorerConfigError, build_scorer

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
SCHEMA = "../quality/schemas/invoice.schema.json"
REF = {"vendor": "Acme Corp", "invoice_number": "INV-1", "date": "2025-01-09", "total": 100.0,
       "currency": "USD", "due_date": None, "po_number": None}


def score(text: str, reference=None, meta=None, **config) -> dict:
    scorer = build_scorer({"name": "json", **config}, SCENARIOS)
    return scorer.score(ScoreInput(Item("x", None, "p", reference, (), None, meta or {}), text, "stop"))


def parse(text: str, **config) -> tuple:
    out = score(text, compare_fields=False, **config)
    return out["json_strict_ok"], out["json_lenient_ok"], out["json_repairable"], out["json_extracted_by"]


@pytest.mark.parametrize("text,expected", [
    ('{"a": 1}', (True, True, False, "raw")),
    ('\n  {"a": 1}\n\n', (True, True, False, "raw")),
    ('```json\n{"a": 1}\n```', (False, True, True, "fence")),
    ('Here is the result:\n```\n{"a": 1}\n```\nLet me know!', (False, True, True, "fence")),
    ('```json\n{"a": 1}```', (False, True, True, "fence")),
    ('Sure! The extracted data is {"a": 1}. Hope this helps.', (False, True, True, "scan")),
    ('Format {key: value}. Answer: {"a": 1}', (False, True, True, "scan")),
    ('{"vendor": "Acme", "total": 12', (False, False, False, None)),            # truncated
    ('{"a": {"b": 1}, "c": ', (False, False, False, None)),                    # truncated, nested object inside
    ('```json\n{"vendor": "Acme", "tot', (False, False, False, None)),        # truncated inside a fence
    ('[{"a": 1}]', (False, False, False, None)),                               # array where an object is required
    ('{"total": NaN}', (False, False, False, None)),
    ('{"a": 1,}', (False, False, False, None)),                                # trailing comma is not repaired
    ("{'a': 1}", (False, False, False, None)),
    ("", (False, False, False, None)),
    ("null", (False, False, False, None)),
    ("[" * 5000 + "]" * 5000, (False, False, False, None)),                    # deeper than the parser's stack
])
def test_strict_vs_lenient(text, expected):
    assert parse(text) == expected


def test_scanner_respects_strings_and_escapes():
    text = 'Result: {"note": "use } and { and \\" and \\\\", "n": {"m": "]"}} -- done {"other": 2}'
    out = score(text, {"note": 'use } and { and " and \\', "n": {"m": "]"}})
    assert out["json_lenient_ok"] and out["json_extracted_by"] == "scan" and out["field_exact"] is True


def test_array_allowed_when_object_not_required():
    assert parse('[{"a": 1}]', require_object=False) == (True, True, False, "raw")
    assert parse('The list: [1, 2, "]"] ok', require_object=False) == (False, True, True, "scan")


@pytest.mark.parametrize("change,keyword,path", [
    ({"po_number": "DELETE"}, "required", "$"),
    ({"notes": "paid"}, "additionalProperties", "$"),
    ({"total": "100.00"}, "type", "$.total"),
    ({"currency": "usd"}, "enum", "$.currency"),
    ({"date": "2025-13-45"}, "format", "$.date"),
    ({"vendor": ""}, "minLength", "$.vendor"),
])
def test_schema_errors_name_the_keyword_and_path(change, keyword, path):
    obj = {**REF, **change}
    obj = {k: v for k, v in obj.items() if v != "DELETE"}
    out = score(json.dumps(obj), REF, schema=SCHEMA)
    assert (out["schema_valid"], out["schema_error_keyword"], out["schema_error_path"]) == (False, keyword, path)


def test_schema_pattern_keyword_and_nothing_parsed(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"type": "object", "properties": {"po": {"pattern": "^PO-"}}}))
    scorer = build_scorer({"name": "json", "schema": "s.json", "compare_fields": False}, tmp_path)
    out = scorer.score(ScoreInput(Item("x", None, "p"), '{"po": "X-1"}', "stop"))
    assert (out["schema_valid"], out["schema_error_keyword"], out["schema_error_path"]) == (False, "pattern", "$.po")
    out = scorer.score(ScoreInput(Item("x", None, "p"), '{"po": "PO-1"', "length"))
    assert out["schema_valid"] is None and out["schema_error_keyword"] is None


@pytest.mark.parametrize("write,match", [
    (None, "cannot read"), ("{not json", "is not valid JSON"), ('{"type": 5}', "not a valid Draft 2020-12 schema"),
])
def test_schema_config_errors(tmp_path, write, match):
    if write is not None:
        (tmp_path / "s.json").write_text(write)
    with pytest.raises(ScorerConfigError, match=f"scorer 'json': schema: .*{match}"):
        build_scorer({"name": "json", "schema": "s.json"}, tmp_path)


def test_fields_wrong_value_and_hallucinated_null():
    pred = {**REF, "vendor": " ACME  corp", "invoice_number": "INV-2", "total": 100, "due_date": "2025-02-09"}
    out = score(json.dumps(pred), REF)
    # non-null predictions over reference fields: 6; correct: vendor, date, total, currency = 4; reference non-null: 5
    assert out["field_precision"] == pytest.approx(4 / 6) and out["field_recall"] == pytest.approx(4 / 5)
    assert out["field_f1"] == pytest.approx(16 / 22)
    assert out["missing_field_rate"] == 0.0 and out["hallucinated_field_rate"] == 0.5
    assert out["field_exact"] is False and out["not_found_correct"] is False


def test_fields_missing_vs_not_found():
    pred = {k: REF[k] for k in ("vendor", "invoice_number", "date", "currency")}  # total, due_date, po absent
    out = score(json.dumps(pred), REF)
    assert out["field_precision"] == 1.0 and out["field_recall"] == 0.8 and out["field_f1"] == pytest.approx(8 / 9)
    assert out["missing_field_rate"] == pytest.approx(0.2) and out["hallucinated_field_rate"] == 0.0
    assert out["not_found_correct"] is True and out["field_exact"] is False
    full = score(json.dumps(REF), REF)
    assert full["field_exact"] is True and full["not_found_correct"] is True and full["field_f1"] == 1.0


def test_fields_numbers_and_coercion():
    ref = {"total": 12.5, "qty": 3}
    assert score('{"total": 12.5000001, "qty": 3.0}', ref)["field_exact"] is True   # within 1e-6 relative
    assert score('{"total": 12.51, "qty": 3}', ref)["field_exact"] is False
    assert score('{"total": "12.50", "qty": 3}', ref)["field_exact"] is False
    assert score('{"total": "12.50", "qty": 3}', ref, coerce_numbers=True)["field_exact"] is True
    assert score('{"total": true, "qty": 3}', {"total": 1, "qty": 3})["field_exact"] is False


def test_fields_when_nothing_parsed_are_zero_end_to_end():
    out = score('{"vendor": "Acme Corp", "invoice_number": "INV-1", "date": "2025-', REF, schema=SCHEMA)
    assert out["json_lenient_ok"] is False and out["schema_valid"] is None
    assert (out["field_precision"], out["field_recall"], out["field_f1"]) == (0.0, 0.0, 0.0)
    assert out["field_exact"] is False and out["not_found_correct"] is False
    assert out["missing_field_rate"] == 1.0 and out["hallucinated_field_rate"] == 0.0


def test_fields_not_applicable_and_field_source():
    out = score('{"a": 1}', None)
    assert out["field_exact"] is None and out["not_found_correct"] is None
    no_nulls = score('{"a": 1}', {"a": 1})
    assert no_nulls["not_found_correct"] is None and no_nulls["hallucinated_field_rate"] is None
    fenced = "```json\n" + json.dumps(REF) + "\n```"
    assert score(fenced, REF)["field_exact"] is True
    assert score(fenced, REF, field_source="strict")["field_exact"] is False
    assert build_scorer({"name": "json"}, SCENARIOS).primary == "field_exact"
    plain = build_scorer({"name": "json", "compare_fields": False}, SCENARIOS)
    assert plain.primary == "json_strict_ok" and "field_exact" not in plain.keys


def test_real_extraction_items():
    ds = load_dataset(ROOT / "quality" / "extraction.jsonl")
    scorer = build_scorer({"name": "json", "schema": SCHEMA}, SCENARIOS)
    for it in ds.items:
        out = scorer.score(ScoreInput(it, json.dumps(it.reference, ensure_ascii=False), "stop"))
        assert out["json_strict_ok"] and out["schema_valid"] and out["field_exact"], it.id
    with_null = next(it for it in ds.items if "missing_field" in it.slices)
    null_key = next(k for k, v in with_null.reference.items() if v is None)
    pred = {**with_null.reference, null_key: "2025-01-01" if null_key == "due_date" else "PO-00000"}
    out = scorer.score(ScoreInput(with_null, "Here you go:\n" + json.dumps(pred), "stop"))
    assert out["json_repairable"] is True and out["schema_valid"] is True
    assert out["field_exact"] is False and out["not_found_correct"] is False and out["hallucinated_field_rate"] > 0


# --- tool_call ------------------------------------------------------------------------------------

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"], "additionalProperties": False}}},
    {"name": "set_timer", "parameters": {"type": "object", "properties": {
        "minutes": {"type": "integer", "minimum": 1}}, "required": ["minutes"]}},
]
CALL_REF = {"name": "get_weather", "arguments": {"city": "Paris"}}


def tool(text: str, reference=CALL_REF, tools=TOOLS) -> dict:
    scorer = build_scorer({"name": "tool_call"}, SCENARIOS)
    meta = {"tools": tools} if tools is not None else {}
    return scorer.score(ScoreInput(Item("x", None, "p", reference, (), None, meta), text, "stop"))


@pytest.mark.parametrize("text,valid,name_ok,args_ok,match,error", [
    ('{"name": "get_weather", "arguments": {"city": "paris"}}', True, True, True, True, None),
    ('{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}',
     True, True, True, True, None),
    ('```json\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n```',
     True, True, True, False, None),
    ('{"name": "set_timer", "arguments": {"minutes": 5}}', True, False, True, False, None),
    ('{"name": "get_weather", "arguments": {}}', False, True, False, False, "args:required at $"),
    ('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "k"}}', False, True, False, False,
     "args:enum at $.unit"),
    ('{"name": "set_timer", "arguments": {"minutes": 0}}', False, False, False, False, "args:minimum at $.minutes"),
    ('{"name": "book_flight", "arguments": {}}', False, False, False, False, "unknown_tool"),
    ('{"name": "get_weather", "arguments": "{city: Paris}"}', False, True, False, False, "bad_arguments"),
    ('{"arguments": {"city": "Paris"}}', False, False, False, True, "no_name"),
    ("I'll check the weather in Paris for you.", False, False, False, False, "no_json"),
])
def test_tool_call(text, valid, name_ok, args_ok, match, error):
    out = tool(text)
    assert (out["tool_call_valid"], out["tool_name_correct"], out["tool_args_valid"], out["tool_args_match"],
            out["tool_call_error"]) == (valid, name_ok, args_ok, match, error)


def test_tool_call_not_applicable():
    assert set(tool('{"name": "get_weather"}', tools=None).values()) == {None}
    out = tool('{"name": "set_timer", "arguments": {"minutes": 2}}', reference=None)
    assert out["tool_call_valid"] is True and out["tool_name_correct"] is None and out["tool_args_match"] is None
    bad = tool('{"name": "x", "arguments": {}}', tools=[{"name": "x", "parameters": {"type": 5}}])
    assert bad["tool_call_valid"] is None and bad["tool_call_error"] == "bad_tool_schema"


def test_tool_call_scorer_prefers_structured_tool_calls():
    from pathlib import Path

    from bench.dataset import Item
    from bench.scoring.base import ScoreInput
    from bench.scoring import build_scorer

    tools = [{"name": "set_timer", "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}},
                                                  "required": ["minutes"]}}]
    item = Item(id="t1", messages=None, prompt="timer 5", reference={"name": "set_timer", "arguments": {"minutes": 5}},
                meta={"tools": tools})
    scorer = build_scorer({"name": "tool_call"}, Path("."))
    structured = [{"id": "c1", "type": "function", "function": {"name": "set_timer", "arguments": '{"minutes": 5}'}}]
    got = scorer.score(ScoreInput(item=item, text="", finish_reason="tool_calls", tool_calls=structured))
    assert got["tool_call_valid"] is True and got["tool_args_match"] is True
    wrong = [{"type": "function", "function": {"name": "set_timer", "arguments": '{"minutes": "five"}'}}]
    got = scorer.score(ScoreInput(item=item, text='{"name": "set_timer", "arguments": {"minutes": 5}}',
                                  finish_reason="tool_calls", tool_calls=wrong))
    assert got["tool_call_valid"] is False  # the structured call decides, not the text


def test_chat_adapter_sends_item_tools_only_in_api_mode():
    from bench.adapters.openai_chat import OpenAIChatAdapter
    from bench.dataset import Item
    from bench.scenario import Sampling

    item = Item(id="t1", messages=None, prompt="timer 5", meta={"tools": [{"name": "set_timer", "parameters": {}}]})
    adapter = OpenAIChatAdapter()
    assert "tools" not in adapter.build_body(item, Sampling(), "m")
    body = adapter.build_body(item, Sampling(tools="api"), "m")
    assert body["tools"] == [{"type": "function", "function": {"name": "set_timer", "parameters": {}}}]
