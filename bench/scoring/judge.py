"""``judge``: an LLM judges whether a response is equivalent to the reference, after a trust check.

The judge is any OpenAI-compatible chat endpoint: ``url`` (a base URL; ``/v1/chat/completions`` is
appended unless the URL already ends in ``/v1``) or ``server`` (a managed server spec, e.g.
``{definition: llamacpp, model: smollm2-135m-q4_1}``, launched by benchbox for the quality pass and
stopped by ``close()``). Exactly one of the two.

The prompt is the ``rubric`` file (relative to the scenario folder) with ``{question}``, ``{reference}``
and ``{response}`` substituted in one pass (other braces are literal; HTML comments ``<!-- -->`` are
dropped, so the file can carry notes for humans). It is sent as one user message at temperature 0,
``max_tokens`` (default 4) long. The verdict is the first word of the answer, case-insensitive, after
leading markdown/quotes and an optional ``Answer:``/``Verdict:`` prefix: ``yes``/``equivalent``/``true``
-> equivalent, ``no``/``not equivalent``/``false`` -> not; anything else is unparseable, and so is the
instruction echoed back ("Yes or no.", "yes/no").

**Trust check.** Before the first response is judged, the judge labels every pair of ``human_labels``
(JSONL: ``{"item_id", "question", "reference", "response", "equivalent": bool}``; both verdicts must
occur). An unparseable or failed verdict counts as a disagreement (and as a third category for kappa).
The judge is *trusted* only if its accuracy against the human labels is ``>= min_agreement`` (default
0.8) **and** Cohen's kappa is ``>= 0.4`` (``MIN_KAPPA``, "moderate" agreement beyond chance): accuracy
alone would trust a judge that always says "yes" on a sample that is mostly "yes". Both are point
estimates; the Wilson interval of the accuracy is reported next to them (with 40 pairs it is about
+-0.12 wide, so read a verdict near the thresholds with care). ``trust`` holds the result for the
report: ``agreement``, ``agreement_ci95``, ``kappa``, ``n``, ``trusted``, the thresholds, ``unparsed``,
``errors``, ``confusion`` (positive = equivalent) and ``reason``.

**Keys per response:** ``judge_equivalent`` (bool; None when the verdict is unparseable or the call
failed), ``judge_parsed`` (bool), ``judge_trusted`` (the trust verdict, copied into every record),
``judge_error`` (str or None: transport/HTTP failure, or the judge could not be set up). Items without a
reference score None throughout and never start the judge.

The question is the item's last user message (or its prompt); the reference is ``item.reference``
(JSON-dumped unless a string). The API key comes only from the environment variable ``api_key_env``
and never appears in a score, an error or a repr.

Lifecycle: lazy. The first ``score()``/``score_many()`` (or an explicit ``prepare()``) starts the managed
server, in a private event loop on a background thread that lives until ``close()`` (the server's
launching thread must outlive it), then calibrates. ``close()`` stops the server; it is also registered
with ``atexit``. ``score_many()`` judges a batch on a pool of ``concurrency`` threads (blocking urllib):
this runs after the sweep, not on the hot path.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import Field, model_validator

from bench.scenario import ManagedServerSpec
from bench.scoring.base import BaseScorer, ScoreInput, ScorerConfig, Value, none_scores
from bench.significance import cohens_kappa, wilson_interval

MIN_KAPPA = 0.4
PLACEHOLDERS = ("question", "reference", "response")
_KEYS = {"judge_equivalent": "bool", "judge_parsed": "bool", "judge_trusted": "bool", "judge_error": "str"}
_FIELD = re.compile(r"\{(question|reference|response)\}")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_THINK = re.compile(r"^\s*<think>.*?</think>", re.S | re.I)
_VERDICT = re.compile(
    r"^[\W_]*(?:(?:final\s+)?(?:answer|verdict)\s*[:=\-]?[\W_]*)?"
    r"(not[\s_\-]*equivalent|non[\s_\-]*equivalent|equivalent|yes|no|true|false)(?![a-z0-9])", re.I)
_EITHER = re.compile(r"\s*(?:/|\bor\b)\s*[\W_]*(?:not|non|equivalent|yes|no|true|false)(?![a-z0-9])", re.I)
_POSITIVE = {"equivalent", "yes", "true"}
_UNPARSED = "unparsed"


class JudgeUnavailable(Exception):
    """The judge could not be set up (server did not start, labels could not be judged at all)."""


def parse_verdict(text: Optional[str]) -> Optional[bool]:
    """True (equivalent), False (not), or None (unparseable) from the judge's answer."""
    if not text:
        return None
    text = _THINK.sub("", text, count=1)
    m = _VERDICT.match(text)
    if m is None or _EITHER.match(text, m.end()):  # "yes or no", "Yes/No": the instruction echoed back
        return None
    word = re.sub(r"[\s_\-]+", " ", m[1].casefold())
    return word in _POSITIVE


def render_rubric(template: str, question: str, reference: str, response: str) -> str:
    """One-pass substitution: text inside a substituted value is never substituted again."""
    values = {"question": question, "reference": reference, "response": response}
    return _FIELD.sub(lambda m: values[m[1]], template)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "" if content is None else str(content)


def question_of(item: Any) -> str:
    for m in reversed(item.messages or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return item.prompt or ""


def reference_text(reference: Any) -> str:
    return reference if isinstance(reference, str) else json.dumps(reference, ensure_ascii=False)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class JudgeScorer(BaseScorer):
    name = "judge"
    primary = "judge_equivalent"
    keys = _KEYS

    class Config(ScorerConfig):
        url: Optional[str] = Field(None, description="OpenAI-compatible base URL of the judge")
        server: Optional[ManagedServerSpec] = Field(None, description="a managed server as the judge")
        model: Optional[str] = Field(None, min_length=1,
                                     description="model name sent (default: the managed server's model)")
        api_key_env: Optional[str] = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                           description="environment variable holding the API key")
        rubric: str = Field(min_length=1, description="template with {question} {reference} {response}")
        human_labels: str = Field(min_length=1, description="JSONL of human-labelled pairs (trust check)")
        min_agreement: float = Field(0.8, ge=0, le=1, description="accuracy vs humans needed for trust")
        max_tokens: int = Field(4, ge=1, le=4096)
        timeout_s: float = Field(60.0, gt=0, le=3600, description="per judge request")
        concurrency: int = Field(4, ge=1, le=64, description="requests in flight (score_many, calibration)")

        @model_validator(mode="after")
        def _one_endpoint(self):  # -> Config
            if (self.url is None) == (self.server is None):
                raise ValueError("give exactly one of 'url' or 'server'")
            if self.url is not None and not re.match(r"^https?://[^/\s]+", self.url):
                raise ValueError("url must be an http:// or https:// URL")
            return self

    def __init__(self, config: Config, base_dir: Path):
        super().__init__(config, base_dir)
        self.progress: Optional[Callable[[str], None]] = _stderr
        self.template = self._load_rubric()
        self.labels = self._load_labels()
        self.__key: Optional[str] = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise self.config_error("api_key_env",
                                        f"environment variable {config.api_key_env} is not set")
            self.__key = key
        self._server: Any = None
        self._server_used = False
        if config.server is not None:
            from bench.serving import ServerError
            try:
                self._server = self._new_server()
            except ServerError as e:
                raise self.config_error("server", str(e).splitlines()[0]) from None
        self.trust: Optional[dict[str, Any]] = None
        self.calibration: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._endpoint: Optional[str] = None
        self._model: Optional[str] = config.model
        self._failure: Optional[str] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._atexit = False

    # -- configuration -------------------------------------------------------------------------------
    def _path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def _load_rubric(self) -> str:
        path = self._path(self.config.rubric)
        try:
            text = _COMMENT.sub("", path.read_text(encoding="utf-8")).strip()
        except (OSError, UnicodeDecodeError) as e:
            raise self.config_error("rubric",
                                    f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        missing = [p for p in PLACEHOLDERS if f"{{{p}}}" not in text]
        if missing:
            raise self.config_error("rubric", f"{path} lacks the placeholder(s) "
                                    f"{', '.join('{' + m + '}' for m in missing)}")
        return text

    def _load_labels(self) -> list[dict[str, Any]]:
        path = self._path(self.config.human_labels)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise self.config_error("human_labels",
                                    f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise self.config_error("human_labels", f"{where}: invalid JSON: {e}") from None
            if not isinstance(obj, dict):
                raise self.config_error("human_labels", f"{where}: expected a JSON object")
            for key, kind in (("item_id", str), ("question", str), ("response", str), ("equivalent", bool)):
                if not isinstance(obj.get(key), kind):
                    raise self.config_error("human_labels", f"{where}: {key!r} must be a {kind.__name__}")
            if "reference" not in obj or obj["reference"] is None:
                raise self.config_error("human_labels", f"{where}: 'reference' is missing")
            out.append(obj)
        if not out:
            raise self.config_error("human_labels", f"{path} holds no labelled pair")
        if len({o["equivalent"] for o in out}) < 2:
            raise self.config_error("human_labels", f"{path}: needs both equivalent and non-equivalent pairs "
                                    "(kappa cannot tell a judge from one that always gives the same verdict)")
        return out

    def _new_server(self) -> Any:
        from bench.provision import cache_root
        from bench.serving import REPO_SERVERS, ManagedServer
        spec = self.config.server
        assert spec is not None
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        log = cache_root() / "logs" / f"judge-{Path(spec.definition).stem}-{stamp}-{os.getpid()}.log"
        dirs = [self.base_dir / "servers", self.base_dir.parent / "servers", REPO_SERVERS]
        return ManagedServer(spec, "judge", log, dirs, progress=self._say)

    def __repr__(self) -> str:
        return f"<scorer judge {self.config!r}>"

    def _say(self, msg: str) -> None:
        if self.progress:
            self.progress(msg)

    # -- lifecycle -----------------------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Start the judge (managed server) and run the trust check; returns ``trust``.

        Raises JudgeUnavailable if the judge cannot be set up (remembered: later calls raise again
        without retrying). Thread-safe and idempotent."""
        with self._lock:
            if self._failure is not None:
                raise JudgeUnavailable(self._failure)
            try:
                if self._endpoint is None:
                    self._connect()
                if self.trust is None:
                    self.trust = self._calibrate()
            except JudgeUnavailable as e:
                self._failure = str(e)
                self.trust = {"agreement": None, "agreement_ci95": None, "kappa": None, "n": 0,
                              "trusted": False, "min_agreement": self.config.min_agreement,
                              "min_kappa": MIN_KAPPA, "unparsed": 0, "errors": 0, "confusion": None,
                              "reason": f"judge unavailable: {self._failure}", "model": self._model,
                              "error": self._failure}
                self.close()
                raise
            return self.trust

    def _connect(self) -> None:
        if not self._atexit:
            atexit.register(self.close)
            self._atexit = True
        if self._server is None:
            base = self.config.url.rstrip("/")
            self._endpoint = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
            return
        from bench.serving import ServerError
        if self._server_used:  # closed before: a ManagedServer starts once, so launch a fresh one
            self._server = self._new_server()
        self._server_used = True
        self._start_loop()
        assert self._loop is not None
        try:
            asyncio.run_coroutine_threadsafe(self._server.start(), self._loop).result()
        except ServerError as e:
            raise JudgeUnavailable(str(e).splitlines()[0]) from None
        except Exception as e:  # noqa: BLE001 - scoring never raises; the reason goes into the records
            why = f"server 'judge' did not start: {type(e).__name__}: {e}".splitlines()[0]
            raise JudgeUnavailable(why) from None
        if self._model is None:
            self._model = self._server.describe().get("model")
        self._endpoint = f"{self._server.base_url}/v1/chat/completions"

    def _start_loop(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="benchbox-judge-loop", daemon=True)
        thread.start()
        self._loop, self._loop_thread = loop, thread

    def close(self) -> None:
        """Stop the managed server (if any) and the private loop; idempotent. Scoring again restarts the
        server; the trust verdict is kept."""
        with self._lock:
            if self._server is not None:
                self._server.stop_sync()
            self._endpoint = None
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
            if loop is not None:
                loop.call_soon_threadsafe(loop.stop)
                if thread is not None:
                    thread.join(10)
                if not loop.is_running():
                    loop.close()
            if self._atexit:
                atexit.unregister(self.close)
                self._atexit = False

    def __enter__(self) -> "JudgeScorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """What judged (for the report): the model, the endpoint, the managed server."""
        return {"model": self._model, "url": self.config.url,
                "server": self._server.describe() if self._server is not None else None,
                "rubric": self.config.rubric, "human_labels": self.config.human_labels,
                "trust": self.trust}

    # -- one judge call ------------------------------------------------------------------------------
    def _redact(self, s: str) -> str:
        return s.replace(self.__key, "***") if self.__key else s

    def judge(self, question: str, reference: str,
              response: str) -> tuple[Optional[bool], bool, Optional[str]]:
        """(verdict, parsed, error) for one pair; never raises."""
        verdict, _, error = self._judge_raw(question, reference, response)
        return verdict, verdict is not None, error

    def _judge_raw(self, question: str, reference: str,
                   response: str) -> tuple[Optional[bool], Optional[str], Optional[str]]:
        """(verdict, the judge's raw answer, error)."""
        try:
            text = self._ask(render_rubric(self.template, question, reference, response))
        except Exception as e:  # noqa: BLE001 - a judge failure is an outcome, not a crash
            return None, None, self._redact(_describe_error(e, self.config.timeout_s))
        return parse_verdict(text), text, None

    def _ask(self, prompt: str) -> str:
        endpoint = self._endpoint
        if endpoint is None:
            raise JudgeUnavailable("judge is closed")
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "stream": False,
                                "temperature": 0, "seed": 0, "max_tokens": self.config.max_tokens}
        if self._model:
            body["model"] = self._model
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        req = urllib.request.Request(endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
            raw = resp.read()
        try:
            obj = json.loads(raw)
            content = obj["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Malformed(raw[:120].decode("utf-8", "replace")) from None
        return _text_of(content)

    # -- the trust check -----------------------------------------------------------------------------
    def _calibrate(self) -> dict[str, Any]:
        pairs = self.labels
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="benchbox-judge") as ex:
            raw = list(ex.map(lambda o: self._judge_raw(o["question"], reference_text(o["reference"]),
                                                        o["response"]), pairs))
        self.calibration = [{"item_id": o["item_id"], "human": o["equivalent"], "judge": v,
                             "parsed": v is not None, "answer": None if text is None else text[:200],
                             "error": err}
                            for o, (v, text, err) in zip(pairs, raw)]
        results = [(v, v is not None, err) for v, _, err in raw]
        errors = [err for _, _, err in results if err]
        if len(errors) == len(pairs):
            raise JudgeUnavailable(f"every calibration call failed, e.g. {errors[0]}")
        human = [o["equivalent"] for o in pairs]
        judged = [v if v is not None else _UNPARSED for v, _, _ in results]
        n = len(pairs)
        agree = sum(h == j for h, j in zip(human, judged))
        agreement = agree / n
        kappa = cohens_kappa(judged, human)
        low, high = wilson_interval(agree, n)
        trusted = agreement >= self.config.min_agreement and kappa >= MIN_KAPPA
        confusion = {"tp": sum(h and j is True for h, j in zip(human, judged)),
                     "fp": sum((not h) and j is True for h, j in zip(human, judged)),
                     "fn": sum(h and j is False for h, j in zip(human, judged)),
                     "tn": sum((not h) and j is False for h, j in zip(human, judged))}
        if trusted:
            reason = (f"agreement {agreement:.3f} >= {self.config.min_agreement:g} "
                      f"and kappa {kappa:.3f} >= {MIN_KAPPA:g}")
        else:
            why = []
            if agreement < self.config.min_agreement:
                why.append(f"agreement {agreement:.3f} < {self.config.min_agreement:g}")
            if kappa < MIN_KAPPA:
                why.append(f"kappa {kappa:.3f} < {MIN_KAPPA:g}")
            reason = " and ".join(why)
        trust = {"agreement": agreement, "agreement_ci95": [low, high], "kappa": kappa, "n": n,
                 "trusted": trusted, "min_agreement": self.config.min_agreement, "min_kappa": MIN_KAPPA,
                 "unparsed": sum(1 for v, _, err in results if v is None and err is None),
                 "errors": len(errors), "confusion": confusion, "reason": reason,
                 "model": self._model}
        self._say(f"benchbox: judge trust check on {n} human-labelled pairs: "
                  f"{'trusted' if trusted else 'NOT trusted'} ({reason})")
        return trust

    # -- scoring -------------------------------------------------------------------------------------
    def _ensure(self) -> Optional[str]:
        """None when ready, else the reason the judge is unavailable."""
        try:
            self.prepare()
        except JudgeUnavailable as e:
            return f"judge unavailable: {e}"
        return None

    def _result(self, verdict: Optional[bool], parsed: bool, error: Optional[str]) -> dict[str, Value]:
        trusted = bool(self.trust and self.trust.get("trusted"))
        return {"judge_equivalent": verdict, "judge_parsed": parsed, "judge_trusted": trusted,
                "judge_error": error}

    @staticmethod
    def _applicable(inp: ScoreInput) -> bool:
        return inp.item.reference is not None

    def _one(self, inp: ScoreInput) -> dict[str, Value]:
        verdict, parsed, error = self.judge(question_of(inp.item), reference_text(inp.item.reference),
                                            inp.text.strip())
        return self._result(verdict, parsed, error)

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        if not self._applicable(inp):
            return none_scores(self.keys)
        failure = self._ensure()
        if failure is not None:
            return self._result(None, False, failure)
        return self._one(inp)

    def score_many(self, inputs: list[ScoreInput]) -> list[dict[str, Value]]:
        """score() for each input, in order, ``concurrency`` judge calls at a time."""
        out: list[Optional[dict[str, Value]]] = [None] * len(inputs)
        todo = [i for i, inp in enumerate(inputs) if self._applicable(inp)]
        if todo:
            failure = self._ensure()
            if failure is not None:
                for i in todo:
                    out[i] = self._result(None, False, failure)
            else:
                with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="benchbox-judge") as ex:
                    for i, res in zip(todo, ex.map(lambda i: self._one(inputs[i]), todo)):
                        out[i] = res
        return [r if r is not None else none_scores(self.keys) for r in out]


class _Malformed(Exception):
    pass


def _describe_error(e: BaseException, timeout_s: float) -> str:
    """One line, without headers (so without the key)."""
    if isinstance(e, urllib.error.HTTPError):
        try:
            detail = e.read(200).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001
            detail = ""
        finally:
            e.close()
        detail = " ".join(detail.split())[:160]
        return f"http {e.code}{': ' + detail if detail else ''}"
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"timeout after {timeout_s:g} s"
        return f"connect: {getattr(reason, 'strerror', None) or reason}"
    if isinstance(e, TimeoutError):
        return f"timeout after {timeout_s:g} s"
    if isinstance(e, _Malformed):
        return f"malformed response: {' '.join(str(e).split())[:120]}"
    if isinstance(e, JudgeUnavailable):
        return f"judge unavailable: {e}"
    if isinstance(e, OSError):
        return f"connection error: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"[:200]
