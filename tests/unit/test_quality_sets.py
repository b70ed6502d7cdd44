"""Checks for the generated quality eval sets under quality/ (see quality/README.md)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
QUALITY = ROOT / "quality"

# Mirrors the slice tags documented in quality/README.md.
DOCUMENTED_SLICES = {
    "voice": {"easy", "hard", "multilingual", "short_context", "long_context", "rare_label"},
    "extraction": {"strict_json", "easy", "hard", "long_context", "multilingual", "missing_field"},
    "coding": {"easy", "hard", "short_context", "long_context"},
}
ALLOWED_KEYS = {"id", "messages", "prompt", "reference", "slices", "max_tokens", "meta"}
REQUIRED_KEYS = {"id", "reference", "slices"}
RARE_LABELS = {"check_balance", "report_fraud", "medical_emergency"}
SETS = ("voice", "extraction", "coding")


def _load_generate():
    name = "benchbox_quality_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, QUALITY / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generate()


def _load(kind: str) -> list[dict]:
    path = QUALITY / f"{kind}.jsonl"
    raw = path.read_bytes()
    assert b"\r\n" not in raw, f"{path.name}: CRLF line endings"
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", params=SETS)
def dataset(request):
    return request.param, _load(request.param)


def _user_text(item: dict) -> str:
    return item["messages"][-1]["content"] if "messages" in item else item["prompt"]


# ---------------------------------------------------------------------------
# generic shape
# ---------------------------------------------------------------------------

def test_at_least_200_items_unique_ids(dataset):
    kind, items = dataset
    assert len(items) >= 200
    ids = [it["id"] for it in items]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, str) and i for i in ids)


def test_item_keys_and_fields(dataset):
    kind, items = dataset
    for it in items:
        keys = set(it)
        assert REQUIRED_KEYS <= keys, it["id"]
        assert keys <= ALLOWED_KEYS, (it["id"], keys - ALLOWED_KEYS)
        assert ("messages" in it) != ("prompt" in it), it["id"]
        assert "messages" in it, "all three sets use chat messages"
        msgs = it["messages"]
        roles = [m["role"] for m in msgs]
        # system prompt, optional worked examples (user/assistant pairs), then the item's user turn
        assert roles[0] == "system" and roles[-1] == "user", it["id"]
        assert roles[1:-1] == ["user", "assistant"] * ((len(roles) - 2) // 2), it["id"]
        for m in msgs:
            assert set(m) == {"role", "content"} and isinstance(m["content"], str) and m["content"], it["id"]
        if "max_tokens" in it:
            assert isinstance(it["max_tokens"], int) and not isinstance(it["max_tokens"], bool)
            assert it["max_tokens"] > 0
        if "meta" in it:
            assert isinstance(it["meta"], dict)


def test_slice_tags_documented(dataset):
    kind, items = dataset
    assert set(gen.SLICE_TAGS[kind]) == DOCUMENTED_SLICES[kind]
    used = Counter()
    for it in items:
        tags = it["slices"]
        assert isinstance(tags, list) and tags, it["id"]
        assert len(tags) == len(set(tags)), it["id"]
        for t in tags:
            assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", t), t
            assert t in DOCUMENTED_SLICES[kind], (it["id"], t)
        assert ("easy" in tags) != ("hard" in tags), it["id"]
        used.update(tags)
    assert set(used) == DOCUMENTED_SLICES[kind], "every documented slice is populated"


def test_prompts_unique(dataset):
    kind, items = dataset
    texts = [_user_text(it).lower() for it in items]
    assert len(texts) == len(set(texts))


# ---------------------------------------------------------------------------
# voice
# ---------------------------------------------------------------------------

def test_voice_references_and_rare_labels():
    items = _load("voice")
    labels = items[0]["meta"]["labels"]
    assert len(labels) == len(set(labels)) >= 10
    assert RARE_LABELS <= set(labels)
    counts = Counter(it["reference"] for it in items)
    for it in items:
        assert it["meta"] == {"labels": labels, "task": "intent"}
        assert it["reference"] in labels
        assert it["max_tokens"] == 8
        system = it["messages"][0]["content"]
        assert all(f"- {label}:" in system for label in labels)
        assert ("rare_label" in it["slices"]) == (it["reference"] in RARE_LABELS), it["id"]
        assert ("short_context" in it["slices"]) != ("long_context" in it["slices"]), it["id"]
        if "long_context" in it["slices"]:
            assert len(_user_text(it).split()) >= 300, it["id"]
    for label in RARE_LABELS:
        assert 0 < counts[label] / len(items) < 0.05, (label, counts[label])
    # the rest is skewed, not uniform
    common = [c for label, c in counts.items() if label not in RARE_LABELS]
    assert max(common) >= 2 * min(common)
    ml = sum("multilingual" in it["slices"] for it in items)
    assert 0.07 <= ml / len(items) <= 0.13


# ---------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------

def test_extraction_references_validate():
    schema = json.loads((QUALITY / "schemas" / "invoice.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    items = _load("extraction")
    for it in items:
        ref = it["reference"]
        assert isinstance(ref, dict)
        errors = list(validator.iter_errors(ref))
        assert not errors, (it["id"], errors[0].message)
        assert it["meta"] == {"schema": "invoice.schema.json", "task": "extraction"}
        assert it["max_tokens"] == 160
        assert "strict_json" in it["slices"]
        has_null = ref["due_date"] is None or ref["po_number"] is None
        assert ("missing_field" in it["slices"]) == has_null, it["id"]
        if ref["due_date"] is not None:
            assert ref["due_date"] >= ref["date"]
        if "long_context" in it["slices"]:
            assert len(_user_text(it).split()) >= 1000, it["id"]
        # the schema the model is shown is the checked-in one
        assert json.dumps(schema, ensure_ascii=False, separators=(",", ":")) in it["messages"][0]["content"]
        gen.check_extraction_item(it)  # every non-null value is visible in the document
    share = Counter(t for it in items for t in it["slices"])
    assert 0.15 <= share["missing_field"] / len(items) <= 0.25
    assert 0.07 <= share["multilingual"] / len(items) <= 0.13
    assert 0.10 <= share["long_context"] / len(items) <= 0.15


# ---------------------------------------------------------------------------
# coding
# ---------------------------------------------------------------------------

def test_coding_references_pass_their_tests():
    items = _load("coding")
    for it in items:
        meta = it["meta"]
        assert set(meta) == {"task", "entry_point", "tests"}
        assert meta["task"] == "code"
        assert it["max_tokens"] == 192
        assert 3 <= len(meta["tests"]) <= 5, it["id"]
        assert f"`{meta['entry_point']}(" in _user_text(it)
        ns: dict = {}
        exec(it["reference"], ns)  # noqa: S102 - our own generated reference code
        assert callable(ns[meta["entry_point"]]), it["id"]
        for line in meta["tests"]:
            assert line.startswith("assert "), line
            exec(line, ns)  # noqa: S102
        if "long_context" in it["slices"]:
            assert len(_user_text(it).split()) >= 300, it["id"]
    assert len({it["meta"]["entry_point"] for it in items}) >= 25


def test_coding_wrong_answer_fails_tests():
    """The tests actually discriminate: a stub returning None fails at least one assert per item."""
    for it in _load("coding"):
        ns: dict = {}
        exec(f"def {it['meta']['entry_point']}(*args, **kwargs):\n    return None\n", ns)  # noqa: S102
        failed = False
        for line in it["meta"]["tests"]:
            try:
                exec(line, ns)  # noqa: S102
            except AssertionError:
                failed = True
                break
        assert failed, it["id"]


# ---------------------------------------------------------------------------
# determinism / freshness
# ---------------------------------------------------------------------------

def test_build_all_is_deterministic_and_matches_checked_in_files():
    first = gen.build_all()
    second = gen.build_all()
    assert set(first) == {"voice.jsonl", "extraction.jsonl", "coding.jsonl"}
    for name in first:
        a = gen.serialize(first[name])
        b = gen.serialize(second[name])
        assert a.encode("utf-8") == b.encode("utf-8"), name
        on_disk = (QUALITY / name).read_bytes()
        assert on_disk == a.encode("utf-8"), f"{name} is stale: run python quality/generate.py"
    schema_on_disk = (QUALITY / "schemas" / "invoice.schema.json").read_bytes()
    assert schema_on_disk == gen.schema_text().encode("utf-8")
