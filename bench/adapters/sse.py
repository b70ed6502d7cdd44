"""Incremental Server-Sent Events splitter working on bytes.

The client stamps the arrival time of each network read *before* handing the bytes
here, so parsing cost never leaks into the measured latencies.
"""

from __future__ import annotations


class SSEParser:
    """Feed raw body bytes; get back complete events as ``(event_name, data)`` pairs.

    Follows the SSE framing rules that matter for LLM servers: events end at a blank
    line, ``data:`` lines of one event are joined with ``\\n``, lines starting with ``:``
    are comments (keep-alives; counted), ``\\r\\n`` and ``\\n`` line endings both work,
    and an event may be split across reads at any byte.
    """

    __slots__ = ("_buf", "_data", "_event", "comments")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event = b""
        self.comments = 0

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
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
        self._buf = buf[start:]
        return events

    def finish(self) -> list[tuple[bytes, bytes]]:
        """End of body: a final event without its blank line is still delivered."""
        events: list[tuple[bytes, bytes]] = []
        if self._buf:
            events.extend(self.feed(b"\n"))
        if self._data:
            events.append((self._event, b"\n".join(self._data)))
            self._data = []
        return events
