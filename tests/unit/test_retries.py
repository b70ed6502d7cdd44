"""Retries, Retry-After, outages and byte caps in the load path, in virtual time.

The runner is driven with a scripted endpoint (each call fills the record as a server would
have) and a FakeClock, so waits are checked to the nanosecond and nothing sleeps for real.
"""

from __future__ import annotations

import asyncio
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest
from pydantic import ValidationError

from bench.adapters import get_adapter
from bench.capacity import goodput
from bench.exchange import response_byte_cap, retry_after_s
from bench.dataset import Dataset, Item
from bench.patterns import ConcurrencyPattern, FakeClock, LevelWindow
from bench.records import ERROR_CLASSES, RequestRecord
from bench.runner import CONNECT_PAUSE_S, UNREACHABLE_AFTER, LevelRunner, TargetRuntime
from bench.scenario import Load, Retries, Sampling, Slo, Target
from bench.stats import LevelAccumulator

S = 1_000_000_000
MS = 1_000_000


def failed(status: Optional[int], error: str, retry_after: Optional[str] = None) -> dict[str, Any]:
    detail = f"HTTP {status}" if status else f"{error} detail"
    return {"status": status, "error": error, "error_detail": detail + (f" (Retry-After: {retry_after})"
                                                                        if retry_after else "")}


OK = {"status": 200, "error": None}


class ScriptedEndpoint:
    """``stream`` answers with the next scripted outcome, taking 10 ms of virtual time."""

    def __init__(self, clock: FakeClock, script: list[dict[str, Any]]):
        self.clock, self.script, self.calls = clock, list(script), 0

    async def stream(self, path: str, body: bytes, record: RequestRecord, adapter: Any, timeout_s: float) -> None:
        outcome = self.script.pop(0) if self.script else OK
        self.calls += 1
        record.sent_ns = self.clock.now_ns()
        await self.clock.sleep(0.01)
        record.end_ns = self.clock.now_ns()
        record.status, record.error = outcome["status"], outcome["error"]
        record.error_detail = outcome.get("error_detail")
        if record.error is None:
            record.first_token_ns = record.sent_ns + 5 * MS
            record.chunk_ns = [record.first_token_ns]
            record.output_tokens = 1


class Collect:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def on_record(self, record: RequestRecord) -> None:
        self.records.append(record)


def make_runner(script: list[dict[str, Any]], retries: Optional[Retries] = None
                ) -> tuple[LevelRunner, FakeClock, Collect, ScriptedEndpoint]:
    clock = FakeClock()
    endpoint = ScriptedEndpoint(clock, script)
    runtime = TargetRuntime("t", "m", endpoint, get_adapter("openai-chat"), 5.0)  # type: ignore[arg-type]
    dataset = Dataset(Path("x.jsonl"), (Item("a", [{"role": "user", "content": "hi"}], None),), "0" * 64)
    sink = Collect()
    return LevelRunner(runtime, dataset, Sampling(), [sink], clock, retries=retries), clock, sink, endpoint


def send_one(runner: LevelRunner, clock: FakeClock) -> RequestRecord:
    return asyncio.run(clock.run(runner.send(1, 0, 0, clock.now_ns(), "measure", None)))  # type: ignore[return-value]


# --- Retry-After and the byte cap ------------------------------------------------------


def rec_with(detail: Optional[str]) -> RequestRecord:
    return RequestRecord("t", 1, "measure", 0, "a", 0, "r", 0, error="http_429", error_detail=detail)


def test_retry_after_forms() -> None:
    assert retry_after_s(rec_with("HTTP 429: slow down (Retry-After: 3)")) == 3.0
    assert retry_after_s(rec_with("HTTP 503 (Retry-After: 1.5)")) == 1.5
    assert retry_after_s(rec_with("HTTP 429 (Retry-After: -4)")) == 0.0
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    date = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_s(rec_with(f"HTTP 429 (Retry-After: {date})"), now.timestamp()) == pytest.approx(90)
    for detail in (None, "HTTP 429", "HTTP 429 (Retry-After: soon)", "HTTP 429: text (Retry-After: 3) more"):
        assert retry_after_s(rec_with(detail)) is None


def test_response_byte_cap_is_generous_but_bounded() -> None:
    assert response_byte_cap(1) == response_byte_cap(128) == 4 * 1024 * 1024
    assert response_byte_cap(4096) == 128 * 1024 * 1024


def test_http_429_is_its_own_error_class() -> None:
    assert ERROR_CLASSES.index("http_4xx") < ERROR_CLASSES.index("http_429") < ERROR_CLASSES.index("http_5xx")


# --- the policy ---------------------------------------------------------------------------


def test_no_policy_never_retries() -> None:
    runner, clock, sink, endpoint = make_runner([failed(429, "http_429", "1")])
    rec = send_one(runner, clock)
    assert rec.error == "http_429" and endpoint.calls == 1
    assert [(r.attempt, r.retried) for r in sink.records] == [(1, False)]


def test_retry_after_is_waited_and_every_attempt_is_a_record() -> None:
    runner, clock, sink, endpoint = make_runner(
        [failed(429, "http_429", "2"), failed(503, "http_5xx"), OK], Retries(max=3, on=[429, 503], backoff_s=0.5))
    final = send_one(runner, clock)
    assert final.error is None and endpoint.calls == 3
    assert [(r.attempt, r.retried, r.error) for r in sink.records] == [
        (1, True, "http_429"), (2, True, "http_5xx"), (3, False, None)]
    assert [r.request_id for r in sink.records] == ["t-L0-m0", "t-L0-m0-a2", "t-L0-m0-a3"]
    a, b, c = sink.records
    assert b.sent_ns - a.end_ns == 2 * S  # Retry-After: 2
    assert c.sent_ns - b.end_ns == S  # no Retry-After: backoff 0.5 * 2^(2-1)
    assert {r.seq for r in sink.records} == {0} and {r.scheduled_ns for r in sink.records} == {a.scheduled_ns}


def test_waits_are_capped_and_retry_after_can_be_ignored() -> None:
    runner, clock, sink, _ = make_runner([failed(429, "http_429", "3600"), OK], Retries(max_wait_s=1.5))
    send_one(runner, clock)
    assert sink.records[1].sent_ns - sink.records[0].end_ns == int(1.5 * S)
    runner, clock, sink, _ = make_runner([failed(429, "http_429", "3600"), OK],
                                         Retries(respect_retry_after=False, backoff_s=0.25))
    send_one(runner, clock)
    assert sink.records[1].sent_ns - sink.records[0].end_ns == S // 4


def test_max_retries_then_the_failure_is_the_answer() -> None:
    runner, clock, sink, endpoint = make_runner([failed(429, "http_429")] * 5, Retries(max=2, backoff_s=0))
    final = send_one(runner, clock)
    assert endpoint.calls == 3 and final.error == "http_429" and not final.retried
    assert [r.retried for r in sink.records] == [True, True, False]


@pytest.mark.parametrize("outcome,on,retried", [
    (failed(400, "http_4xx"), [429, 503], False),
    (failed(500, "http_5xx"), [429, 503], False),
    (failed(500, "http_5xx"), [500], True),
    (failed(None, "connect"), [429], False),
    (failed(None, "connect"), ["connect"], True),
    (failed(200, "broken_stream"), ["broken_stream"], True),
    (failed(200, "broken_stream"), [429], False),
    (failed(None, "cancelled"), [429], False),
])
def test_only_named_statuses_and_classes_are_retried(outcome: dict[str, Any], on: list[Any], retried: bool) -> None:
    runner, clock, sink, _ = make_runner([outcome, OK], Retries(on=on, backoff_s=0))
    send_one(runner, clock)
    assert sink.records[0].retried is retried and len(sink.records) == (2 if retried else 1)


def test_interrupt_while_waiting_to_retry_still_ends_in_a_record() -> None:
    class CancelOnRetry(Collect):
        def on_record(self, record: RequestRecord) -> None:
            super().on_record(record)
            if record.retried:  # Ctrl-C lands while the runner waits out Retry-After: 30
                asyncio.current_task().cancel()  # type: ignore[union-attr]

    runner, clock, _, _ = make_runner([failed(429, "http_429", "30"), OK], Retries())
    sink = CancelOnRetry()
    runner.sinks = [sink]
    with pytest.raises(asyncio.CancelledError):
        send_one(runner, clock)
    assert [(r.attempt, r.retried, r.error) for r in sink.records] == [(1, True, "http_429"), (2, False, "cancelled")]
    assert sink.records[1].request_id == "t-L0-m0-a2"


# --- outages: refused connections ---------------------------------------------------------


def test_refused_connections_pause_closed_loop_users_and_short_outages_are_waited_out() -> None:
    """More than 25 refusals in a row do not make a target unreachable until they span 5 s."""
    script = [failed(None, "connect")] * 30 + [OK] * 10
    runner, clock, sink, _ = make_runner(script)
    window = LevelWindow(start_ns=clock.now_ns(), requests=40)
    asyncio.run(clock.run(runner.run_level(ConcurrencyPattern(4), window, 1, 0)))
    assert not runner.unreachable and len(sink.records) == 40
    assert [r.error for r in sink.records].count("connect") == 30
    assert sum(r.error is None for r in sink.records) == 10  # back: the level went on
    # A refused user pauses before its next try: 30 refusals by 4 users take ~7 pauses.
    spread = (sink.records[29].sent_ns - sink.records[0].sent_ns) / S
    assert 6 * CONNECT_PAUSE_S <= spread < 5.0

    runner, clock, sink, _ = make_runner([failed(None, "connect")] * 3)
    window = LevelWindow(start_ns=clock.now_ns(), requests=5)
    asyncio.run(clock.run(runner.run_level(ConcurrencyPattern(1), window, 1, 0)))
    gaps = [b.sent_ns - a.end_ns for a, b in zip(sink.records, sink.records[1:])]
    assert gaps == [int(CONNECT_PAUSE_S * S)] * 3 + [0]  # no pause after a success


def test_a_long_outage_makes_the_target_unreachable() -> None:
    runner, clock, sink, _ = make_runner([failed(None, "connect")] * 1000)
    window = LevelWindow(start_ns=clock.now_ns(), requests=1000)
    asyncio.run(clock.run(runner.run_level(ConcurrencyPattern(1), window, 1, 0)))
    assert runner.unreachable
    n = len(sink.records)
    assert n >= UNREACHABLE_AFTER and (sink.records[-1].end_ns - sink.records[0].sent_ns) / S >= 5.0
    assert n < 40  # ~5 s of 0.21 s tries, then it stopped


# --- what the numbers are made of ------------------------------------------------------


def test_replaced_attempts_are_counted_apart_from_requests_and_latencies() -> None:
    acc = LevelAccumulator("t", 1, "rate")

    def rec(seq: int, attempt: int, retried: bool, error: Optional[str], sent: int) -> RequestRecord:
        r = RequestRecord("t", 1, "measure", seq, "a", 0, f"r{seq}-{attempt}", scheduled_ns=S, sent_ns=sent,
                          end_ns=sent + 50 * MS, error=error, attempt=attempt, retried=retried, output_tokens=2)
        if error is None:
            r.first_token_ns, r.chunk_ns = sent + 10 * MS, [sent + 10 * MS, sent + 20 * MS]
        return r

    for r in (rec(0, 1, True, "http_429", S), rec(0, 2, True, "http_429", 2 * S), rec(0, 3, False, None, 3 * S),
              rec(1, 1, False, None, S + MS)):
        acc.add(r)
    s = acc.summary()
    assert s["requests"]["measured"] == 2 and s["requests"]["ok"] == 2 and s["error_rate"] == 0.0
    assert s["requests"]["retried"] == {"http_429": 2} and s["requests"]["errors"] == {}
    m = s["metrics"]
    assert m["ttft_ms"]["count"] == m["e2e_ms"]["count"] == 2 and m["ttft_ms"]["max"] < 11
    assert m["client_lag_ms"]["count"] == 1  # a retry's late send is not the generator's lag
    assert m["ttft_from_scheduled_ms"]["max"] > 2000  # from the schedule, the user waited for the retries
    records = [rec(0, 1, True, "http_429", S), rec(0, 2, False, None, 2 * S)]
    assert goodput(records, Slo(), 1, target="t", pattern="concurrency")["measured"] == 1


def test_scenario_fields() -> None:
    load = Load(levels=[1], requests=1, retries={"on": [429, "connect"]})
    assert load.retries is not None and load.retries.max == 2 and load.retries.respect_retry_after
    assert Load(levels=[1], requests=1).retries is None
    for bad in ({"on": ["bogus"]}, {"on": [200]}, {"max": 0}, {"on": []}, {"max_wait_s": -1}, {"extra": 1}):
        with pytest.raises(ValidationError):
            Load(levels=[1], requests=1, retries=bad)
    base = {"name": "a", "role": "baseline", "url": "http://h:1", "model": "m"}
    assert Target(**base).max_response_bytes is None
    assert Target(**base, max_response_bytes=65536).max_response_bytes == 65536
    with pytest.raises(ValidationError):
        Target(**base, max_response_bytes=10)
