"""The ``judge`` scorer against fake OpenAI-compatible judges whose verdicts the tests control."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import psutil
import pytest
import yaml

from bench.dataset import Item
from bench.scoring import ScoreInput, ScorerConfigError, build_scorer
from bench.scoring.judge import MIN_KAPPA, JudgeScorer, JudgeUnavailable, parse_verdict, render_rubric

ROOT = Path(__file__).resolve().parents[2]
RUBRIC = "Q<<{question}>>\nR<<{reference}>>\nA<<{response}>>\nAnswer yes or no.\n"
_PROMPT = re.compile(r"Q<<(.*?)>>\nR<<(.*?)>>\nA<<(.*?)>>", re.S)

# policy(question, reference, response, headers) -> verdict text, or (status, body) for an HTTP error
Policy = Callable[[str, str, str, dict[str, str]], Any]


def same(q: str, ref: str, resp: str, headers: dict[str, str]) -> str:
    return "Yes." if resp == ref else "no"


class FakeJudge:
    """A non-streaming /v1/chat/completions server on loopback, in a thread."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    judge.requests.append({"path": self.path, "body": body, "headers": headers})
                    judge.in_flight += 1
                    judge.max_in_flight = max(judge.max_in_flight, judge.in_flight)
                try:
                    if judge.delay:
                        time.sleep(judge.delay)
                    m = _PROMPT.search(body["messages"][0]["content"])
                    out = judge.policy(*(m.groups() if m else ("", "", "")), headers)
                finally:
                    with lock:
                        judge.in_flight -= 1
                if isinstance(out, tuple):
                    status, payload = out[0], out[1].encode()
                else:
                    status = 200
                    payload = out if isinstance(out, bytes) else json.dumps({
                        "id": "x", "object": "chat.completion", "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": out}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def fake() -> Iterator[Callable[[Policy], FakeJudge]]:
    started: list[FakeJudge] = []

    def start(policy: Policy = same) -> FakeJudge:
        started.append(FakeJudge(policy))
        return started[-1]

    yield start
    for f in started:
        f.stop()


@pytest.fixture
def scorers() -> Iterator[list[JudgeScorer]]:
    made: list[JudgeScorer] = []
    yield made
    for s in made:
        s.close()


def write_labels(path: Path, pairs: list[tuple[str, Any, str, bool]]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, (q, ref, resp, eq) in enumerate(pairs):
            fh.write(json.dumps({"item_id": f"h-{i}", "question": q, "reference": ref, "response": resp,
                                 "equivalent": eq}) + "\n")
    return path


# Humans say "equivalent" iff the response is the reference: the `same` judge agrees with them exactly.
PAIRS = [("q1", "set_timer", "set_timer", True), ("q2", "play_music", "play_music", True),
         ("q3", "cancel", "cancel", True), ("q4", "Paris", "Paris", True), ("q5", "144", "144", True),
         ("q6", "set_timer", "play_music", False), ("q7", "cancel", "navigation", False),
         ("q8", "Paris", "Lyon", False), ("q9", "144", "12", False), ("q10", "Au", "Ag", False)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "rubric.md").write_text(RUBRIC)
    write_labels(tmp_path / "labels.jsonl", PAIRS)
    return tmp_path


def make(folder: Path, made: list[JudgeScorer], **config: Any) -> JudgeScorer:
    spec = {"name": "judge", "rubric": "rubric.md", "human_labels": "labels.jsonl", **config}
    scorer = build_scorer(spec, folder)
    assert isinstance(scorer, JudgeScorer)
    scorer.progress = None
    made.append(scorer)
    return scorer


def inp(text: str, reference: Any = "set_timer", question: str = "start a timer") -> ScoreInput:
    messages = [{"role": "system", "content": "classify"}, {"role": "user", "content": "call mom"},
                {"role": "assistant", "content": "call_contact"}, {"role": "user", "content": question}]
    return ScoreInput(Item("i-1", messages, None, reference, (), None, {}), text, "stop")


# --- parsing and rendering --------------------------------------------------------------------------

@pytest.mark.parametrize("text,verdict", [
    ("yes", True), ("Yes.", True), ("  **YES**", True), ('"yes"', True), ("Yes, they match", True),
    ("Equivalent", True), ("TRUE", True), ("Answer: yes", True), ("Verdict - no", False),
    ("<think>hmm</think>\nno", False), ("no", False), ("No.", False), ("Not equivalent", False),
    ("not_equivalent", False), ("Non-equivalent.", False), ("false", False),
    ("", None), ("   ", None), ("nope", None), ("Not", None), ("maybe", None), ("yesterday", None),
    ("I think yes", None), ("noted", None), (None, None), ("yes or no.", None), ("Yes/No", None),
    ("no or yes", None), ("Yes, or rather", True),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


def test_render_rubric_is_one_pass():
    out = render_rubric("{question}|{reference}|{response}|{other}", "Q {reference}", "R", "A {question}")
    assert out == "Q {reference}|R|A {question}|{other}"


# --- trust -------------------------------------------------------------------------------------------

def test_agreeing_judge_is_trusted_and_scores(fake, folder, scorers):
    judge = fake(same)
    s = make(folder, scorers, url=judge.url, model="judge-model")
    assert judge.requests == []  # lazy: nothing before the first score
    out = s.score(inp("set_timer"))
    assert out == {"judge_equivalent": True, "judge_parsed": True, "judge_trusted": True, "judge_error": None}
    assert s.score(inp("play_music")) == {"judge_equivalent": False, "judge_parsed": True,
                                         "judge_trusted": True, "judge_error": None}
    t = s.trust
    assert t["trusted"] is True and t["n"] == 10 and t["agreement"] == 1.0 and t["kappa"] == 1.0
    assert t["confusion"] == {"tp": 5, "fp": 0, "fn": 0, "tn": 5}
    assert t["agreement_ci95"][1] == 1.0 and 0.6 < t["agreement_ci95"][0] < 1.0
    assert t["min_agreement"] == 0.8 and t["min_kappa"] == MIN_KAPPA == 0.4
    assert t["unparsed"] == 0 and t["errors"] == 0 and t["model"] == "judge-model"
    # 10 calibration calls, then 2 scores; the request is what the rubric and the item make it
    assert len(judge.requests) == 12
    last = judge.requests[-1]
    assert last["path"] == "/v1/chat/completions"
    assert last["body"]["model"] == "judge-model" and last["body"]["max_tokens"] == 4
    assert last["body"]["temperature"] == 0 and last["body"]["stream"] is False
    assert last["body"]["messages"] == [
        {"role": "user",
         "content": render_rubric(RUBRIC.strip(), "start a timer", "set_timer", "play_music")}]
    assert "authorization" not in last["headers"]


def test_always_yes_judge_is_not_trusted(fake, folder, scorers):
    judge = fake(lambda *a: "yes")
    s = make(folder, scorers, url=judge.url + "/v1/")  # a URL ending in /v1 is accepted too
    out = s.score(inp("play_music"))
    assert out == {"judge_equivalent": True, "judge_parsed": True, "judge_trusted": False,
                   "judge_error": None}
    t = s.trust
    assert t["agreement"] == 0.5 and t["kappa"] == 0.0 and t["trusted"] is False and t["n"] == 10
    assert t["confusion"] == {"tp": 5, "fp": 5, "fn": 0, "tn": 0}
    assert "agreement 0.500 < 0.8" in t["reason"] and "kappa 0.000 < 0.4" in t["reason"]
    assert judge.requests[0]["path"] == "/v1/chat/completions"
    assert "model" not in judge.requests[0]["body"]  # url mode without `model`: none sent


def test_trust_needs_both_agreement_and_kappa(fake, tmp_path, scorers):
    # 9 "yes" pairs, 1 "no": always-yes agrees 90 % of the time, but kappa is 0 -> not trusted
    (tmp_path / "rubric.md").write_text(RUBRIC)
    write_labels(tmp_path / "labels.jsonl",
                 [(f"q{i}", "a", "a", True) for i in range(9)] + [("q", "a", "b", False)])
    s = make(tmp_path, scorers, url=fake(lambda *a: "yes").url)
    t = s.prepare()
    assert t["agreement"] == 0.9 and t["kappa"] == 0.0 and t["trusted"] is False
    assert t["reason"] == "kappa 0.000 < 0.4"
    # the same judge with a lower bar on agreement is still untrusted; a perfect one passes any bar
    s2 = make(tmp_path, scorers, url=fake(same).url, min_agreement=1.0)
    assert s2.prepare()["trusted"] is True


def test_min_agreement_threshold(fake, folder, scorers):
    # wrong on exactly 2 of 10 pairs (says "no" to two equivalent ones): agreement 0.8, kappa 0.6
    def two_wrong(q: str, ref: str, resp: str, h: dict) -> str:
        return "no" if q in ("q1", "q2") else same(q, ref, resp, h)

    t = make(folder, scorers, url=fake(two_wrong).url).prepare()
    assert t["agreement"] == pytest.approx(0.8) and t["kappa"] == pytest.approx(0.6) and t["trusted"] is True
    t = make(folder, scorers, url=fake(two_wrong).url, min_agreement=0.85).prepare()
    assert t["trusted"] is False and t["reason"] == "agreement 0.800 < 0.85"


def test_unparseable_verdicts(fake, folder, scorers):
    def policy(q: str, ref: str, resp: str, h: dict) -> str:
        return "I cannot judge this" if resp in ("Lyon", "weird") else same(q, ref, resp, h)

    s = make(folder, scorers, url=fake(policy).url)
    assert s.score(inp("weird")) == {"judge_equivalent": None, "judge_parsed": False, "judge_trusted": True,
                                     "judge_error": None}
    t = s.trust
    assert t["unparsed"] == 1 and t["agreement"] == 0.9 and t["confusion"]["tn"] == 4
    assert [c for c in s.calibration if not c["parsed"]] == [
        {"item_id": "h-7", "human": False, "judge": None, "parsed": False, "answer": "I cannot judge this",
         "error": None}]


# --- failures ----------------------------------------------------------------------------------------

def test_call_failures_give_judge_error(fake, folder, scorers):
    def policy(q: str, ref: str, resp: str, h: dict) -> Any:
        if resp == "BOOM":
            return 500, '{"error": "model crashed"}'
        if resp == "JUNK":
            return b"not json"
        if resp == "SLOW":
            time.sleep(1.0)
        return same(q, ref, resp, h)

    s = make(folder, scorers, url=fake(policy).url, timeout_s=0.3)
    boom = s.score(inp("BOOM"))
    assert boom["judge_equivalent"] is None and boom["judge_parsed"] is False
    assert boom["judge_trusted"] is True
    assert boom["judge_error"].startswith("http 500") and "model crashed" in boom["judge_error"]
    junk = s.score(inp("JUNK"))
    assert junk["judge_equivalent"] is None and junk["judge_error"].startswith("malformed response")
    slow = s.score(inp("SLOW"))
    assert slow["judge_equivalent"] is None and slow["judge_error"] == "timeout after 0.3 s"
    assert s.score(inp("set_timer"))["judge_equivalent"] is True  # the judge still works after failures


def test_unreachable_judge_is_unavailable_not_a_crash(folder, scorers):
    import socket
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = make(folder, scorers, url=f"http://127.0.0.1:{port}")
    out = s.score(inp("set_timer"))
    assert out["judge_equivalent"] is None and out["judge_parsed"] is False and out["judge_trusted"] is False
    assert out["judge_error"].startswith("judge unavailable: every calibration call failed, e.g. connect:")
    assert s.trust["trusted"] is False and s.trust["n"] == 0 and s.trust["error"]
    with pytest.raises(JudgeUnavailable, match="every calibration call failed"):
        s.prepare()  # remembered, not retried
    assert s.score_many([inp("a"), inp("b", reference=None)])[0]["judge_error"] == out["judge_error"]


# --- config errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change,match", [
    ({"url": None}, "give exactly one of 'url' or 'server'"),
    ({"server": {"definition": "llamacpp"}}, "give exactly one of 'url' or 'server'"),
    ({"url": "localhost:8080"}, "url must be an http"),
    ({"rubric": "missing.md"}, r"rubric: cannot read .*missing\.md"),
    ({"rubric": "bad_rubric.md"}, r"rubric: .* lacks the placeholder\(s\) \{reference\}, \{response\}"),
    ({"human_labels": "nope.jsonl"}, r"human_labels: cannot read .*nope\.jsonl"),
    ({"human_labels": "one_class.jsonl"}, "needs both equivalent and non-equivalent pairs"),
    ({"human_labels": "bad_json.jsonl"}, r"bad_json\.jsonl:2: invalid JSON"),
    ({"human_labels": "bad_field.jsonl"}, r"bad_field\.jsonl:1: 'equivalent' must be a bool"),
    ({"human_labels": "empty.jsonl"}, "holds no labelled pair"),
    ({"min_agreement": 1.5}, "min_agreement: "),
    ({"concurrency": 0}, "concurrency: "),
    ({"api_key": "x"}, "api_key: unknown key"),
    ({"api_key_env": "BENCHBOX_TEST_JUDGE_KEY_UNSET"},
     "api_key_env: environment variable BENCHBOX_TEST_JUDGE_KEY_UNSET is not set"),
    ({"url": None, "server": {"definition": "no-such-server"}},
     "server: no server definition 'no-such-server'"),
])
def test_config_errors_are_one_line(folder, change, match, monkeypatch):
    monkeypatch.delenv("BENCHBOX_TEST_JUDGE_KEY_UNSET", raising=False)
    (folder / "bad_rubric.md").write_text("Is {question} answered? yes/no")
    write_labels(folder / "one_class.jsonl", [("q", "a", "a", True)] * 3)
    (folder / "bad_json.jsonl").write_text(json.dumps({"item_id": "a", "question": "q", "reference": "r",
                                                       "response": "r", "equivalent": True}) + "\n{oops\n")
    (folder / "bad_field.jsonl").write_text(json.dumps({"item_id": "a", "question": "q", "reference": "r",
                                                        "response": "r", "equivalent": "yes"}) + "\n")
    (folder / "empty.jsonl").write_text("\n")
    spec = {"name": "judge", "url": "http://127.0.0.1:9", "rubric": "rubric.md",
            "human_labels": "labels.jsonl", **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(ScorerConfigError, match=match) as e:
        build_scorer(spec, folder)
    assert "\n" not in str(e.value) and str(e.value).startswith("scorer 'judge': ")


# --- secrets -----------------------------------------------------------------------------------------

def test_api_key_only_on_the_wire(fake, folder, scorers, monkeypatch, capsys):
    key = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("BENCHBOX_TEST_JUDGE_KEY", key)

    def policy(q: str, ref: str, resp: str, h: dict) -> Any:
        if resp == "ECHO":  # a server that echoes the auth header in its error body
            return 401, json.dumps({"error": f"bad credentials {h.get('authorization')}"})
        return same(q, ref, resp, h)

    judge = fake(policy)
    s = make(folder, scorers, url=judge.url, api_key_env="BENCHBOX_TEST_JUDGE_KEY")
    s.progress = print
    outs = [s.score(inp("set_timer")), s.score(inp("ECHO"))] + s.score_many([inp("x"), inp("ECHO")])
    assert all(r["headers"]["authorization"] == f"Bearer {key}" for r in judge.requests)
    assert outs[1]["judge_error"].startswith("http 401") and "***" in outs[1]["judge_error"]
    seen = json.dumps([outs, s.trust, s.calibration, s.describe()], default=str) + repr(s) + repr(s.config)
    captured = capsys.readouterr()
    for text in (seen, captured.out, captured.err):
        assert key not in text
    assert "BENCHBOX_TEST_JUDGE_KEY" in repr(s.config)  # the variable's name is fine to show


# --- batches, applicability, lifecycle -----------------------------------------------------------------

def test_score_many_keeps_order_and_uses_the_pool(fake, folder, scorers):
    judge = fake(same)
    s = make(folder, scorers, url=judge.url, concurrency=4)
    s.prepare()
    judge.delay = 0.05
    judge.max_in_flight = 0
    batch = [inp("set_timer"), inp("nope"), inp("x", reference=None), inp("cancel", reference="cancel"),
             inp('{"a": 1}', reference={"a": 1})] + [inp(f"r{i}", reference=f"r{i % 2}") for i in range(8)]
    t0 = time.perf_counter()
    many = s.score_many(batch)
    elapsed = time.perf_counter() - t0
    assert judge.max_in_flight > 1 and elapsed < 12 * 0.05
    assert [r["judge_equivalent"] for r in many] == [True, False, None, True, True] + [
        f"r{i}" == f"r{i % 2}" for i in range(8)]
    assert many[2] == dict.fromkeys(["judge_equivalent", "judge_parsed", "judge_trusted", "judge_error"])
    judge.delay = 0
    assert many == [s.score(x) for x in batch]
    # a non-string reference is JSON-dumped into the rubric
    assert any('R<<{"a": 1}>>' in r["body"]["messages"][0]["content"] for r in judge.requests)


def test_items_without_reference_never_start_the_judge(fake, folder, scorers):
    judge = fake(same)
    s = make(folder, scorers, url=judge.url)
    assert s.score(inp("x", reference=None)) == dict.fromkeys(s.keys)
    assert s.score_many([inp("y", reference=None)]) == [dict.fromkeys(s.keys)]
    assert judge.requests == [] and s.trust is None


def test_close_is_idempotent_and_reopens(fake, folder, scorers):
    judge = fake(same)
    s = make(folder, scorers, url=judge.url)
    s.prepare()
    s.close()
    s.close()
    n = len(judge.requests)
    assert s.score(inp("set_timer"))["judge_equivalent"] is True  # reconnects; no second calibration
    assert len(judge.requests) == n + 1


_FAKE_SERVER = textwrap.dedent('''
    import json, re, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {"status": "ok"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            m = re.search(r"R<<(.*?)>>\\nA<<(.*?)>>", body["messages"][0]["content"], re.S)
            verdict = "yes" if m and m[1] == m[2] else "no"
            self._send(200, {"model": body.get("model"),
                             "choices": [{"message": {"role": "assistant", "content": verdict}}]})

    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
''')


def _fake_definition(folder: Path) -> None:
    (folder / "fake_judge_server.py").write_text(_FAKE_SERVER)
    (folder / "servers").mkdir()
    (folder / "servers" / "fakejudge.yaml").write_text(yaml.safe_dump({
        "name": "fakejudge", "command": [sys.executable, str(folder / "fake_judge_server.py"), "{port}"],
        "health_url": "http://{host}:{port}/health", "base_url": "http://{host}:{port}",
        "startup_timeout_s": 30}))


def _children() -> set[int]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_managed_server_starts_lazily_and_stops_on_close(folder, scorers, monkeypatch):
    monkeypatch.setenv("BENCHBOX_CACHE", str(folder / "cache"))  # the server log goes to <cache>/logs
    _fake_definition(folder)
    before = _children()
    s = make(folder, scorers, server={"definition": "fakejudge", "model": "tiny"})
    assert _children() == before  # lazy

    async def inside_a_running_loop() -> dict:
        return s.score(inp("set_timer"))  # blocking scorer called from async code: no loop clash

    out = asyncio.run(inside_a_running_loop())
    assert out == {"judge_equivalent": True, "judge_parsed": True, "judge_trusted": True, "judge_error": None}
    assert s.trust["model"] == "tiny" and s.describe()["server"]["definition"] == "fakejudge"
    pid = s.describe()["server"]["pid"]
    assert pid in _children()
    assert s.score_many([inp("play_music")])[0]["judge_equivalent"] is False
    s.close()
    assert pid not in _children() and _children() == before
    assert not any(t.name == "benchbox-judge-loop" for t in threading.enumerate())
    # scoring again launches a fresh server (the trust verdict is kept) and close() stops it again
    assert s.score(inp("cancel"))["judge_equivalent"] is False
    pid2: Optional[int] = s.describe()["server"]["pid"]
    assert pid2 in _children()
    s.close()
    assert _children() == before


def test_managed_server_that_cannot_start_is_unavailable(folder, scorers, monkeypatch):
    monkeypatch.setenv("BENCHBOX_CACHE", str(folder / "cache"))
    (folder / "servers").mkdir()
    (folder / "servers" / "broken.yaml").write_text(yaml.safe_dump({
        "name": "broken", "command": [sys.executable, "-c", "import sys; sys.exit(3)"],
        "health_url": "http://{host}:{port}/health", "base_url": "http://{host}:{port}"}))
    s = make(folder, scorers, server={"definition": "broken"})
    out = s.score(inp("set_timer"))
    assert out["judge_equivalent"] is None and out["judge_trusted"] is False
    assert out["judge_error"].startswith("judge unavailable: server 'judge' (broken) exited with code 3")
    assert "\n" not in out["judge_error"]


# --- the checked-in rubric and human labels ---------------------------------------------------------

def test_checked_in_rubric_and_labels():
    s = build_scorer({"name": "judge", "url": "http://127.0.0.1:9",
                      "rubric": "../quality/judge/rubric_equivalence.md",
                      "human_labels": "../quality/judge/human_labels.jsonl"}, ROOT / "scenarios")
    assert isinstance(s, JudgeScorer)
    assert "<!--" not in s.template and s.template.rstrip().endswith("yes or no.")
    labels = s.labels
    assert len(labels) >= 40
    yes = sum(o["equivalent"] for o in labels)
    assert 0.4 <= yes / len(labels) <= 0.6
    voice = {}
    for line in (ROOT / "quality" / "voice.jsonl").read_text().splitlines():
        o = json.loads(line)
        voice[o["id"]] = ([m for m in o["messages"] if m["role"] == "user"][-1]["content"], o["reference"])
    from_voice = [o for o in labels if o["item_id"].startswith("voice-")]
    assert len(from_voice) >= 20
    for o in from_voice:  # the pairs quote the eval set faithfully
        assert (o["question"], o["reference"]) == voice[o["item_id"]]
    assert len({(o["question"], o["response"]) for o in labels}) == len(labels)
