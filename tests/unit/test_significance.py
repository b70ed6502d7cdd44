"""bench/significance.py against published values, hand computations and (when installed) scipy/statsmodels.

Every hard-coded number below cites where it comes from; the scipy/statsmodels cross-checks are
skipped, not failed, when those packages are missing, so the suite runs on the base test extras.
"""

from __future__ import annotations

import math
import random
import statistics
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.significance import (
    Bin,
    betainc,
    bootstrap_mean_interval,
    brier_score,
    clopper_pearson_interval,
    cohens_kappa,
    expected_calibration_error,
    holm_adjust,
    mcnemar_exact,
    mcnemar_from_pairs,
    min_detectable_n,
    newcombe_paired_interval,
    noninferiority_paired,
    paired_bootstrap,
    rate_upper_bound,
    reliability_bins,
    selective_accuracy,
    small_sample_warning,
    wilson_interval,
)

Z95 = statistics.NormalDist().inv_cdf(0.975)
Z90 = statistics.NormalDist().inv_cdf(0.95)

# Newcombe RG (1998) "Two-sided confidence intervals for the single proportion: comparison of
# seven methods", Stat Med 17:857-872, Table II (95 %, 4 decimals): method 3 (Wilson score) and
# method 5 (Clopper-Pearson exact).
NEWCOMBE_1998_SINGLE = [
    # x, n, wilson (low, high), exact (low, high)
    (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0, 0.1611), (0.0, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
]


def binom_tail_exact(k: int, n: int, p: float, upper: bool) -> float:
    """P(X >= k) (upper) or P(X <= k) for X ~ Binomial(n, p), summed term by term (log-space pmf)."""
    ks = range(k, n + 1) if upper else range(k + 1)
    return math.fsum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                              + i * math.log(p) + (n - i) * math.log1p(-p)) for i in ks)


# --------------------------------------------------------------------------- single rates

@pytest.mark.parametrize("x, n, wilson, exact", NEWCOMBE_1998_SINGLE)
def test_newcombe_1998_table(x: int, n: int, wilson: tuple, exact: tuple) -> None:
    assert wilson_interval(x, n) == pytest.approx(wilson, abs=5e-5)
    assert clopper_pearson_interval(x, n) == pytest.approx(exact, abs=5e-5)


def test_wilson_closed_forms() -> None:
    # x = 0: the Wilson upper limit is z^2 / (n + z^2) (Agresti & Coull 1998, eq. 2 with p_hat = 0).
    assert wilson_interval(0, 100) == (0.0, pytest.approx(Z95**2 / (100 + Z95**2), rel=1e-12))
    assert wilson_interval(100, 100) == (pytest.approx(100 / (100 + Z95**2), rel=1e-12), 1.0)
    # One-sided 95 % upper bound = the two-sided 90 % upper end: z = 1.6449 for 0/100.
    assert rate_upper_bound(0, 100) == pytest.approx(Z90**2 / (100 + Z90**2), rel=1e-12)
    assert rate_upper_bound(3, 50, 0.95) == wilson_interval(3, 50, 0.90)[1]


def test_clopper_pearson_closed_forms() -> None:
    # Clopper & Pearson (1934): x = 0 -> upper = 1 - (alpha/2)^(1/n); x = n -> lower = (alpha/2)^(1/n);
    # x = 1 -> lower = 1 - (1 - alpha/2)^(1/n). 0/10 at 95 %: upper = 1 - 0.025^(1/10) = 0.30850.
    assert clopper_pearson_interval(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12))
    assert clopper_pearson_interval(0, 10)[1] == pytest.approx(0.3085, abs=5e-5)
    assert clopper_pearson_interval(10, 10) == (pytest.approx(0.025 ** (1 / 10), abs=1e-12), 1.0)
    assert clopper_pearson_interval(1, 50, 0.99)[0] == pytest.approx(1 - 0.995 ** (1 / 50), abs=1e-12)


@pytest.mark.parametrize("x, n", [(1, 7), (3, 10), (17, 40), (81, 263), (499, 1000), (2, 3000)])
def test_clopper_pearson_is_the_exact_inversion(x: int, n: int) -> None:
    # Definition: P(X >= x | p = low) = alpha/2 and P(X <= x | p = high) = alpha/2.
    low, high = clopper_pearson_interval(x, n)
    assert binom_tail_exact(x, n, low, upper=True) == pytest.approx(0.025, abs=1e-10)
    assert binom_tail_exact(x, n, high, upper=False) == pytest.approx(0.025, abs=1e-10)


def test_betainc_known_values() -> None:
    # I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_{1/2}(a, a) = 1/2 (symmetry).
    assert betainc(1, 1, 0.3) == pytest.approx(0.3, rel=1e-14)
    assert betainc(4.5, 1, 0.7) == pytest.approx(0.7**4.5, rel=1e-13)
    assert betainc(1, 7, 0.2) == pytest.approx(1 - 0.8**7, rel=1e-13)
    assert betainc(37, 37, 0.5) == pytest.approx(0.5, rel=1e-13)
    assert (betainc(2, 3, 0.0), betainc(2, 3, 1.0)) == (0.0, 1.0)


def test_rate_edge_cases_and_validation() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert clopper_pearson_interval(0, 0) == (0.0, 1.0)
    assert rate_upper_bound(0, 0) == 1.0
    for bad in [(-1, 5), (6, 5), (0, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
        with pytest.raises(ValueError):
            clopper_pearson_interval(*bad)
    for conf in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            wilson_interval(1, 2, conf)
    with pytest.raises(ValueError):
        rate_upper_bound(1, 2, 0.4)  # one-sided needs (0.5, 1)


def wilson_half_width(p: float, n: int, z: float = Z95) -> float:
    """Half-width of the Wilson interval, straight from Wilson (1927)."""
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


@pytest.mark.parametrize("p, h", [(0.5, 0.05), (0.0, 0.05), (1.0, 0.02), (0.1, 0.02), (0.9, 0.01),
                                  (0.3, 0.1)])
def test_min_detectable_n_is_the_smallest_wilson_n(p: float, h: float) -> None:
    n = min_detectable_n(p, h)
    assert wilson_half_width(p, n) <= h
    assert n == 1 or wilson_half_width(p, n - 1) > h


def test_min_detectable_n_reference_numbers() -> None:
    assert min_detectable_n(0.5, 0.05) == 381  # Cochran's Wald formula would say ceil(384.15) = 385
    assert min_detectable_n(0.0, 0.05) == 35  # z^2 (1/(2h) - 1) = 34.57; Wald would say 0
    assert min_detectable_n(0.5, 0.05, 0.99) > min_detectable_n(0.5, 0.05, 0.95)
    with pytest.raises(ValueError):
        min_detectable_n(0.5, 0.0)


def test_small_sample_warning() -> None:
    assert small_sample_warning(30) is None
    assert small_sample_warning(100, min_n=50) is None
    message = small_sample_warning(12)
    assert message is not None and "12" in message and "30" in message


# --------------------------------------------------------------------------- McNemar / paired

def test_mcnemar_exact_hand_values() -> None:
    # b=1, c=8: 2 * (C(9,0) + C(9,1)) / 2^9 = 20/512 = 0.0390625.
    assert mcnemar_exact(1, 8) == 0.0390625
    assert mcnemar_exact(8, 1) == 0.0390625
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 10) == 2 / 1024
    # Cavo et al. 2012 as analysed in Fagerland, Lydersen & Laake (2014, Stat Med 33:2850):
    # b=6, c=16 -> exact conditional McNemar p = 2 * 110056 / 2^22 = 0.0525.
    assert mcnemar_exact(6, 16) == pytest.approx(2 * 110056 / 2**22, rel=1e-15)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


@pytest.mark.parametrize("b, c", [(1000, 1100), (2400, 2600), (3000, 3300), (900, 1300), (10, 2500),
                                  (0, 2001)])
def test_mcnemar_large_n_path_matches_exact_fractions(b: int, c: int) -> None:
    # Above 2000 discordant pairs the module switches to the incomplete beta; compare with exact
    # rational arithmetic.
    n, k = b + c, min(b, c)
    exact = min(Fraction(1), 2 * Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n))
    assert mcnemar_exact(b, c) == pytest.approx(float(exact), rel=1e-9, abs=1e-300)


def test_newcombe_published_example() -> None:
    # Fagerland, Lydersen & Laake (2014, Stat Med 33:2850; and "Statistical Analysis of Contingency
    # Tables", 2017, ch. 8), Cavo et al. 2012 table [[59, 6], [16, 80]]: Newcombe square-and-add
    # (method 10) 95 % CI for p1 - p2: -0.0621 (-0.1186 to -0.0046). Here the difference is
    # second - first, so the published interval is mirrored.
    low, high = newcombe_paired_interval(59, 6, 16, 80)
    assert (low, high) == pytest.approx((0.0046, 0.1186), abs=5e-5)
    assert newcombe_paired_interval(59, 16, 6, 80) == pytest.approx((-high, -low), abs=1e-15)


def test_newcombe_degenerate_tables() -> None:
    assert newcombe_paired_interval(0, 0, 0, 0) == (-1.0, 1.0)
    low, high = newcombe_paired_interval(50, 0, 0, 0)  # both always right: margins zero, phi = 0
    assert low < 0.0 < high
    assert newcombe_paired_interval(0, 10, 0, 0)[0] == -1.0
    with pytest.raises(ValueError):
        newcombe_paired_interval(1, -1, 0, 0)


def test_mcnemar_from_pairs_counts_and_direction() -> None:
    pairs = [(True, True)] * 59 + [(True, False)] * 6 + [(False, True)] * 16 + [(False, False)] * 80
    r = mcnemar_from_pairs(pairs)
    assert (r.n, r.both_right, r.b, r.c, r.both_wrong) == (161, 59, 6, 16, 80)
    assert r.first_rate == 65 / 161 and r.second_rate == 75 / 161
    assert r.difference == pytest.approx(10 / 161)
    assert (r.low, r.high) == newcombe_paired_interval(59, 6, 16, 80)
    assert r.p_value == mcnemar_exact(6, 16)
    empty = mcnemar_from_pairs([])
    assert (empty.n, empty.p_value, empty.difference, empty.low, empty.high) == (0, 1.0, 0.0, -1.0, 1.0)


# --------------------------------------------------------------------------- non-inferiority

def outcomes(both: int, base_only: int, cand_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    base = [True] * both + [True] * base_only + [False] * cand_only + [False] * neither
    cand = [True] * both + [False] * base_only + [True] * cand_only + [False] * neither
    return base, cand


def test_noninferiority_verdicts() -> None:
    base, cand = outcomes(85, 3, 3, 9)  # equal accuracy, few discordant pairs
    r = noninferiority_paired(base, cand, margin=0.05)
    assert r.verdict == "pass" and r.difference == 0.0
    assert (r.lower, r.upper) == newcombe_paired_interval(85, 3, 3, 9, 0.90)  # one-sided 95 %
    assert r.lower > -0.05 and r.items_needed is not None and r.items_needed <= r.n

    r = noninferiority_paired(*outcomes(88, 2, 0, 10), margin=0.05)
    assert r.verdict == "inconclusive" and r.difference == pytest.approx(-0.02)
    assert r.items_needed == 131 and r.base_only == 2 and r.cand_only == 0

    r = noninferiority_paired(*outcomes(60, 30, 2, 8), margin=0.05)
    assert r.verdict == "fail" and r.upper < -0.05 and r.items_needed is None


def test_noninferiority_edge_cases() -> None:
    r = noninferiority_paired([], [], margin=0.02)
    assert (r.verdict, r.lower, r.upper, r.items_needed) == ("inconclusive", -1.0, 1.0, None)
    assert r.warning is not None
    r = noninferiority_paired(*outcomes(90, 0, 0, 10), margin=0.02)  # no discordance yet
    assert r.verdict == "inconclusive" and r.items_needed is not None and r.items_needed > 100
    with pytest.raises(ValueError):
        noninferiority_paired([True], [True, False], margin=0.02)
    with pytest.raises(ValueError):
        noninferiority_paired([True], [True], margin=0.02, confidence=0.5)


@pytest.mark.parametrize("cells, margin", [((88, 2, 0, 10), 0.05), ((90, 0, 0, 10), 0.02),
                                           ((80, 6, 4, 10), 0.03), ((50, 10, 8, 32), 0.05),
                                           ((85, 3, 3, 9), 0.05), ((10, 1, 2, 3), 0.1)])
def test_items_needed_is_where_the_bound_clears(cells: tuple, margin: float) -> None:
    n = sum(cells)
    r = noninferiority_paired(*outcomes(*cells), margin=margin)
    need = r.items_needed
    assert need is not None

    def lower_at(total: int) -> float:
        return newcombe_paired_interval(*(k * total / n for k in cells), 0.90)[0]

    assert lower_at(need) > -margin
    assert need == 1 or lower_at(need - 1) <= -margin
    assert (need <= n) == (r.verdict == "pass")


def test_items_needed_approaches_the_normal_formula() -> None:
    # Paired-proportion sample size with d and the discordant share psi held fixed (Connor 1987
    # style, no power term): N = z^2 (psi - d^2) / (d + margin)^2. Many discordant pairs -> close.
    cells, margin = (7000, 625, 575, 1800), 0.01  # d = -0.005, psi = 0.12: formula 12984, search 12998
    n = sum(cells)
    d, psi = (cells[2] - cells[1]) / n, (cells[1] + cells[2]) / n
    formula = Z90**2 * (psi - d * d) / (d + margin) ** 2
    r = noninferiority_paired(*outcomes(*cells), margin=margin)
    assert r.items_needed == pytest.approx(formula, rel=0.01)


# --------------------------------------------------------------------------- bootstrap

def test_bootstrap_mean_interval_contract() -> None:
    assert bootstrap_mean_interval([]) is None
    assert bootstrap_mean_interval([0.1, 0.1, 0.1]) == (0.1, 0.1)
    values = [float(v) for v in range(100)]
    low, high = bootstrap_mean_interval(values, resamples=4000)
    se = statistics.stdev(values) / 10  # normal theory: mean +- 1.96 sd / sqrt(n)
    assert low == pytest.approx(49.5 - Z95 * se, abs=0.1 * se * Z95)
    assert high == pytest.approx(49.5 + Z95 * se, abs=0.1 * se * Z95)
    assert bootstrap_mean_interval(values, seed=1) == bootstrap_mean_interval(values, seed=1)
    assert bootstrap_mean_interval(values, seed=1) != bootstrap_mean_interval(values, seed=2)
    with pytest.raises(ValueError):
        bootstrap_mean_interval([1.0, float("nan")])


def test_paired_bootstrap_contract() -> None:
    a = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0] * 5
    same = paired_bootstrap(a, a)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    better = paired_bootstrap(a, [1.0] * len(a))
    assert better.difference == 0.5 and better.p_value == 0.0 and 0.0 < better.low <= 0.5 <= better.high
    worse = paired_bootstrap([1.0] * len(a), a, seed=3)
    assert worse.difference == -0.5 and worse.p_value == 0.0 and worse.high < 0.0
    median = paired_bootstrap([1, 2, 3, 4, 5], [2, 3, 4, 5, 60], statistic=statistics.median)
    assert median.difference == 1.0 and median.statistic_b == 4.0
    assert paired_bootstrap(a, a[::-1], seed=7) == paired_bootstrap(a, a[::-1], seed=7)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_bootstrap([], [])


def test_paired_bootstrap_p_value_is_share_on_the_other_side() -> None:
    rng = random.Random(11)
    a = [rng.random() for _ in range(30)]
    b = [x + rng.gauss(0.05, 0.2) for x in a]
    r = paired_bootstrap(a, b, resamples=500, seed=5)
    # Replay the documented resampling: same RNG, same draws.
    replay, idx_rng = [], random.Random(5)
    for _ in range(500):
        idx = idx_rng.choices(range(30), k=30)
        replay.append(statistics.fmean([b[i] for i in idx]) - statistics.fmean([a[i] for i in idx]))
    other = sum(d <= 0 for d in replay) if r.difference > 0 else sum(d >= 0 for d in replay)
    assert r.p_value == min(1.0, 2 * other / 500)


# --------------------------------------------------------------------------- agreement, multiplicity

def test_cohens_kappa_textbook_2x2() -> None:
    # Worked 2x2 example (Wikipedia "Cohen's kappa"): 50 items, yes/yes 20, yes/no 5, no/yes 10,
    # no/no 15 -> p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4, abs=1e-15)
    assert cohens_kappa(b, a) == pytest.approx(0.4, abs=1e-15)


def test_cohens_kappa_conventions() -> None:
    assert cohens_kappa(["x"] * 5, ["x"] * 5) == 1.0  # p_e = 1: 1.0 by convention
    assert cohens_kappa([0, 1], [1, 0]) == -1.0
    assert cohens_kappa([1, 2, 3], [1, 2, 3]) == 1.0
    # "c" is used by rater b only and counts 0 for rater a. p_o = 3/4, p_e = (2*2 + 2*1 + 0*1) / 16
    # = 6/16 -> kappa = 0.6; with p_o = 2/4 and the same p_e -> kappa = 0.2.
    assert cohens_kappa(["a", "a", "b", "b"], ["a", "a", "b", "c"]) == pytest.approx(0.6, abs=1e-15)
    assert cohens_kappa(["a", "a", "b", "b"], ["a", "b", "b", "c"]) == pytest.approx(0.2, abs=1e-15)
    with pytest.raises(ValueError):
        cohens_kappa([], [])
    with pytest.raises(ValueError):
        cohens_kappa([1], [1, 2])


def test_holm_known_vector() -> None:
    # Holm (1979) worked example as given in Wikipedia "Holm-Bonferroni method": p = 0.01, 0.04,
    # 0.03, 0.005 -> sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06.
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm_adjust([]) == []
    assert holm_adjust([0.5, 0.6]) == [1.0, 1.0]
    assert holm_adjust([0.02]) == [0.02]
    with pytest.raises(ValueError):
        holm_adjust([0.1, float("nan")])


# --------------------------------------------------------------------------- calibration

def test_calibration_hand_example() -> None:
    conf, correct = [0.2, 0.4, 0.6, 0.8], [False, True, True, True]
    # Two bins {0.2, 0.4} and {0.6, 0.8}: |0.5 - 0.3| * 2/4 + |1.0 - 0.7| * 2/4 = 0.1 + 0.15 = 0.25.
    for strategy in ("equal_width", "equal_mass"):
        assert expected_calibration_error(conf, correct, bins=2, strategy=strategy) == pytest.approx(0.25)
    assert reliability_bins(conf, correct, bins=2, strategy="equal_width") == [
        Bin(0.0, 0.5, 2, pytest.approx(0.3), 0.5), Bin(0.5, 1.0, 2, pytest.approx(0.7), 1.0)]
    assert reliability_bins(conf, correct, bins=2) == [
        Bin(0.2, 0.4, 2, pytest.approx(0.3), 0.5), Bin(0.6, 0.8, 2, pytest.approx(0.7), 1.0)]
    # Brier: (0.04 + 0.36 + 0.16 + 0.04) / 4 = 0.15.
    assert brier_score(conf, correct) == pytest.approx(0.15)
    assert brier_score([0.9, 0.8, 0.3], [1, 0, 0]) == pytest.approx((0.01 + 0.64 + 0.09) / 3)
    assert brier_score([0.5] * 6, [1, 0, 1, 0, 0, 1]) == 0.25


def test_equal_mass_never_splits_ties() -> None:
    conf, correct = [0.9] * 10, [True] * 7 + [False] * 3
    assert reliability_bins(conf, correct) == [Bin(0.9, 0.9, 10, pytest.approx(0.9), 0.7)]
    assert expected_calibration_error(conf, correct) == pytest.approx(0.2)
    assert expected_calibration_error(conf, correct[::-1]) == pytest.approx(0.2)


def test_calibration_edges() -> None:
    assert reliability_bins([], []) == []
    assert reliability_bins([1.0, 0.0], [True, False], bins=4, strategy="equal_width") == [
        Bin(0.0, 0.25, 1, 0.0, 0.0), Bin(0.75, 1.0, 1, 1.0, 1.0)]
    assert expected_calibration_error([1.0, 0.0], [True, False]) == 0.0
    for bad in (lambda: expected_calibration_error([], []), lambda: brier_score([], []),
                lambda: reliability_bins([1.2], [True]), lambda: reliability_bins([0.5], [True], bins=0),
                lambda: reliability_bins([0.5], [True], strategy="quantile"),
                lambda: brier_score([0.5], [True, False])):
        with pytest.raises(ValueError):
            bad()


def test_selective_accuracy_hand_example() -> None:
    curve = selective_accuracy([0.9, 0.3, 0.8, 0.8], [True, False, False, True])
    assert curve == [(0.25, 1.0, 0.9), (0.75, pytest.approx(2 / 3), 0.8), (1.0, 0.5, 0.3)]
    assert selective_accuracy([], []) == []


# --------------------------------------------------------------------------- cross-checks (optional deps)

GRID = [(0, 1), (1, 1), (0, 5), (3, 5), (0, 50), (1, 50), (25, 50), (49, 50), (50, 50),
        (7, 300), (150, 300), (1, 5000), (4999, 5000), (2500, 5000)]


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_intervals_match_statsmodels(confidence: float) -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for x, n in GRID:
        alpha = 1 - confidence
        wilson = proportion.proportion_confint(x, n, alpha=alpha, method="wilson")
        beta = proportion.proportion_confint(x, n, alpha=alpha, method="beta")
        assert wilson_interval(x, n, confidence) == pytest.approx(wilson, abs=1e-12), (x, n)
        assert clopper_pearson_interval(x, n, confidence) == pytest.approx(beta, abs=1e-9), (x, n)


def test_betainc_matches_scipy() -> None:
    special = pytest.importorskip("scipy.special")
    for a, b in [(0.5, 0.5), (1, 30), (30, 1), (2.5, 7), (81, 183), (500, 600), (3000, 3300)]:
        for x in (1e-6, 0.01, 0.2, 0.45, 0.5, 0.55, 0.8, 0.999):
            want = float(special.betainc(a, b, x))
            assert betainc(a, b, x) == pytest.approx(want, rel=1e-11, abs=1e-300), (a, b, x)


def test_mcnemar_matches_scipy_and_statsmodels() -> None:
    stats = pytest.importorskip("scipy.stats")
    tables = pytest.importorskip("statsmodels.stats.contingency_tables")
    for b, c in [(0, 1), (1, 8), (6, 16), (10, 10), (0, 40), (120, 150), (1000, 1100), (2900, 3100)]:
        p = mcnemar_exact(b, c)
        assert p == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9), (b, c)
        assert p == pytest.approx(tables.mcnemar([[50, b], [c, 50]], exact=True).pvalue, rel=1e-9)


def test_holm_and_kappa_match_statsmodels() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = random.Random(3)
    for m in (1, 2, 5, 20):
        ps = [rng.random() ** 3 for _ in range(m)]
        want = list(multitest.multipletests(ps, method="holm")[1])
        assert holm_adjust(ps) == pytest.approx(want, abs=1e-15)
    for _ in range(5):
        a = [rng.choice("abc") for _ in range(60)]
        b = [x if rng.random() < 0.6 else rng.choice("abcd") for x in a]
        cats = sorted(set(a) | set(b))
        table = [[sum(1 for x, y in zip(a, b) if (x, y) == (r, c)) for c in cats] for r in cats]
        assert cohens_kappa(a, b) == pytest.approx(inter_rater.cohens_kappa(table).kappa, abs=1e-12)


def test_bootstrap_quantiles_match_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [1.0, 2.0, 2.5, 7.0, 9.0, 13.0, 21.0]
    rng = random.Random(4)
    means = [math.fsum(rng.choices(values, k=len(values))) / len(values) for _ in range(999)]
    want = np.percentile(means, [5.0, 95.0])  # numpy's default is type 7 (linear)
    got = bootstrap_mean_interval(values, 0.90, resamples=999, seed=4)
    assert got == pytest.approx(tuple(want), abs=1e-12)


# --------------------------------------------------------------------------- properties

counts = st.integers(0, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))
levels = st.floats(0.5, 0.999)


@settings(max_examples=150, deadline=None)
@given(counts, levels)
def test_single_rate_intervals_contain_the_estimate(xn: tuple[int, int], confidence: float) -> None:
    x, n = xn
    for low, high in (wilson_interval(x, n, confidence), clopper_pearson_interval(x, n, confidence)):
        assert 0.0 <= low <= high <= 1.0
        if n:
            assert low <= x / n <= high
    assert wilson_interval(x, n, confidence)[1] <= wilson_interval(x, n, min(0.9995, confidence + 0.0004))[1]


@settings(max_examples=150, deadline=None)
@given(st.tuples(*[st.integers(0, 60)] * 4), levels)
def test_newcombe_contains_the_difference(cells: tuple[int, int, int, int], confidence: float) -> None:
    low, high = newcombe_paired_interval(*cells, confidence)
    n = sum(cells)
    d = (cells[2] - cells[1]) / n if n else 0.0
    assert -1.0 <= low <= d <= high <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), max_size=30))
def test_holm_properties(ps: list[float]) -> None:
    adjusted = holm_adjust(ps)
    assert len(adjusted) == len(ps)
    for p, q in zip(ps, adjusted):
        assert p <= q <= 1.0
    for i in range(len(ps)):
        for j in range(len(ps)):
            if ps[i] <= ps[j]:
                assert adjusted[i] <= adjusted[j]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40), st.integers(0, 2**32))
def test_bootstrap_is_deterministic_for_a_seed(values: list[float], seed: int) -> None:
    first = bootstrap_mean_interval(values, resamples=200, seed=seed)
    assert first == bootstrap_mean_interval(values, resamples=200, seed=seed)
    assert first is not None and first[0] <= first[1]
    assert min(values) - 1e-6 <= first[0] and first[1] <= max(values) + 1e-6
    other = [v / 2 for v in values]
    assert paired_bootstrap(values, other, resamples=100, seed=seed) == paired_bootstrap(
        values, other, resamples=100, seed=seed)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abcd")), min_size=1, max_size=50))
def test_kappa_bounded_and_symmetric(pairs: list[tuple[str, str]]) -> None:
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    kappa = cohens_kappa(a, b)
    assert -1.0 <= kappa <= 1.0
    assert kappa == pytest.approx(cohens_kappa(b, a), abs=1e-15)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.35, 0.5, 0.7, 0.9, 1.0]) | st.floats(0.0, 1.0),
                          st.booleans()), max_size=60),
       st.integers(1, 12), st.sampled_from(["equal_mass", "equal_width"]), st.randoms())
def test_calibration_properties(rows: list, bins: int, strategy: str, rnd: random.Random) -> None:
    conf, correct = [p for p, _ in rows], [ok for _, ok in rows]
    found = reliability_bins(conf, correct, bins, strategy)
    assert sum(b.count for b in found) == len(rows) and len(found) <= bins
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    again = reliability_bins([p for p, _ in shuffled], [ok for _, ok in shuffled], bins, strategy)
    assert [(b.lower, b.upper, b.count, b.accuracy) for b in found] == [
        (b.lower, b.upper, b.count, b.accuracy) for b in again]  # input order never matters
    if rows:
        assert 0.0 <= expected_calibration_error(conf, correct, bins, strategy) <= 1.0
        assert 0.0 <= brier_score(conf, correct) <= 1.0
        curve = selective_accuracy(conf, correct)
        assert curve[-1][0] == 1.0 and curve[-1][1] == pytest.approx(sum(correct) / len(correct))
        assert [c for c, _, _ in curve] == sorted(c for c, _, _ in curve)
