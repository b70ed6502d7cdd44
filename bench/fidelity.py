"""Candidate vs baseline on the same items: agreement, flips, paired significance, classes.

Pairs are canonical responses of the two targets to the same item id. Flips and McNemar use
the primary outcome; agreement uses the normalised answer (the predicted label when a label
scorer runs, else the normalised text).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Optional

from bench.dataset import Item
from bench.quality import ALL, ScoredResponse
from bench.significance import cohens_kappa, mcnemar_from_pairs, small_sample_warning, wilson_interval


def _by_slice(items: dict[str, Item], ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {ALL: list(ids)}
    for i in ids:
        for s in items[i].slices:
            out.setdefault(s, []).append(i)
    return out


def compare_pair(items: dict[str, Item], base: dict[str, ScoredResponse], cand: dict[str, ScoredResponse],
                 primary: Optional[str], min_n: int) -> dict[str, Any]:
    """Fidelity of ``cand`` to ``base`` per slice, over items both answered (transport ok)."""
    shared = sorted(i for i in base.keys() & cand.keys() if base[i].transport_ok and cand[i].transport_ok)
    out: dict[str, Any] = {}
    for name, ids in sorted(_by_slice(items, shared).items(), key=lambda kv: (kv[0] != ALL, kv[0])):
        n = len(ids)
        agree = sum(base[i].answer == cand[i].answer for i in ids)
        low, high = wilson_interval(agree, n)
        entry: dict[str, Any] = {"n_pairs": n, "agreement": {"value": agree / n if n else None, "ci95": [low, high]}}
        labels_a = [base[i].scores.get("predicted_label") for i in ids]
        labels_b = [cand[i].scores.get("predicted_label") for i in ids]
        if any(x is not None for x in labels_a + labels_b):
            entry["kappa"] = cohens_kappa([str(x) for x in labels_a], [str(x) for x in labels_b]) if n else None
            entry["label_shift_tvd"] = _total_variation(labels_a, labels_b)
        if primary:
            pairs = [(bool(base[i].scores.get(primary)), bool(cand[i].scores.get(primary))) for i in ids
                     if base[i].scores.get(primary) is not None and cand[i].scores.get(primary) is not None]
            if pairs:
                m = mcnemar_from_pairs(pairs)
                entry["flips"] = {"right_to_wrong": m.b, "wrong_to_right": m.c, "both_right": m.both_right,
                                  "both_wrong": m.both_wrong}
                entry["baseline_rate"] = sum(a for a, _ in pairs) / len(pairs)
                entry["candidate_rate"] = sum(b for _, b in pairs) / len(pairs)
                entry["difference"] = m.difference
                entry["difference_ci95"] = [m.low, m.high]
                entry["mcnemar_p"] = m.p_value
        entry.update(_token_fidelity([base[i] for i in ids], [cand[i] for i in ids]))
        warning = small_sample_warning(n, min_n)
        if warning:
            entry["warning"] = warning
        out[name] = entry
    return out


def _token_fidelity(base: list[ScoredResponse], cand: list[ScoredResponse]) -> dict[str, Any]:
    """Where logprobs were requested: same top first token, and the total variation distance
    between the two top-k first-token distributions (mass outside the top-k pooled as 'other')."""
    pairs = [(b.scores["first_token_top"], c.scores["first_token_top"]) for b, c in zip(base, cand)
             if b.scores.get("first_token_top") and c.scores.get("first_token_top")]
    if not pairs:
        return {}
    same = sum(a[0][0] == b[0][0] for a, b in pairs)
    tvds = [_topk_tvd(a, b) for a, b in pairs]
    return {"same_top_token": {"value": same / len(pairs), "n": len(pairs),
                               "ci95": list(wilson_interval(same, len(pairs)))},
            "topk_tvd_mean": sum(tvds) / len(tvds)}


def _topk_tvd(a: list[list[Any]], b: list[list[Any]]) -> float:
    pa = {tok: math.exp(lp) for tok, lp in a}
    pb = {tok: math.exp(lp) for tok, lp in b}
    other_a, other_b = max(0.0, 1 - sum(pa.values())), max(0.0, 1 - sum(pb.values()))
    keys = set(pa) | set(pb)
    return 0.5 * (sum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in keys) + abs(other_a - other_b))


def _total_variation(a: list[Any], b: list[Any]) -> Optional[float]:
    """Total variation distance between two label distributions (0 = same, 1 = disjoint)."""
    if not a or not b:
        return None
    ca, cb = Counter(a), Counter(b)
    return 0.5 * sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in set(ca) | set(cb))


def _label_key(label: Any) -> Optional[str]:
    return None if label is None else re.sub(r"[\s\-]+", "_", str(label).strip().casefold())


def class_metrics(per_item: dict[str, ScoredResponse], rare_share: float) -> Optional[dict[str, Any]]:
    """Per-class precision/recall/F1 and macro-F1 from a label scorer; rare labels named by frequency."""
    # Only items the label scorer judged (label_correct not None), with labels spelled one way:
    # the scorer matches "Set Timer" to set_timer, and so must the per-class counts.
    pairs = [(_label_key(r.scores["reference_label"]), _label_key(r.scores.get("predicted_label")))
             for r in per_item.values()
             if r.transport_ok and r.scores.get("reference_label") is not None
             and r.scores.get("label_correct") is not None]
    if not pairs:
        return None
    support = Counter(ref for ref, _ in pairs)
    predicted = Counter(pred for _, pred in pairs if pred is not None)
    total = len(pairs)
    classes: dict[str, Any] = {}
    for label in sorted(support):
        tp = sum(1 for ref, pred in pairs if ref == label and pred == label)
        recall = tp / support[label]
        precision = tp / predicted[label] if predicted[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        low, high = wilson_interval(tp, support[label])
        classes[label] = {"support": support[label], "recall": recall, "recall_ci95": [low, high],
                          "precision": precision, "f1": f1, "rare": support[label] / total < rare_share}
    rare = [label for label, c in classes.items() if c["rare"]]
    rare_tp = sum(1 for ref, pred in pairs if ref in rare and pred == ref)
    rare_n = sum(support[label] for label in rare)
    return {
        "classes": classes,
        "macro_f1": sum(c["f1"] for c in classes.values()) / len(classes),
        "rare_labels": rare,
        "rare_recall": {"value": rare_tp / rare_n, "n": rare_n, "ci95": list(wilson_interval(rare_tp, rare_n))}
        if rare_n else None,
    }


def diagnose(target: str, slices: dict[str, Any], fidelity: Optional[dict[str, Any]], primary: Optional[str],
             min_n: int, calib: Optional[dict[str, Any]] = None) -> list[str]:
    """Plain-language reading of the numbers, for people."""
    lines: list[str] = []
    if not primary:
        return lines
    key = primary
    overall = slices.get(ALL, {}).get("metrics", {}).get(key)
    if overall is None:
        return lines
    if fidelity is not None:
        fa = fidelity.get(ALL, {})
        agreement = (fa.get("agreement") or {}).get("value")
        if agreement is not None and agreement >= 0.9 and overall["value"] < 0.6:
            lines.append(f"{target}: agrees with the baseline on {agreement:.0%} of items but {key} is only "
                         f"{overall['value']:.0%}: the baseline is the ceiling; compression is not the problem.")
        p = fa.get("mcnemar_p")
        if p is not None and p < 0.05 and (fa.get("difference") or 0) < 0:
            lines.append(f"{target}: {key} is significantly lower than the baseline "
                         f"({fa['difference']:+.1%}, McNemar p={p:.3g}).")
    if calib is not None and overall["value"] >= 0.7 and calib["ece"] > 0.1:
        lines.append(f"{target}: {key} is good ({overall['value']:.0%}) but its confidence is miscalibrated "
                     f"(ECE {calib['ece']:.2f}, mean confidence {calib['mean_confidence']:.0%}): recalibrate "
                     "before using confidence for routing or abstention.")
    for name, entry in slices.items():
        m = entry["metrics"].get(key)
        if name == ALL or m is None or m["n"] < min_n:
            continue
        if overall["value"] - m["value"] >= 0.15 - 1e-9:  # 15 points, robust to float rounding
            lines.append(f"{target}: {key} is {overall['value']:.0%} overall but {m['value']:.0%} on slice "
                         f"'{name}' (n={m['n']}): a coverage problem hidden by the average.")
    return lines
