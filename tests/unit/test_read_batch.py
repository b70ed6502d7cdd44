"""ReadBatch: every ready socket's read is stamped before any of them is parsed."""

from __future__ import annotations

import asyncio

import pytest

import bench.client
from bench.adapters import get_adapter
from bench.client import BatchedHttpConnection, Endpoint, ReadBatch
from bench.exchange import DEFAULT_MAX_RESPONSE_BYTES, Exchange
from bench.records import RequestRecord

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def event(text: str) -> bytes:
    return chunk(b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n')


END = chunk(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n') + chunk(
    b"data: [DONE]\n\n") + b"0\r\n\r\n"


def new_conn(loop, batch: ReadBatch, name: str) -> tuple[BatchedHttpConnection, Exchange]:
    rec = RequestRecord(target="t", level=1, phase="measure", seq=0, item_id="i", repeat=0,
                        request_id=name, scheduled_ns=0, sent_ns=0)
    ex = Exchange(rec, get_adapter("openai-chat"), loop.create_future(), DEFAULT_MAX_RESPONSE_BYTES)
    conn = BatchedHttpConnection(batch)
    conn.begin(ex)
    return conn, ex


@pytest.fixture
def clock(monkeypatch):
    """A clock that moves 1 ms per reading, and a log of stamps and parses in order."""
    state = {"t": 0, "log": []}

    def now() -> int:
        state["t"] += 1_000_000
        return state["t"]

    monkeypatch.setattr(bench.client, "perf_counter_ns", now)
    real_on_body = Exchange.on_body

    def logged_on_body(self, data, stamp):
        state["log"].append(("parse", self.record.request_id, stamp))
        return real_on_body(self, data, stamp)

    monkeypatch.setattr(Exchange, "on_body", logged_on_body)
    return state


def test_all_ready_reads_are_stamped_before_any_is_parsed(clock) -> None:
    async def main() -> None:
        batch = ReadBatch()
        a, ex_a = new_conn(asyncio.get_running_loop(), batch, "a")
        b, ex_b = new_conn(asyncio.get_running_loop(), batch, "b")
        a.data_received(HEAD + event("x"))
        b.data_received(HEAD + event("y"))
        a.data_received(event("z"))  # a second read on the same socket in the same round
        assert clock["log"] == [] and ex_a.record.first_token_ns is None  # nothing parsed yet
        await asyncio.sleep(0)
        assert [(who, t) for _, who, t in clock["log"]] == [("a", 1_000_000), ("a", 3_000_000),
                                                            ("b", 2_000_000)]
        assert ex_a.record.chunk_ns == [1_000_000, 3_000_000] and ex_b.record.first_token_ns == 2_000_000
        assert ex_a.parts == ["x", "z"] and ex_b.parts == ["y"]

    asyncio.run(main())


def test_close_parses_what_came_before_it(clock) -> None:
    async def main() -> None:
        batch = ReadBatch()
        conn, ex = new_conn(asyncio.get_running_loop(), batch, "a")
        conn.data_received(HEAD + event("x") + END)
        conn.connection_lost(None)  # before the batch ran: the response is still complete
        assert ex.resolved and ex.record.error is None and ex.record.output_text == "x"
        await asyncio.sleep(0)  # the scheduled drain finds nothing left
        assert len(clock["log"]) == 1

    asyncio.run(main())


def test_timeout_parses_a_response_that_arrived_in_time(clock) -> None:
    async def main() -> None:
        endpoint = Endpoint("http://127.0.0.1:9")
        conn, ex = new_conn(asyncio.get_running_loop(), endpoint._reads, "a")
        conn.data_received(HEAD + event("x") + END)
        endpoint._on_timeout(ex, 1.0)  # the timer fired in the same loop round as the bytes
        assert ex.record.error is None and ex.record.output_text == "x"
        await asyncio.sleep(0)

    asyncio.run(main())


def test_timeout_without_bytes_is_a_timeout(clock) -> None:
    async def main() -> None:
        endpoint = Endpoint("http://127.0.0.1:9")
        _, ex = new_conn(asyncio.get_running_loop(), endpoint._reads, "a")
        endpoint._on_timeout(ex, 1.0)
        assert ex.record.error == "timeout"

    asyncio.run(main())
