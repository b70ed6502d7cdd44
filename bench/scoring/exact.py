"""``exact``: normalised exact match against the item's reference string."""

from __future__ import annotations

from typing import Any, Optional

from bench.scoring.base import BaseScorer, ScoreInput, ScorerConfig, Value
from bench.scoring.normalize import is_number, normalize_text


def reference_strings(reference: Any) -> Optional[list[str]]:
    """The acceptable answers: a string, a number (as written by ``str``), or a list of those; else None."""
    refs = reference if isinstance(reference, list) else [reference]
    out = []
    for r in refs:
        if isinstance(r, str):
            out.append(r)
        elif is_number(r):
            out.append(str(r))
        else:
            return None
    return out or None


class ExactScorer(BaseScorer):
    """``exact_match``: equal after strip, NFKC, casefold, whitespace collapse (and, optionally, without
    punctuation). A list reference means "any of these". No usable reference: None."""

    name = "exact"
    primary = "exact_match"
    keys = {"exact_match": "bool"}

    class Config(ScorerConfig):
        strip_punctuation: bool = False

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        refs = reference_strings(inp.item.reference)
        if refs is None:
            return {"exact_match": None}
        sp = self.config.strip_punctuation
        got = normalize_text(inp.text, strip_punctuation=sp)
        return {"exact_match": any(got == normalize_text(r, strip_punctuation=sp) for r in refs)}
