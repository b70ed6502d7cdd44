"""Shared normalisation helpers for scorers: text, tokens, fenced blocks, value equality."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from typing import Any, NamedTuple

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"'})
_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def nfkc(s: str) -> str:
    """NFKC (full-width forms, ligatures, non-breaking spaces) and ASCII quotes for typographic ones."""
    return unicodedata.normalize("NFKC", s).translate(_QUOTES)


def collapse_ws(s: str) -> str:
    return " ".join(s.split())


def is_punct(ch: str) -> bool:
    """Unicode punctuation (category P*) plus ASCII ``string.punctuation`` (which includes $+<=>^`|~)."""
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def remove_punct(s: str) -> str:
    return "".join(ch for ch in s if not is_punct(ch))


def normalize_text(s: str, *, strip_punctuation: bool = False) -> str:
    """NFKC, casefold, optionally drop punctuation, collapse whitespace, strip."""
    s = nfkc(s).casefold()
    if strip_punctuation:
        s = remove_punct(s)
    return collapse_ws(s)


def squad_tokens(s: str) -> list[str]:
    """SQuAD answer normalisation: lower-case, no punctuation, no articles (a/an/the), whitespace tokens."""
    return _ARTICLES.sub(" ", normalize_text(s, strip_punctuation=True)).split()


class Fence(NamedTuple):
    lang: str       # the info string's first word, lower-cased ("" when absent)
    body: str
    closed: bool    # False when the text ended inside the block (truncated output)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.#-]*)[^\n`]*\n(.*?)(```|\Z)", re.DOTALL)


def fenced_blocks(text: str) -> list[Fence]:
    """Markdown ``` blocks in order; the closing fence may sit at the end of the last code line."""
    return [Fence(m.group(1).lower(), m.group(2), bool(m.group(3))) for m in _FENCE.finditer(text)]


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _as_number(s: str) -> float | None:
    try:
        f = float(s.strip())
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def numbers_equal(a: float, b: float, rel_tol: float = 1e-6) -> bool:
    try:
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0)
    except OverflowError:  # an int beyond float range: only exact equality is meaningful
        return a == b


def values_equal(ref: Any, pred: Any, *, coerce_numbers: bool = False) -> bool:
    """Field equality for extraction: strings by ``normalize_text``, numbers within 1e-6 relative.

    Booleans equal only booleans. A numeric string equals a number only with ``coerce_numbers``.
    Lists compare element-wise, objects key-wise, recursively with the same rules.
    """
    if ref is None or pred is None:
        return ref is None and pred is None
    if isinstance(ref, bool) or isinstance(pred, bool):
        return isinstance(ref, bool) and isinstance(pred, bool) and ref == pred
    if is_number(ref) and is_number(pred):
        return numbers_equal(ref, pred)
    if isinstance(ref, str) and isinstance(pred, str):
        return normalize_text(ref) == normalize_text(pred)
    if coerce_numbers and {type(ref), type(pred)} & {str} and (is_number(ref) or is_number(pred)):
        num, s = (ref, pred) if is_number(ref) else (pred, ref)
        parsed = _as_number(s)
        return parsed is not None and numbers_equal(num, parsed)
    if isinstance(ref, list) and isinstance(pred, list):
        return len(ref) == len(pred) and all(
            values_equal(r, p, coerce_numbers=coerce_numbers) for r, p in zip(ref, pred))
    if isinstance(ref, dict) and isinstance(pred, dict):
        return ref.keys() == pred.keys() and all(
            values_equal(ref[k], pred[k], coerce_numbers=coerce_numbers) for k in ref)
    return False
