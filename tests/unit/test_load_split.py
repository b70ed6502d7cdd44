"""--workers N: the workers together must issue exactly what one process would."""

from __future__ import annotations

import asyncio

import pytest

from bench.client_health import CPU_LIMIT, LAG_LIMIT_MS, merge_health, summarize
from bench.patterns import FakeClock, LevelWindow, RatePattern
from bench.workers import split_evenly


@pytest.mark.parametrize("total,parts", [(0, 2), (1, 2), (7, 3), (64, 2), (1000, 7)])
def test_split_evenly_covers_the_total(total: int, parts: int) -> None:
    shares = [split_evenly(total, parts, i) for i in range(parts)]
    assert sum(shares) == total and max(shares) - min(shares) <= 1


def _scheduled(pattern: RatePattern, requests: int) -> list[tuple[int, int]]:
    clock = FakeClock()
    window = LevelWindow(start_ns=clock.now_ns(), requests=requests)
    seen: list[tuple[int, int]] = []

    async def send(seq: int, scheduled: int, phase: str) -> None:
        seen.append((seq, scheduled))

    asyncio.run(clock.run(pattern.drive(send, clock, window)))
    return seen


def test_rate_shards_are_the_single_process_plan_interleaved() -> None:
    single = _scheduled(RatePattern(50, "poisson", seed=3), requests=90)
    shards = [_scheduled(RatePattern(50, "poisson", seed=3, shard=(w, 3)), requests=30) for w in range(3)]
    # worker w's local seq s is plan index s * N + w (the runner applies that mapping)
    merged = sorted((s * 3 + w, t) for w, shard in enumerate(shards) for s, t in shard)
    assert merged == single


class _NoNetwork:
    async def stream(self, path, body, record, adapter, timeout_s):  # noqa: ANN001, ANN201
        record.sent_ns = record.end_ns = 1


def test_runner_stride_interleaves_items_and_request_numbers() -> None:
    from pathlib import Path

    from bench.adapters.openai_chat import OpenAIChatAdapter
    from bench.dataset import Dataset, Item
    from bench.runner import LevelRunner, TargetRuntime
    from bench.scenario import Sampling

    items = tuple(Item(id=f"i{k}", messages=None, prompt=f"p{k}") for k in range(5))
    dataset = Dataset(path=Path("x.jsonl"), items=items, sha256="x")
    records = []
    for w in range(2):
        runtime = TargetRuntime("t", "m", _NoNetwork(), OpenAIChatAdapter(), 5.0)  # type: ignore[arg-type]
        runner = LevelRunner(runtime, dataset, Sampling(), [], FakeClock())
        runner.stride, runner.offset = 2, w
        for seq in range(5):
            records.append(asyncio.run(runner.send(1, 0, seq, 0, "measure", None)))
    by_seq = sorted(records, key=lambda r: r.seq)
    assert [r.seq for r in by_seq] == list(range(10))  # request numbers unique and complete
    assert len({r.request_id for r in records}) == 10
    # together the workers walk the eval set in order, as one process would, repeats included
    assert [(r.item_id, r.repeat) for r in by_seq] == [(f"i{k % 5}", k // 5) for k in range(10)]


def test_saturation_verdict_names_each_reason() -> None:
    quiet = {"count": 100, "p50": 0.1, "p99": 0.5, "max": 1.0}
    loud = {"count": 100, "p50": 3.0, "p99": LAG_LIMIT_MS + 1, "max": 40.0}
    assert summarize(quiet, quiet, 0.3)["saturated"] is False
    verdict = summarize(loud, quiet, CPU_LIMIT + 0.05)
    assert verdict["saturated"] is True
    assert any("event-loop delay" in r for r in verdict["reasons"]) and any("CPU" in r for r in verdict["reasons"])
    assert summarize(quiet, loud, 0.1)["reasons"] == [f"send lag p99 {LAG_LIMIT_MS + 1:.1f} ms > {LAG_LIMIT_MS:g} ms"]
    merged = merge_health([summarize(quiet, quiet, 0.2), summarize(loud, quiet, 0.2)], summarize(quiet, quiet, 0.95))
    assert merged["saturated"] and merged["reasons"][0].startswith("worker 1:")
    assert any(r.startswith("coordinator CPU") for r in merged["reasons"])


def test_resumed_workers_continue_the_eval_set_where_the_run_stopped() -> None:
    from pathlib import Path

    from bench.adapters.openai_chat import OpenAIChatAdapter
    from bench.dataset import Dataset, Item
    from bench.runner import LevelRunner, TargetRuntime
    from bench.scenario import Sampling

    items = tuple(Item(id=f"i{k}", messages=None, prompt=f"p{k}") for k in range(5))
    dataset = Dataset(path=Path("x.jsonl"), items=items, sha256="x")
    records = []
    for w in range(2):
        runner = LevelRunner(TargetRuntime("t", "m", _NoNetwork(), OpenAIChatAdapter(), 5.0),  # type: ignore[arg-type]
                             dataset, Sampling(), [], FakeClock())
        runner.stride, runner.offset = 2, w
        runner.resume_from({"measure": 3})  # the interrupted run had sent 3 measured requests
        records += [asyncio.run(runner.send(1, 0, seq, 0, "measure", None)) for seq in range(2)]
    walked = [(r.item_id, r.repeat) for r in sorted(records, key=lambda r: r.seq)]
    assert walked == [("i3", 0), ("i4", 0), ("i0", 1), ("i1", 1)]
