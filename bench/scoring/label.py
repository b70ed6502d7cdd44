"""``label``: classification accuracy against a closed label set, parsing the answer robustly but honestly.

Parsing (on the NFKC-casefolded text):

1. the whole answer, trimmed of surrounding punctuation, quotes and markdown, is a label, where spaces
   and hyphens may stand for underscores ("SET_TIMER", "set timer.", "`set-timer`" -> ``set_timer``);
2. else the label that appears first as a whole token sequence ("The intent is set_timer." ->
   ``set_timer``; "reset_timer", "set_timers" and a bare "weather" for ``weather_query`` do not count);
   at equal positions the longer label wins. With ``on_multiple: none`` an answer naming two different
   labels is unparseable instead;
3. else nothing: ``predicted_label`` None, ``label_parsed`` False, ``label_correct`` False.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from bench.scoring.base import BaseScorer, ScoreInput, ScorerConfig, Value
from bench.scoring.normalize import is_punct, normalize_text

_SEP = re.compile(r"[\s_\-]+")


@lru_cache(maxsize=8192)
def _canon(label: str) -> str:
    # Cached: the same labels and references are canonicalized for every record of a run.
    return _SEP.sub("_", normalize_text(label)).strip("_")


def _trim(s: str) -> str:
    i, j = 0, len(s)
    while i < j and (is_punct(s[i]) or s[i].isspace()):
        i += 1
    while j > i and (is_punct(s[j - 1]) or s[j - 1].isspace()):
        j -= 1
    return s[i:j]


class _LabelSet:
    """Canonical form -> label as configured, plus one whole-token pattern per label."""

    def __init__(self, labels: list[str]):
        self.by_canon: dict[str, str] = {}
        for label in labels:
            self.by_canon.setdefault(_canon(label), label)
        self.patterns = [
            (canon, re.compile(r"(?<!\w)" + r"[\s_\-]+".join(map(re.escape, canon.split("_"))) + r"(?!\w)"))
            for canon in self.by_canon if canon
        ]

    def parse(self, text: str, on_multiple: str) -> Optional[str]:
        norm = normalize_text(text)
        exact = self.by_canon.get(_canon(_trim(norm)))
        if exact is not None:
            return exact
        hits = []  # (start, -length, end, canon) of every whole-token occurrence
        for canon, pat in self.patterns:
            hits.extend((m.start(), m.start() - m.end(), m.end(), canon) for m in pat.finditer(norm))
        if not hits:
            return None
        hits.sort()
        start, _, end, first = hits[0]
        if on_multiple == "none" and any(
                c != first and not (start <= s and e <= end) for s, _, e, c in hits[1:]):
            return None  # a second, different label (one nested in the first, "call" in "call contact", is not)
        return self.by_canon[first]


class LabelScorer(BaseScorer):
    name = "label"
    primary = "label_correct"
    keys = {"label_correct": "bool", "label_parsed": "bool", "predicted_label": "str", "reference_label": "str"}

    class Config(ScorerConfig):
        labels: Optional[list[str]] = Field(None, min_length=1, description="the closed label set")
        labels_from_meta: Optional[str] = Field(None, min_length=1,
                                                description="read the label set from item.meta[<this key>]")
        on_multiple: Literal["first", "none"] = "first"

        @model_validator(mode="after")
        def _one_source(self):  # -> Config
            if (self.labels is None) == (self.labels_from_meta is None):
                raise ValueError("give exactly one of 'labels' or 'labels_from_meta'")
            if self.labels is not None and any(not _canon(x) for x in self.labels):
                raise ValueError("labels must be non-empty words")
            return self

    def __init__(self, config: Config, base_dir: Path):
        super().__init__(config, base_dir)
        self._fixed = _LabelSet(config.labels) if config.labels is not None else None
        self._cache: dict[tuple[str, ...], Optional[_LabelSet]] = {}

    def _labels_for(self, meta: dict) -> Optional[_LabelSet]:
        if self._fixed is not None:
            return self._fixed
        raw = meta.get(self.config.labels_from_meta)
        if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
            return None
        key = tuple(raw)
        if key not in self._cache:
            self._cache[key] = _LabelSet(list(raw)) if all(_canon(x) for x in raw) else None
        return self._cache[key]

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        labels = self._labels_for(inp.item.meta)
        ref = inp.item.reference if isinstance(inp.item.reference, str) else None
        if labels is None:
            return {"label_correct": None, "label_parsed": None, "predicted_label": None, "reference_label": ref}
        predicted = labels.parse(inp.text, self.config.on_multiple)
        correct = None if ref is None else (predicted is not None and _canon(predicted) == _canon(ref))
        return {"label_correct": correct, "label_parsed": predicted is not None,
                "predicted_label": predicted, "reference_label": ref}
