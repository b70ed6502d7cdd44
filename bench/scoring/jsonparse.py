"""Strict and lenient JSON parsing of raw model output (shared by the ``json`` and ``tool_call`` scorers).

Strict: ``json.loads`` of the text exactly as returned (JSON whitespace around it is allowed; NaN and
Infinity are not JSON and are rejected). Lenient, "would a repair layer save it": the strict parse; else
the first fenced block that parses; else the first balanced ``{...}`` found by a scanner that respects
strings and escapes. The lenient parse never invents content: text that is valid JSON of the wrong type
(an array where an object is required) is not searched for an object inside it, and an opening brace
that never closes (truncated output) ends the search instead of yielding one of its nested objects.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from bench.scoring.normalize import fenced_blocks


class _Nothing:
    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing()   # "nothing parsed" (distinct from a parsed JSON null)
_CLOSER = {"{": "}", "[": "]"}
_PLAIN = re.compile(r'[{}\[\]"]')
_IN_STRING = re.compile(r'["\\]')


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str) -> Any:
    """The parsed value, or NOTHING when the text is not exactly one JSON value."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return NOTHING


def _wanted(value: Any, require_object: bool) -> bool:
    return value is not NOTHING and (isinstance(value, dict) or not require_object)


def _match_end(text: str, start: int) -> tuple[int, bool]:
    """(index after the bracket closing text[start], True), or (where scanning stopped, False):
    the end of the text when it never closes, or the position of a mismatched closer."""
    stack = [_CLOSER[text[start]]]
    pos = start + 1
    while True:
        m = _PLAIN.search(text, pos)
        if m is None:
            return len(text), False
        ch, pos = m.group(), m.end()
        if ch == '"':
            while True:
                s = _IN_STRING.search(text, pos)
                if s is None:
                    return len(text), False
                pos = s.end() + (1 if s.group() == "\\" else 0)
                if s.group() == '"':
                    break
        elif ch in _CLOSER:
            stack.append(_CLOSER[ch])
        elif ch != stack.pop():
            return pos, False
        elif not stack:
            return pos, True


def scan_balanced(text: str, openers: str = "{") -> Any:
    """The first balanced bracketed span (opening with one of ``openers``) that parses as JSON."""
    pos = 0
    while True:
        starts = [i for i in (text.find(o, pos) for o in openers) if i >= 0]
        if not starts:
            return NOTHING
        start = min(starts)
        end, closed = _match_end(text, start)
        if closed:
            value = loads_strict(text[start:end])
            if value is not NOTHING:
                return value
        elif end >= len(text):
            return NOTHING  # unclosed: truncated output, and nested objects are not the answer
        pos = end


def parse_lenient(text: str, require_object: bool = True) -> tuple[Any, Optional[str]]:
    """(value, how: "raw" | "fence" | "scan") or (NOTHING, None)."""
    value = loads_strict(text)
    if value is not NOTHING:
        return (value, "raw") if _wanted(value, require_object) else (NOTHING, None)
    for fence in fenced_blocks(text):
        value = loads_strict(fence.body)
        if _wanted(value, require_object):
            return value, "fence"
    value = scan_balanced(text, "{" if require_object else "{[")
    if _wanted(value, require_object):
        return value, "scan"
    return NOTHING, None
