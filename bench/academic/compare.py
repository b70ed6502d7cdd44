"""The academic numbers next to the quality pass, and where they disagree, in words.

Rules of thumb (documented, not gates): a mean KLD under ``LOW_KLD`` nats is "low" (the distributions barely
moved on the held-out text); over ``HIGH_KLD`` is "high". A quality pass that says otherwise (many
right→wrong flips, or a significant drop, after a low KLD; near-total agreement after a high KLD) is stated
plainly, because then one of the two views does not describe the product. Nothing here approves a model.
"""

from __future__ import annotations

import math
from typing import Any, Optional

LOW_KLD = 0.05
HIGH_KLD = 0.25
MANY_FLIPS = 0.05  # right->wrong flips as a share of paired items
HIGH_AGREEMENT = 0.95

# Nominal bits per weight of llama.cpp file types (the label's promise; fallbacks can break it).
NOMINAL_BPW = {"Q2_0": 2.25, "Q2_K": 2.63, "Q3_K_S": 3.44, "Q3_K_M": 3.91, "Q4_0": 4.5, "Q4_1": 5.0,
               "Q4_K_S": 4.58, "Q4_K_M": 4.89, "Q5_0": 5.5, "Q5_K_M": 5.7, "Q6_K": 6.56, "Q8_0": 8.5,
               "F16": 16.0, "BF16": 16.0, "F32": 32.0}


def _fin(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _g(d: Any, *path: Any) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def quality_view(quality: dict[str, Any], name: str) -> dict[str, Any]:
    """The quality pass's fidelity of one candidate on the whole set: agreement, flips, difference, p."""
    vs = _g(quality, "targets", name, "vs_baseline", "all") or {}
    flips = vs.get("flips") or {}
    out = {"n_pairs": vs.get("n_pairs"), "agreement": _g(vs, "agreement", "value"),
           "agreement_ci95": _g(vs, "agreement", "ci95"), "right_to_wrong": flips.get("right_to_wrong"),
           "wrong_to_right": flips.get("wrong_to_right"), "difference": vs.get("difference"),
           "difference_ci95": vs.get("difference_ci95"), "mcnemar_p": vs.get("mcnemar_p"),
           "primary": quality.get("primary")}
    return {k: v for k, v in out.items() if v is not None}


def _same_numbers(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = (("kld", "mean"), ("same_top", "value"), ("ppl", "value"))
    return all(_fin(_g(a, *k)) and _g(a, *k) == _g(b, *k) for k in keys)


def _rank_flips(cands: dict[str, Any], names: list[str], quality: dict[str, Any]) -> list[dict[str, str]]:
    """Pairs that KLD orders clearly (beyond twice the combined error) while the quality pass orders them the
    other way; says whether the quality gap itself is beyond noise (95% intervals of the two differences
    from the baseline apart) or not."""
    out = []
    for a in names:
        for b in names:
            ka, kb = cands[a]["kld"], cands[b]["kld"]
            if not ka["mean"] + 2 * math.hypot(ka.get("mean_err") or 0, kb.get("mean_err") or 0) < kb["mean"]:
                continue  # a is not clearly closer than b
            qa, qb = quality_view(quality, a), quality_view(quality, b)
            da, db = qa.get("difference"), qb.get("difference")
            if not (_fin(da) and _fin(db) and da < db):
                continue
            ca, cb = qa.get("difference_ci95") or [None, None], qb.get("difference_ci95") or [None, None]
            apart = _fin(ca[1]) and _fin(cb[0]) and ca[1] < cb[0]
            verdict = ("that gap is beyond noise: the held-out text does not rank these two the way the "
                       "product task does." if apart else
                       "the quality gap is within noise (95% intervals overlap), so neither order is "
                       "established.")
            out.append({"kind": "disagree" if apart else "rank", "targets": f"{a},{b}",
                        "text": f"KLD puts {a} closer to the baseline than {b} ({ka['mean']:.4f} vs "
                                f"{kb['mean']:.4f}), but the quality pass has {a} further below it "
                                f"({100 * da:+.1f} vs {100 * db:+.1f} points); {verdict}"})
    return out


def statements(llamacpp: dict[str, Any], quality: dict[str, Any], lmeval: Optional[dict[str, Any]] = None,
               ) -> list[dict[str, str]]:
    """Plain-language findings: [{"kind", "targets", "text"}]. ``llamacpp``: name -> fidelity entry (with
    ``quantization``/``size_bytes`` where known); ``quality``: result.json's quality section (may be {});
    ``lmeval``: name -> {"score", "metric", "stderr"} for the first task (may be None)."""
    out: list[dict[str, str]] = []
    cands = {n: e for n, e in llamacpp.items() if e.get("role") == "candidate" and _fin(_g(e, "kld", "mean"))}
    names = sorted(cands)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _same_numbers(cands[a], cands[b]):
                same_sha = cands[a].get("model_sha256") == cands[b].get("model_sha256")
                why = ("the same file" if same_sha else
                       "different files, most likely holding the same tensors under different file-type "
                       "labels (llama.cpp falls back to the same types for rows it cannot quantize as asked)")
                text = f"{a} and {b} give identical perplexity, KLD and same-top rate: {why}."
                qa, qb = quality_view(quality, a), quality_view(quality, b)
                fa, fb = [(q.get("right_to_wrong"), q.get("wrong_to_right")) for q in (qa, qb)]
                if None not in fa + fb and fa != fb:
                    text += (f" Their quality passes still differ ({fa[0]}/{fa[1]} vs {fb[0]}/{fb[1]} flips "
                             "right→wrong/wrong→right): a gap of that size is serving noise (batching under "
                             "concurrency), not the weights.")
                out.append({"kind": "identical", "targets": f"{a},{b}", "text": text})
    # The label's nominal bits against the measured distance.
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ea, eb = cands[a], cands[b]
            ba = NOMINAL_BPW.get(str(ea.get("quantization")))
            bb = NOMINAL_BPW.get(str(eb.get("quantization")))
            if ba is None or bb is None or ba == bb or _same_numbers(ea, eb):
                continue
            lo, hi = (a, b) if ba < bb else (b, a)  # lo: fewer nominal bits, expected further away
            k_lo, k_hi = cands[lo]["kld"], cands[hi]["kld"]
            err = 2 * math.hypot(k_lo.get("mean_err") or 0.0, k_hi.get("mean_err") or 0.0)
            if k_lo["mean"] + err < k_hi["mean"]:
                sizes = "".join(f" {n} {cands[n]['size_bytes'] / 2 ** 20:.1f} MiB;" for n in (lo, hi)
                                if _fin(cands[n].get("size_bytes")))
                out.append({"kind": "label_order", "targets": f"{lo},{hi}",
                            "text": f"{lo} ({cands[lo].get('quantization')}) is closer to the baseline than "
                                    f"{hi} ({cands[hi].get('quantization')}) despite fewer nominal bits (KLD "
                                    f"{k_lo['mean']:.4f} vs {k_hi['mean']:.4f});{sizes} the file-type "
                                    "name is a promise that tensor fallbacks can break: judge by the "
                                    "measurement."})
    out += _rank_flips(cands, names, quality)
    for n in names:
        e, q = cands[n], quality_view(quality, n)
        kld = e["kld"]["mean"]
        pairs, r2w, agree = q.get("n_pairs"), q.get("right_to_wrong"), q.get("agreement")
        dropped = _fin(q.get("mcnemar_p")) and q["mcnemar_p"] < 0.05 and (q.get("difference") or 0) < 0
        if kld < LOW_KLD and pairs and (dropped or (_fin(r2w) and r2w / pairs >= MANY_FLIPS)):
            out.append({"kind": "disagree", "targets": n,
                        "text": f"{n}: low KLD ({kld:.4f} nats) but {r2w} right→wrong flips in {pairs} items"
                                + (" and a significant drop" if dropped else "")
                                + ": the product task is hurt where the held-out text does not look; "
                                  "believe the quality pass."})
        elif kld >= HIGH_KLD and _fin(agree) and agree >= HIGH_AGREEMENT and not dropped:
            out.append({"kind": "disagree", "targets": n,
                        "text": f"{n}: high KLD ({kld:.4f} nats) yet {agree:.0%} agreement with the baseline "
                                "and no significant drop: this task is robust to the damage (or too easy to "
                                "show it); do not carry that to other tasks."})
        elif q and kld >= HIGH_KLD and dropped:
            out.append({"kind": "agree", "targets": n,
                        "text": f"{n}: high KLD ({kld:.4f} nats) and a significant drop in the quality pass: "
                                "both views say the compression hurt."})
    if lmeval:
        base = next((n for n, e in llamacpp.items() if e.get("role") == "baseline"), None)
        b = lmeval.get(base) if base else None
        for n in names:
            c = lmeval.get(n)
            if not (b and c and _fin(b.get("score")) and _fin(c.get("score"))):
                continue
            d_lm = c["score"] - b["score"]
            q = quality_view(quality, n)
            d_q = q.get("difference")
            noise = 2 * math.hypot(b.get("stderr") or 0.0, c.get("stderr") or 0.0)
            dropped = _fin(q.get("mcnemar_p")) and q["mcnemar_p"] < 0.05 and _fin(d_q) and d_q < 0
            if _fin(d_q) and abs(d_lm) > noise and d_lm * d_q < 0:
                out.append({"kind": "disagree", "targets": n,
                            "text": f"{n}: lm-eval {c.get('metric')} moves {d_lm:+.3f} against the baseline "
                                    f"while the quality pass moves {d_q:+.3f}: the benchmark task and the "
                                    "product task disagree on direction."})
            elif dropped and abs(d_lm) <= noise:
                out.append({"kind": "disagree", "targets": n,
                            "text": f"{n}: the quality pass finds a significant drop ({100 * d_q:+.1f} "
                                    f"points) that lm-eval {c.get('metric')} does not resolve ({d_lm:+.3f}, "
                                    f"noise ±{noise:.3f} on n={c.get('n') or '?'}): a benchmark this small "
                                    "cannot rule the harm out."})
    return out
