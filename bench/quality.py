"""The quality pass: score every captured response, then aggregate per target x slice.

Runs after the sweep on ``records.jsonl`` (never in the request path), so `benchbox score`
can redo it without sending a request. Two views of every number:

- **model-only**: responses that arrived (transport failures excluded) — how good is the model;
- **end-to-end**: the primary outcome with transport failures counted as wrong — what users get.

Items are the unit of inference: each target's *canonical* answer to an item is its first
measured response (lowest level, first repeat); the other responses to the same item measure
instability (the noise floor for flips). Intervals are therefore over items, not over repeated
identical answers.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import orjson

from bench.dataset import Dataset, Item
from bench.records import RequestRecord
from bench.scenario import QualitySpec
from bench.scoring import build_scorer
from bench.scoring.base import ScoreInput
from bench.scoring.normalize import normalize_text
from bench.significance import (
    bootstrap_mean_interval, brier_score, expected_calibration_error, reliability_bins, selective_accuracy,
    small_sample_warning, wilson_interval,
)

ALL = "all"
TRANSPORT_OUTCOMES = {
    "connect": "http_error", "http_4xx": "http_error", "http_429": "http_error", "http_5xx": "http_error",
    "timeout": "timeout",
    "broken_stream": "broken_stream", "truncated": "truncated", "empty": "empty", "cancelled": "cancelled",
}


@dataclass(slots=True)
class ScoredResponse:
    """One response with its scores; what `scores.jsonl` holds, one line each."""

    request_id: str
    target: str
    level: float
    item_id: str
    repeat: int
    seq: int
    outcome: str                      # ok | http_error | timeout | ... | parse_failure | schema_failure | refusal
    transport_ok: bool
    answer: Optional[str]             # normalised answer used for agreement (label, or the text)
    scores: dict[str, Any] = field(default_factory=dict)


class QualityPass:
    def __init__(self, spec: QualitySpec, base_dir: Path, dataset: Dataset):
        self.spec = spec
        self.scorers = [build_scorer(s, base_dir) for s in spec.scorers]
        self.items: dict[str, Item] = {i.id: i for i in dataset.items}
        self.primary = spec.primary or next((s.primary for s in self.scorers if s.primary), None)

    # -- scoring ---------------------------------------------------------------------
    def score_record(self, r: RequestRecord) -> Optional[ScoredResponse]:
        if r.item_id not in self.items:
            return None
        return self._scored(r, self.scorers, {})

    def _scored(self, r: RequestRecord, scorers: list[Any], extra: dict[str, Any]) -> ScoredResponse:
        item = self.items[r.item_id]
        scores: dict[str, Any] = {}
        transport_ok = r.error is None
        if transport_ok:
            inp = ScoreInput(item=item, text=r.output_text, finish_reason=r.finish_reason, tool_calls=r.tool_calls)
            for scorer in scorers:
                scores.update(scorer.score(inp))
            scores.update(extra)
        if transport_ok and r.first_token_logprobs:
            add_confidence(scores, r.first_token_logprobs)
        outcome = TRANSPORT_OUTCOMES.get(r.error or "", "ok") if not transport_ok else _model_outcome(scores)
        answer = scores.get("predicted_label")
        if answer is None and transport_ok:
            answer = normalize_text(r.output_text)
        return ScoredResponse(r.request_id, r.target, r.level, r.item_id, r.repeat, r.seq, outcome,
                              transport_ok, answer, scores)

    def score_all(self, records: Iterable[RequestRecord]) -> list[ScoredResponse]:
        """Score every measured response. Scorers with a batch method (``score_many``, e.g. the
        judge, which calls an endpoint) get all their inputs at once; all are closed at the end."""
        batch = [s for s in self.scorers if hasattr(s, "score_many")]
        single = [s for s in self.scorers if not hasattr(s, "score_many")]
        out = []
        try:
            todo = [r for r in records if r.phase == "measure" and r.error != "cancelled" and not r.retried
                    and r.item_id in self.items]
            batch_scores: list[dict[str, Any]] = [{} for _ in todo]
            inputs = [ScoreInput(item=self.items[r.item_id], text=r.output_text, finish_reason=r.finish_reason,
                                 tool_calls=r.tool_calls) for r in todo]
            ok_idx = [i for i, r in enumerate(todo) if r.error is None]
            for scorer in batch:
                for i, scores in zip(ok_idx, scorer.score_many([inputs[i] for i in ok_idx])):
                    batch_scores[i].update(scores)
            for r, extra in zip(todo, batch_scores):
                out.append(self._scored(r, single, extra))
        finally:
            for scorer in self.scorers:
                if hasattr(scorer, "close"):
                    scorer.close()
        return out

    def trust(self) -> dict[str, Any]:
        """Judges' agreement with human labels, by scorer name (reported before their scores)."""
        return {s.name: s.trust for s in self.scorers if getattr(s, "trust", None) is not None}


def add_confidence(scores: dict[str, Any], first: dict[str, Any]) -> None:
    """Confidence = probability of the first answer token (for a label answer: the label's first
    token, which decides it). ``first_token_top`` keeps the top-k for fidelity; it is a list, so
    the aggregator does not average it."""
    scores["confidence"] = math.exp(first["logprob"])
    top = first.get("top") or []
    scores["top_token"] = top[0][0] if top else first.get("token")
    scores["first_token_top"] = top


def calibration(per_item: dict[str, ScoredResponse], primary: Optional[str], bins: int = 10) -> Optional[dict[str, Any]]:
    """Reliability (equal-mass bins), ECE, Brier and selective accuracy of the confidence
    against the primary outcome; None when no response carries a confidence."""
    if not primary:
        return None
    rows = [(float(r.scores["confidence"]), bool(r.scores[primary])) for r in per_item.values()
            if r.transport_ok and "confidence" in r.scores and r.scores.get(primary) is not None]
    if len(rows) < 2:
        return None
    conf = [c for c, _ in rows]
    correct = [k for _, k in rows]
    curve = selective_accuracy(conf, correct)
    step = max(1, len(curve) // 20)  # a readable curve, not one point per distinct confidence
    return {
        "n": len(rows), "bins_strategy": "equal_mass", "bins": [asdict(b) for b in reliability_bins(conf, correct, bins)],
        "ece": expected_calibration_error(conf, correct, bins), "brier": brier_score(conf, correct),
        "mean_confidence": sum(conf) / len(conf), "accuracy": sum(correct) / len(correct),
        "selective": [list(p) for p in curve[::step]],
    }


def _model_outcome(scores: dict[str, Any]) -> str:
    if scores.get("refusal") is True:
        return "refusal"
    if scores.get("json_lenient_ok") is False or scores.get("label_parsed") is False:
        return "parse_failure"
    if scores.get("schema_valid") is False:
        return "schema_failure"
    return "ok"


def canonical(responses: list[ScoredResponse]) -> dict[str, dict[str, ScoredResponse]]:
    """target -> item_id -> its first measured response (lowest level, lowest repeat, first sent)."""
    out: dict[str, dict[str, ScoredResponse]] = defaultdict(dict)
    for r in sorted(responses, key=lambda r: (r.level, r.repeat, r.seq)):
        out[r.target].setdefault(r.item_id, r)
    return out


def metric_summary(values: list[Any], min_n: int) -> Optional[dict[str, Any]]:
    """Rate (all bool: Wilson interval) or mean (numbers: bootstrap interval) of the non-None
    values, with a small-sample warning; None when nothing is left to summarise."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    n = len(values)
    if all(isinstance(v, bool) for v in values):
        k = sum(values)
        low, high = wilson_interval(k, n)
        out = {"kind": "rate", "value": k / n, "n": n, "successes": k, "ci95": [low, high]}
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        floats = [float(v) for v in values]
        interval = bootstrap_mean_interval(floats)
        out = {"kind": "mean", "value": sum(floats) / n, "n": n, "ci95": list(interval) if interval else None}
    else:
        return None
    warning = small_sample_warning(n, min_n)
    if warning:
        out["warning"] = warning
    return out


def slice_table(items: dict[str, Item], per_item: dict[str, ScoredResponse], primary: Optional[str],
                min_n: int) -> dict[str, dict[str, Any]]:
    """slice -> metric -> summary, over one target's canonical responses.

    ``per_item`` holds the canonical responses; model-only metrics use those that arrived,
    the end-to-end primary counts transport failures as wrong.
    """
    slices: dict[str, list[str]] = defaultdict(list)
    for item_id in per_item:
        item = items[item_id]
        slices[ALL].append(item_id)
        for s in item.slices:
            slices[s].append(item_id)
    table: dict[str, dict[str, Any]] = {}
    for name in sorted(slices, key=lambda s: (s != ALL, s)):
        ids = slices[name]
        arrived = [per_item[i] for i in ids if per_item[i].transport_ok]
        keys = sorted({k for r in arrived for k, v in r.scores.items() if isinstance(v, (bool, int, float))})
        metrics: dict[str, Any] = {}
        for key in keys:
            summary = metric_summary([r.scores.get(key) for r in arrived], min_n)
            if summary is not None:
                metrics[key] = summary
        if primary:
            # Transport failures count as wrong; items the scorer cannot judge (None) are left out.
            e2e = [per_item[i].scores.get(primary) if per_item[i].transport_ok else False for i in ids]
            summary = metric_summary(e2e, min_n)
            if summary is not None:
                metrics[f"{primary}@e2e"] = summary
        outcomes: dict[str, int] = defaultdict(int)
        for i in ids:
            outcomes[per_item[i].outcome] += 1
        table[name] = {"n_items": len(ids), "outcomes": dict(sorted(outcomes.items())), "metrics": metrics}
    return table


def instability(responses: list[ScoredResponse]) -> dict[str, Any]:
    """Share of items whose answer differs between a target's responses (levels, repeats)."""
    answers: dict[str, set] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    for r in responses:
        if r.transport_ok:
            answers[r.item_id].add(r.answer)
            counts[r.item_id] += 1
    multi = [i for i, c in counts.items() if c > 1]
    changed = sum(1 for i in multi if len(answers[i]) > 1)
    return {"items_with_several_responses": len(multi), "items_changed": changed,
            "instability": changed / len(multi) if multi else None}


def repeat_variance(responses: list[ScoredResponse], primary: Optional[str]) -> Optional[dict[str, Any]]:
    """The primary outcome per pass over the eval set (repeat 0, 1, ...): with sampled decoding,
    how much the metric itself moves between repeats. None with fewer than two passes."""
    if not primary:
        return None
    by_repeat: dict[int, dict[str, bool]] = defaultdict(dict)
    for r in sorted(responses, key=lambda r: (r.level, r.seq)):
        value = r.scores.get(primary) if r.transport_ok else False
        if value is not None:
            by_repeat[r.repeat].setdefault(r.item_id, bool(value))
    rates = [sum(v.values()) / len(v) for _, v in sorted(by_repeat.items()) if v]
    if len(rates) < 2:
        return None
    mean = sum(rates) / len(rates)
    sd = math.sqrt(sum((x - mean) ** 2 for x in rates) / (len(rates) - 1))
    return {"repeats": len(rates), "per_repeat": rates, "mean": mean, "sd": sd}


def write_scores(path: Path, responses: list[ScoredResponse]) -> None:
    """Via a temp file + rename: an interrupt mid-write leaves the previous scores.jsonl (or none)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            for r in responses:
                fh.write(orjson.dumps(r, option=orjson.OPT_SERIALIZE_DATACLASS | orjson.OPT_NON_STR_KEYS) + b"\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
