"""evaluation.stats against scipy / statsmodels reference implementations on known inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

from evaluation import stats


@pytest.mark.parametrize(
    ("successes", "n", "alpha"),
    [(0, 10, 0.05), (10, 10, 0.05), (3, 17, 0.05), (1234, 40000, 0.05), (55, 100, 0.01)],
)
def test_wilson_matches_statsmodels(successes: int, n: int, alpha: float) -> None:
    low, high = stats.wilson_interval(successes, n, alpha)
    ref_low, ref_high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    assert low == pytest.approx(ref_low, abs=1e-12)
    assert high == pytest.approx(ref_high, abs=1e-12)
    assert 0.0 <= low <= successes / n <= high <= 1.0


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(4400, 40000, 4000, 40000), (90, 1000, 120, 1100), (1, 30, 5, 25), (500, 5000, 500, 5000)],
)
def test_ztest_matches_statsmodels(x1: int, n1: int, x2: int, n2: int) -> None:
    result = stats.two_proportion_ztest(x1, n1, x2, n2)
    ref_z, ref_p = proportions_ztest([x1, x2], [n1, n2])
    assert result.statistic == pytest.approx(ref_z, rel=1e-10, abs=1e-12)
    assert result.p_value == pytest.approx(ref_p, rel=1e-9)


def test_ztest_degenerate_samples_give_no_evidence() -> None:
    assert stats.two_proportion_ztest(0, 100, 0, 50) == stats.ZTestResult(0.0, 1.0)
    assert stats.two_proportion_ztest(7, 7, 9, 9) == stats.ZTestResult(0.0, 1.0)


def test_ztest_false_positive_rate_is_alpha_under_the_null() -> None:
    rng = np.random.default_rng(7)
    trials, n = 4000, 20_000
    a, b = rng.binomial(n, 0.1, trials), rng.binomial(n, 0.1, trials)
    p = np.array(
        [
            stats.two_proportion_ztest(int(x), n, int(y), n).p_value
            for x, y in zip(a, b, strict=True)
        ]
    )
    assert 0.04 < float(np.mean(p < 0.05)) < 0.06
    assert 0.005 < float(np.mean(p < 0.01)) < 0.015


def test_diff_interval_matches_statsmodels_wald() -> None:
    low, high = stats.diff_interval_two_proportions(440, 4000, 400, 4000, alpha=0.05)
    ref = confint_proportions_2indep(440, 4000, 400, 4000, method="wald", compare="diff")
    assert (low, high) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize(
    ("observed", "shares"),
    [
        ([5000, 5100], [0.5, 0.5]),
        ([5500, 4500], [0.5, 0.5]),
        ([300, 330, 290], [1, 1, 1]),
        ([700, 300], [0.7, 0.3]),
        ([10, 0], [0.5, 0.5]),
    ],
)
def test_srm_matches_scipy_chisquare(observed: list[int], shares: list[float]) -> None:
    result = stats.srm_chisquare(observed, shares)
    total = sum(observed)
    expected = [s / sum(shares) * total for s in shares]
    ref = sps.chisquare(observed, f_exp=expected)
    assert result.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    assert result.dof == len(observed) - 1


def test_srm_flags_a_55_45_split() -> None:
    assert stats.srm_chisquare([5500, 4500], [0.5, 0.5]).p_value < 1e-10
    assert stats.srm_chisquare([5010, 4990], [0.5, 0.5]).p_value > 0.5


@pytest.mark.parametrize(
    "pvalues",
    [
        [0.01, 0.04, 0.03, 0.2, 0.5],
        [0.001],
        [0.02, 0.02, 0.02, 0.9],  # ties
        list(np.random.default_rng(3).uniform(0, 0.1, size=25)),
    ],
)
def test_corrections_match_multipletests(pvalues: list[float]) -> None:
    np.testing.assert_allclose(
        stats.bonferroni(pvalues), multipletests(pvalues, method="bonferroni")[1], rtol=1e-12
    )
    np.testing.assert_allclose(
        stats.benjamini_hochberg(pvalues),
        multipletests(pvalues, method="fdr_bh")[1],
        rtol=1e-12,
    )


def test_corrections_reject_bad_pvalues() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.benjamini_hochberg([0.1, 1.5])
    with pytest.raises(ValueError):
        stats.bonferroni([math.nan])


def test_cohens_h_matches_statsmodels() -> None:
    assert stats.cohens_h(0.11, 0.10) == pytest.approx(proportion_effectsize(0.11, 0.10))


@pytest.mark.parametrize(
    ("p_base", "mde", "nobs1", "ratio", "alpha"),
    [
        (0.10, 0.10, 40000, 1.0, 0.05),
        (0.10, 0.05, 40000, 1.0, 0.05),
        (0.02, 0.2, 10000, 2.0, 0.01),
        (0.5, -0.05, 3000, 0.5, 0.05),
    ],
)
def test_power_matches_normal_ind_power(
    p_base: float, mde: float, nobs1: int, ratio: float, alpha: float
) -> None:
    es = proportion_effectsize(p_base * (1 + mde), p_base)
    ours = stats.achieved_power(stats.cohens_h(p_base * (1 + mde), p_base), nobs1, alpha, ratio)
    ref = NormalIndPower().power(effect_size=es, nobs1=nobs1, alpha=alpha, ratio=ratio)
    assert ours == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize(
    ("p_base", "mde", "power", "ratio"),
    [(0.10, 0.10, 0.8, 1.0), (0.10, 0.05, 0.9, 1.0), (0.03, 0.2, 0.8, 1.5), (0.4, -0.1, 0.8, 1.0)],
)
def test_sample_size_matches_normal_ind_power(
    p_base: float, mde: float, power: float, ratio: float
) -> None:
    es = proportion_effectsize(p_base * (1 + mde), p_base)
    ref = NormalIndPower().solve_power(
        effect_size=es, nobs1=None, alpha=0.05, power=power, ratio=ratio
    )
    assert stats.required_sample_size(es, 0.05, power, ratio) == pytest.approx(ref, rel=1e-6)
    n = stats.required_sample_size_two_proportions(p_base, mde, 0.05, power, ratio)
    assert n == math.ceil(ref)
    assert (
        stats.achieved_power(es, n, 0.05, ratio)
        >= power
        > stats.achieved_power(es, n - 1, 0.05, ratio)
    )


@pytest.mark.parametrize(("alpha", "ratio"), [(0.05, 1.0), (1e-6, 0.02), (0.01, 50.0)])
def test_sample_size_scales_with_the_inverse_square_of_tiny_effects(
    alpha: float, ratio: float
) -> None:
    # statsmodels' solver alone returns nan (with a warning) for some of these roots (~1e15)
    base = stats.required_sample_size(0.01, alpha, 0.8, ratio)
    for effect in (1e-4, 1e-6, -1e-7):
        n = stats.required_sample_size(effect, alpha, 0.8, ratio)
        assert math.isfinite(n)
        assert n == pytest.approx(base * (0.01 / effect) ** 2, rel=1e-6)


def test_sample_size_is_at_least_two() -> None:
    # two observations already give this effect its power: below the solver's range
    assert stats.achieved_power(3.0, 2.0) > 0.8
    assert stats.required_sample_size(3.0) == 2.0
    assert stats.required_sample_size_two_proportions(0.01, 9.0, power=0.5) >= 2


@pytest.mark.parametrize("p_base", [0.001, 0.01, 0.05, 0.1, 0.3, 0.6])
@pytest.mark.parametrize("mde", [-0.2, -0.01, 0.003, 0.05, 0.5])
def test_two_proportion_sample_size_is_the_smallest_integer(p_base: float, mde: float) -> None:
    n = stats.required_sample_size_two_proportions(p_base, mde, 0.05, 0.8, 1.3)
    es = stats.cohens_h(p_base * (1 + mde), p_base)
    assert (
        stats.achieved_power(es, n, 0.05, 1.3) >= 0.8 > stats.achieved_power(es, n - 1, 0.05, 1.3)
    )


def test_sample_size_for_ten_percent_lift_on_ten_percent_ctr() -> None:
    # the classic planning number: ~14.8k requests per arm
    assert 14_000 < stats.required_sample_size_two_proportions(0.10, 0.10) < 15_500


def test_sample_size_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="baseline"):
        stats.required_sample_size_two_proportions(0.0, 0.1)
    with pytest.raises(ValueError, match="power"):
        stats.required_sample_size(0.1, alpha=0.05, power=1.0)
    with pytest.raises(ValueError, match="effect size"):
        stats.required_sample_size(0.0)


def _revenue_like(rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
    return np.where(rng.random(n) < 0.05, rng.exponential(mean, n), 0.0)


def test_bootstrap_diff_matches_scipy_percentile() -> None:
    rng = np.random.default_rng(11)
    a, b = _revenue_like(rng, 3000, 36.0), _revenue_like(rng, 3000, 30.0)
    ours = stats.bootstrap_mean_diff_ci(a, b, alpha=0.05, n_boot=4000, seed=5)
    ref = sps.bootstrap(
        (a, b),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        method="percentile",
        n_resamples=4000,
        vectorized=True,
        random_state=5,
    ).confidence_interval
    width = ref.high - ref.low
    assert ours.diff == pytest.approx(a.mean() - b.mean())
    assert ours.low == pytest.approx(ref.low, abs=0.05 * width)
    assert ours.high == pytest.approx(ref.high, abs=0.05 * width)
    # and close to the normal-theory (Welch) interval at this size
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert ours.high - ours.low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_is_seeded_and_tests_the_difference() -> None:
    rng = np.random.default_rng(2)
    same_a = rng.normal(10, 2, 2000)
    same_b = rng.permutation(same_a)  # same mean: no difference at all
    first = stats.bootstrap_mean_diff_ci(same_a, same_b, n_boot=1000, seed=1)
    assert first == stats.bootstrap_mean_diff_ci(same_a, same_b, n_boot=1000, seed=1)
    assert first.low < 0 < first.high
    assert first.p_value > 0.05
    shifted = stats.bootstrap_mean_diff_ci(same_a + 0.5, same_b, n_boot=1000, seed=1)
    assert shifted.low > 0
    assert shifted.p_value == pytest.approx(2 / 1001)  # the resolution floor
    assert stats.bootstrap_pvalue(np.array([-1.0, 1.0])) == 1.0


def test_bootstrap_means_is_memory_bounded_and_unbiased() -> None:
    values = np.arange(10_000, dtype=np.float64)
    means = stats.bootstrap_means(values, n_boot=900, seed=0)  # several chunks
    assert means.shape == (900,)
    assert means.mean() == pytest.approx(values.mean(), rel=0.01)
    assert means.std() == pytest.approx(values.std() / 100, rel=0.15)
    with pytest.raises(ValueError, match="non-empty"):
        stats.bootstrap_means([], n_boot=10)


def test_wilson_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="positive"):
        stats.wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        stats.wilson_interval(11, 10)
