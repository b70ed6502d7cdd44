"""The HTML report: sections present when their data is, absent (not crashing) when it is not,
self-contained (no script, no external URL), every string from the run escaped, well-formed."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional, Sequence

import orjson
import pytest

from bench.report.html import render_report, write_report
from bench.report.svg import (
    RefLine, Series, axis_format, chart, ci_bar, hbars, log_ticks, nice_ticks, with_ci,
)

EVIL = "<script>alert(1)</script>"
SECTIONS = ["glance", "gates", "latency", "throughput", "pareto", "calibration", "slices", "capacity",
            "router", "facts"]


def _rate(k: int, n: int, warn: bool = True) -> dict[str, Any]:
    p = k / n
    half = 1.96 * math.sqrt(p * (1 - p) / n) + 0.5 / n
    out = {"kind": "rate", "value": p, "n": n, "successes": k,
           "ci95": [max(0.0, p - half), min(1.0, p + half)]}
    if warn and n < 30:
        out["warning"] = f"only {n} item(s) (< 30): intervals are wide, result is unstable"
    return out


def _hist(p50: float) -> dict[str, Any]:
    return {"count": 200, "out_of_range": 0, "p50": p50, "p90": p50 * 1.45, "p95": p50 * 1.7,
            "p99": p50 * 2.4, "mean": p50 * 1.1, "min": p50 * 0.6, "max": p50 * 3, "hdr": "HISTF..."}


def synthetic_run(run_dir: Path, names: Sequence[str] = ("llama-8b-f16", "llama-8b-q4_k_m", "llama-8b-q2_k"),
                  gate_text: str = "accuracy >= baseline - 2pt", note: Optional[str] = None) -> Path:
    """A complete run directory (manifest.json + result.json) with every section's data."""
    base, q4, q2 = names
    speed, size = {base: 1.0, q4: 0.55, q2: 0.42}, {base: 16.07e9, q4: 4.92e9, q2: 3.18e9}
    correct, capacity = {base: 172, q4: 166, q2: 139}, {base: 4.0, q4: 8.0, q2: 8.0}
    levels = []
    for n in names:
        for c in (1, 2, 4, 8, 16):
            ttft = 95 * speed[n] * (1 + (c / (5 / speed[n] ** 0.5)) ** 2)
            e2e = ttft + 40 * 18 * speed[n] * (1 + c / 12)
            levels.append({"target": n, "level": float(c), "pattern": "concurrency", "error_rate": 0.0,
                           "requests": {"measured": 200, "ok": 200, "failed": 0, "errors": {}},
                           "throughput": {"requests_per_s": c / (e2e / 1000),
                                          "output_tokens_per_s": 40 * c / (e2e / 1000)},
                           "metrics": {"ttft_ms": _hist(ttft), "e2e_ms": _hist(e2e), "itl_ms": _hist(18)}})
    slice_n = {"all": 200, "easy": 110, "hard": 78, "multilingual": 12}
    share = {"all": 1.0, "easy": 1.08, "hard": 0.88, "multilingual": 0.7}
    quality_targets: dict[str, Any] = {}
    for n in names:
        acc = correct[n] / 200
        slices = {s: {"n_items": k, "outcomes": {"ok": k - 3, "parse_failure": 3},
                      "metrics": {"label_correct": _rate(min(k, round(k * acc * share[s])), k)}}
                  for s, k in slice_n.items()}
        over = {base: 0.02, q4: 0.05, q2: 0.16}[n]
        bins = [{"lower": c - 0.05, "upper": c + 0.05, "count": 20 + 3 * i, "mean_confidence": c,
                 "accuracy": max(0.0, min(1.0, c - over * (1.2 - c) * 2))}
                for i, c in enumerate((0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.92, 0.97))]
        entry: dict[str, Any] = {
            "role": "baseline" if n == base else "candidate", "responses_scored": 1000, "slices": slices,
            "classes": {"macro_f1": acc - 0.03}, "stability": {"items_with_several_responses": 200,
                                                               "items_changed": 7, "instability": 0.035},
            "calibration": {"n": 200, "bins": bins, "ece": over * 0.6, "brier": 0.12 + over,
                            "mean_confidence": 0.7, "accuracy": acc},
            "diagnosis": [], "judges": None}
        if n != base:
            entry["vs_baseline"] = {
                s: {"n_pairs": k, "agreement": _rate(round(k * (0.97 if n == q4 else 0.84)), k, warn=False),
                    "flips": {"right_to_wrong": round(k * (0.04 if n == q4 else 0.19)), "wrong_to_right":
                              round(k * 0.01), "both_right": k // 2, "both_wrong": k // 10},
                    "difference": (correct[n] - correct[base]) / 200 * share[s],
                    "mcnemar_p": 0.21 if n == q4 else 0.0004, **({"warning": "small"} if k < 30 else {})}
                for s, k in slice_n.items()}
            if n == q2:
                entry["diagnosis"] = [f"{n}: label_correct is significantly lower than the baseline (-16.5%, "
                                      "McNemar p=0.0004)."]
        quality_targets[n] = entry
    gates = [
        {"gate": "ttft.p95 < 400ms at concurrency 4", "target": q4, "verdict": "pass", "measured": 212.0,
         "budget": 400.0, "detail": "200 samples at level 4: p95 212.0 ms"},
        {"gate": gate_text, "target": q4, "verdict": "inconclusive", "measured": -0.03, "budget": -0.02,
         "detail": "paired on 200 items: difference -3.0% (one-sided 95% bounds -5.9%..-0.1%)",
         "items_needed": 800},
        {"gate": "ttft.p95 < 400ms at concurrency 4", "target": q2, "verdict": "pass", "measured": 160.3,
         "budget": 400.0, "detail": "200 samples at level 4: p95 160.3 ms"},
        {"gate": gate_text, "target": q2, "verdict": "fail", "measured": -0.165, "budget": -0.02,
         "detail": f"paired on 200 items: {q2} is 16.5 points below the baseline"},
    ]
    cost_targets: dict[str, Any] = {}
    for n in names:
        rps = next(lv["throughput"]["requests_per_s"] for lv in levels
                   if lv["target"] == n and lv["level"] == capacity[n])
        per_1k = 2.5 * speed[n] / rps / 3.6
        cost_targets[n] = {"price": {"per_instance_hour": 2.5}, "at_capacity": {
            "capacity": capacity[n], "status": "reached", "level": capacity[n], "requests_per_s": rps,
            "cost_per_1k_requests": per_1k}}
    for n in (q4, q2):
        b = cost_targets[base]["at_capacity"]["cost_per_1k_requests"]
        c = cost_targets[n]["at_capacity"]["cost_per_1k_requests"]
        cost_targets[n]["vs_baseline"] = {"at_capacity": {"baseline_cost_per_1k": b, "cost_per_1k": c,
                                                          "percent_saved": 100 * (b - c) / b}}
    result = {
        "schema_version": 1, "run_id": "20260101-120000-voice", "scenario": "voice", "complete": True,
        "interrupted": None, "levels": levels, "failures": [], "notes": [note] if note else [],
        "targets": {n: {"role": quality_targets[n]["role"]} for n in names},
        "quality": {"schema_version": 1, "primary": "label_correct", "baseline": base, "unit": "items",
                    "scorers": ["label"], "targets": quality_targets,
                    "judges": {"judge-qwen": {"agreement": 0.86, "kappa": 0.71, "n": 60, "trusted": True}}},
        "gates": {"exit_code": 1, "results": gates},
        "capacity": {n: {"target": n, "capacity": capacity[n], "status": "reached",
                         "first_failing": capacity[n] * 2, "goodput": [
                             {"level": float(c), "goodput_per_s": lv["throughput"]["requests_per_s"]
                              * (1.0 if c <= capacity[n] else capacity[n] / c / 2), "share_good": 1.0}
                             for c, lv in zip((1, 2, 4, 8, 16), [x for x in levels if x["target"] == n])]}
                     for n in names},
        "cost": {"currency": "USD", "baseline": base, "targets": cost_targets,
                 "assumptions": ["one instance serves the measured throughput of the level"]},
        "router": {"small": q4, "large": base, "primary": "label_correct", "n_items": 200,
                   "confidence_threshold": 0.6, "fallback": {"count": 46, "rate": 0.23, "ci95": [0.18, 0.29],
                                                             "by_policy": {"parse_failure": 6,
                                                                           "low_confidence": 40}},
                   "quality": {"all": {"blended": _rate(171, 200), "small_alone": _rate(166, 200),
                                       "large_alone": _rate(172, 200)}},
                   "cost": {"blended_cost_per_1k": 0.31, "large_cost_per_1k": 0.52,
                            "percent_saved_vs_large": 40.4},
                   "threshold_sweep": {"small_alone_accuracy": 0.83, "large_alone_accuracy": 0.86,
                                       "n_items": 200, "confidence_missing": 0, "primary": "label_correct",
                                       "points": [{"threshold": t / 10, "coverage": 1 - 0.09 * t,
                                                   "accuracy": 0.83 + 0.0045 * t - 0.0003 * t * t}
                                                  for t in range(11)]}},
    }
    manifest = {
        "schema_version": 1, "run_id": result["run_id"], "benchbox_version": "0.1.0",
        "created_unix": 1767268800,
        "scenario": {"name": "voice", "description": "Spoken-style intents; TTFT p95 is the product metric.",
                     "path": "scenarios/voice.yaml", "sha256": "ab" * 32,
                     "load": {"pattern": "concurrency", "levels": [1, 2, 4, 8, 16], "requests": 200},
                     "slo": {"ttft_p95_ms": 400.0, "ttft_p99_ms": None, "error_rate": 0.01}},
        "dataset": {"path": "quality/voice.jsonl", "sha256": "cd" * 32, "items": 200,
                    "slices": {"easy": 110, "hard": 78, "multilingual": 12}},
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8, "seed": 0, "stop": []},
        "host": {"hostname": "bench-01", "platform": "Linux-6.8-x86_64", "python": "3.11.7",
                 "cpu_model": "AMD EPYC 9454", "cpu_count": 48, "memory_bytes": 412 * 2 ** 30,
                 "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * 2 ** 30}]},
        "targets": {n: {"configured": {"name": n, "role": quality_targets[n]["role"], "model": n},
                        "server": {"command": ["llama-server", "-m", f"/models/{n}.gguf", "--port", "8080"],
                                   "llamacpp": {"version": "b4500",
                                                "server_version": "version: 4500 (abc)\nbuilt"},
                                   "model_facts": {"file": f"{n}.gguf", "size_bytes": size[n],
                                                   "sha256": "ef" * 32,
                                                   "quantization": n.rsplit("-", 1)[-1].upper(),
                                                   "catalog_name": n}}}
                    for n in names},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_bytes(orjson.dumps(manifest))
    (run_dir / "result.json").write_bytes(orjson.dumps(result))
    return run_dir


class _Walker(HTMLParser):
    """Checks nesting: every end tag closes the innermost open element (void elements aside)."""

    VOID = {"meta", "br", "img", "hr", "input", "link", "area", "base", "col", "source", "wbr"}
    SVG_EMPTY = {"line", "circle", "rect", "path"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def walk(text: str) -> _Walker:
    w = _Walker()
    w.feed(text)
    w.close()
    return w


def assert_self_contained(text: str) -> None:
    low = text.lower()
    for bad in ("http://", "https://", "<script", "src=", "@import", "url(", "<link", "javascript:"):
        assert bad not in low, bad


def test_full_report_has_every_section_and_plots(tmp_path: Path) -> None:
    out = write_report(synthetic_run(tmp_path / "run"))
    assert out == tmp_path / "run" / "report.html"
    text = out.read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in text, sid
    assert "could not be drawn" not in text
    w = walk(text)
    assert w.errors == [] and w.stack == []
    # latency 4, throughput 1, pareto 1, calibration 3, goodput + cost 2, router 1
    assert text.count('<svg class="chart"') == 12
    for word in ("FAIL", "exit code", "Pareto frontier", "SLO 400 ms", "ECE", "McNemar p", "flips R→W / W→R",
                 "cheaper", "NVIDIA H100 80GB HBM3", "b4500", "efefefefefef", "15.0 GiB", "judge-qwen"):
        assert word in text, word
    assert_self_contained(text)
    assert not (tmp_path / "run" / "report.html.tmp").exists()


def test_dynamic_text_is_escaped(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", names=("base", EVIL, 'q2"><img onerror=x>'), gate_text=EVIL,
                        note=EVIL)
    result = orjson.loads((run / "result.json").read_bytes())
    result["failures"] = [EVIL]
    result["quality"]["targets"]["base"]["slices"]["easy"]["metrics"]["label_correct"]["warning"] = \
        '" onmouseover="alert(1)'
    result["quality"]["targets"][EVIL]["diagnosis"] = [EVIL]
    result["quality"]["targets"][EVIL]["slices"][EVIL] = result["quality"]["targets"][EVIL]["slices"]["easy"]
    (run / "result.json").write_bytes(orjson.dumps(result))
    text = write_report(run).read_text(encoding="utf-8")
    assert EVIL not in text and "<img" not in text and 'onmouseover="' not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert_self_contained(text)
    w = walk(text)
    assert w.errors == [] and w.stack == []
    assert "script" not in w.tags and "img" not in w.tags
    assert EVIL in "".join(w.text)  # shown to the reader as text
    assert "could not be drawn" not in text


def test_incomplete_run_with_levels_only(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run")
    result = orjson.loads((run / "result.json").read_bytes())
    result = {"schema_version": 1, "run_id": "r1", "complete": False, "interrupted": "SIGINT",
              "levels": result["levels"][:2] + result["levels"][5:6], "failures": ["server died"],
              "notes": []}
    (run / "result.json").write_bytes(orjson.dumps(result))
    text = write_report(run).read_text(encoding="utf-8")
    for sid in ("latency", "throughput", "facts", "glance"):
        assert f'<section id="{sid}">' in text
    for sid in ("gates", "pareto", "calibration", "slices", "capacity", "router"):
        assert f'<section id="{sid}">' not in text
    assert "incomplete" in text and "server died" in text and "SIGINT" in text and "NO GATES" in text
    assert "could not be drawn" not in text
    assert walk(text).errors == []


def test_missing_or_unreadable_files_still_give_a_page(tmp_path: Path) -> None:
    text = write_report(tmp_path).read_text(encoding="utf-8")
    assert "NO RESULT" in text and walk(text).errors == []
    (tmp_path / "result.json").write_text("{not json")
    (tmp_path / "manifest.json").write_text("[1, 2]")
    assert "NO RESULT" in write_report(tmp_path).read_text(encoding="utf-8")


def test_odd_values_never_crash(tmp_path: Path) -> None:
    result: dict[str, Any] = {
        "complete": True, "levels": [{"target": "a", "level": 1.0, "metrics": {"ttft_ms": {"p95": None}}},
                                     {"target": "a", "level": "x"}, {"level": 2.0}, "junk",
                                     {"target": "b", "level": 1.0,
                                      "metrics": {"ttft_ms": {"p50": float("nan")}}}],
        "gates": {"results": [{}, {"verdict": "weird", "measured": "n/a"}]},
        "quality": {"primary": "acc",
                    "targets": {"a": {"slices": {"all": {"metrics": {"acc": {"value": "abc"}}}},
                                                        "calibration": {"bins": [{"count": None}, 3]}}}},
        "capacity": {"a": {"capacity": None, "goodput": [{"level": None}]}},
        "cost": {"targets": {"a": {"at_capacity": None}}},
        "router": {"threshold_sweep": {"points": [{"coverage": None}, {}]}, "fallback": None},
    }
    text = render_report({"targets": {"a": None}, "host": {"gpus": None}}, result)
    w = walk(text)
    assert w.errors == [] and w.stack == []
    assert_self_contained(text)
    assert "could not be drawn" not in text


def test_pareto_falls_back_to_latency_without_sizes(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run")
    manifest = orjson.loads((run / "manifest.json").read_bytes())
    for t in manifest["targets"].values():
        del t["server"]
    (run / "manifest.json").write_bytes(orjson.dumps(manifest))
    text = write_report(run).read_text(encoding="utf-8")
    assert "TTFT p95 at the lowest load level (ms)" in text and "Quality vs latency" in text


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    for lo, hi in ((0, 1), (0, 5840.9), (183.2, 196.4), (-0.25, 0.15), (3, 3), (1e-5, 4e-5)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= min(lo, hi) and ticks[-1] >= max(lo, hi)
        steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
        assert len(steps) == 1
        mantissa = steps.pop() / 10 ** math.floor(math.log10(ticks[1] - ticks[0]))
        assert any(abs(mantissa - m) < 1e-6 for m in (1, 2, 2.5, 5, 10))
        assert 2 <= len(ticks) <= 12
    assert log_ticks(1, 16) == [1, 2, 5, 10]


def test_chart_escapes_and_drops_non_finite_points() -> None:
    points = [(1, 2), (2, None), (float("nan"), 1), (3, float("inf")), (4, 5)]
    svg = chart([Series(EVIL, points, errors=[(0, 3)]),
                 Series("b & c", [(1, 1)], line=False, labels=["x<y"])], title=EVIL, x_label="a<b",
                y_label='"q"', refs=[RefLine(3, "SLO <3>")])
    assert EVIL not in svg and "&lt;script&gt;" in svg and "b &amp; c" in svg and "x&lt;y" in svg
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    assert walk(svg).errors == []
    empty = chart([Series("none", [(None, None)])], title="t")
    assert "no data to plot" in empty and walk(empty).errors == []
    assert "no data to plot" in hbars([("a", None, "#000", "")])
    assert ci_bar({"value": 2.0}) == "" and ci_bar(None) == ""
    assert "<svg" in ci_bar({"value": 0.5, "ci95": [0.4, 0.6]})
    assert with_ci({"kind": "rate", "value": 0.375, "ci95": [0.137, 0.694]}) == "37.5% [14–69]"


def test_axis_format_is_one_format_per_axis() -> None:
    assert [axis_format([0, 2500, 5000, 12500])(v) for v in (0, 2500, 12500)] == ["0.0k", "2.5k", "12.5k"]
    assert [axis_format([0, 2000, 4000])(v) for v in (0, 4000)] == ["0", "4,000"]
    assert [axis_format([0.8, 0.85, 0.9], percent=True)(v) for v in (0.8, 0.85)] == ["80%", "85%"]
    assert [axis_format([0.82, 0.825, 0.83], percent=True)(v) for v in (0.82, 0.825)] == ["82.0%", "82.5%"]
    assert axis_format([0, 0.05, 0.1])(0.05) == "0.05"


def test_log_axis_ticks_at_levels() -> None:
    svg = chart([Series("a", [(1, 10), (4, 20), (16, 40)])], x_log=True, x_ticks=[1, 4, 16])
    labels = re.findall(r'text-anchor="middle" fill="[^"]+" font-weight="normal">([^<]+)</text>', svg)
    assert labels[:3] == ["1", "4", "16"]


@pytest.mark.parametrize("bad", [None, [], "text", 3])
def test_render_report_accepts_anything_as_input(bad: Any) -> None:
    text = render_report(bad, bad)
    assert walk(text).errors == []
