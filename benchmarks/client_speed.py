"""How fast is benchbox's own client, and is it ever the bottleneck?

Starts `benchbox sim` with zero server delay (the whole 256-token stream in one write, so the
server outruns any Python client) and drives it with several clients, each in its own process:

- ``ceiling``   raw asyncio+uvloop sockets, counts bytes to the end of the chunked body, no
                parsing at all: what Python can do on this core;
- ``aiohttp``   aiohttp + line iteration + orjson per event (the usual "fast" Python client);
- ``endpoint``  benchbox's hot path alone (bench.client.Endpoint + adapter), text captured;
- ``endpoint-fullparse`` the same without the plain-delta shortcut (every event through parse_event);
- ``endpoint-orjson``  the shortcut without the per-stream byte template (orjson for every delta);
- ``engine``    the whole `benchbox sweep` (runner, records.jsonl, histograms, live stats);
- ``engine-w2`` the same with `--workers 2` (one process per core; sim then shares a core).

It reports completed requests/s, output tokens/s ingested, client CPU per 1,000 tokens, memory
per in-flight stream, and (``--accuracy``) TTFT/ITL error against the simulator's truth log at
16, 256 and 1,024 streams via benchmarks/timing_accuracy.py. Client and simulator are pinned to
different cores when more than one exists. Not part of the test suite.

    python benchmarks/client_speed.py [--seconds 8] [--concurrency 64] [--accuracy]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TOKENS = 256


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pinned(cmd: list[str], cpu: str) -> list[str]:
    if shutil.which("taskset") and cores() > 1:
        return ["taskset", "-c", cpu, *cmd]
    return cmd


def start_sim(args: list[str], cpu: str) -> tuple[subprocess.Popen, str]:
    cmd = pinned([sys.executable, "-m", "bench.sim", "--port", "0", *args], cpu)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=REPO)
    line = proc.stdout.readline().decode()
    return proc, line.strip().rsplit(" ", 1)[-1]


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


def request_body() -> bytes:
    return json.dumps({"model": "sim", "messages": [{"role": "user", "content": "count"}], "max_tokens": TOKENS,
                       "stream": True, "stream_options": {"include_usage": True}, "temperature": 0}).encode()


# --- clients (each runs in its own process: `client_speed.py _client NAME URL C SECONDS`) ---

async def client_ceiling(url: str, concurrency: int, seconds: float) -> dict:
    from urllib.parse import urlsplit
    u = urlsplit(url)
    body = request_body()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()
    done = 0
    deadline = time.monotonic() + seconds

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.tail = b""
            self.fut: asyncio.Future | None = None

        def connection_made(self, transport):  # noqa: ANN001
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.tail = (self.tail + data)[-5:]
            if self.tail.endswith(b"0\r\n\r\n") and self.fut is not None and not self.fut.done():
                self.fut.set_result(None)

    async def user() -> None:
        nonlocal done
        _, conn = await loop.create_connection(Conn, u.hostname, u.port)
        while time.monotonic() < deadline:
            conn.fut, conn.tail = loop.create_future(), b""
            conn.transport.write(head)
            await conn.fut
            done += 1
        conn.transport.close()

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return {"requests": done, "tokens": done * TOKENS, "window_s": time.monotonic() - deadline + seconds}


async def client_aiohttp(url: str, concurrency: int, seconds: float) -> dict:
    import aiohttp
    import orjson
    body = request_body()
    done = tokens = 0
    deadline = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def user() -> None:
            nonlocal done, tokens
            while time.monotonic() < deadline:
                parts, stamps = [], []
                async with session.post(url + "/v1/chat/completions", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    async for line in resp.content:
                        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                            continue
                        stamps.append(time.perf_counter_ns())
                        obj = orjson.loads(line[6:])
                        choices = obj.get("choices")
                        if choices:
                            parts.append(choices[0]["delta"].get("content") or "")
                        if obj.get("usage"):
                            tokens += obj["usage"]["completion_tokens"]
                "".join(parts)
                done += 1

        await asyncio.gather(*(user() for _ in range(concurrency)))
    return {"requests": done, "tokens": tokens, "window_s": time.monotonic() - deadline + seconds}


async def client_endpoint(url: str, concurrency: int, seconds: float, shortcut: bool = True,
                          template: bool = True) -> dict:
    import bench.exchange
    from bench.adapters.openai_chat import OpenAIChatAdapter
    from bench.client import Endpoint
    from bench.records import RequestRecord
    endpoint = Endpoint(url)
    adapter = OpenAIChatAdapter()
    if not shortcut:  # the alternative: every event through the adapter's full parse_event
        adapter.fast_content = None  # type: ignore[assignment]
    if not template:  # the alternative: orjson for every plain delta (no per-stream byte template)
        bench.exchange.MAX_LEARN_TRIES = 0
    body = request_body()
    done = tokens = errors = 0
    deadline = time.monotonic() + seconds

    async def user(u: int) -> None:
        nonlocal done, tokens, errors
        seq = 0
        while time.monotonic() < deadline:
            rec = RequestRecord(target="t", level=1, phase="measure", seq=seq, item_id="i", repeat=0,
                                request_id=f"u{u}-{seq}", scheduled_ns=time.perf_counter_ns())
            await endpoint.stream(adapter.path, body, rec, adapter, 30.0)
            seq += 1
            if rec.error is None:
                done += 1
                tokens += rec.output_tokens or 0
            else:
                errors += 1

    await asyncio.gather(*(user(u) for u in range(concurrency)))
    window = time.monotonic() - deadline + seconds
    await endpoint.close()
    return {"requests": done, "tokens": tokens, "errors": errors, "window_s": window}


async def client_endpoint_full_parse(url: str, concurrency: int, seconds: float) -> dict:
    return await client_endpoint(url, concurrency, seconds, shortcut=False)


async def client_endpoint_orjson(url: str, concurrency: int, seconds: float) -> dict:
    return await client_endpoint(url, concurrency, seconds, template=False)


CLIENTS = {"ceiling": client_ceiling, "aiohttp": client_aiohttp, "endpoint-fullparse": client_endpoint_full_parse,
           "endpoint-orjson": client_endpoint_orjson, "endpoint": client_endpoint}


def run_client_process(name: str, url: str, concurrency: int, seconds: float) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    t0 = time.monotonic()
    out = asyncio.run(CLIENTS[name](url, concurrency, seconds))
    out["wall_s"] = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = ru.ru_utime + ru.ru_stime
    out["max_rss_kb"] = ru.ru_maxrss
    print(json.dumps(out))


def measure_client(name: str, concurrency: int, seconds: float) -> dict:
    sim, url = start_sim(["--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", str(TOKENS)], "1")
    try:
        cmd = pinned([sys.executable, __file__, "_client", name, url, str(concurrency), str(seconds)], "0")
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds * 4 + 60)
        if proc.returncode != 0:
            return {"client": name, "failed": proc.stderr.strip().splitlines()[-1:]}
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        stop(sim)
    # The sending window (imports and connection set-up excluded), as the engine's result.json has it.
    return summarize(name, out, out["window_s"])


def summarize(name: str, out: dict, wall: float) -> dict:
    rps = out["requests"] / wall
    tps = out["tokens"] / wall
    return {"client": name, "requests_per_s": round(rps, 1), "tokens_per_s": round(tps),
            "cpu_ms_per_1k_tokens": round(1000 * out["cpu_s"] / max(1, out["tokens"] / 1000), 2)
            if out.get("cpu_s") is not None else None,
            "errors": out.get("errors", 0)}


def measure_engine(concurrency: int, seconds: float, workers: int = 1) -> dict:
    """The whole `benchbox sweep` (what users run): throughput from its own result.json."""
    work = Path(tempfile.mkdtemp(prefix="bb-speed-"))
    sim_cpu = "1" if workers == 1 else "0-1"
    sim, url = start_sim(["--ttft-ms", "0", "--itl-ms", "0", "--output-tokens", str(TOKENS)], sim_cpu)
    try:
        items = work / "items.jsonl"
        items.write_text("".join(json.dumps({"id": f"i{i}", "messages": [{"role": "user", "content": f"q {i}"}]})
                                 + "\n" for i in range(64)))
        scenario = work / "s.yaml"
        scenario.write_text(yaml.safe_dump({
            "name": "speed", "dataset": str(items),
            "targets": [{"name": "sim", "role": "baseline", "url": url, "model": "sim"}],
            "sampling": {"max_tokens": TOKENS},
            "load": {"pattern": "concurrency", "levels": [concurrency], "duration_s": seconds,
                     "warmup": {"seconds": 1}},
        }))
        cmd = [sys.executable, "-m", "bench.cli", "sweep", str(scenario), "--out", str(work / "runs"), "--quiet"]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        else:
            cmd = pinned(cmd, "0")
        import psutil
        sim_cpu0 = sum(psutil.Process(sim.pid).cpu_times()[:2])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sim_cpu = sum(psutil.Process(sim.pid).cpu_times()[:2]) - sim_cpu0
        if proc.returncode not in (0, 1, 3):
            return {"client": f"engine-w{workers}", "failed": proc.stderr.strip().splitlines()[-1:]}
        run_dir = next((work / "runs").iterdir())
        result = json.loads((run_dir / "result.json").read_text())
        level = result["levels"][0]
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        tokens_total = sum(1 for _ in (run_dir / "records.jsonl").open()) * TOKENS
        name = "engine" if workers == 1 else f"engine-w{workers}"
        row = {"client": name, "requests_per_s": round(level["throughput"]["requests_per_s"], 1),
               "tokens_per_s": round(level["throughput"]["output_tokens_per_s"]),
               # whole-process CPU (startup, warm-up, quality pass and report included): an upper bound
               "cpu_ms_per_1k_tokens": round(1000 * cpu / max(1, tokens_total / 1000), 2),
               "errors": level["requests"]["failed"],
               "client_saturated": level.get("client", {}).get("saturated")}
        # Where the two cores went during the level: the client's processes (from its own health
        # report) and the simulator (its CPU over the warm-up + measured window).
        health = level.get("client", {})
        client_cores = (sum(w["cpu_share"] for w in health["workers"]) + health.get("coordinator_cpu_share", 0)
                        if "workers" in health else health.get("cpu_share"))
        row["client_cores"] = round(client_cores, 2) if client_cores else None
        row["sim_cores"] = round(sim_cpu / (level["window_s"] + 1.0), 2)
        row["requests_per_s_per_client_core"] = round(row["requests_per_s"] / client_cores) if client_cores else None
        return row
    finally:
        stop(sim)
        shutil.rmtree(work, ignore_errors=True)


def measure_stream_memory(streams: int) -> dict:
    """RSS growth of benchbox's client per in-flight stream (server holds the first token for 4 s)."""
    sim, url = start_sim(["--ttft-ms", "4000", "--itl-ms", "10", "--output-tokens", "16"], "1")
    try:
        cmd = pinned([sys.executable, __file__, "_memory", url, str(streams)], "0")
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        stop(sim)
    return out


def run_memory_process(url: str, streams: int) -> None:
    import uvloop
    uvloop.install()

    def rss_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    async def main() -> dict:
        from bench.adapters.openai_chat import OpenAIChatAdapter
        from bench.client import Endpoint
        from bench.records import RequestRecord
        endpoint, adapter, body = Endpoint(url), OpenAIChatAdapter(), request_body()
        recs = [RequestRecord(target="t", level=1, phase="measure", seq=i, item_id="i", repeat=0,
                              request_id=f"m{i}", scheduled_ns=0) for i in range(streams)]
        await asyncio.sleep(0.2)
        base = rss_kb()
        tasks = [asyncio.create_task(endpoint.stream(adapter.path, body, r, adapter, 30.0)) for r in recs]
        await asyncio.sleep(2.5)  # all connected, headers + role chunk in, no token yet
        held = rss_kb()
        await asyncio.gather(*tasks)
        await endpoint.close()
        ok = sum(r.error is None for r in recs)
        return {"streams": streams, "ok": ok, "rss_base_kb": base, "rss_held_kb": held,
                "kb_per_stream": round((held - base) / streams, 2)}

    print(json.dumps(asyncio.run(main())))


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor()}, {cores()} cores, Python {platform.python_version()}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        run_client_process(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_memory":
        run_memory_process(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--clients", nargs="*",
                    default=["ceiling", "aiohttp", "endpoint-fullparse", "endpoint-orjson", "endpoint", "engine",
                             "engine-w2"])
    ap.add_argument("--memory-streams", type=int, default=1024)
    ap.add_argument("--accuracy", action="store_true", help="also TTFT/ITL error vs truth at 16/256/1024 streams")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "client_speed.json")
    args = ap.parse_args()

    print(f"machine: {machine()}; client on CPU 0, simulator on CPU 1 (engine-w2: both share 0-1)")
    print(f"zero-delay simulator, {TOKENS}-token responses, {args.concurrency} streams, {args.seconds:g} s each\n")
    rows = []
    for name in args.clients:
        if name == "engine":
            row = measure_engine(args.concurrency, args.seconds)
        elif name.startswith("engine-w"):
            row = measure_engine(args.concurrency, args.seconds, workers=int(name[len("engine-w"):]))
        else:
            row = measure_client(name, args.concurrency, args.seconds)
        rows.append(row)
        if "failed" in row:
            print(f"{name:<10} failed: {row['failed']}")
        else:
            print(f"{row['client']:<18} {row['requests_per_s']:>9.1f} req/s {row['tokens_per_s']:>10,} tok/s "
                  f"{row['cpu_ms_per_1k_tokens']:>7} ms CPU/1k tok  errors {row['errors']}"
                  + (f"  saturated={row['client_saturated']}" if row.get("client_saturated") is not None else "")
                  + (f"  cores: client {row['client_cores']} sim {row['sim_cores']} -> "
                     f"{row['requests_per_s_per_client_core']} req/s per client core" if row.get("client_cores") else ""))
    memory = measure_stream_memory(args.memory_streams) if args.memory_streams else None
    if memory:
        print(f"\nmemory: {memory['kb_per_stream']} KiB RSS per in-flight stream "
              f"({memory['streams']} streams held, {memory['ok']} completed)")
    accuracy = None
    if args.accuracy:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from timing_accuracy import measure, print_table
        accuracy = [measure(users, pin=True) for users in (16, 256, 1024)]
        print()
        print_table(accuracy)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine(), "concurrency": args.concurrency,
                                     "seconds": args.seconds, "throughput": rows, "memory": memory,
                                     "accuracy": accuracy}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
