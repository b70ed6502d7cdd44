"""Incremental Server-Sent Events splitter working on bytes.

The client stamps the arrival time of each network read *before* handing the bytes
here, so parsing cost never leaks into the measured latencies.
"""

from __future__ import annotations

_LINE_MODE_AFTER = 64 * 1024


class SSEParser:
    """Feed raw body bytes; get back complete events as ``(event_name, data)`` pairs.

    Follows the SSE framing rules that matter for LLM servers: events end at a blank
    line, ``data:`` lines of one event are joined with ``\\n``, lines starting with ``:``
    are comments (keep-alives; counted), ``\\r\\n`` and ``\\n`` line endings both work,
    and an event may be split across reads at any byte.
    """

    __slots__ = ("_pending", "_data", "_event", "comments")

    def __init__(self) -> None:
        # Bytes after the last complete line/event, kept as a list: a long line arriving in many
        # small reads is joined once when its newline comes, never re-copied per read.
        self._pending: list[bytes] = []
        self._data: list[bytes] = []
        self._event = b""
        self.comments = 0

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if (chunk[-2:] == b"\n\n" and chunk[:6] == b"data: " and chunk.count(b"\n") == 2 and not self._pending
                and not self._data and not self._event and b"\r" not in chunk):
            return [(b"", chunk[6:-2])]  # one whole one-line event: what a paced stream sends per read
        if b"\n" not in chunk:
            if chunk:
                self._pending.append(chunk)
            return []
        if self._pending:
            self._pending.append(chunk)
            buf = b"".join(self._pending)
        else:
            buf = chunk
        self._pending = []
        if self._data or self._event or b"\r" in buf:
            return self._feed_lines(buf)
        # Fast path for what LLM servers send: `data: {json}` events, one line each, split on
        # the blank line in C. Anything else (comments, multi-line data, event: fields) takes
        # the line-by-line path for that event only. The partial tail waits for the next read.
        pieces = buf.split(b"\n\n")
        tail = pieces.pop()
        n = len(pieces)
        head = len(buf) - len(tail)  # the complete events: pieces and their separators
        if (n and buf[:6] == b"data: " and buf.count(b"\n\ndata: ", 0, head) == n - 1
                and buf.count(b"\n", 0, head) == 2 * n):
            # Every piece is one `data: ` line (the counts prove it, in C): no per-piece checks.
            events = [(b"", piece[6:]) for piece in pieces]
        else:
            events = []
            for piece in pieces:
                if piece[:6] == b"data: " and b"\n" not in piece:
                    events.append((b"", piece[6:]))
                else:
                    events.extend(self._feed_lines(piece + b"\n\n"))
        if len(tail) > _LINE_MODE_AFTER:
            # A huge event arriving in small reads: consume its complete lines now, so the
            # buffer does not get re-copied on every read (quadratic).
            events.extend(self._feed_lines(tail))
        elif tail:
            self._pending = [tail]
        return events

    def _feed_lines(self, buf: bytes) -> list[tuple[bytes, bytes]]:
        events: list[tuple[bytes, bytes]] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append((self._event, b"\n".join(self._data)))
                self._data = []
                self._event = b""
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b":"):
                self.comments += 1
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
            elif line.startswith(b"error:"):
                # Not an SSE field, but some llama.cpp builds report failures as `error: {json}`;
                # dropping it would turn a server error into an "empty" or even "ok" response.
                value = line[6:]
                self._event = b"error"
                self._data.append(value[1:] if value.startswith(b" ") else value)
            # id:, retry: and unknown fields are ignored, as the SSE spec says.
        if start < len(buf):
            self._pending = [buf[start:]]
        return events

    def finish(self) -> list[tuple[bytes, bytes]]:
        """End of body: a final event without its blank line is still delivered."""
        events: list[tuple[bytes, bytes]] = []
        if self._pending:
            buf = b"".join(self._pending)
            self._pending = []
            events.extend(self._feed_lines(buf + b"\n"))
        if self._data:
            events.append((self._event, b"\n".join(self._data)))
            self._data = []
        return events
