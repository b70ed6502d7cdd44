"""``benchbox academic`` on the real llama.cpp build and bundled SmolLM2 models: llama-perplexity
perplexity and KL divergence, the prompt-logprob refusal against a real llama-server, and a local lm-eval
generative task run against a real llama-server (needs `benchbox server install`; the lm-eval part needs the
academic extra, which .ci/run installs).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import orjson
import pytest
import yaml

from bench import provision as pv
from bench import serving as sv
from bench.academic.endpoint_ppl import EndpointError, endpoint_perplexity, post_json, probe
from bench.academic.lmeval import missing as lmeval_missing
from bench.scenario import ManagedServerSpec
from tests.conftest import REPO, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.llamacpp]

needs_build = pytest.mark.skipif(
    pv.installed_llamacpp() is None,
    reason=f"llama.cpp not built in {pv.llamacpp_dir()}/bin (run `benchbox server install` first)")
_LMEVAL = lmeval_missing()
needs_lmeval = pytest.mark.skipif(_LMEVAL is not None,
                                  reason=f"{_LMEVAL} (the academic extra; .ci/run installs it)")


def _scenario(folder: Path, targets: list[dict], academic: dict) -> Path:
    shutil.copy(REPO / "quality" / "voice.jsonl", folder / "voice.jsonl")
    path = folder / "academic.yaml"
    path.write_text(yaml.safe_dump({
        "name": "academic-it", "dataset": {"path": "voice.jsonl", "limit": 4}, "targets": targets,
        "load": {"levels": [1], "requests": 4},
        "academic": {"text": str(REPO / "quality" / "heldout" / "plain_en.txt"),
                     **academic}}, sort_keys=False))
    return path


def _managed(name: str, model: str, role: str = "candidate") -> dict:
    return {"name": name, "role": role, "server": {"definition": "llamacpp", "model": model}}


def _result(out: Path) -> dict:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return orjson.loads((run / "result.json").read_bytes())


@needs_build
def test_perplexity_and_kld_on_smollm2(tmp_path):
    targets = [_managed("q4_1", "smollm2-135m-q4_1", "baseline"), _managed("q4_0", "smollm2-135m-q4_0"),
               _managed("q3_k_s", "smollm2-135m-q3_k_s"), _managed("q2_k", "smollm2-135m-q2_k")]
    scen = _scenario(tmp_path, targets, {"ctx": 128, "chunks": 8, "endpoint_perplexity": "off"})
    proc = run_cli("academic", str(scen), "--out", str(tmp_path / "runs"), "--skip", "lmeval", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ac = _result(tmp_path / "runs")["academic"]
    t = ac["llamacpp"]["targets"]
    base = t["q4_1"]
    assert base["role"] == "baseline" and 5 < base["ppl"]["value"] < 200 and base["chunks"] == 8
    assert Path(base["logits_file"]).is_file()
    for name in ("q4_0", "q3_k_s", "q2_k"):
        c = t[name]
        assert c["ppl_base"]["value"] == pytest.approx(base["ppl"]["value"], rel=1e-3)  # the same tokens
        assert c["kld"]["mean"] > 0 and 0 < c["same_top"]["value"] < 1
        assert c["ppl"]["value"] > base["ppl"]["value"]
    # Q3_K_S and Q2_K of SmolLM2 hold the same tensors (576-wide rows fall back to the same types): identical
    # numbers, and the pass says so. Q4_0 (every tensor 4-bit, no fallback question) is the closest.
    assert t["q3_k_s"]["kld"] == t["q2_k"]["kld"] and t["q3_k_s"]["model_sha256"] != t["q2_k"]["model_sha256"]
    assert t["q4_0"]["kld"]["mean"] < t["q2_k"]["kld"]["mean"]
    kinds = {(s["kind"], s["targets"]) for s in ac["comparison"]["statements"]}
    assert ("identical", "q2_k,q3_k_s") in kinds
    assert "academic: llama-perplexity on the held-out text" in proc.stdout
    # A second pass reuses the baseline logits.
    proc = run_cli("academic", str(scen), "--out", str(tmp_path / "runs2"), "--skip", "lmeval", "--skip",
                   "endpoint", timeout=900)
    assert proc.returncode == 0 and _result(tmp_path / "runs2")["academic"]["llamacpp"]["targets"]["q4_1"][
        "logits_cached"] is True


@needs_build
def test_llama_server_has_no_prompt_logprobs_and_is_refused(tmp_path):
    server = sv.ManagedServer(ManagedServerSpec(definition="llamacpp", model="smollm2-135m-q4_1"), "t",
                              tmp_path / "t.log", [sv.REPO_SERVERS])

    async def ask() -> tuple:
        await server.start()
        try:
            url = server.base_url

            def post(path: str, body: dict) -> dict:
                return post_json(url, path, body, {}, 60)

            found = await asyncio.to_thread(probe, post, "smollm2-135m-q4_1")
            with pytest.raises(EndpointError, match="without prompt logprobs"):
                await asyncio.to_thread(endpoint_perplexity, post, "smollm2-135m-q4_1",
                                        "Some text. More text.")
            return found
        finally:
            await server.stop()

    found = asyncio.run(ask())
    assert not found.supported and found.shape == "content" and (found.prompt_tokens or 0) > 5
    assert "generated tokens only (echo ignored)" in found.reason and "silently at chance" in found.reason
    # Through the CLI: required endpoint perplexity against llama-server is a one-line refusal, exit 2.
    scen = _scenario(tmp_path, [_managed("smol", "smollm2-135m-q4_1", "baseline")],
                     {"endpoint_perplexity": "require"})
    proc = run_cli("academic", str(scen), "--out", str(tmp_path / "runs"), "--skip", "llamacpp", "--skip",
                   "lmeval")
    assert proc.returncode == 2, proc.stderr[-2000:]
    refused = [ln for ln in proc.stderr.splitlines() if ln.startswith("benchbox: refused:")]
    assert len(refused) == 1 and refused[0].startswith(
        "benchbox: refused: smol: refused: endpoint perplexity: no prompt logprobs: asked for echo + "
        "logprobs")
    ep = _result(tmp_path / "runs")["academic"]["endpoints"]["smol"]
    assert ep["perplexity"]["status"] == "unsupported" and ep["probe"]["response_shape"] == "content"


@needs_build
@needs_lmeval
def test_local_lmeval_generative_task_against_llama_server(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for f in ("voice_intent.yaml", "voice_intent.jsonl"):
        shutil.copy(REPO / "quality" / "lmeval" / f, tasks / f)
    # A loglikelihood task next to it: refused for llama-server (no prompt logprobs), never sent.
    (tasks / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs: {data_files: {test: voice_intent.jsonl}}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{utterance}}'\ndoc_to_target: 0\n"
        "doc_to_choice: ['{{label}}', 'cancel']\nmetric_list: [{metric: acc}]\n")
    scen = _scenario(tmp_path, [_managed("smol", "smollm2-135m-q4_1", "baseline")],
                     {"endpoint_perplexity": "off",
                      "lmeval": {"tasks": ["benchbox_voice_intent", "tiny_mc"], "include_path": str(tasks),
                                 "limit": 6}})
    proc = run_cli("academic", str(scen), "--out", str(tmp_path / "runs"), "--skip", "llamacpp", timeout=900)
    assert proc.returncode == 2, proc.stderr[-3000:]  # the refusal; the generative task ran
    assert "smol: refused: lm-eval tiny_mc (multiple_choice): no prompt logprobs" in proc.stderr
    ep = _result(tmp_path / "runs")["academic"]["endpoints"]["smol"]
    lm = ep["lmeval"]
    assert lm["status"] == "ok", lm
    assert lm["model"] == "local-chat-completions" and list(lm["tasks"]) == ["benchbox_voice_intent"]
    task = lm["tasks"]["benchbox_voice_intent"]
    assert task["n"] == 6 and task["n_shot"] == 13
    assert 0.0 <= task["metrics"]["exact_match/strip"]["value"] <= 1.0
    assert ep["lmeval_refused"] == {"tiny_mc": "multiple_choice"}
    samples = list(Path(lm["results_file"]).parent.glob("samples_benchbox_voice_intent_*.jsonl"))
    assert samples and len(samples[0].read_text().splitlines()) == 6
    first = orjson.loads(samples[0].read_text().splitlines()[0])
    messages = orjson.loads(first["arguments"]["gen_args_0"]["arg_0"][0])
    # The product's prompt: its system turn, 13 few-shot turns as real chat turns, then the utterance.
    assert messages[0]["role"] == "system" and len(messages) == 1 + 2 * 13 + 1
    score = task["metrics"]["exact_match/strip"]["value"]
    print(f"\nlm-eval benchbox_voice_intent exact_match = {score:.3f} (n=6)")
