"""Bad input never crashes benchbox: fuzzed scenario and dataset files, and the CLI on top of them.

Every bad file gives ONE line (``benchbox: error: <file>[:line]: ...``), exit code 2, no traceback and
no run directory. A file the loaders accept must also survive what the sweep does with it before the
first request (manifest JSON, request headers, load patterns). The CLI sweeps point at a port nothing
listens on and are only run for files `validate` rejects, so no request is ever sent.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.dataset import load_dataset
from bench.scenario import (
    MAX_CONCURRENCY, ScenarioError, load_scenario, parse_scenario,
)

P = Path("fuzz/scenario.yaml")
UNUSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens, and no fuzz case reaches a request

BASE: dict[str, Any] = {
    "name": "fuzz",
    "dataset": "items.jsonl",
    "targets": [
        {"name": "base", "role": "baseline", "url": UNUSED_URL, "model": "m", "headers": {"X-Team": "a"}},
        {"name": "cand", "role": "candidate", "url": UNUSED_URL, "model": "m2", "timeout_s": 5},
    ],
    "sampling": {"temperature": 0, "max_tokens": 16, "seed": 0},
    "load": {"pattern": "concurrency", "levels": [1, 2], "requests": 4, "warmup": {"requests": 1}},
    "slo": {"ttft_p95_ms": 400},
}
ITEMS = b'{"id": "a", "prompt": "p"}\n{"id": "b", "messages": [{"role": "user", "content": "q"}]}\n'

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def one_line(msg: str, path: Any = P) -> None:
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    assert msg.startswith(str(path)), msg
    assert "Traceback" not in msg and len(msg) < 1000, msg


def must_load_or_fail_cleanly(raw: bytes) -> Any:
    """parse_scenario either accepts (the result survives the pre-request steps) or raises ScenarioError."""
    try:
        loaded = parse_scenario(P, raw)
    except ScenarioError as e:
        one_line(str(e))
        return None
    survives_the_sweep_setup(loaded)
    return loaded


def survives_the_sweep_setup(loaded: Any) -> None:
    """What a sweep does with an accepted scenario before it sends anything must not raise."""
    from bench.client import Endpoint
    from bench.dataset import Dataset, Item, dataset_hash
    from bench.manifest import target_as_configured
    from bench.patterns import pattern_for
    from bench.sweep import auth_headers

    sc = loaded.scenario
    items = [Item("a", None, "p")]
    Dataset(Path("x"), tuple(items), dataset_hash(items))
    orjson.dumps({"load": sc.load.model_dump(mode="json"), "sampling": sc.sampling.model_dump(mode="json"),
                  "targets": [target_as_configured(t) for t in sc.targets]})
    for t in sc.targets:
        try:
            headers = auth_headers(t, {})
        except ScenarioError as e:  # an environment variable named but not set: a clean usage error
            assert "\n" not in str(e)
            continue
        if t.url and t.url.startswith("http"):
            Endpoint(t.url, headers)
    for index, level in enumerate(sc.load.levels):
        pattern_for(sc.load, level, index)


# ----------------------------------------------------------------------------------- raw bytes and YAML
@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(raw: bytes) -> None:
    must_load_or_fail_cleanly(raw)


YAMLISH = st.text(alphabet=st.sampled_from(list("ab: -[]{}&*!|>'\"#\n\t0123456789.,?%@`\\") + ["\u00e9", "\x00"]),
                  max_size=200)


@FUZZ
@given(YAMLISH)
def test_yaml_shaped_noise(text: str) -> None:
    must_load_or_fail_cleanly(text.encode("utf-8", "surrogatepass"))


# A value anywhere: wrong types, huge and non-finite numbers, odd strings, nested containers.
LEAF = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, 10**12, 10**30, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, 1e-320, -0.0]),
    st.text(max_size=30), st.sampled_from(["", "\n", "a\r\nX-Evil: 1", "${UNSET_VAR}", "\u2028", "x" * 5000,
                                           "http://u:p@h:1", "http://h:99999", "https://h:0", "../../etc/passwd"]),
)
VALUE = st.recursive(LEAF, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                  st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                     max_leaves=12)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple, value: Any, mode: str) -> Any:
    if not path:
        return value
    parent = obj
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if mode == "delete" and isinstance(parent, dict):
        del parent[last]
    elif mode == "unknown_key" and isinstance(parent, dict):
        parent[f"{last}_typo"] = value
    else:
        parent[last] = value
    return obj


@FUZZ
@given(st.data())
def test_mutated_scenarios(data: st.DataObject) -> None:
    """One to three mutations of a valid scenario: a field replaced, deleted, or a misspelt key added."""
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc) if isinstance(doc, (dict, list)) else [()]
        path = data.draw(st.sampled_from(paths))
        doc = _set(doc, path, data.draw(VALUE), data.draw(st.sampled_from(["replace", "delete", "unknown_key"])))
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        assume(False)
        return
    must_load_or_fail_cleanly(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("name,text,needle", [
    ("billion laughs", "\n".join(
        [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
        + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]) + "\n", "alias bomb"),
    ("deep flow nesting", "name: " + "[" * 20000 + "]" * 20000 + "\n", "nested"),
    ("deep block nesting", "".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n", "nested"),
    ("duplicate key", "name: a\nname: b\n", "duplicate key 'name'"),
    ("python object tag", "name: !!python/object/apply:os.system ['true']\n", "unsupported YAML type"),
    ("binary tag", "name: !!binary aGVsbG8=\n", "unsupported YAML type"),
    ("huge integer", "name: x\nrepeats: 100000000000000000000000000000\n", "64-bit"),
    ("two documents", "name: a\n---\nname: b\n", "invalid YAML"),
    ("not a mapping", "- 1\n- 2\n", "mapping"),
    ("empty file", "", "mapping"),
    ("tab indentation", "name: x\nload:\n\tlevels: [1]\n", "invalid YAML"),
])
def test_adversarial_yaml(name: str, text: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(P, text.encode())
    one_line(str(ei.value))
    assert needle in str(ei.value), name


def _with(**changes: Any) -> bytes:
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        parent = doc
        parts = dotted.split("__")
        for part in parts[:-1]:
            parent = parent[int(part)] if part.isdigit() else parent[part]
        parent[parts[-1]] = value
    return yaml.safe_dump(doc).encode()


@pytest.mark.parametrize("changes,needle", [
    ({"load__levels": [10**12]}, "at most"),
    ({"load__levels": [MAX_CONCURRENCY + 1]}, "at most"),
    ({"load__pattern": "rate", "load__levels": [1e9]}, "at most"),
    ({"load__levels": list(range(1, 2002))}, "load.levels"),
    ({"load__levels": [float("inf")]}, "load.levels"),
    ({"load__levels": [float("nan")]}, "load.levels"),
    ({"load__max_in_flight": 10**9}, "load.max_in_flight"),
    ({"load__duration_s": 10**12}, "load.duration_s"),
    ({"load__duration_s": float("inf")}, "load.duration_s"),
    ({"load__requests": 10**15}, "load.requests"),
    ({"load__cooldown_s": 1e30}, "load.cooldown_s"),
    ({"load__warmup": 1e30}, "load.warmup"),
    ({"sampling__max_tokens": 10**12}, "sampling.max_tokens"),
    ({"sampling__temperature": float("nan")}, "sampling.temperature"),
    ({"slo__ttft_p95_ms": float("inf")}, "slo.ttft_p95_ms"),
    ({"repeats": 10**6}, "repeats"),
    ({"targets__0__timeout_s": 1e12}, "targets.0.timeout_s"),
    ({"targets__0__url": "http://user:pass@host:80"}, "credentials"),
    ({"targets__0__url": "http://host:99999"}, "targets.0.url"),
    ({"targets__0__url": "http://host:0"}, "targets.0.url"),
    ({"targets__0__headers": {"X-A": "v\r\nX-Injected: 1"}}, "line breaks"),
    ({"targets__0__headers": {"X A": "v"}}, "not a valid HTTP token"),
    ({"targets__0__headers": {"X-A": "\u20ac"}}, "latin-1"),
    ({"targets__0__headers": {"Content-Length": "1"}}, "set by benchbox"),
    ({"targets__0__headers": {"Authorization": "Bearer sk-literal"}}, "credential"),
    ({"targets__0__headers": {"X-Api-Key": "sk-literal"}}, "credential"),
    ({"targets__0__api_key_env": "NOT A NAME"}, "environment variable"),
    ({"targets__0__mystery": 1}, "unknown key"),
    ({"load__seed": 2**64}, "64-bit"),
])
def test_bad_values_are_one_line_errors(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(P, _with(**changes))
    one_line(str(ei.value))
    assert needle in str(ei.value)


def test_credential_header_from_the_environment_is_accepted() -> None:
    from bench.sweep import auth_headers

    loaded = parse_scenario(P, _with(targets__0__headers={"Authorization": "Bearer ${FUZZ_TOKEN}"}))
    target = loaded.scenario.targets[0]
    assert auth_headers(target, {"FUZZ_TOKEN": "s3"})["Authorization"] == "Bearer s3"
    with pytest.raises(ScenarioError, match="FUZZ_TOKEN"):
        auth_headers(target, {})
    with pytest.raises(ScenarioError) as ei:  # a line break in the secret: refused, and not echoed
        auth_headers(target, {"FUZZ_TOKEN": "s3\r\nX-Evil: 1"})
    assert "s3" not in str(ei.value)


# ----------------------------------------------------------------------------------- files and paths
def project(tmp_path: Path) -> Path:
    """tmp/proj (a project: pyproject.toml) with scenarios/ and data/; tmp/outside holds a 'secret'."""
    root = tmp_path / "proj"
    (root / "scenarios").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "data" / "items.jsonl").write_bytes(ITEMS)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.jsonl").write_bytes(b'{"id": "k", "prompt": "PRIVATE KEY"}\n')
    return root


def scenario_at(root: Path, dataset: str, **extra: Any) -> Path:
    doc = {**copy.deepcopy(BASE), "dataset": dataset, **extra}
    path = root / "scenarios" / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_dataset_inside_the_project_is_allowed(tmp_path: Path) -> None:
    root = project(tmp_path)
    assert load_scenario(scenario_at(root, "../data/items.jsonl")).scenario.name == "fuzz"
    assert load_scenario(scenario_at(root, str(root / "data" / "items.jsonl")))  # absolute, inside


def test_bundled_quality_sets_are_allowed_from_anywhere(tmp_path: Path) -> None:
    bundled = Path(__file__).resolve().parents[2] / "quality" / "voice.jsonl"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "dataset": str(bundled)}))
    load_scenario(path)


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink", "home"])
def test_paths_escaping_the_project_are_refused(tmp_path: Path, kind: str, monkeypatch: Any) -> None:
    root = project(tmp_path)
    secret = tmp_path / "outside" / "secret.jsonl"
    if kind == "relative":
        written = "../../outside/secret.jsonl"
    elif kind == "absolute":
        written = str(secret)
    elif kind == "symlink":
        (root / "data" / "link.jsonl").symlink_to(secret)
        written = "../data/link.jsonl"
    else:
        monkeypatch.setenv("HOME", str(tmp_path / "outside"))
        written = "~/secret.jsonl"
    path = scenario_at(root, written)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(path)
    one_line(str(ei.value), path)
    assert "dataset.path" in str(ei.value) and "--allow-path" in str(ei.value)
    # The user (not the scenario) may allow it.
    assert load_scenario(path, allow_paths=(tmp_path / "outside",))
    monkeypatch.setenv("BENCHBOX_ALLOW_PATHS", str(tmp_path / "outside"))
    assert load_scenario(path)


def test_scorer_files_escaping_the_project_are_refused(tmp_path: Path) -> None:
    root = project(tmp_path)
    path = scenario_at(root, "../data/items.jsonl",
                       quality={"scorers": [{"name": "json", "schema": str(tmp_path / "outside" / "s.json")}]})
    with pytest.raises(ScenarioError, match=r"quality\.scorers\.0\.schema"):
        load_scenario(path)


def test_existing_scenarios_still_load() -> None:
    repo = Path(__file__).resolve().parents[2]
    for path in sorted((repo / "scenarios").rglob("*.yaml")):
        load_scenario(path)


def test_unreadable_scenario_sources(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(ScenarioError) as ei:
            load_scenario(path)
        one_line(str(ei.value), path)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"name: x\n" + b"# padding\n" * 200_000)
    with pytest.raises(ScenarioError, match="at most"):
        load_scenario(big)


# ----------------------------------------------------------------------------------- datasets
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)),
    max_leaves=10)
ITEM_LIKE = st.fixed_dictionaries(
    {}, optional={"id": st.one_of(st.text(max_size=5), st.integers(), JSONISH),
                  "prompt": st.one_of(st.text(max_size=10), JSONISH),
                  "messages": st.one_of(st.just([{"role": "user", "content": "q"}]), JSONISH),
                  "slices": st.one_of(st.lists(st.text(max_size=4), max_size=2), JSONISH),
                  "max_tokens": st.one_of(st.integers(), JSONISH), "meta": JSONISH, "reference": JSONISH,
                  "extra": JSONISH})


@FUZZ
@given(st.lists(st.one_of(ITEM_LIKE.map(lambda o: json.dumps(o).encode()), st.binary(max_size=30),
                          st.sampled_from([b"", b"   ", b"\xff\xfe", b"{", b"[]", b"null", b'{"id":"a","prompt":"p"}',
                                           b"\xef\xbb\xbf" + b'{"id":"bom","prompt":"p"}', b"[" * 2000])),
                max_size=8))
def test_fuzzed_datasets(tmp_path_factory: Any, lines: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("ds") / "items.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        ds = load_dataset(path)
    except ScenarioError as e:
        one_line(str(e), path)
        return
    assert ds.items and len({i.id for i in ds.items}) == len(ds.items)
    assert all(i.max_tokens is None or 1 <= i.max_tokens <= 1_000_000 for i in ds.items)


@pytest.mark.parametrize("content,needle", [
    (b"", "no items"),
    (b"\n\n  \n", "no items"),
    (b'{"id": "a", "prompt": "p"}\n{"id": "a", "prompt": "q"}\n', "duplicate item id"),
    (b'{"id": "a", "prompt": "\xff\xfe"}\n', "invalid JSON"),
    (b'{"id": "a", "prompt": "p", "max_tokens": 1000000000000}\n', "max_tokens"),
    (b'{"id": "' + b"x" * 2000 + b'", "prompt": "p"}\n', "'id'"),
    (b"[" * 5000 + b"]" * 5000 + b"\n", "invalid JSON"),
    (b'{"id": "a", "prompt": "p", "oops": 1}\n', "unknown key"),
])
def test_bad_datasets(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(content)
    with pytest.raises(ScenarioError) as ei:
        load_dataset(path)
    one_line(str(ei.value), path)
    assert needle in str(ei.value)


# ----------------------------------------------------------------------------------- the CLI
def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def assert_usage_error(result: Any, path: Path) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("benchbox: error: "), result.stderr
    assert str(path) in lines[0] or "environment variable" in lines[0], lines[0]
    assert "Traceback" not in result.output


CLI_CASES = {
    "malformed YAML": b"name: [\n",
    "wrong type": _with(load__levels="many"),
    "huge level": _with(load__levels=[10**12]),
    "huge max_tokens": _with(sampling__max_tokens=10**12),
    "huge duration": _with(load__duration_s=10**12),
    "unknown key": _with(sampling__temprature=0),
    "non-UTF-8": b"name: \xff\xfe\n",
    "billion laughs": ("\n".join([f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
                                 + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)])).encode(),
    "deep nesting": b"name: " + b"[" * 10000 + b"]" * 10000,
    "escaping dataset": _with(dataset="../../../../../../etc/hostname"),
    "missing dataset": _with(dataset="nope.jsonl"),
    "header injection": _with(targets__0__headers={"X-A": "a\r\nb"}),
    "unset api key": _with(targets__0__api_key_env="BENCHBOX_FUZZ_NEVER_SET"),
    "unset header variable": _with(targets__0__headers={"Authorization": "Bearer ${BENCHBOX_FUZZ_NEVER_SET}"}),
    "unknown scorer": _with(quality={"scorers": [{"name": "nope"}]}),
    "bad gate": _with(gates=["ttft.p95 <"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_rejects_bad_scenarios_without_writing(tmp_path: Path, case: str) -> None:
    (tmp_path / "items.jsonl").write_bytes(ITEMS)
    path = tmp_path / "s.yaml"
    path.write_bytes(CLI_CASES[case])
    os.environ.pop("BENCHBOX_FUZZ_NEVER_SET", None)
    checked = cli("validate", str(path))
    if case.startswith("unset"):  # the environment is the run's business: validate checks the file only
        assert checked.exit_code == 0, checked.output
    else:
        assert_usage_error(checked, path)
    out = tmp_path / "runs"
    assert_usage_error(cli("sweep", str(path), "--out", str(out), "--quiet"), path)
    assert not out.exists()


@pytest.mark.parametrize("dataset", [b"", b'{"id": "a", "prompt": "p"}\n{"id": "a", "prompt": "p"}\n',
                                     b"\xff\xfe\xfd\n", b'{"id": "a"}\n'])
def test_cli_rejects_bad_datasets_without_writing(tmp_path: Path, dataset: bytes) -> None:
    (tmp_path / "items.jsonl").write_bytes(dataset)
    path = tmp_path / "s.yaml"
    path.write_bytes(_with())
    out = tmp_path / "runs"
    for args in (("validate", str(path)), ("sweep", str(path), "--out", str(out), "--quiet")):
        result = cli(*args)
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert result.stderr.count("\n") == 1 and str(tmp_path / "items.jsonl") in result.stderr
    assert not out.exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_cli_fuzz(tmp_path_factory: Any, data: st.DataObject) -> None:
    """Mutated scenarios through the real CLI: whatever `validate` rejects, `sweep` rejects the same way."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "items.jsonl").write_bytes(ITEMS)
    doc = copy.deepcopy(BASE)
    path = data.draw(st.sampled_from(_paths(doc)))
    doc = _set(doc, path, data.draw(VALUE), data.draw(st.sampled_from(["replace", "delete", "unknown_key"])))
    try:
        raw = yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")
    except yaml.YAMLError:
        assume(False)
        return
    scenario = folder / "s.yaml"
    scenario.write_bytes(raw)
    checked = cli("validate", str(scenario))
    assert checked.exit_code in (0, 2) and isinstance(checked.exception, (SystemExit, type(None))), checked.output
    assume(checked.exit_code == 2)  # a valid scenario would really run: not this test's business
    assert_usage_error(checked, scenario)
    out = folder / "runs"
    assert_usage_error(cli("sweep", str(scenario), "--out", str(out), "--quiet"), scenario)
    assert not out.exists()
