"""A per-stream byte template for plain content deltas: skips JSON decoding for most tokens.

Servers send each token of a stream as the same JSON bytes but for the text, e.g.
``{"id":"c1","choices":[{"index":0,"delta":{"content":"<TEXT>"},"finish_reason":null}]}``.
Once one event of a stream has been decoded by the adapter's ``fast_content`` (a plain delta),
``learn`` cuts it into the bytes before and after the text's string literal and *proves* the cut
by decoding a probe, ``prefix + b"XQ" + suffix``: ``fast_content`` must return "XQ". JSON's
lexer state after the prefix is fixed by the prefix alone, so any other literal body without
``"``, ``\\`` or control characters between the same prefix and suffix yields the same tree with
only that text changed: ``match`` returns the text with a prefix/suffix compare and a UTF-8
decode, no JSON parse. Anything else (escapes, a finish reason, usage, other ids) returns None
and takes the adapter's normal path.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

# Bytes that end or escape a JSON string literal, or are not allowed raw inside one.
_NOT_PLAIN = re.compile(rb'["\\\x00-\x1f]')
_PROBE = "XQ"
# Per stream: a server whose chunks never repeat (a per-chunk counter) costs at most 16 extra decodes.
MAX_LEARN_TRIES = 16


class DeltaTemplate:
    __slots__ = ("prefix", "suffix", "_cut", "_joint")

    def __init__(self, prefix: bytes, suffix: bytes):
        self.prefix = prefix
        self.suffix = suffix
        self._cut = len(prefix) + len(suffix)
        self._joint = suffix + b"\n" + prefix

    @classmethod
    def learn(cls, payload: bytes, text: str, fast: Callable[[bytes], Optional[str]]) -> Optional["DeltaTemplate"]:
        """The template of ``payload``, a plain delta whose text ``fast`` decoded as ``text``;
        None when the text's literal is not plainly encoded or the cut does not prove out."""
        if not text or _NOT_PLAIN.search(body := text.encode("utf-8")):
            return None
        if b"\n" in payload:
            return None  # multi-line data: match_run's proof needs single-line templates
        literal = b'"' + body + b'"'
        at = payload.rfind(literal)
        if at < 0 or payload.find(literal) != at:
            return None  # absent (escaped differently) or ambiguous
        prefix, suffix = payload[: at + 1], payload[at + len(literal) - 1:]
        if fast(prefix + _PROBE.encode() + suffix) != _PROBE:
            return None
        return cls(prefix, suffix)

    def match(self, payload: bytes) -> Optional[str]:
        """The text of ``payload`` if it is this template with a plain literal, else None."""
        if len(payload) < self._cut or not payload.startswith(self.prefix) or not payload.endswith(self.suffix):
            return None
        body = payload[len(self.prefix): len(payload) - len(self.suffix)]
        if _NOT_PLAIN.search(body):
            return None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def match_run(self, payloads: list[bytes]) -> Optional[list[str]]:
        """The texts of ``payloads`` (single-line events, no ``\\n``) if *every* one is this template
        with a plain literal, else None — checked with a few whole-buffer operations in C instead
        of a Python step per event. Why it is exact: with no newline in the payloads, the prefix,
        the suffix or the bodies, ``prefix + (suffix + \\n + prefix).join(bodies) + suffix`` equals
        ``\\n.join(payloads)`` only if, line by line, each payload is ``prefix + body + suffix``."""
        lp, ls = len(self.prefix), len(self.suffix)
        lines = b"\n".join(payloads)
        if lines.count(b"\n") != len(payloads) - 1:
            return None  # a multi-line payload: the line-by-line argument does not hold
        bodies = [p[lp: len(p) - ls] for p in payloads]
        if self.prefix + self._joint.join(bodies) + self.suffix != lines or _NOT_PLAIN.search(b"".join(bodies)):
            return None
        try:
            return [b.decode("utf-8") for b in bodies]
        except UnicodeDecodeError:
            return None
