"""Significance, intervals and calibration for deciding whether a candidate can replace its baseline.

Pure functions, standard library only. Contract: ``confidence`` is a two-sided coverage in (0, 1)
unless a docstring says one-sided (then in (0.5, 1)); rates, differences and intervals are fractions
(0.25, not 25 %), intervals ``(low, high)``. Counts are ints with 0 <= successes <= n, paired inputs
have equal lengths, confidences lie in [0, 1]; anything else raises ValueError. Resampling is
deterministic (``seed`` drives a private ``random.Random``). Paired data: one (first, second)
outcome per item, first = baseline, second = candidate.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

_NORMAL = statistics.NormalDist()


def _z(confidence: float) -> float:
    """Two-sided normal quantile: P(|Z| <= z) = confidence."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return _NORMAL.inv_cdf(0.5 + confidence / 2.0)


def _two_sided_level(confidence: float) -> float:
    """Two-sided level whose ends are one-sided bounds at ``confidence`` (0.95 -> 0.90)."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"one-sided confidence must be in (0.5, 1), got {confidence!r}")
    return 2.0 * confidence - 1.0


def _check_pairs(first: Sequence[object], second: Sequence[object]) -> int:
    if len(first) != len(second):
        raise ValueError(f"paired inputs differ in length: {len(first)} vs {len(second)}")
    return len(first)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval for a binomial rate (Newcombe 1998, method 3).
    low is exactly 0.0 when successes == 0, high exactly 1.0 when successes == n;
    n == 0 carries no information and gives (0.0, 1.0)."""
    z = _z(confidence)
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, z2n = successes / n, z * z / n
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / (1.0 + z2n)
    return (0.0 if successes == 0 else center - half), (1.0 if successes == n else center + half)


def rate_upper_bound(successes: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper Wilson bound (the rate is <= it with ``confidence``, in (0.5, 1)): the upper
    end of the two-sided Wilson interval at 2*confidence - 1. n == 0 gives 1.0. E.g. error rates."""
    return wilson_interval(successes, n, _two_sided_level(confidence))[1]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta (Numerical Recipes 6.4, modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    h = d = 1.0 / (d if abs(d) > tiny else tiny)
    for m in range(1, 100_000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((a - 1.0 + m2) * (a + m2)),
                   -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), a, b > 0, x clipped to [0, 1]. Relative error grows with
    a + b through lgamma cancellation: ~1e-14 at 10, ~3e-12 at 10^3, ~3e-10 at 10^5, ~3e-9 at 10^6."""
    if a <= 0 or b <= 0:
        raise ValueError("betainc needs a > 0 and b > 0")
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _beta_quantile(q: float, a: float, b: float) -> float:
    """x with I_x(a, b) = q, by bisection (I_x increases with x)."""
    lo, hi = 0.0, 1.0
    for _ in range(100):  # 2^-100: far below the accuracy of betainc itself
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if betainc(a, b, mid) < q else (lo, mid)
    return (lo + hi) / 2.0


def clopper_pearson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact Clopper-Pearson (1934) interval, conservative: with alpha = 1 - confidence,
    low = Beta^-1(alpha/2; x, n-x+1), high = Beta^-1(1-alpha/2; x+1, n-x), accurate to ~1e-12.
    low is exactly 0.0 when x == 0, high exactly 1.0 when x == n; n == 0 gives (0.0, 1.0)."""
    alpha = 1.0 - confidence
    wilson_interval(successes, n, confidence)  # validates
    low = 0.0 if successes == 0 else _beta_quantile(alpha / 2.0, successes, n - successes + 1)
    high = 1.0 if successes == n else _beta_quantile(1.0 - alpha / 2.0, successes + 1, n - successes)
    return low, high


def min_detectable_n(p: float, half_width: float, confidence: float = 0.95) -> int:
    """Smallest n (>= 1) at which the Wilson interval around an observed rate ``p`` has
    half-width (high - low) / 2 <= ``half_width``: the larger root of the squared Wilson
    half-width equation, n = z^2 (pq - 2h^2 + sqrt((pq)^2 + h^2 (1 - 4pq))) / (2h^2), rounded up.
    Unlike Cochran's n = z^2 pq / h^2 it stays sensible at p = 0 or 1 (p=0, h=0.05: 35); at
    p = 0.5, h = 0.05, 95 % it gives 381 (Cochran: 385). Needs 0 <= p <= 1, 0 < half_width < 0.5."""
    z = _z(confidence)
    if not 0.0 <= p <= 1.0 or not 0.0 < half_width < 0.5:
        raise ValueError("need 0 <= p <= 1 and 0 < half_width < 0.5")
    pq, h2 = p * (1.0 - p), half_width * half_width
    root = z * z * (pq - 2.0 * h2 + math.sqrt(pq * pq + h2 * (1.0 - 4.0 * pq))) / (2.0 * h2)
    return max(1, math.ceil(root))


def small_sample_warning(n: int, min_n: int = 30) -> str | None:
    """A one-line warning when a slice has fewer than ``min_n`` items, else None."""
    return None if n >= min_n else f"only {n} item(s) (< {min_n}): intervals are wide, result is unstable"


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted data (Hyndman-Fan type 7, numpy's default)."""
    h = (len(xs) - 1) * q
    i = min(math.floor(h), len(xs) - 2)
    return xs[0] if i < 0 else xs[i] + (h - i) * (xs[i + 1] - xs[i])


def _floats(values: Iterable[float], resamples: int, confidence: float) -> list[float]:
    _z(confidence)
    out = [float(v) for v in values]
    if resamples < 1 or not all(math.isfinite(v) for v in out):
        raise ValueError("need resamples >= 1 and finite values")
    return out


def bootstrap_mean_interval(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                            seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap of the mean: the alpha/2 and 1 - alpha/2 (type-7) quantiles of the
    means of ``resamples`` size-n resamples with replacement. Empty input gives None (there is no
    mean); all-equal values give (v, v). Undercovers for small n (< ~20); for 0/1 data use Wilson."""
    values = _floats(values, resamples, confidence)
    if not (n := len(values)):
        return None
    if min(values) == max(values):
        return values[0], values[0]
    rng = random.Random(seed)
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples))
    alpha = 1.0 - confidence
    return _quantile(means, alpha / 2.0), _quantile(means, 1.0 - alpha / 2.0)


@dataclass(frozen=True, slots=True)
class PairedBootstrapResult:
    n: int
    statistic_a: float
    statistic_b: float
    difference: float  # statistic_b - statistic_a on the full data
    low: float
    high: float
    p_value: float
    confidence: float
    resamples: int
    seed: int


def paired_bootstrap(a: Sequence[float], b: Sequence[float],
                     statistic: Callable[[Sequence[float]], float] = statistics.fmean,
                     resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> PairedBootstrapResult:
    """Paired percentile bootstrap of statistic(b) - statistic(a): items (pairs) are resampled
    jointly, (low, high) are type-7 quantiles of the resampled differences.
    p_value = 2 * share of resampled differences on the other side of 0 from the observed one
    (a resampled 0 counts as the other side), capped at 1; an observed 0 gives 1.0. Its resolution
    is 2 / resamples, so 0.0 reads "below 1 / resamples". Empty or unequal inputs raise ValueError.
    """
    a, b = _floats(a, resamples, confidence), _floats(b, resamples, confidence)
    if not (n := _check_pairs(a, b)):
        raise ValueError("paired_bootstrap needs at least one pair")
    stat_a, stat_b = float(statistic(a)), float(statistic(b))
    observed = stat_b - stat_a
    rng, population, diffs = random.Random(seed), range(n), []
    for _ in range(resamples):
        idx = rng.choices(population, k=n)
        diffs.append(float(statistic([b[i] for i in idx])) - float(statistic([a[i] for i in idx])))
    diffs.sort()
    other = (sum(d <= 0 for d in diffs) if observed > 0 else sum(d >= 0 for d in diffs) if observed < 0
             else resamples)
    alpha = 1.0 - confidence
    return PairedBootstrapResult(
        n=n, statistic_a=stat_a, statistic_b=stat_b, difference=observed,
        low=_quantile(diffs, alpha / 2.0), high=_quantile(diffs, 1.0 - alpha / 2.0),
        p_value=min(1.0, 2.0 * other / resamples), confidence=confidence, resamples=resamples, seed=seed)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test, p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2).
    b = pairs right -> wrong (first right, second wrong), c = wrong -> right; b + c == 0 gives 1.0.
    Exact integer arithmetic up to b + c = 2000, then betainc (~1e-11 relative at 3e4, ~1e-9 at 1e6)."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    k, n = min(b, c), b + c
    if k == n:  # b == c == 0
        return 1.0
    if n <= 2000:
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / (1 << n))  # int / int: exact
    return min(1.0, 2.0 * betainc(n - k, k + 1, 0.5))  # P(X <= k) = I_{1/2}(n-k, k+1)


def newcombe_paired_interval(both: int, first_only: int, second_only: int, neither: int,
                             confidence: float = 0.95) -> tuple[float, float]:
    """Interval for p_second - p_first from a paired 2x2 table: Newcombe (1998, Stat Med 17:2635)
    method 10, the hybrid score (square-and-add) interval with Newcombe's corrected correlation.
    Wilson limits (l1, u1) for p1 = (both + first_only)/n and (l2, u2) for p2 = (both + second_only)/n;
    A = both*neither - first_only*second_only, M = product of the four margins; phi = (A - n/2)/sqrt(M)
    if A > n/2, 0 if 0 <= A <= n/2 or M == 0, A/sqrt(M) if A < 0. With d = p2 - p1:
    low = d - sqrt((p2-l2)^2 - 2 phi (p2-l2)(u1-p1) + (u1-p1)^2),
    high = d + sqrt((u2-p2)^2 - 2 phi (u2-p2)(p1-l1) + (p1-l1)^2). n == 0 gives (-1.0, 1.0).
    """
    _z(confidence)
    if min(both, first_only, second_only, neither) < 0:
        raise ValueError("paired cell counts must be >= 0")
    n = both + first_only + second_only + neither
    if n == 0:
        return -1.0, 1.0
    s1, s2 = both + first_only, both + second_only
    p1, p2 = s1 / n, s2 / n
    (l1, u1), (l2, u2) = wilson_interval(s1, n, confidence), wilson_interval(s2, n, confidence)
    margins = s1 * (n - s1) * s2 * (n - s2)
    cross = both * neither - first_only * second_only
    phi = 0.0 if margins == 0 or 0 <= cross <= n / 2 else (cross - n / 2 if cross > 0 else cross)
    phi /= math.sqrt(margins) if phi else 1.0
    d = p2 - p1
    low = d - math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    high = d + math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return max(-1.0, low), min(1.0, high)


def _paired_counts(pairs: Iterable[tuple[bool, bool]]) -> tuple[int, int, int, int]:
    """(both right, first only, second only, neither) from (first_correct, second_correct) pairs."""
    cells = Counter((bool(first), bool(second)) for first, second in pairs)
    return cells[True, True], cells[True, False], cells[False, True], cells[False, False]


@dataclass(frozen=True, slots=True)
class McNemarResult:
    n: int
    both_right: int
    both_wrong: int
    b: int  # first right, second wrong
    c: int  # first wrong, second right
    first_rate: float
    second_rate: float
    p_value: float  # mcnemar_exact(b, c)
    difference: float  # second_rate - first_rate = (c - b) / n
    low: float  # Newcombe method-10 interval of the difference
    high: float
    confidence: float


def mcnemar_from_pairs(pairs: Iterable[tuple[bool, bool]], confidence: float = 0.95) -> McNemarResult:
    """Exact McNemar test and Newcombe paired interval from (first_correct, second_correct) pairs.
    No pairs: rates and difference 0.0, interval (-1.0, 1.0), p_value 1.0."""
    both, b, c, neither = _paired_counts(pairs)
    n = both + b + c + neither
    low, high = newcombe_paired_interval(both, b, c, neither, confidence)
    return McNemarResult(
        n=n, both_right=both, both_wrong=neither, b=b, c=c, first_rate=(both + b) / n if n else 0.0,
        second_rate=(both + c) / n if n else 0.0, p_value=mcnemar_exact(b, c),
        difference=(c - b) / n if n else 0.0, low=low, high=high, confidence=confidence)


@dataclass(frozen=True, slots=True)
class NonInferiorityResult:
    n: int
    base_rate: float
    cand_rate: float
    difference: float  # cand_rate - base_rate
    lower: float  # one-sided lower bound at `confidence`
    upper: float  # one-sided upper bound at `confidence`
    margin: float
    confidence: float
    verdict: str  # "pass" | "fail" | "inconclusive"
    items_needed: int | None
    base_only: int  # base right, candidate wrong
    cand_only: int  # base wrong, candidate right
    warning: str | None  # small_sample_warning(n)


def noninferiority_paired(base_correct: Sequence[bool], cand_correct: Sequence[bool], margin: float,
                          confidence: float = 0.95) -> NonInferiorityResult:
    """Is the candidate at most ``margin`` (a fraction: 0.02 = 2 points) less accurate than the base?
    lower/upper: the Newcombe interval (:func:`newcombe_paired_interval`) at 2*confidence - 1, so each
    end is a one-sided bound at ``confidence``. Verdict "pass" if lower > -margin, "fail" if upper <
    -margin, else "inconclusive" (always so with no items: bounds (-1, 1)).
    items_needed: total items N (not additional) at which that lower bound clears -margin if every
    cell of the paired table keeps its observed share (difference d and discordance psi fixed); the
    smallest such N by bisection, <= n iff the verdict is "pass"; None if none exists (n == 0,
    d <= -margin) or N > 10^9. For large N it matches the normal-approximation formula for paired
    proportions N = z^2 (psi - d^2) / (d + margin)^2 (z one-sided, ~50 % power), which is not used
    as such because with few discordant pairs it contradicts the verdict (table 88/2/0/10, margin
    0.05: formula 59 items while n = 100 is still inconclusive; this gives 131)."""
    n = _check_pairs(base_correct, cand_correct)
    level = _two_sided_level(confidence)
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin!r}")
    cells = _paired_counts(zip(base_correct, cand_correct))
    both, b, c, _ = cells
    lower, upper = newcombe_paired_interval(*cells, level)

    def clears(total: int) -> bool:
        return newcombe_paired_interval(*(k * total / n for k in cells), level)[0] > -margin
    items: int | None = None
    if n and (c - b) / n + margin > 0:
        lo, hi = 0, n  # clears(lo) is False throughout; 0 is a sentinel, never evaluated
        while hi <= 10**9 and not clears(hi):
            lo, hi = hi, 2 * hi
        while hi <= 10**9 and hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if clears(mid) else (mid, hi)
        items = hi if hi <= 10**9 else None
    verdict = "pass" if lower > -margin else "fail" if upper < -margin else "inconclusive"
    return NonInferiorityResult(
        n=n, base_rate=(both + b) / n if n else 0.0, cand_rate=(both + c) / n if n else 0.0,
        difference=(c - b) / n if n else 0.0, lower=lower, upper=upper, margin=margin, confidence=confidence,
        verdict=verdict, items_needed=items, base_only=b, cand_only=c, warning=small_sample_warning(n))


def cohens_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Cohen's (1960) kappa for two raters, nominal labels: (p_o - p_e) / (1 - p_e), in [-1, 1], exact
    integer arithmetic; a category used by one rater only counts 0 for the other. p_e == 1 (both used
    one same category throughout) is 0/0: 1.0 by convention. Empty or unequal inputs raise ValueError."""
    n = _check_pairs(labels_a, labels_b)
    if n == 0:
        raise ValueError("cohens_kappa needs at least one item")
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    agree = sum(x == y for x, y in zip(labels_a, labels_b))
    chance = sum(k * count_b[cat] for cat, k in count_a.items())  # n^2 * p_e
    return 1.0 if chance == n * n else (n * agree - chance) / (n * n - chance)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, in the input order: with p_(1) <= ... <= p_(m),
    adj_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)); reject H_i at level alpha iff adj_i <= alpha.
    Adjusted >= raw and monotone in raw. Empty gives []; values outside [0, 1] (or NaN) raise."""
    ps = [float(p) for p in p_values]
    if not all(0.0 <= p <= 1.0 for p in ps):
        raise ValueError("p-values must be in [0, 1]")
    adjusted, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(sorted(range(len(ps)), key=lambda k: ps[k])):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True, slots=True)
class Bin:
    lower: float  # equal_width: the bin edges [lower, upper), the last bin includes 1.0;
    upper: float  # equal_mass: the smallest and largest confidence inside
    count: int
    mean_confidence: float
    accuracy: float


def _rows(confidences: Sequence[float], correct: Sequence[bool]) -> list[tuple[float, bool]]:
    _check_pairs(confidences, correct)
    rows = [(float(p), bool(ok)) for p, ok in zip(confidences, correct)]
    if not all(0.0 <= p <= 1.0 for p, _ in rows):
        raise ValueError("confidences must be in [0, 1]")
    return rows


def _bin(lower: float, upper: float, rows: Sequence[tuple[float, bool]]) -> Bin:
    return Bin(lower, upper, len(rows), math.fsum(p for p, _ in rows) / len(rows),
               sum(ok for _, ok in rows) / len(rows))


def reliability_bins(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10,
                     strategy: str = "equal_mass") -> list[Bin]:
    """Reliability-diagram bins in ascending confidence; empty bins are omitted, empty input gives [].
    equal_width: [k/bins, (k+1)/bins). equal_mass: sorted by confidence and cut into ``bins`` runs
    of about n/bins items; a cut never splits equal confidences (it moves to the end of the tie),
    so heavy ties give fewer bins and the result does not depend on the input order.
    """
    if bins < 1 or strategy not in ("equal_mass", "equal_width"):
        raise ValueError(f"need bins >= 1 and strategy equal_mass|equal_width, got {bins}, {strategy!r}")
    rows = _rows(confidences, correct)
    if strategy == "equal_width":
        groups: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
        for row in rows:
            groups[min(int(row[0] * bins), bins - 1)].append(row)
        return [_bin(k / bins, (k + 1) / bins, g) for k, g in enumerate(groups) if g]
    rows.sort(key=lambda r: r[0])
    n, out, start = len(rows), [], 0
    for k in range(1, bins + 1):
        end = max(start, round(k * n / bins))
        while 0 < end < n and rows[end][0] == rows[end - 1][0]:
            end += 1
        if end > start:
            out.append(_bin(rows[start][0], rows[end - 1][0], rows[start:end]))
            start = end
    return out


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10,
                               strategy: str = "equal_mass") -> float:
    """ECE = sum over bins of (count / n) * |accuracy - mean_confidence|, in [0, 1]. Depends on
    ``bins`` and ``strategy`` (report them with it). Empty input raises ValueError."""
    found = reliability_bins(confidences, correct, bins, strategy)
    if not found:
        raise ValueError("expected_calibration_error needs at least one item")
    total = math.fsum(b.count * abs(b.accuracy - b.mean_confidence) for b in found)
    return total / sum(b.count for b in found)


def brier_score(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean of (confidence - outcome)^2 with outcome 0/1 (Brier 1950), in [0, 1], lower is
    better; a constant 0.5 scores 0.25. Empty input raises ValueError."""
    rows = _rows(confidences, correct)
    if not rows:
        raise ValueError("brier_score needs at least one item")
    return math.fsum((p - ok) ** 2 for p, ok in rows) / len(rows)


def selective_accuracy(confidences: Sequence[float],
                       correct: Sequence[bool]) -> list[tuple[float, float, float]]:
    """Accuracy when answering only the items with confidence >= threshold, for each distinct
    confidence as threshold, highest first: [(coverage, accuracy, threshold), ...], coverage =
    answered / n rising to 1.0 at the lowest threshold. Empty input gives []."""
    rows = sorted(_rows(confidences, correct), key=lambda r: -r[0])
    n, out, right = len(rows), [], 0
    for i, (p, ok) in enumerate(rows):
        right += ok
        if i + 1 == n or rows[i + 1][0] != p:
            out.append(((i + 1) / n, right / (i + 1), p))
    return out
