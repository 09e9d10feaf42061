"""The report's statistics, each from scipy or statsmodels.

Every function takes counts or :class:`Moments` (what a Beam combiner can
merge) and returns plain floats, None where the data cannot support the
statistic (too few elements). Choices, and why (docs/experiments.md):

* a proportion's interval: Wilson score (statsmodels ``proportion_confint``):
  keeps its coverage near 0 and 1, where accuracies live, unlike Wald's;
* two independent arms' accuracies (random or hash split): the Agresti-Caffo
  interval and test for the difference of two proportions (statsmodels
  ``confint_proportions_2indep`` / ``test_proportions_2indep``): closed form,
  good coverage near 1, and the test rejects exactly when the interval
  excludes 0. Not a bootstrap: that needs every element in one place and
  random draws, while these need four counts a combiner merges exactly;
* a mirror's two accuracies (the same elements in both arms, paired): the
  exact (conditional) McNemar test on the discordant pairs (statsmodels
  ``mcnemar``, exact: the central two-sided binomial p-value of ``b`` of
  ``b + c`` at 1/2) and its dual interval: the Clopper-Pearson interval of
  ``c / (b + c)`` (statsmodels ``proportion_confint``, ``method="beta"``),
  mapped to the difference ``(c - b) / n`` with the discordant count held
  fixed. Clopper-Pearson is the inversion of exactly that two-sided binomial
  test (Clopper & Pearson 1934; Agresti, *Categorical Data Analysis*, 3rd
  ed., 11.1.4 for the conditional McNemar interval), so the interval excludes
  0 exactly when p < 1 - confidence. (A t interval of the per-element
  differences did not: 5 of 1,000 pairs discordant, all one way, gave a 95%
  interval excluding 0 with p = 0.062.);
* means (scores, absolute errors): t intervals (scipy ``t.interval``); two
  independent arms' mean absolute errors: Welch's t test (scipy
  ``ttest_ind_from_stats``) with a t interval on Welch's degrees of freedom;
  paired: a one-sample t test of the per-element differences;
* sample-ratio mismatch: Pearson's chi-square goodness of fit of the arms'
  routed counts against the configured weights (scipy ``chisquare``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass
class Moments:
    """Count, mean and sum of squared deviations, mergeable (Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def merge(self, other: Moments) -> None:
        if other.n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2 = other.n, other.mean, other.m2
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else math.nan


Interval = tuple[float | None, float | None]
_NONE: Interval = (None, None)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def mean_interval(m: Moments, confidence: float) -> Interval:
    """t interval of a mean; None below two values."""
    if m.n < 2:
        return _NONE
    if m.m2 <= 0:
        return (m.mean, m.mean)
    lo, hi = sps.t.interval(confidence, m.n - 1, loc=m.mean, scale=m.sd / math.sqrt(m.n))
    return _finite(lo), _finite(hi)


def proportion_interval(k: int, n: int, confidence: float) -> Interval:
    """Wilson score interval of ``k`` successes in ``n``."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return _NONE
    lo, hi = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    return _finite(lo), _finite(hi)


def srm_p_value(observed: list[int], expected_shares: list[float]) -> float | None:
    """Chi-square goodness-of-fit p-value of routed counts against shares."""
    total = sum(observed)
    if total == 0 or len(observed) < 2:
        return None
    expected = np.asarray(expected_shares, dtype=np.float64) * total
    return _finite(sps.chisquare(np.asarray(observed, dtype=np.float64), expected).pvalue)


@dataclass(frozen=True)
class Comparison:
    """``difference`` = other - control, its interval, the p-value and the test's name."""

    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    test: str


def two_proportions(k_other: int, n_other: int, k_control: int, n_control: int,
                    confidence: float) -> Comparison:
    """Difference of two independent proportions (Agresti-Caffo)."""
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        test_proportions_2indep,
    )

    test = "two-proportion (Agresti-Caffo)"
    if n_other == 0 or n_control == 0:
        return Comparison(None, None, None, None, test)
    with warnings.catch_warnings():  # odds ratios at p = 1 divide by zero; unused here
        warnings.simplefilter("ignore", RuntimeWarning)
        result = test_proportions_2indep(k_other, n_other, k_control, n_control,
                                         method="agresti-caffo", compare="diff")
        lo, hi = confint_proportions_2indep(k_other, n_other, k_control, n_control,
                                            method="agresti-caffo", compare="diff",
                                            alpha=1 - confidence)
    return Comparison(k_other / n_other - k_control / n_control, _finite(lo), _finite(hi),
                      _finite(result.pvalue), test)


def paired_proportions(only_other: int, only_control: int, pairs: int,
                       confidence: float) -> Comparison:
    """Difference of two proportions on the same elements: ``only_other``
    (``c``) elements right in the other arm only, ``only_control`` (``b``)
    right in the control only, of ``pairs`` (``n``): ``(c - b) / n``.

    The p-value is the exact McNemar test (statsmodels ``mcnemar``,
    ``exact=True``: ``min(1, 2 * P(X <= min(b, c)))``, X ~ Binomial(b + c,
    1/2)). The interval is its dual: the Clopper-Pearson interval
    ``[pi_lo, pi_hi]`` of ``c / (b + c)`` (statsmodels ``proportion_confint``,
    ``method="beta"``), which excludes 1/2 exactly when that p-value is below
    ``1 - confidence``, mapped to ``(b + c) * (2 * pi - 1) / n`` - the
    conditional interval given the discordant count (Agresti, *Categorical
    Data Analysis*, 3rd ed., section 11.1.4). So the interval excludes 0
    exactly when ``p < 1 - confidence``. No discordant pairs: difference 0,
    interval [0, 0], p = 1.
    """
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import proportion_confint

    test = "McNemar exact (paired)"
    if pairs == 0:
        return Comparison(None, None, None, None, test)
    difference = (only_other - only_control) / pairs
    discordant = only_other + only_control
    p = mcnemar([[0, only_control], [only_other, 0]], exact=True).pvalue
    if discordant == 0:
        return Comparison(difference, 0.0, 0.0, _finite(p), test)
    lo, hi = proportion_confint(only_other, discordant, alpha=1 - confidence, method="beta")
    scale = discordant / pairs
    return Comparison(difference, _finite(scale * (2 * lo - 1)), _finite(scale * (2 * hi - 1)),
                      _finite(p), test)


def welch(other: Moments, control: Moments, confidence: float) -> Comparison:
    """Difference of two independent means (Welch's t test and interval)."""
    test = "Welch t"
    if other.n < 2 or control.n < 2:
        return Comparison(None, None, None, None, test)
    difference = other.mean - control.mean
    v1, v2 = other.m2 / (other.n - 1) / other.n, control.m2 / (control.n - 1) / control.n
    if v1 + v2 == 0:
        return Comparison(difference, difference, difference, None, test)
    p = sps.ttest_ind_from_stats(other.mean, other.sd, other.n, control.mean, control.sd,
                                 control.n, equal_var=False).pvalue
    # Welch-Satterthwaite degrees of freedom (scipy computes the same inside the
    # test but does not return them for summary statistics).
    df = (v1 + v2) ** 2 / (v1 ** 2 / (other.n - 1) + v2 ** 2 / (control.n - 1))
    lo, hi = sps.t.interval(confidence, df, loc=difference, scale=math.sqrt(v1 + v2))
    return Comparison(difference, _finite(lo), _finite(hi), _finite(p), test)


def paired_mean(differences: Moments, confidence: float) -> Comparison:
    """Mean of per-element differences: one-sample t test against 0, t interval."""
    test = "paired t"
    if differences.n < 2:
        return Comparison(None, None, None, None, test)
    if differences.m2 <= 0:
        d = differences.mean
        return Comparison(d, d, d, None if d == 0 else 0.0, test)
    se = differences.sd / math.sqrt(differences.n)
    df = differences.n - 1
    lo, hi = sps.t.interval(confidence, df, loc=differences.mean, scale=se)
    p = 2 * sps.t.sf(abs(differences.mean) / se, df)
    return Comparison(differences.mean, _finite(lo), _finite(hi), _finite(p), test)
