"""Eval-set loading: one-line errors with file:line, slice filter + limit, content hash."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from bench.dataset import Item, dataset_hash, load_dataset
from bench.scenario import DatasetSpec, ScenarioError

ROWS = [
    {"id": "a1", "prompt": "2+2=", "reference": "4", "slices": ["math"]},
    {"id": "a2", "messages": [{"role": "user", "content": "Capital of France?"}], "reference": "Paris",
     "slices": ["geo"]},
    {"id": 3, "prompt": "3*3=", "slices": ["math", "short"], "max_tokens": 8, "meta": {"source": "gsm"}},
    {"id": "a4", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
]


def write(tmp_path: Path, rows, name: str = "eval.jsonl") -> Path:
    p = tmp_path / name
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in rows]
    p.write_text("\n".join(lines) + "\n")
    return p


def error_of(path: Path, spec: DatasetSpec | None = None) -> str:
    with pytest.raises(ScenarioError) as ei:
        load_dataset(path, spec)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_loads_items(tmp_path: Path) -> None:
    ds = load_dataset(write(tmp_path, ROWS))
    assert [i.id for i in ds.items] == ["a1", "a2", "3", "a4"]  # integer ids become strings
    a1, a2, i3, _ = ds.items
    assert (a1.prompt, a1.messages, a1.reference, a1.slices) == ("2+2=", None, "4", ("math",))
    assert a2.messages == [{"role": "user", "content": "Capital of France?"}] and a2.prompt is None
    assert (i3.max_tokens, i3.meta) == (8, {"source": "gsm"})
    assert ds.slice_counts() == {"geo": 1, "math": 2, "short": 1}
    assert len(ds.sha256) == 64 and ds.sha256 == dataset_hash(list(ds.items))


def test_blank_lines_skipped_but_line_numbers_kept(tmp_path: Path) -> None:
    p = write(tmp_path, [ROWS[0], "", "   ", '{"id": "x", "prompt": 5}'])
    assert error_of(p) == f"{p}:4: 'prompt' must be a string"


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    p = write(tmp_path, [ROWS[0], ROWS[1], {"id": "a1", "prompt": "again"}])
    assert error_of(p) == f"{p}:3: duplicate item id 'a1' (first on line 1)"


def test_int_and_string_ids_collide(tmp_path: Path) -> None:
    p = write(tmp_path, [{"id": 7, "prompt": "x"}, {"id": "7", "prompt": "y"}])
    assert error_of(p) == f"{p}:2: duplicate item id '7' (first on line 1)"


def test_both_messages_and_prompt(tmp_path: Path) -> None:
    p = write(tmp_path, [ROWS[0], {"id": "b", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}])
    assert error_of(p) == f"{p}:2: give exactly one of 'messages' (chat) or 'prompt' (completions)"


def test_neither_messages_nor_prompt(tmp_path: Path) -> None:
    p = write(tmp_path, [{"id": "b", "reference": "x"}])
    assert error_of(p) == f"{p}:1: give exactly one of 'messages' (chat) or 'prompt' (completions)"


def test_bad_json_line_number(tmp_path: Path) -> None:
    p = write(tmp_path, [ROWS[0], ROWS[1], '{"id": "c", "prompt": "unterminated}'])
    msg = error_of(p)
    assert msg.startswith(f"{p}:3: invalid JSON"), msg


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    assert error_of(p) == f"{p}: the dataset has no items (after the scenario's slice filter)"
    p.write_text("\n\n  \n")
    assert "no items" in error_of(p)


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.jsonl"
    assert error_of(p).startswith(f"{p}: cannot read dataset: ")


def test_unknown_key(tmp_path: Path) -> None:
    p = write(tmp_path, [{"id": "a", "prompt": "x", "answer": "y"}])
    msg = error_of(p)
    assert msg.startswith(f"{p}:1: unknown key 'answer' (allowed: "), msg
    assert "reference" in msg


@pytest.mark.parametrize("row,problem", [
    ('["not", "an", "object"]', "expected a JSON object per line"),
    ({"prompt": "x"}, "'id' must be a non-empty string"),
    ({"id": "", "prompt": "x"}, "'id' must be a non-empty string"),
    ({"id": True, "prompt": "x"}, "'id' must be a non-empty string"),
    ({"id": 1.5, "prompt": "x"}, "'id' must be a non-empty string"),
    ({"id": "a", "messages": []}, "'messages' must be a non-empty list"),
    ({"id": "a", "messages": [{"content": "x"}]}, "'messages' must be a non-empty list"),
    ({"id": "a", "messages": "hi"}, "'messages' must be a non-empty list"),
    ({"id": "a", "prompt": "x", "slices": "math"}, "'slices' must be a list of strings"),
    ({"id": "a", "prompt": "x", "slices": [1]}, "'slices' must be a list of strings"),
    ({"id": "a", "prompt": "x", "max_tokens": 0}, "'max_tokens' must be a positive integer"),
    ({"id": "a", "prompt": "x", "max_tokens": True}, "'max_tokens' must be a positive integer"),
    ({"id": "a", "prompt": "x", "max_tokens": 2.0}, "'max_tokens' must be a positive integer"),
    ({"id": "a", "prompt": "x", "meta": []}, "'meta' must be an object"),
])
def test_item_validation(tmp_path: Path, row, problem: str) -> None:
    p = write(tmp_path, [ROWS[0], row])
    msg = error_of(p)
    assert msg.startswith(f"{p}:2: {problem}"), msg


def test_slice_filter_then_limit(tmp_path: Path) -> None:
    p = write(tmp_path, ROWS)
    assert [i.id for i in load_dataset(p, DatasetSpec(path="x", slices=["math"])).items] == ["a1", "3"]
    assert [i.id for i in load_dataset(p, DatasetSpec(path="x", slices=["math"], limit=1)).items] == ["a1"]
    two = DatasetSpec(path="x", slices=["geo", "short"])
    assert [i.id for i in load_dataset(p, two).items] == ["a2", "3"]
    assert [i.id for i in load_dataset(p, DatasetSpec(path="x", limit=3)).items] == ["a1", "a2", "3"]
    assert [i.id for i in load_dataset(p, DatasetSpec(path="x", limit=100)).items] == ["a1", "a2", "3", "a4"]


def test_slice_filter_matching_nothing(tmp_path: Path) -> None:
    p = write(tmp_path, ROWS)
    assert "no items" in error_of(p, DatasetSpec(path="x", slices=["code"]))


def test_hash_is_of_selected_items(tmp_path: Path) -> None:
    p = write(tmp_path, ROWS)
    full = load_dataset(p).sha256
    math_only = load_dataset(p, DatasetSpec(path="x", slices=["math"]))
    assert math_only.sha256 != full
    assert math_only.sha256 == dataset_hash(list(math_only.items))


def test_hash_stable_across_formatting(tmp_path: Path) -> None:
    a = load_dataset(write(tmp_path, ROWS, "a.jsonl")).sha256
    # Same items, different JSON formatting and key order, blank lines in between.
    pretty = [json.dumps(dict(reversed(list(r.items()))), separators=(" , ", " :  ")) for r in ROWS]
    b = load_dataset(write(tmp_path, [pretty[0], "", *pretty[1:]], "b.jsonl")).sha256
    assert a == b
    assert load_dataset(write(tmp_path, ROWS, "c.jsonl")).sha256 == a


@pytest.mark.parametrize("change", [
    lambda rows: rows[0].update(prompt="2+3="),
    lambda rows: rows[0].update(reference="5"),
    lambda rows: rows[0].update(slices=["math", "easy"]),
    lambda rows: rows[2].update(max_tokens=9),
    lambda rows: rows[2].update(meta={"source": "other"}),
    lambda rows: rows[1]["messages"][0].update(content="Capital of Spain?"),
    lambda rows: rows[3].update(id="a5"),
    lambda rows: rows.reverse(),
    lambda rows: rows.pop(),
])
def test_hash_changes_when_any_item_changes(tmp_path: Path, change) -> None:
    base = load_dataset(write(tmp_path, ROWS, "base.jsonl")).sha256
    rows = orjson.loads(orjson.dumps(ROWS))
    change(rows)
    assert load_dataset(write(tmp_path, rows, "changed.jsonl")).sha256 != base


def test_hash_distinguishes_chat_from_prompt() -> None:
    a = Item(id="x", messages=None, prompt="hi")
    b = Item(id="x", messages=[{"role": "user", "content": "hi"}], prompt=None)
    assert dataset_hash([a]) != dataset_hash([b])
    assert dataset_hash([a]) == dataset_hash([Item(id="x", messages=None, prompt="hi")])
