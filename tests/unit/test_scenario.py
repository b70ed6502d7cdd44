"""Scenario validation: every problem is ONE line naming the file, the line and the field path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.scenario import LoadedScenario, ScenarioError, load_scenario, parse_scenario

P = Path("scenarios/demo.yaml")

BASE = """\
name: demo
description: compressed vs baseline
dataset: data/eval.jsonl
targets:
  - name: base
    role: baseline
    url: http://127.0.0.1:8000/
    model: qwen-7b
  - name: q4
    role: candidate
    url: http://127.0.0.1:8001
    model: qwen-7b-q4
sampling:
  temperature: 0
  max_tokens: 64
load:
  pattern: concurrency
  levels: [1, 4, 16]
  requests: 50
"""
# Line numbers in BASE, for reference:
#  1 name   3 dataset   4 targets   5 "- name: base"   7 url (base)   9 "- name: q4"   11 url (q4)
# 13 sampling   14 temperature   16 load   17 pattern   18 levels   19 requests


def parse(text: str, path: Path = P) -> LoadedScenario:
    return parse_scenario(path, text.encode())


def error_of(text: str, path: Path = P) -> str:
    with pytest.raises(ScenarioError) as ei:
        parse(text, path)
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.startswith(str(path)), msg
    return msg


def test_base_is_valid() -> None:
    loaded = parse(BASE)
    sc = loaded.scenario
    assert sc.name == "demo"
    assert sc.dataset.path == "data/eval.jsonl"  # `dataset: path` shorthand
    assert [t.name for t in sc.targets] == ["base", "q4"]
    assert sc.targets[0].url == "http://127.0.0.1:8000"  # trailing slash removed
    assert sc.load.levels == [1, 4, 16]
    assert sc.load.warmup.seconds == 0 and sc.load.warmup.requests == 0
    assert sc.sampling.max_tokens == 64 and sc.sampling.top_p == 1.0 and sc.sampling.seed == 0
    assert len(loaded.sha256) == 64
    assert loaded.resolve("data/eval.jsonl") == Path("scenarios/data/eval.jsonl")
    assert loaded.resolve("/abs/x.jsonl") == Path("/abs/x.jsonl")


def test_scenario_is_frozen() -> None:
    sc = parse(BASE).scenario
    with pytest.raises(Exception):
        sc.name = "other"  # type: ignore[misc]


# --- YAML --------------------------------------------------------------------------


def test_bad_yaml_names_line() -> None:
    text = BASE.replace("  levels: [1, 4, 16]", "  levels: [1, 4, 16")
    msg = error_of(text)
    assert msg.startswith(f"{P}:19: invalid YAML: "), msg


def test_bad_yaml_tab_indentation() -> None:
    msg = error_of("name: demo\nload:\n\tlevels: [1]\n")
    assert msg.startswith(f"{P}:3: invalid YAML: "), msg


def test_top_level_not_a_mapping() -> None:
    assert error_of("- a\n- b\n") == f"{P}: expected a mapping of scenario fields at the top level"
    assert error_of("") == f"{P}: expected a mapping of scenario fields at the top level"


def test_not_utf8() -> None:
    with pytest.raises(ScenarioError, match=r"not UTF-8 text \(byte 6\)") as ei:
        parse_scenario(P, b"name: \xff\xfe\n")
    assert str(ei.value).startswith(str(P))


# --- field errors --------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    msg = error_of(BASE + "repeat: 3\n")
    assert msg == f"{P}:20: repeat: unknown key (not part of the scenario format)"


def test_unknown_nested_key_names_path_and_line() -> None:
    msg = error_of(BASE.replace("  max_tokens: 64", "  max_token: 64"))
    assert msg == f"{P}:15: sampling.max_token: unknown key (not part of the scenario format)"


def test_unknown_key_in_list_item() -> None:
    msg = error_of(BASE.replace("    model: qwen-7b-q4", "    model: qwen-7b-q4\n    api_key: secret"))
    assert msg == f"{P}:13: targets.1.api_key: unknown key (not part of the scenario format)"


def test_wrong_type() -> None:
    msg = error_of(BASE.replace("  max_tokens: 64", "  max_tokens: lots"))
    assert msg.startswith(f"{P}:15: sampling.max_tokens: "), msg
    assert "integer" in msg


def test_out_of_bounds_value() -> None:
    msg = error_of(BASE.replace("  temperature: 0", "  temperature: -1"))
    assert msg.startswith(f"{P}:14: sampling.temperature: "), msg
    assert "greater than or equal to 0" in msg


def test_wrong_literal() -> None:
    msg = error_of(BASE.replace("    role: candidate", "    role: challenger"))
    assert msg.startswith(f"{P}:10: targets.1.role: "), msg
    assert "'baseline' or 'candidate'" in msg


def test_missing_required() -> None:
    msg = error_of(BASE.replace("    role: candidate\n", ""))
    assert msg == f"{P}:9: targets.1.role: required field is missing"


def test_missing_required_top_level() -> None:
    text = BASE.split("load:")[0]
    msg = error_of(text)
    assert msg == f"{P}:1: load: required field is missing"


def test_bad_url() -> None:
    msg = error_of(BASE.replace("url: http://127.0.0.1:8001", "url: 127.0.0.1:8001"))
    assert msg == (f"{P}:11: targets.1.url: expected an http(s) URL such as http://127.0.0.1:8080, "
                   f"got '127.0.0.1:8001'")


@pytest.mark.parametrize("url", ["ftp://host/x", "http://", "http://host:port", "http://a b",
                                 "localhost:8000"])
def test_bad_urls_rejected(url: str) -> None:
    msg = error_of(BASE.replace("url: http://127.0.0.1:8001", f"url: '{url}'"))
    assert ": targets.1.url: expected an http(s) URL" in msg


def test_both_url_and_server() -> None:
    text = BASE.replace("    url: http://127.0.0.1:8001\n",
                        "    url: http://127.0.0.1:8001\n    server:\n      definition: llamacpp\n")
    msg = error_of(text)
    assert msg.startswith(f"{P}:9: targets.1: "), msg
    assert "give exactly one of 'url'" in msg


def test_neither_url_nor_server() -> None:
    msg = error_of(BASE.replace("    url: http://127.0.0.1:8001\n", ""))
    assert msg.startswith(f"{P}:9: targets.1: ") and "exactly one of 'url'" in msg


def test_managed_server_target_is_valid() -> None:
    sc = parse(BASE.replace("    url: http://127.0.0.1:8001\n",
                            "    server:\n      definition: llamacpp\n      model: qwen2.5-0.5b\n")).scenario
    assert sc.targets[1].server.definition == "llamacpp" and sc.targets[1].server.cold_requests == 3


def test_duplicate_target_names() -> None:
    msg = error_of(BASE.replace("  - name: q4", "  - name: base"))
    pattern = rf"{re.escape(str(P))}(:\d+)?: .*target names must be unique; repeated: base"
    assert re.fullmatch(pattern, msg), msg


def test_two_baselines() -> None:
    msg = error_of(BASE.replace("    role: candidate", "    role: baseline"))
    pattern = rf"{re.escape(str(P))}(:\d+)?: .*at most one target may have role 'baseline'"
    assert re.fullmatch(pattern, msg), msg


def test_bad_target_name() -> None:
    msg = error_of(BASE.replace("  - name: q4", "  - name: 'q4 int'"))
    assert msg.startswith(f"{P}:9: targets.1.name: must be 1-64 characters"), msg


@pytest.mark.parametrize("levels", ["[0]", "[4, -1]", "[0.0]"])
def test_levels_must_be_positive(levels: str) -> None:
    msg = error_of(BASE.replace("[1, 4, 16]", levels))
    assert msg == f"{P}:16: load: levels must be positive, finite numbers"


def test_concurrency_levels_must_be_whole() -> None:
    msg = error_of(BASE.replace("[1, 4, 16]", "[1, 2.5]"))
    assert msg == f"{P}:16: load: concurrency levels must be whole numbers"


def test_rate_levels_may_be_fractional() -> None:
    text = BASE.replace("pattern: concurrency", "pattern: rate").replace("[1, 4, 16]", "[0.5, 2.5]")
    sc = parse(text).scenario
    assert sc.load.levels == [0.5, 2.5] and sc.load.arrival == "poisson"


def test_empty_levels() -> None:
    msg = error_of(BASE.replace("[1, 4, 16]", "[]"))
    assert msg.startswith(f"{P}:18: load.levels: "), msg


def test_neither_duration_nor_requests() -> None:
    msg = error_of(BASE.replace("  requests: 50\n", ""))
    assert msg == f"{P}:16: load: set 'duration_s' and/or 'requests' to say when a level ends"


def test_duration_only_is_enough() -> None:
    sc = parse(BASE.replace("  requests: 50", "  duration_s: 30")).scenario
    assert sc.load.duration_s == 30 and sc.load.requests is None


def test_warmup_shorthand_means_seconds() -> None:
    sc = parse(BASE + "  warmup: 5\n").scenario
    assert sc.load.warmup.seconds == 5.0 and sc.load.warmup.requests == 0
    sc = parse(BASE + "  warmup: 2.5\n").scenario
    assert sc.load.warmup.seconds == 2.5


def test_warmup_explicit_form() -> None:
    sc = parse(BASE + "  warmup:\n    requests: 10\n    seconds: 3\n").scenario
    assert (sc.load.warmup.requests, sc.load.warmup.seconds) == (10, 3.0)


def test_warmup_bool_rejected() -> None:
    msg = error_of(BASE + "  warmup: true\n")
    assert msg.startswith(f"{P}:20: load.warmup: "), msg


def test_warmup_unknown_key() -> None:
    msg = error_of(BASE + "  warmup:\n    request: 10\n")
    assert msg == f"{P}:21: load.warmup.request: unknown key (not part of the scenario format)"


def test_dataset_mapping_form() -> None:
    sc = parse(BASE.replace("dataset: data/eval.jsonl",
                            "dataset:\n  path: data/eval.jsonl\n  limit: 20\n  slices: [math]")).scenario
    assert (sc.dataset.path, sc.dataset.limit, sc.dataset.slices) == ("data/eval.jsonl", 20, ["math"])


def test_more_problems_are_counted_in_the_same_line() -> None:
    text = BASE.replace("  max_tokens: 64", "  max_tokens: lots\n  top_p: 7")
    msg = error_of(text)
    assert msg.endswith("(+1 more problem)"), msg


@pytest.mark.parametrize("mutation", [
    lambda t: t.replace("[1, 4, 16]", "[1, 4"),
    lambda t: t + "bogus: 1\n",
    lambda t: t.replace("  max_tokens: 64", "  max_tokens: [1, 2]"),
    lambda t: t.replace("    role: baseline\n", ""),
    lambda t: t.replace("url: http://127.0.0.1:8001", "url: 'http://x y\\n'"),
    lambda t: t.replace("  - name: q4", "  - name: base"),
    lambda t: t.replace("[1, 4, 16]", "[-1]"),
    lambda t: t + "  warmup: {seconds: -1, requests: -1}\n",
    lambda t: t.replace("name: demo", "name: 'two\\nlines'"),
    lambda t: t.replace("description: compressed vs baseline", "description: [unclosed"),
])
def test_every_message_is_one_line_starting_with_the_path(mutation) -> None:
    error_of(mutation(BASE), Path("/tmp/some dir/scenario.yaml"))


# --- load_scenario (files) -------------------------------------------------------------


def test_load_scenario_resolves_dataset_relative_to_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "eval.jsonl").write_text('{"id": "1", "prompt": "hi"}\n')
    f = tmp_path / "s.yaml"
    f.write_text(BASE)
    loaded = load_scenario(str(f))
    assert loaded.path == f and loaded.folder == tmp_path
    assert loaded.resolve(loaded.scenario.dataset.path) == tmp_path / "data" / "eval.jsonl"


def test_load_scenario_missing_dataset(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(BASE)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(f)
    msg = str(ei.value)
    assert msg == f"{f}: dataset.path: no such file {tmp_path / 'data' / 'eval.jsonl'}"


def test_load_scenario_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as ei:
        load_scenario(f)
    assert str(ei.value) == f"{f}: no such scenario file"


def test_load_scenario_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as ei:
        load_scenario(tmp_path)
    assert str(ei.value).startswith(f"{tmp_path}: cannot read: ")
    assert "\n" not in str(ei.value)


def test_sha256_tracks_raw_bytes() -> None:
    a = parse(BASE).sha256
    assert parse(BASE).sha256 == a
    assert parse(BASE + "# comment\n").sha256 != a


# --- bugs ----------------------------------------------------------------------------------


def test_infinite_concurrency_level_is_a_scenario_error() -> None:
    msg = error_of(BASE.replace("[1, 4, 16]", "[.inf]"))
    assert ": load" in msg


@pytest.mark.parametrize("level", [".inf", ".nan"])
def test_non_finite_rate_level_rejected(level: str) -> None:
    error_of(BASE.replace("pattern: concurrency", "pattern: rate").replace("[1, 4, 16]", f"[{level}]"))


def test_name_with_trailing_newline_rejected() -> None:
    error_of(BASE.replace("  - name: q4", '  - name: "q4\\n"'))


def test_unknown_key_with_newline_still_one_line() -> None:
    error_of(BASE + '"foo\\nbar": 1\n')
