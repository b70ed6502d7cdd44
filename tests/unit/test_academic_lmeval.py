"""lm-eval glue: task discovery (local YAML only), command lines, environment, results parsing, and the
shipped local task being exactly what its builder writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.academic.lmeval import lmeval_cmd, lmeval_env, parse_results, task_types
from bench.academic.perplexity import AcademicError

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "academic"
TASKS = REPO / "quality" / "lmeval"


def test_shipped_task_matches_its_builder():
    spec = importlib.util.spec_from_file_location("lmeval_task_build", TASKS / "build.py")
    assert spec and spec.loader
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    docs, shots = build.build_docs()
    shipped = [json.loads(line) for line in (TASKS / "voice_intent.jsonl").read_text("utf-8").splitlines()]
    assert shipped == docs and len(docs) == 20 and len(shots) == 13
    assert (TASKS / "voice_intent.yaml").read_text("utf-8") == build.task_yaml(shots)
    assert (TASKS / "voice_intent_completion.yaml").read_text("utf-8") == build.completion_task_yaml()
    lines = (REPO / "quality" / "voice.jsonl").read_text().splitlines()
    voice = {json.loads(x)["id"]: json.loads(x) for x in lines}
    for d in docs:  # the same question the sweep asks, and the same answer key
        assert voice[d["id"]]["messages"][-1]["content"] == d["utterance"]
        assert voice[d["id"]]["reference"] == d["label"]


def test_task_types_from_local_yaml(tmp_path):
    assert task_types(TASKS, ["benchbox_voice_intent", "benchbox_voice_intent_completion"]) == {
        "benchbox_voice_intent": "generate_until", "benchbox_voice_intent_completion": "generate_until"}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mc.yaml").write_text(
        "task: my_mc\noutput_type: multiple_choice\nprocess_docs: !function utils.process\n")
    (tmp_path / "broken.yaml").write_text("task: [unclosed\n")
    (tmp_path / "sub" / "mc2.yaml").write_text("include: mc.yaml\ntask: my_mc2\n")
    assert task_types(tmp_path, ["my_mc", "my_mc2"]) == {"my_mc": "multiple_choice",
                                                         "my_mc2": "multiple_choice"}
    with pytest.raises(AcademicError, match=r"arc_easy not defined by a YAML file in .* \(local tasks only; "
                                            r"found: my_mc, my_mc2\)"):
        task_types(tmp_path, ["my_mc", "arc_easy"])
    with pytest.raises(AcademicError, match="no such folder"):
        task_types(tmp_path / "nope", ["x"])


def test_command_lines():
    chat = lmeval_cmd("openai-chat", "http://127.0.0.1:8080/", "smol", ["a", "b"], Path("/t"), Path("/o"),
                      limit=5, timeout_s=60, python="py")
    assert chat[:6] == ["py", "-m", "lm_eval", "run", "--model", "local-chat-completions"]
    args = chat[chat.index("--model_args") + 1].split(",")
    assert args == ["model=smol", "base_url=http://127.0.0.1:8080/v1/chat/completions", "num_concurrent=1",
                    "max_retries=2", "timeout=60", "tokenized_requests=False"]
    assert chat[chat.index("--tasks") + 1] == "a,b" and chat[chat.index("--limit") + 1] == "5"
    assert "--apply_chat_template" in chat and "--fewshot_as_multiturn" in chat and "--log_samples" in chat
    comp = lmeval_cmd("openai-completions", "http://h:1", "g", ["a"], Path("/t"), Path("/o"), python="py")
    assert comp[5] == "local-completions" and "--apply_chat_template" not in comp and "--limit" not in comp
    assert "tokenizer_backend=None" in comp[comp.index("--model_args") + 1]
    # Loglikelihood work needs echo + logprobs: the completions endpoint, even for a chat target.
    ll = lmeval_cmd("openai-chat", "http://h:1", "m", ["mc"], Path("/t"), Path("/o"), loglikelihood=True,
                    python="py")
    assert ll[5] == "local-completions"
    assert "base_url=http://h:1/v1/completions" in ll[ll.index("--model_args") + 1]
    assert "tokenized_requests" not in ll[ll.index("--model_args") + 1]


def test_environment_is_offline_and_never_leaks_another_key(tmp_path):
    env = lmeval_env(None, tmp_path / "hf", {"OPENAI_API_KEY": "sk-for-openai", "PATH": "/bin"})
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert env["HF_HOME"] == str(tmp_path / "hf")
    assert "OPENAI_API_KEY" not in env and env["PATH"] == "/bin"
    assert lmeval_env("target-key", tmp_path, {"OPENAI_API_KEY": "other"})["OPENAI_API_KEY"] == "target-key"


def test_parse_results_of_a_real_run():
    # Recorded: lm-eval 0.4.13, benchbox_voice_intent against llama-server with SmolLM2 Q4_1.
    out = parse_results(json.loads((FIX / "lmeval_results.json").read_text()))
    assert out["lm_eval_version"] == "0.4.13"
    t = out["tasks"]["benchbox_voice_intent"]
    assert t["metrics"] == {"exact_match": {"value": 0.4, "stderr": pytest.approx(0.1124, abs=1e-4)}}
    assert (t["n"], t["n_shot"], t["version"]) == (20, 13, 1.0)
    filtered = parse_results({"results": {"x": {"acc,strict": 0.5, "acc_stderr,strict": 0.1, "alias": "x"}}})
    assert filtered["tasks"]["x"]["metrics"] == {"acc/strict": {"value": 0.5, "stderr": 0.1}}
