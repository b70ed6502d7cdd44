"""lm-evaluation-harness against a target's endpoint, as a subprocess (``python -m lm_eval run``).

lm-eval is an optional extra (``pip install -e '.[academic]'``: lm-eval[api], no torch); it runs in its own
process so its imports, warnings and logging never touch benchbox's. Offline by construction: tasks come
from YAML files in ``include_path`` whose data is local (``dataset_path: json`` + ``data_files`` relative to
that folder, which is the subprocess's working directory), and the Hugging Face libraries run with
``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` so a task that would download fails instead of fetching.

Chat endpoints get ``local-chat-completions`` with the chat template and few-shot turns as real turns;
completions endpoints ``local-completions`` without a tokenizer. Loglikelihood tasks (``multiple_choice``,
``loglikelihood``, ``loglikelihood_rolling``) need prompt logprobs: the caller checks the probe first.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import orjson
import yaml

from bench.academic.perplexity import AcademicError
from bench.procs import tail_file

LOGLIKELIHOOD_TYPES = frozenset({"loglikelihood", "loglikelihood_rolling", "multiple_choice"})


def missing() -> Optional[str]:
    """None if lm-eval can be run here, else why not (one line)."""
    if importlib.util.find_spec("lm_eval") is None:
        return "lm-eval is not installed (pip install -e '.[academic]')"
    return None


class _TaskLoader(yaml.SafeLoader):
    """Safe YAML that tolerates lm-eval's ``!function`` tags (read as plain strings)."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")


def task_types(include_path: Path, tasks: list[str]) -> dict[str, str]:
    """task name -> output_type, from the YAML files in ``include_path`` (recursively).

    Raises AcademicError naming the tasks it cannot find: only local tasks run (no hub downloads)."""
    found: dict[str, str] = {}
    if not include_path.is_dir():
        raise AcademicError(f"academic.lmeval.include_path: no such folder {include_path}")

    def read(path: Path) -> dict[str, Any]:
        try:
            doc = yaml.load(path.read_text("utf-8"), Loader=_TaskLoader)  # noqa: S506 - SafeLoader subclass
        except (OSError, yaml.YAMLError):
            return {}
        return doc if isinstance(doc, dict) else {}

    for path in sorted(include_path.rglob("*.yaml")):
        doc = read(path)
        if isinstance(doc.get("task"), str):
            kind = doc.get("output_type")
            if kind is None and isinstance(doc.get("include"), str):  # lm-eval's one-file inheritance
                kind = read(path.parent / doc["include"]).get("output_type")
            found.setdefault(doc["task"], str(kind or "generate_until"))
    unknown = [t for t in tasks if t not in found]
    if unknown:
        known = ", ".join(sorted(found)) or "none"
        raise AcademicError(f"academic.lmeval.tasks: {', '.join(unknown)} not defined by a YAML file in "
                            f"{include_path} (local tasks only; found: {known})")
    return {t: found[t] for t in tasks}


def lmeval_cmd(protocol: str, base_url: str, model: str, tasks: list[str], include_path: Path,
               output_dir: Path, *, limit: Optional[int] = None, num_concurrent: int = 1,
               timeout_s: float = 120.0, loglikelihood: bool = False,
               python: str = sys.executable) -> list[str]:
    """The argv. ``loglikelihood``: a task needs prompt logprobs, so the completions endpoint is used even
    for a chat target (the probe has said it echoes), with lm-eval's tokenizer auto-detection."""
    chat = protocol == "openai-chat" and not loglikelihood
    base = base_url.rstrip("/")
    args = [f"model={model}", f"base_url={base}/v1/{'chat/completions' if chat else 'completions'}",
            f"num_concurrent={num_concurrent}", "max_retries=2", f"timeout={int(max(1, timeout_s))}"]
    if not loglikelihood:
        args += ["tokenized_requests=False"] + ([] if chat else ["tokenizer_backend=None"])
    cmd = [python, "-m", "lm_eval", "run", "--model",
           "local-chat-completions" if chat else "local-completions",
           "--model_args", ",".join(args), "--tasks", ",".join(tasks), "--include_path", str(include_path),
           "--output_path", str(output_dir), "--log_samples", "--seed", "0"]
    if chat:
        cmd += ["--apply_chat_template", "--fewshot_as_multiturn"]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return cmd


def lmeval_env(api_key: Optional[str], hf_home: Path,
               base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The subprocess environment: offline Hugging Face libraries with their own cache, and the target's API
    key as OPENAI_API_KEY (lm-eval's local-* models read it) or none: a key meant for another service is
    never sent to this endpoint."""
    env = dict(os.environ if base is None else base)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(hf_home),
               TOKENIZERS_PARALLELISM="false",
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONWARNINGS="ignore")
    env.pop("OPENAI_API_KEY", None)
    if api_key:
        env["OPENAI_API_KEY"] = api_key
    return env


def run_lmeval(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, output_dir: Path,
               timeout_s: float) -> dict[str, Any]:
    """Run lm-eval; its parsed results (see ``parse_results``) plus ``seconds``. AcademicError on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        try:
            rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            raise AcademicError(f"lm-eval ran past {timeout_s:g} s; log: {log_path}") from None
    if rc != 0:
        last = [ln for ln in tail_file(log_path, 40).splitlines() if ln.strip()]
        why = next((ln.strip() for ln in reversed(last) if "Error" in ln or "error" in ln), f"exit code {rc}")
        raise AcademicError(f"lm-eval failed ({why[:300]}); log: {log_path}")
    results = sorted(output_dir.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not results:
        raise AcademicError(f"lm-eval wrote no results_*.json under {output_dir}; log: {log_path}")
    return parse_results(orjson.loads(results[-1].read_bytes())) | {
        "seconds": round(time.monotonic() - t0, 2), "results_file": str(results[-1])}


def parse_results(data: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's results JSON -> {"tasks": {task: {"metrics": {metric: {"value", "stderr"}}, "n", "n_shot",
    "version"}}, "lm_eval_version"}. Metric keys drop lm-eval's ",<filter>" suffix when the filter is
    "none" (else ``metric/filter``)."""
    tasks: dict[str, Any] = {}
    for task, res in (data.get("results") or {}).items():
        metrics: dict[str, dict[str, Any]] = {}
        for key, value in res.items():
            if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, filt = key.split(",", 1)
            stderr = metric.endswith("_stderr")
            base = metric[: -len("_stderr")] if stderr else metric
            name = base if filt == "none" else f"{base}/{filt}"
            metrics.setdefault(name, {})["stderr" if stderr else "value"] = value
        n = (data.get("n-samples") or {}).get(task, {})
        tasks[task] = {"metrics": metrics, "n": n.get("effective", res.get("sample_len")),
                       "n_shot": (data.get("n-shot") or {}).get(task),
                       "version": (data.get("versions") or {}).get(task)}
    return {"tasks": tasks, "lm_eval_version": data.get("lm_eval_version")}
