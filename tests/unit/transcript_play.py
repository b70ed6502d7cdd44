"""Feed a recorded transcript through the client's ``Exchange`` at virtual times (no sockets).

Each event block (up to and including its blank line) is one network read; the i-th read (0-based)
arrives at ``T0 + (i + 1) * STEP``; the message completes one step after the last read.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Optional

from bench.adapters import get_adapter
from bench.exchange import Exchange
from bench.records import RequestRecord

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
T0 = 5_000_000_000
STEP = 10_000_000
SSE = b"text/event-stream; charset=utf-8"


def at(i: int) -> int:
    return T0 + (i + 1) * STEP


def blocks(data: bytes) -> list[bytes]:
    out = re.findall(rb".*?(?:\r\n\r\n|\n\n)", data, re.S)
    rest = data[sum(map(len, out)):]
    return out + ([rest] if rest else [])


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / name).read_bytes()


def play(body: bytes, adapter: Any = "openai-chat", *, status: int = 200, content_type: bytes = SSE,
         complete: bool = True, reads: Optional[list[bytes]] = None) -> RequestRecord:
    """The record an Exchange fills from ``body``; ``adapter`` is a protocol name or an adapter."""
    loop = asyncio.new_event_loop()
    try:
        rec = RequestRecord(target="t", level=1, phase="measure", seq=0, item_id="i", repeat=0,
                            request_id="t-L0-m0", scheduled_ns=T0, sent_ns=T0)
        ad = get_adapter(adapter) if isinstance(adapter, str) else adapter
        ex = Exchange(rec, ad, loop.create_future(), 32 * 1024 * 1024)
        ex.on_headers(status, content_type)
        reads = blocks(body) if reads is None else reads
        for i, piece in enumerate(reads):
            ex.on_body(piece, at(i))
        if complete:
            ex.on_message_complete(at(len(reads)))
        return rec
    finally:
        loop.close()
