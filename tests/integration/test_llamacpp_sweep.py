"""Real sweeps through the CLI against real llama-server processes (baseline and quantized).

Provisioning happens in the session fixture (`benchbox server install` does the same ahead of
time; CI runs it first, so here it is a cache hit).
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest
import yaml

from tests.conftest import REPO, load_records, only_run_dir, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.llamacpp]

MODELS = ("smollm2-135m-q4_1", "smollm2-135m-q4_0", "smollm2-135m-q2_k")


@pytest.fixture(scope="session")
def llamacpp() -> None:
    from bench import provision

    provision.ensure_llamacpp(progress=None)
    for model in MODELS:
        provision.resolve_model(model, progress=None)


def _servers_of_run(run_dir: Path) -> list[int]:
    """llama-server processes still serving one of the run's ports (should be none)."""
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    ports = {str(t["server"]["port"]) for t in manifest["targets"].values() if t.get("server")}
    alive = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.info["name"] == "llama-server" and p.status() != psutil.STATUS_ZOMBIE and \
                    any(a in ports for a in cmd):
                alive.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _scenario(tmp_path: Path, targets: list[dict], load: dict, max_tokens: int = 8, limit: int = 24) -> Path:
    data = {
        "name": "llamacpp-it",
        "dataset": {"path": str(REPO / "quality" / "voice.jsonl"), "slices": ["short_context"], "limit": limit},
        "targets": targets,
        "sampling": {"max_tokens": max_tokens, "temperature": 0, "seed": 0},
        "load": load,
    }
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _managed(name: str, role: str, model: str, cold: int = 0) -> dict:
    return {"name": name, "role": role, "server": {"definition": "llamacpp", "model": model, "cold_requests": cold}}


@pytest.fixture(scope="module")
def voice_ci_run(tmp_path_factory: pytest.TempPathFactory, llamacpp: None) -> tuple[Path, subprocess.CompletedProcess]:
    """One real run of scenarios/ci/voice.yaml (three llama-servers), shared by the tests below."""
    out = tmp_path_factory.mktemp("voice-ci")
    proc = run_cli("sweep", "scenarios/ci/voice.yaml", "--out", str(out / "runs"), timeout=900)
    run_dir = only_run_dir(out / "runs")
    assert _servers_of_run(run_dir) == []  # no orphan servers
    return run_dir, proc


def test_voice_ci_scenario_baseline_vs_quantized(voice_ci_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, proc = voice_ci_run
    # The CI scenario's gates decide the exit code: 0 all pass, 1 a gate failed, 3 inconclusive only.
    assert proc.returncode in (0, 1, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "acceptance gates" in proc.stdout
    result = orjson.loads((run_dir / "result.json").read_bytes())
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert result["complete"] is True and result["failures"] == []
    names = ["smollm2-q4_1", "smollm2-q4_0", "smollm2-q2_k"]
    assert [(lv["target"], lv["level"]) for lv in result["levels"]] == [(n, lv) for n in names for lv in (1, 4)]
    for lv in result["levels"]:
        assert lv["requests"]["measured"] == 8 and lv["error_rate"] == 0.0, lv["requests"]
        assert lv["tokens"]["usage_missing"] == 0  # token counts come from llama-server's usage
        m = lv["metrics"]
        assert 0 < m["ttft_ms"]["p50"] <= m["ttft_ms"]["p99"] <= m["e2e_ms"]["p99"]
        assert lv["throughput"]["output_tokens_per_s"] > 0
    sizes = {}
    for name in names:
        cold = result["targets"][name]
        assert cold["server"]["launch_to_ready_s"] > 0
        assert len(cold["cold"]["requests"]) == 3 and all(c["error"] is None for c in cold["cold"]["requests"])
        server = manifest["targets"][name]["server"]
        assert server["llamacpp"]["version"] == "11434.0.0"
        sizes[name] = server["model_facts"]["size_bytes"]
        assert manifest["targets"][name]["reported_models"]["data"], manifest["targets"][name]
        assert (run_dir / f"server-{name}.log").stat().st_size > 0
    # The compressed candidates really are smaller on disk than the baseline.
    assert sizes["smollm2-q4_0"] < sizes["smollm2-q4_1"] and sizes["smollm2-q2_k"] < sizes["smollm2-q4_1"]
    assert "cold start smollm2-q4_1: launch→ready" in proc.stdout
    # The quality pass scored the same responses: per-slice tables with intervals, fidelity, calibration.
    quality = result["quality"]
    assert quality["primary"] == "label_correct"
    scores = (run_dir / "scores.jsonl").read_bytes().splitlines()
    assert len(scores) == sum(lv["requests"]["measured"] for lv in result["levels"])
    for name in names:
        entry = quality["targets"][name]
        metric = entry["slices"]["all"]["metrics"]["label_correct"]
        assert metric["n"] == 16 and 0 <= metric["ci95"][0] <= metric["value"] <= metric["ci95"][1] <= 1
        assert entry["calibration"]["n"] == 16 and 0 <= entry["calibration"]["ece"] <= 1
    vs = quality["targets"]["smollm2-q4_0"]["vs_baseline"]["all"]
    assert vs["n_pairs"] == 16 and 0 <= vs["mcnemar_p"] <= 1
    assert sum(vs["flips"].values()) == 16
    assert 0 <= vs["same_top_token"]["value"] <= 1


def _gate_scenario(tmp_path: Path, gates: list[str]) -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "ci" / "voice.yaml").read_text())
    data["dataset"]["path"] = str(REPO / "quality" / "voice.jsonl")
    data["gates"] = gates
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("gates,code,verdicts", [
    (["error_rate < 50%", "ttft.p50 < 60s at concurrency 1"], 0, {"pass"}),
    (["error_rate < 50%", "ttft.p50 < 1ms at concurrency 1"], 1, {"pass", "fail"}),
    (["error_rate < 50%", "accuracy >= baseline - 1pt"], 3, {"pass", "inconclusive"}),
])
def test_gates_decide_the_exit_code(tmp_path: Path, voice_ci_run: tuple[Path, subprocess.CompletedProcess],
                                    gates: list[str], code: int, verdicts: set[str]) -> None:
    run_dir, _ = voice_ci_run
    proc = run_cli("sweep", str(_gate_scenario(tmp_path, gates)), "--gates-only", str(run_dir), timeout=120)
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = orjson.loads((run_dir / "result.json").read_bytes())
    assert {r["verdict"] for r in result["gates"]["results"]} == verdicts
    assert result["gates"]["exit_code"] == code
    junit = (run_dir / "gates.xml").read_text()
    assert junit.count("<testcase") == 2 * len(gates)  # one per gate per candidate
    assert "| verdict | target | gate |" in (run_dir / "gates.md").read_text()


def test_client_ttft_agrees_with_llama_server_accounting(tmp_path: Path, llamacpp: None) -> None:
    scenario = _scenario(tmp_path, [_managed("base", "baseline", "smollm2-135m-q4_1")],
                         {"pattern": "concurrency", "levels": [1], "requests": 16, "warmup": {"requests": 2}})
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = [r for r in load_records(only_run_dir(tmp_path / "runs")) if r["phase"] == "measure"]
    assert len(records) == 16
    gaps, tail_gaps = [], []
    for r in records:
        timings = r["server_timings"]
        ttft_ms = (r["first_token_ns"] - r["sent_ns"]) / 1e6
        e2e_ms = (r["end_ns"] - r["sent_ns"]) / 1e6
        # The server cannot have produced the first token before it finished the prompt.
        assert ttft_ms >= timings["prompt_ms"], (ttft_ms, timings)
        assert e2e_ms >= timings["prompt_ms"] + timings["predicted_ms"]
        assert r["output_tokens"] == timings["predicted_n"]
        gaps.append(ttft_ms - timings["prompt_ms"])
        tail_gaps.append(e2e_ms - timings["prompt_ms"] - timings["predicted_ms"])
    # What remains is HTTP, tokenisation and templating: a few ms on a quiet box. The bound only
    # catches gross client error (tens of ms): CI shares 2 cores with other work, and a median of
    # 16 ms was seen there under load. The exact client error is measured by benchmarks/.
    print(f"TTFT - server prompt_ms: median {statistics.median(gaps):.2f} ms, max {max(gaps):.2f} ms; "
          f"E2E - (prompt+predicted): median {statistics.median(tail_gaps):.2f} ms")
    assert statistics.median(gaps) < 40.0
    assert statistics.median(tail_gaps) < 40.0


def test_server_killed_mid_run_is_reported_and_records_kept(tmp_path: Path, llamacpp: None) -> None:
    scenario = _scenario(tmp_path, [_managed("victim", "baseline", "smollm2-135m-q4_1"),
                                    _managed("survivor", "candidate", "smollm2-135m-q2_k")],
                         {"pattern": "concurrency", "levels": [2], "requests": 10})
    scenario_data = yaml.safe_load(scenario.read_text())
    scenario_data["load"] = {"pattern": "concurrency", "levels": [2], "duration_s": 120}
    scenario_data["targets"][1]["server"]["cold_requests"] = 0
    scenario.write_text(yaml.safe_dump(scenario_data, sort_keys=False))
    # The survivor has the same 120 s duration: keep it short by letting the test run only until
    # the victim is killed and the survivor has been measured, then interrupt.
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(out), "--quiet"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def victim_measured() -> bool:
            files = list(out.glob("*/records.jsonl")) if out.exists() else []
            return bool(files) and files[0].read_bytes().count(b'"phase":"measure"') >= 4
        assert wait_for(victim_measured, timeout=180)
        victims = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "llama-server"]
        assert len(victims) == 1
        victims[0].kill()

        def survivor_measured() -> bool:
            data = next(out.glob("*/records.jsonl")).read_bytes()
            return data.count(b'"target":"survivor","level":2.0,"phase":"measure"') >= 4
        assert wait_for(survivor_measured, timeout=180)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in stdout + stderr
    assert "victim: managed server exited" in stdout
    run_dir = only_run_dir(out)
    result = orjson.loads((run_dir / "result.json").read_bytes())
    assert result["complete"] is False
    assert any(f.startswith("victim: managed server exited") for f in result["failures"])
    records = load_records(run_dir)
    victim_ok = [r for r in records if r["target"] == "victim" and r["error"] is None]
    assert len(victim_ok) >= 4  # what was measured before the kill is kept
    victim_level = next(lv for lv in result["levels"] if lv["target"] == "victim")
    assert victim_level["requests"]["ok"] == len([r for r in victim_ok if r["phase"] == "measure"])
    assert any(lv["target"] == "survivor" and lv["requests"]["ok"] >= 4 for lv in result["levels"])
    time.sleep(0.5)
    assert _servers_of_run(run_dir) == []


def test_server_that_cannot_start_gives_clear_error(tmp_path: Path, llamacpp: None) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF this is not a model" * 10)
    scenario = _scenario(tmp_path, [{"name": "broken", "role": "baseline",
                                     "server": {"definition": "llamacpp", "model": str(broken)}}],
                         {"pattern": "concurrency", "levels": [1], "requests": 2})
    proc = run_cli("sweep", str(scenario), "--out", str(tmp_path / "runs"), "--quiet", timeout=300)
    assert proc.returncode == 4
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "broken" in proc.stdout and "error" in proc.stdout
    result = orjson.loads((only_run_dir(tmp_path / "runs") / "result.json").read_bytes())
    assert result["complete"] is False and result["failures"]
