"""Statistics for experiment analysis: intervals, tests, corrections, power and the bootstrap.

Tests, intervals, corrections, effect sizes and power are statsmodels calls behind a stable
contract. Hand-written, because statsmodels has no equivalent: the seeded, memory-bounded
bootstrap of means, its percentile interval and the p-value that inverts it.
Every function checks its arguments and raises ``ValueError`` with a one-line message.
Conventions: differences are ``first − second`` in argument order, tests are two-sided,
``alpha`` is the significance level (a ``1 − alpha`` interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from statsmodels.stats.gof import chisquare
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    proportions_ztest,
)

FloatArray = NDArray[np.float64]

_MAX_BOOT_CELLS = 4_000_000  # resample indices drawn per chunk (bounds bootstrap memory)
# statsmodels' sample-size solver searches first arms from 2, and can fail to converge (nan)
# on roots beyond ~1e14: required_sample_size keeps its roots in [_MIN_ARM, _MAX_SOLVED_ARM].
_MIN_ARM = 2.0
_MAX_SOLVED_ARM = 1e9


@dataclass(frozen=True)
class ZTestResult:
    """A test statistic and its two-sided p-value."""

    statistic: float
    p_value: float


@dataclass(frozen=True)
class ChiSquareResult:
    """Chi-square goodness of fit: statistic, p-value and degrees of freedom."""

    statistic: float
    p_value: float
    dof: int


@dataclass(frozen=True)
class BootstrapDiff:
    """Bootstrap of ``mean(first) − mean(second)``: estimate, percentile interval, p-value."""

    diff: float
    low: float
    high: float
    p_value: float


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _check_count(successes: int, n: int) -> None:
    if n <= 0:
        raise ValueError(f"number of trials must be positive, got {n!r}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes!r}")


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``."""
    _check_count(successes, n)
    _check_alpha(alpha)
    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return max(0.0, float(low)), min(1.0, float(high))


def two_proportion_ztest(successes1: int, n1: int, successes2: int, n2: int) -> ZTestResult:
    """Pooled two-proportion z-test of ``p1 = p2``; the statistic is positive when ``p1 > p2``.

    When both samples are all failures or all successes the pooled variance is zero; there is
    then no evidence of a difference and the result is ``z = 0, p = 1``.
    """
    _check_count(successes1, n1)
    _check_count(successes2, n2)
    if successes1 + successes2 in (0, n1 + n2):  # statsmodels would divide by zero: nan
        return ZTestResult(0.0, 1.0)
    z, p = proportions_ztest([successes1, successes2], [n1, n2])
    return ZTestResult(float(z), float(p))


def diff_interval_two_proportions(
    successes1: int, n1: int, successes2: int, n2: int, alpha: float = 0.05
) -> tuple[float, float]:
    """Wald (unpooled) interval for ``p1 − p2``."""
    _check_count(successes1, n1)
    _check_count(successes2, n2)
    _check_alpha(alpha)
    low, high = confint_proportions_2indep(
        successes1, n1, successes2, n2, method="wald", compare="diff", alpha=alpha
    )
    return float(low), float(high)


def srm_chisquare(observed: Sequence[int], expected_shares: Sequence[float]) -> ChiSquareResult:
    """Chi-square goodness of fit of observed counts against expected shares (normalised).

    Used for the sample-ratio-mismatch check: a tiny p-value means the assignment did not
    produce the designed split.
    """
    obs = np.asarray(observed, dtype=np.float64)
    shares = np.asarray(expected_shares, dtype=np.float64)
    if obs.ndim != 1 or obs.shape != shares.shape or obs.size < 2:
        raise ValueError("need at least two observed counts and one expected share per count")
    if np.any(obs < 0) or np.any(shares <= 0) or not np.all(np.isfinite(shares)):
        raise ValueError("counts must be non-negative and expected shares positive")
    total = float(obs.sum())
    if total <= 0:
        raise ValueError("observed counts sum to zero")
    statistic, p_value = chisquare(obs, shares / shares.sum() * total)
    return ChiSquareResult(float(statistic), float(p_value), int(obs.size - 1))


def _pvalue_array(pvalues: ArrayLike) -> FloatArray:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p-values must be a one-dimensional sequence")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be in [0, 1]")
    return p


def _adjusted(pvalues: ArrayLike, method: str) -> FloatArray:
    p = _pvalue_array(pvalues)
    if p.size == 0:
        return p.copy()
    return np.asarray(multipletests(p, method=method)[1], dtype=np.float64)


def bonferroni(pvalues: ArrayLike) -> FloatArray:
    """Bonferroni-adjusted p-values: ``min(1, m·p)`` (controls the family-wise error rate)."""
    return _adjusted(pvalues, "bonferroni")


def benjamini_hochberg(pvalues: ArrayLike) -> FloatArray:
    """Benjamini–Hochberg adjusted p-values (controls the false discovery rate)."""
    return _adjusted(pvalues, "fdr_bh")


def cohens_h(p1: float, p2: float) -> float:
    """Effect size of two proportions on the arcsine scale: ``2·asin√p1 − 2·asin√p2``."""
    for p in (p1, p2):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"proportion must be in [0, 1], got {p!r}")
    return float(proportion_effectsize(p1, p2))


def achieved_power(
    effect_size: float, nobs1: float, alpha: float = 0.05, ratio: float = 1.0
) -> float:
    """Power of a two-sided two-sample z-test for a standardised effect size.

    ``nobs1`` is the size of the first arm and ``ratio = nobs2 / nobs1``. The effect size is
    Cohen's h for proportions or Cohen's d for means (normal approximation, known variance).
    """
    _check_alpha(alpha)
    if nobs1 <= 0 or ratio <= 0:
        raise ValueError("sample size and ratio must be positive")
    return float(
        NormalIndPower().power(effect_size=effect_size, nobs1=nobs1, alpha=alpha, ratio=ratio)
    )


def required_sample_size(
    effect_size: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> float:
    """Size of the first arm at which :func:`achieved_power` reaches ``power`` (not rounded).

    At least 2: an effect so large that two observations already reach ``power`` gives 2.
    """
    _check_alpha(alpha)
    if not alpha < power < 1.0:
        raise ValueError(f"power must be in (alpha, 1), got {power!r}")
    if effect_size == 0 or not math.isfinite(effect_size):
        raise ValueError("effect size must be finite and non-zero")
    if ratio <= 0:
        raise ValueError("ratio must be positive")
    if achieved_power(effect_size, _MIN_ARM, alpha, ratio) >= power:
        return _MIN_ARM
    # Power depends on the effect size and the first arm only through effect_size² · nobs1:
    # a tiny effect is solved scaled up (root between 1e3 and 1e9), the size scaled back.
    scale = 1.0
    while achieved_power(effect_size * math.sqrt(scale), _MAX_SOLVED_ARM, alpha, ratio) < power:
        scale *= 1e6
    solved = NormalIndPower().solve_power(
        effect_size=effect_size * math.sqrt(scale),
        nobs1=None,
        alpha=alpha,
        power=power,
        ratio=ratio,
    )
    return float(solved) * scale


def required_sample_size_two_proportions(
    p_base: float, mde: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> int:
    """Smallest first-arm size detecting a relative change ``mde`` of ``p_base`` with ``power``.

    Uses Cohen's h between ``p_base·(1 + mde)`` (capped at 1) and ``p_base``.
    """
    if not 0.0 < p_base < 1.0:
        raise ValueError(f"baseline proportion must be in (0, 1), got {p_base!r}")
    if mde == 0 or mde <= -1:
        raise ValueError(f"relative minimum detectable effect must be > -1 and != 0, got {mde!r}")
    effect = cohens_h(min(1.0, p_base * (1.0 + mde)), p_base)
    n = math.ceil(required_sample_size(effect, alpha, power, ratio))
    # the solver's root is within its tolerance of the exact one: settle the integer exactly
    if n > _MIN_ARM and achieved_power(effect, n - 1, alpha, ratio) >= power:
        return n - 1
    return n if achieved_power(effect, n, alpha, ratio) >= power else n + 1


def bootstrap_means(values: ArrayLike, n_boot: int = 2000, seed: int = 0) -> FloatArray:
    """Means of ``n_boot`` resamples (with replacement) of ``values``, drawn in bounded chunks."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("bootstrap needs a non-empty one-dimensional sample")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    n = data.size
    chunk = max(1, _MAX_BOOT_CELLS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(rows, n))
        out[start : start + rows] = data[idx].mean(axis=1)
    return out


def percentile_interval(samples: ArrayLike, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval ``[alpha/2, 1 − alpha/2]`` of bootstrap samples."""
    _check_alpha(alpha)
    arr = np.asarray(samples, dtype=np.float64)
    low, high = np.quantile(arr, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_pvalue(diff_samples: ArrayLike) -> float:
    """Two-sided p-value of ``diff = 0`` by inverting the percentile interval.

    ``2·min(P*(d ≤ 0), P*(d ≥ 0))`` with a +1 correction, so it is never exactly zero.
    """
    d = np.asarray(diff_samples, dtype=np.float64)
    b = d.size
    below = (int(np.count_nonzero(d <= 0)) + 1) / (b + 1)
    above = (int(np.count_nonzero(d >= 0)) + 1) / (b + 1)
    return min(1.0, 2 * min(below, above))


def bootstrap_diff(
    boot_first: FloatArray, boot_second: FloatArray, observed: float, alpha: float = 0.05
) -> BootstrapDiff:
    """Combine independent bootstrap means of two samples into a difference interval."""
    if boot_first.shape != boot_second.shape:
        raise ValueError("bootstrap samples must have the same number of resamples")
    diffs = boot_first - boot_second
    low, high = percentile_interval(diffs, alpha)
    return BootstrapDiff(observed, low, high, bootstrap_pvalue(diffs))


def bootstrap_mean_diff_ci(
    first: ArrayLike,
    second: ArrayLike,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> BootstrapDiff:
    """Percentile bootstrap of ``mean(first) − mean(second)``, each sample resampled alone."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    seed_a, seed_b = np.random.SeedSequence(seed).generate_state(2)
    boot_a = bootstrap_means(a, n_boot, int(seed_a))
    boot_b = bootstrap_means(b, n_boot, int(seed_b))
    return bootstrap_diff(boot_a, boot_b, float(a.mean() - b.mean()), alpha)
