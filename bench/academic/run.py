"""One ``benchbox academic`` pass over a scenario's targets: llama-perplexity fidelity of the managed
llama.cpp models, then per endpoint the prompt-logprob probe, endpoint perplexity and lm-eval tasks.

The result is result.json's ``academic`` section (``build_section``); ``Outcome.code`` follows the CLI's
exit codes: 0 done, 2 something required was refused (the target has no prompt logprobs), 4 a measurement
failed. Each failure is one line in the section, never an exception that loses the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from bench.academic import compare
from bench.academic.endpoint_ppl import EndpointError, Probe, endpoint_perplexity, post_json, probe
from bench.academic.kld import Tool, fidelity
from bench.academic.lmeval import LOGLIKELIHOOD_TYPES, lmeval_cmd, lmeval_env, run_lmeval, task_types
from bench.academic.perplexity import AcademicError
from bench.academic.spec import AcademicSpec
from bench.scenario import LoadedScenario, Target

Say = Callable[[str], None]
EXIT_OK, EXIT_USAGE, EXIT_RUN_FAILED = 0, 2, 4
DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "quality" / "heldout" / "plain_en.txt"


@dataclass
class Outcome:
    section: dict[str, Any]
    code: int = EXIT_OK
    refusals: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def heldout_text(loaded: LoadedScenario, spec: AcademicSpec) -> tuple[Path, str]:
    """(path, sha256) of the held-out text; AcademicError if it is missing or too short to score."""
    path = Path(os.path.normpath(loaded.resolve(spec.text))) if spec.text else DEFAULT_TEXT
    try:
        raw = path.read_bytes()
    except OSError:
        field_ = "academic.text" if spec.text else "the bundled held-out text (set academic.text)"
        raise AcademicError(f"{loaded.path}: {field_}: no such file {path}") from None
    if not raw.strip():
        raise AcademicError(f"{loaded.path}: academic.text: {path} is empty")
    return path, hashlib.sha256(raw).hexdigest()


def server_dirs(loaded: LoadedScenario) -> list[Path]:
    from bench.serving import REPO_SERVERS

    return [loaded.folder.parent / "servers", loaded.folder / "servers", REPO_SERVERS]


def llamacpp_model(loaded: LoadedScenario, target: Target) -> Optional[str]:
    """The model a managed llama.cpp target serves (catalog name or path), None for any other target."""
    if target.server is None:
        return None
    from bench.server_defs import ServerError, load_definition

    try:
        d = load_definition(target.server.definition, server_dirs(loaded))
    except ServerError:
        return None
    if d.provision != "llamacpp":
        return None
    return target.server.model or (str(d.defaults["model"]) if d.defaults.get("model") else None)


def run_llamacpp(loaded: LoadedScenario, spec: AcademicSpec, text: tuple[Path, str], log_dir: Path,
                 say: Say, threads: int) -> dict[str, Any]:
    """Perplexity and KLD of every managed llama.cpp target (baseline logits cached)."""
    from bench.provision import ProvisionError, ensure_llamacpp, model_facts, resolve_model

    models = {t.name: (t, m) for t in loaded.scenario.targets if (m := llamacpp_model(loaded, t))}
    others = [t.name for t in loaded.scenario.targets if t.name not in models]
    out: dict[str, Any] = {"targets": {}, "not_llamacpp": others}
    if not models:
        out["skipped"] = "no managed llama.cpp target (server.definition with provision: llamacpp)"
        return out
    try:
        build = ensure_llamacpp(say)
    except ProvisionError as e:
        out["error"] = str(e).splitlines()[0]
        return out
    resolved: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name, (_, model) in models.items():
        try:
            path = resolve_model(model, say)
            resolved[name] = (path, model_facts(path))
        except (ProvisionError, OSError) as e:
            out["targets"][name] = {"error": str(e).splitlines()[0]}
    tool = Tool(build.perplexity, str(build.info.get("version")), text[0], text[1], spec.ctx, spec.chunks,
                threads)
    base = next((n for n, (t, _) in models.items() if t.role == "baseline" and n in resolved), None)
    triples = {n: (n, p, f["sha256"]) for n, (p, f) in resolved.items()}
    out["targets"] |= fidelity(triples.get(base) if base else None,
                               [triples[n] for n in resolved if n != base], tool, log_dir, say)
    if not base:
        out["note"] = "no llama.cpp baseline: perplexity only, no KL divergence"
    for n, (_, f) in resolved.items():
        out["targets"][n] |= {"quantization": f.get("quantization"), "size_bytes": f.get("size_bytes")}
    return out


def endpoint_phase(target: Target, base_url: str, headers: dict[str, str], spec: AcademicSpec,
                   text: str, tasks: dict[str, str], include_path: Optional[Path], run_dir: Path,
                   api_key: Optional[str]) -> dict[str, Any]:
    """Probe, endpoint perplexity, lm-eval tasks for one reachable endpoint. Refusals are entries with
    ``status: unsupported``; ``refused`` lists what was required and refused."""
    model = target.model or ""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return post_json(base_url, path, body, headers, target.timeout_s)

    entry: dict[str, Any] = {"base_url": base_url, "refused": []}
    loglik = [t for t, kind in tasks.items() if kind in LOGLIKELIHOOD_TYPES]
    found: Optional[Probe] = None
    if spec.endpoint_perplexity != "off" or loglik:
        found = probe(post, model)
        entry["probe"] = found.as_dict()
    if spec.endpoint_perplexity != "off" and found is not None:
        if not found.supported:
            entry["perplexity"] = {"status": "unsupported", "reason": found.reason}
            if spec.endpoint_perplexity == "require":
                entry["refused"].append(f"endpoint perplexity: {found.reason}")
        else:
            try:
                entry["perplexity"] = {"status": "ok", **endpoint_perplexity(post, model, text)}
            except EndpointError as e:
                entry["perplexity"] = {"status": "error", "error": str(e)}
    if tasks and include_path is not None:
        runnable = dict(tasks)
        if loglik and found is not None and not found.supported:
            for t in loglik:
                runnable.pop(t)
            kinds = "/".join(sorted({tasks[t] for t in loglik}))
            entry["refused"].append(f"lm-eval {', '.join(loglik)} ({kinds}): {found.reason}")
            entry["lmeval_refused"] = {t: tasks[t] for t in loglik}
        if runnable:
            entry["lmeval"] = run_tasks(target, base_url, runnable, include_path, spec, run_dir, api_key)
    return entry


def run_tasks(target: Target, base_url: str, tasks: dict[str, str], include_path: Path, spec: AcademicSpec,
              run_dir: Path, api_key: Optional[str]) -> dict[str, Any]:
    from bench.catalog import cache_root

    assert spec.lmeval is not None
    out_dir = run_dir / "academic" / "lmeval" / target.name
    out_dir.mkdir(parents=True, exist_ok=True)
    loglik = any(kind in LOGLIKELIHOOD_TYPES for kind in tasks.values())
    cmd = lmeval_cmd(target.protocol, base_url, target.model or "", list(tasks), include_path.resolve(),
                     out_dir.resolve(), limit=spec.lmeval.limit, num_concurrent=spec.lmeval.num_concurrent,
                     timeout_s=target.timeout_s, loglikelihood=loglik)
    env = lmeval_env(api_key, cache_root() / "academic" / "hf")
    try:
        res = run_lmeval(cmd, include_path, env, run_dir / "academic" / f"lmeval-{target.name}.log", out_dir,
                         spec.lmeval.timeout_s)
    except AcademicError as e:
        return {"status": "error", "error": str(e)}
    res["status"] = "ok"
    res["model"] = cmd[cmd.index("--model") + 1]
    if target.headers:
        res["note"] = "the target's custom headers are not sent by lm-eval (only the API key)"
    return res


def headline(lm: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The first task's first metric: {"task", "metric", "score", "stderr", "n"}."""
    for task, t in (lm.get("tasks") or {}).items():
        for metric, v in (t.get("metrics") or {}).items():
            if "value" in v:
                return {"task": task, "metric": metric, "score": v["value"], "stderr": v.get("stderr"),
                        "n": t.get("n")}
    return None


async def _with_server(loaded: LoadedScenario, target: Target, log_dir: Path, say: Say,
                       work: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    from bench.serving import ManagedServer, ServerError

    assert target.server is not None
    server = ManagedServer(target.server, target.name, log_dir / f"server-{target.name}.log",
                           server_dirs(loaded), progress=say)
    try:
        await server.start()
    except ServerError as e:
        return {"error": str(e).splitlines()[0]}
    try:
        assert server.base_url
        return await asyncio.to_thread(work, server.base_url)
    finally:
        await server.stop()


def run_academic(loaded: LoadedScenario, spec: AcademicSpec, run_dir: Path, quality: dict[str, Any],
                 say: Say, skip: frozenset[str] = frozenset(), threads: Optional[int] = None) -> Outcome:
    """Everything the spec asks for, in order; the section for result.json and the exit code."""
    from bench.procs import cpu_count
    from bench.sweep import auth_headers

    text = heldout_text(loaded, spec)
    headers = {t.name: auth_headers(t) for t in loaded.scenario.targets}  # ScenarioError before any work
    log_dir = run_dir / "academic"
    log_dir.mkdir(parents=True, exist_ok=True)
    section: dict[str, Any] = {
        "informational": True,
        "settings": {"ctx": spec.ctx, "chunks": spec.chunks, "endpoint_perplexity": spec.endpoint_perplexity,
                     "skipped": sorted(skip)},
        "text": {"path": str(text[0]), "sha256": text[1], "bytes": text[0].stat().st_size},
    }
    outcome = Outcome(section)
    if spec.llamacpp and "llamacpp" not in skip:
        section["llamacpp"] = run_llamacpp(loaded, spec, text, log_dir, say, threads or cpu_count())
    tasks: dict[str, str] = {}
    include_path: Optional[Path] = None
    if spec.lmeval and "lmeval" not in skip:
        include_path = loaded.resolve(spec.lmeval.include_path)
        tasks = task_types(include_path, spec.lmeval.tasks)
    if "endpoint" not in skip and (spec.endpoint_perplexity != "off" or tasks):
        body = text[0].read_text("utf-8")
        endpoints: dict[str, Any] = {}
        for target in loaded.scenario.targets:
            api_key = headers[target.name].get("Authorization", "").removeprefix("Bearer ") or None

            def work(base_url: str, target: Target = target,
                     api_key: Optional[str] = api_key) -> dict[str, Any]:
                return endpoint_phase(target, base_url, headers[target.name], spec, body, tasks, include_path,
                                      run_dir, api_key)

            say(f"benchbox: {target.name}: probing the endpoint" + (" and running lm-eval" if tasks else ""))
            if target.server is not None:
                entry = asyncio.run(_with_server(loaded, target, log_dir, say, work))
            else:
                assert target.url
                entry = work(target.url)
            for line in entry.get("refused", []):
                msg = f"{target.name}: refused: {line}"
                outcome.refusals.append(msg)
                say(f"benchbox: {msg}")
            endpoints[target.name] = entry
        section["endpoints"] = endpoints
    section["comparison"] = comparison(section, quality)
    outcome.errors = errors_of(section)
    outcome.code = EXIT_USAGE if outcome.refusals else EXIT_RUN_FAILED if outcome.errors else EXIT_OK
    return outcome


def comparison(section: dict[str, Any], quality: dict[str, Any]) -> dict[str, Any]:
    """Per candidate: the academic numbers beside the quality pass; then the statements."""
    llama = (section.get("llamacpp") or {}).get("targets") or {}
    lm = {n: h for n, e in (section.get("endpoints") or {}).items()
          if (h := headline(e.get("lmeval") or {})) is not None}
    rows: dict[str, Any] = {}
    for n in sorted(set(llama) | set(lm) | set((quality.get("targets") or {}))):
        q = compare.quality_view(quality, n)
        if n in llama or n in lm:
            rows[n] = {"quality": q, "lmeval": lm.get(n)}
    return {"targets": rows, "statements": compare.statements(llama, quality, lm),
            "rules": {"low_kld": compare.LOW_KLD, "high_kld": compare.HIGH_KLD,
                      "many_flips": compare.MANY_FLIPS, "high_agreement": compare.HIGH_AGREEMENT}}


def errors_of(section: dict[str, Any]) -> list[str]:
    out = []
    llama = section.get("llamacpp") or {}
    if llama.get("error"):
        out.append(f"llama.cpp: {llama['error']}")
    out += [f"{n}: {e['error']}" for n, e in (llama.get("targets") or {}).items() if e.get("error")]
    for n, e in (section.get("endpoints") or {}).items():
        for key in ("error",):
            if e.get(key):
                out.append(f"{n}: {e[key]}")
        for part in ("perplexity", "lmeval"):
            if (e.get(part) or {}).get("status") == "error":
                out.append(f"{n}: {part}: {e[part]['error']}")
    return out
