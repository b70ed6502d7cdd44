"""The metrics scraper against a real llama-server under a few concurrent chat requests (needs
`benchbox server install`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from bench import provision as pv
from bench import serving as sv
from bench.scenario import ManagedServerSpec
from bench.scrape import MetricsScraper, ServerMetricsWriter

pytestmark = [
    pytest.mark.integration, pytest.mark.llamacpp,
    pytest.mark.skipif(pv.installed_llamacpp() is None,
                       reason=f"llama-server not built in {pv.llamacpp_dir()}/bin "
                              "(run `benchbox server install`)"),
]

MODEL = "smollm2-135m-q4_1"
N_REQUESTS = 4


async def _chat(http: aiohttp.ClientSession, base_url: str, i: int) -> dict:
    body = {"model": MODEL, "max_tokens": 64, "temperature": 0, "seed": i,
            "messages": [{"role": "user", "content": f"Tell a long story about dragon number {i}."}]}
    async with http.post(f"{base_url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["usage"]


def test_scraper_follows_a_real_llama_server(tmp_path: Path):
    server = sv.ManagedServer(ManagedServerSpec(definition="llamacpp", model=MODEL), "t",
                              tmp_path / "t.log", [sv.REPO_SERVERS])
    out = tmp_path / "server_metrics.jsonl"
    writer = ServerMetricsWriter(out)

    async def go() -> tuple[MetricsScraper, list[dict]]:
        await server.start()
        try:
            assert server.metrics_url
            scraper = MetricsScraper("t", server.metrics_url, writer, interval_s=0.25)
            task = asyncio.create_task(scraper.run())
            try:
                await asyncio.sleep(0.3)
                scraper.set_level(N_REQUESTS)
                async with aiohttp.ClientSession() as http:
                    usages = await asyncio.gather(*(_chat(http, server.base_url, i)
                                                    for i in range(N_REQUESTS)))
                await asyncio.sleep(0.3)
                scraper.set_level(None)            # polls at once: the sample that closes the level
                await asyncio.sleep(0.3)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return scraper, usages
        finally:
            await server.stop()

    scraper, usages = asyncio.run(go())
    writer.close()
    assert server.exited() is not None

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ok = [r for r in rows if r["error"] is None]
    assert len(ok) >= 4 and len(ok) >= 0.8 * len(rows), [r["error"] for r in rows if r["error"]]
    assert {r["kind"] for r in ok} == {"llamacpp"} and {r["target"] for r in rows} == {"t"}
    assert [r["t_ns"] for r in rows] == sorted(r["t_ns"] for r in rows)
    level = [r for r in ok if r["level"] == N_REQUESTS]
    assert level, "no sample was taken during the level"
    running = [r["values"]["requests_running"] for r in level]
    gen = [r["values"]["generation_tokens"] for r in ok]
    assert max(running) > 0 or gen[-1] > gen[0]

    summary = scraper.level_summary(N_REQUESTS)
    assert summary["kind"] == "llamacpp" and summary["samples"] == len(level)
    # llama-server counts a request's generated tokens when it finishes: the closing sample has them all
    assert summary["generation_tokens"]["delta"] == sum(u["completion_tokens"] for u in usages)
    assert summary["prompt_tokens"]["delta"] > 0
    assert summary["requests_running"]["max"] <= 8            # servers/llamacpp.yaml: 8 slots
    # KV fill from /slots: requests held cache while running; idle slots keep their tokens afterwards
    kv = summary["kv_cache_usage"]
    assert 0 <= kv["mean"] <= kv["max"] <= 1
    if max(running) > 0:
        assert kv["max"] > 0
    after = [r["values"] for r in ok if r["level"] is None and r["t_ns"] > level[-1]["t_ns"]]
    assert after and after[-1]["kv_cache_usage"] == 0 and after[-1]["kv_cache_resident"] > 0
    print(f"\n{len(rows)} samples, level {N_REQUESTS}: running max {summary['requests_running']['max']}, "
          f"kv max {kv['max']:.4f}, generated {summary['generation_tokens']['delta']:.0f} tokens")
