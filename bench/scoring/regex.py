"""``regex`` and ``contains``: does the response match a pattern / contain every given string?"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from bench.scoring.base import BaseScorer, ScoreInput, ScorerConfig, Value
from bench.scoring.normalize import nfkc

_KEY = r"^[a-z][a-z0-9_]{0,63}$"


class RegexScorer(BaseScorer):
    """``<key>`` (default ``regex_match``): ``re.search`` (or ``fullmatch``) of ``pattern`` on the raw text."""

    name = "regex"

    class Config(ScorerConfig):
        pattern: str = Field(min_length=1)
        key: str = Field("regex_match", pattern=_KEY)
        ignore_case: bool = False
        multiline: bool = False
        dotall: bool = False
        fullmatch: bool = Field(False, description="the whole text (stripped) must match, not a part of it")

    def __init__(self, config: Config, base_dir: Path):
        super().__init__(config, base_dir)
        flags = ((re.IGNORECASE if config.ignore_case else 0) | (re.MULTILINE if config.multiline else 0)
                 | (re.DOTALL if config.dotall else 0))
        try:
            self._re = re.compile(config.pattern, flags)
        except re.error as e:
            raise self.config_error("pattern", f"invalid regular expression: {e}") from None
        self.primary = config.key
        self.keys = {config.key: "bool"}

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        if self.config.fullmatch:
            hit = self._re.fullmatch(inp.text.strip()) is not None
        else:
            hit = self._re.search(inp.text) is not None
        return {self.config.key: hit}


class ContainsScorer(BaseScorer):
    """``<key>`` (default ``contains_match``): every string of ``contains`` appears in the text (after NFKC,
    and casefolded on both sides with ``ignore_case``)."""

    name = "contains"

    class Config(ScorerConfig):
        contains: list[str] = Field(min_length=1)
        key: str = Field("contains_match", pattern=_KEY)
        ignore_case: bool = False

        @field_validator("contains")
        @classmethod
        def _non_empty(cls, v: list[str]) -> list[str]:
            if any(not s for s in v):
                raise ValueError("the strings must be non-empty")
            return v

    def __init__(self, config: Config, base_dir: Path):
        super().__init__(config, base_dir)
        self._needles = [self._prep(s) for s in config.contains]
        self.primary = config.key
        self.keys = {config.key: "bool"}

    def _prep(self, s: str) -> str:
        s = nfkc(s)
        return s.casefold() if self.config.ignore_case else s

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        text = self._prep(inp.text)
        return {self.config.key: all(n in text for n in self._needles)}
