"""Quality scorers: each turns (eval item, captured response text) into a flat dict of scores.

See ``base`` for the interface and the output conventions. Build scorers from a scenario's specs with
``build_scorer`` / ``build_scorers``; every spec is ``{"name": <registry name>, **config}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.scoring.base import BaseScorer, ScoreInput, Scorer, ScorerConfigError, Value
from bench.scoring.code import CodeScorer
from bench.scoring.exact import ExactScorer
from bench.scoring.f1 import TokenF1Scorer
from bench.scoring.json_strict import JsonScorer
from bench.scoring.judge import JudgeScorer
from bench.scoring.label import LabelScorer
from bench.scoring.refusal import RefusalScorer
from bench.scoring.regex import ContainsScorer, RegexScorer
from bench.scoring.tool_call import ToolCallScorer

SCORERS: dict[str, type[BaseScorer]] = {cls.name: cls for cls in (
    ExactScorer, LabelScorer, TokenF1Scorer, RegexScorer, ContainsScorer, JsonScorer, RefusalScorer,
    ToolCallScorer, CodeScorer, JudgeScorer,
)}

__all__ = ["SCORERS", "BaseScorer", "ScoreInput", "Scorer", "ScorerConfigError", "Value",
           "build_scorer", "build_scorers"]


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(config)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{loc}: {msg}{more}"


def build_scorer(spec: dict[str, Any], base_dir: Path) -> Scorer:
    """A scorer from ``{"name": ..., **config}``; relative paths in the config are from ``base_dir``.

    Raises ScorerConfigError (one line) for an unknown name or a bad config.
    """
    if not isinstance(spec, dict):
        raise ScorerConfigError(f"a scorer spec must be a mapping with a 'name', got {type(spec).__name__}")
    name = spec.get("name")
    cls = SCORERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ScorerConfigError(f"unknown scorer {name!r} (valid: {', '.join(sorted(SCORERS))})")
    try:
        config = cls.Config.model_validate({k: v for k, v in spec.items() if k != "name"})
    except ValidationError as e:
        raise ScorerConfigError(f"scorer {name!r}: {_first_error(e)}") from None
    return cls(config, base_dir)


def build_scorers(specs: list[dict[str, Any]], base_dir: Path) -> list[Scorer]:
    """Several scorers; raises ScorerConfigError when two of them would write the same key."""
    scorers = [build_scorer(s, base_dir) for s in specs]
    owner: dict[str, str] = {}
    for s in scorers:
        for key in s.keys:
            if key in owner:
                raise ScorerConfigError(
                    f"scorers {owner[key]!r} and {s.name!r} both produce {key!r}; give one of them a 'key'")
            owner[key] = s.name
    return scorers
