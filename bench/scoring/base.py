"""The scorer interface: one eval item + one captured response in, a flat dict of scores out.

Output conventions (the aggregator relies on them):

- ``bool``: a binary outcome, aggregated as a rate with a Wilson interval;
- ``float``: a continuous score, aggregated as a mean with a bootstrap interval;
- ``str``: a detail, kept in the per-record scores file only;
- ``None``: "not applicable to this item" (e.g. no reference), excluded from aggregation.

Key names are unique across scorers. A scorer never raises on model output (garbage in, failed
outcome out); it raises ``ScorerConfigError`` at construction only, for a bad configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Protocol, Union, runtime_checkable

from pydantic import BaseModel, ConfigDict

from bench.dataset import Item

Value = Union[bool, float, str, None]
Kind = Literal["bool", "float", "str"]


class ScorerConfigError(Exception):
    """A scorer spec is unusable. ``str()`` is one line for the user."""


@dataclass(frozen=True, slots=True)
class ScoreInput:
    item: Item                      # the eval item (reference, slices, meta)
    text: str                       # the response content (RequestRecord.output_text), raw, never pre-cleaned
    finish_reason: Optional[str]
    # Structured tool calls of the answer (RequestRecord.tool_calls: OpenAI shape, assembled), if any
    tool_calls: Optional[list[dict[str, Any]]] = None


@runtime_checkable
class Scorer(Protocol):
    name: str
    primary: Optional[str]          # key of the headline binary outcome ("correct"), or None
    keys: Mapping[str, Kind]        # every key score() returns, with the kind of its non-None values

    def score(self, inp: ScoreInput) -> dict[str, Value]: ...


class ScorerConfig(BaseModel):
    """Base of every scorer's ``Config``: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseScorer:
    """Convenience base: subclasses set ``name``, ``Config``, ``primary``, ``keys``; implement score()."""

    name: ClassVar[str]
    Config: ClassVar[type[ScorerConfig]]
    primary: Optional[str] = None
    keys: Mapping[str, Kind] = {}

    def __init__(self, config: ScorerConfig, base_dir: Path):
        self.config = config
        self.base_dir = base_dir

    def score(self, inp: ScoreInput) -> dict[str, Value]:  # pragma: no cover - abstract
        raise NotImplementedError

    def config_error(self, field: str, message: str) -> ScorerConfigError:
        return ScorerConfigError(f"scorer {self.name!r}: {field}: {message}")

    def __repr__(self) -> str:
        return f"<scorer {self.name} {self.config!r}>"


def none_scores(keys: Mapping[str, Any]) -> dict[str, Value]:
    """Every key not applicable (the item lacks what the scorer needs)."""
    return {k: None for k in keys}
