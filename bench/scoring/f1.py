"""``token_f1``: SQuAD-style token F1 against the reference string (max over a list of references)."""

from __future__ import annotations

from collections import Counter

from bench.scoring.base import BaseScorer, ScoreInput, ScorerConfig, Value
from bench.scoring.exact import reference_strings
from bench.scoring.normalize import squad_tokens


def token_f1(prediction: str, reference: str) -> float:
    """F1 over bags of SQuAD-normalised tokens; two empty answers agree (1.0), one empty scores 0.0."""
    pred, ref = squad_tokens(prediction), squad_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class TokenF1Scorer(BaseScorer):
    name = "token_f1"
    primary = None
    keys = {"token_f1": "float"}

    class Config(ScorerConfig):
        pass

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        refs = reference_strings(inp.item.reference)
        if refs is None:
            return {"token_f1": None}
        return {"token_f1": max(token_f1(inp.text, r) for r in refs)}
