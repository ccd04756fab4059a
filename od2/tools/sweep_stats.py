"""Statistics over seeds for ``od2 report SWEEP_DIR``: Student t intervals of a mean and of paired differences.

Pure functions on plain numbers (no files, no tensors). A sweep has few seeds (2 to 10), so intervals use the t
distribution with n - 1 degrees of freedom, not the normal. Two arms are compared by their paired differences over
the seeds both finished: a seed fixes the data order, the augmentation draws and the initialisation of both arms
alike, so subtracting per seed removes that shared part of the noise (a paired t test, ``scipy.stats.ttest_rel``).

The t quantile and the t test's p-value are computed here from the closed form of Student's t distribution for an
integer number of degrees of freedom (Abramowitz & Stegun 26.7.3-4), so that od2 itself does not import scipy
(scipy stays a test dependency, the reference these functions are checked against).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MeanInterval", "PairedDifference", "mean_interval", "paired_difference", "seeds_for_power", "t_quantile",
           "t_two_sided_p"]

# Differences of COCO numbers carry float rounding of ~1e-16; a spread below this is no spread at all.
_ZERO_SPREAD = 1e-12
_BISECTION_STEPS = 200  # halvings of [0, pi/2]: far past double precision
MAX_PLANNED_SEEDS = 1000  # seeds_for_power looks no further


def _two_sided_mass(theta: float, df: int) -> float:
    """P(|T| <= sqrt(df) * tan(theta)) for Student's t with an integer ``df`` >= 1 (A&S 26.7.3 and 26.7.4)."""
    sin, cos = math.sin(theta), math.cos(theta)
    cos2 = cos * cos
    if df % 2 == 1:  # odd: 2/pi * (theta + sin * cos * (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ... up to cos^(df-3)))
        if df == 1:
            return 2.0 * theta / math.pi
        term, total = cos, cos
        for k in range(1, (df - 1) // 2):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + sin * total)
    term, total = 1.0, 1.0  # even: sin * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2))
    for k in range(1, df // 2):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return sin * total


def _check_df(df: int) -> None:
    if int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {df}")


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided critical value t* of Student's t with ``df`` degrees of freedom: P(|T| <= t*) = confidence,
    i.e. ``scipy.stats.t.ppf((1 + confidence) / 2, df)``."""
    _check_df(df)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    low, high = 0.0, math.pi / 2  # the mass grows with theta from 0 to 1
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if _two_sided_mass(middle, int(df)) < confidence:
            low = middle
        else:
            high = middle
    return math.sqrt(df) * math.tan((low + high) / 2)


def t_two_sided_p(statistic: float, df: int) -> float:
    """P(|T| >= |statistic|) for Student's t with ``df`` degrees of freedom (the two-sided p-value of a t test)."""
    _check_df(df)
    if math.isinf(statistic):
        return 0.0
    return max(0.0, 1.0 - _two_sided_mass(math.atan(abs(statistic) / math.sqrt(df)), int(df)))


@dataclass(frozen=True)
class MeanInterval:
    """Mean of ``n`` numbers with its two-sided t interval; ``low``/``high`` are None when n < 2 (undefined)."""

    n: int
    mean: float | None  # None when n == 0
    sd: float | None  # sample standard deviation (n - 1 in the denominator); None when n < 2
    low: float | None
    high: float | None
    confidence: float

    @property
    def defined(self) -> bool:
        """True when the interval exists (at least 2 numbers)."""
        return self.low is not None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    @property
    def zero_spread(self) -> bool:
        """All numbers (2 or more) equal: the interval has width 0, which says nothing about the next seed."""
        return self.sd == 0.0


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval:
    """Mean and ``confidence`` t interval (n - 1 degrees of freedom) of ``values``: mean +- t* * sd / sqrt(n), as
    ``scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=scipy.stats.sem(values))``."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return MeanInterval(0, None, None, None, None, confidence)
    mean = math.fsum(values) / n
    if n == 1:
        return MeanInterval(1, mean, None, None, None, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    if sd <= _ZERO_SPREAD * max(1.0, abs(mean)):
        sd = 0.0
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return MeanInterval(n, mean, sd, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """An arm minus the reference arm over the seeds both finished (same seed), with its paired t interval."""

    seeds: tuple[int, ...]  # the paired seeds, ascending
    differences: tuple[float, ...]  # arm - reference, one per seed
    interval: MeanInterval
    p_value: float | None  # two-sided paired t test (scipy.stats.ttest_rel); None when undefined

    @property
    def signs(self) -> str:
        """One sign per paired seed, e.g. ``+ + -`` (``0`` for a tie)."""
        return " ".join("+" if d > 0 else "-" if d < 0 else "0" for d in self.differences)

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` when the interval lies above / below 0, else ``not resolved`` (the interval
        contains 0, or is undefined with fewer than 2 paired seeds)."""
        if not self.interval.defined:
            return "not resolved"
        if self.interval.low > 0:
            return "better"
        if self.interval.high < 0:
            return "worse"
        return "not resolved"


def paired_difference(arm: Mapping[int, float], reference: Mapping[int, float],
                      confidence: float = 0.95) -> PairedDifference:
    """``arm[seed] - reference[seed]`` over the seeds in both, their mean, ``confidence`` t interval and the paired t
    test's p-value. Seeds only one side finished are left out (they carry no pairing)."""
    seeds = tuple(sorted(set(arm) & set(reference)))
    differences = tuple(float(arm[s]) - float(reference[s]) for s in seeds)
    interval = mean_interval(differences, confidence)
    p_value = None
    if interval.defined:
        if interval.sd > 0:
            p_value = t_two_sided_p(interval.mean / (interval.sd / math.sqrt(interval.n)), interval.n - 1)
        elif interval.mean != 0:  # every seed moved by the same nonzero amount: |t| is infinite
            p_value = 0.0
    return PairedDifference(seeds, differences, interval, p_value)


def seeds_for_power(mean: float, sd: float, confidence: float = 0.95, power: float = 0.8,
                    max_seeds: int = MAX_PLANNED_SEEDS) -> int | None:
    """Paired seeds a sweep needs for its ``confidence`` interval of a difference to exclude 0 with probability
    ``power``, if the true mean difference is ``mean`` and the per-seed spread ``sd`` (the sample-size rule of a
    paired t test): the smallest n >= 2 with (t*_{n-1} + t_{power, n-1}) * sd / sqrt(n) <= |mean|, where t* is the
    two-sided ``confidence`` quantile and t_{power} the one-sided ``power`` quantile of Student's t with n - 1
    degrees of freedom. This approximates the noncentral t power (``scipy.stats.nct``) to within a seed.

    Returns None when no number of seeds up to ``max_seeds`` does (a mean of 0 never does); 2 when ``sd`` is 0
    and the mean is not.
    """
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie strictly between 0 and 1, got {power}")
    if sd < 0:
        raise ValueError(f"sd must be >= 0, got {sd}")
    if mean == 0:
        return None
    if sd == 0:
        return 2

    def resolves(n: int) -> bool:  # the needed difference falls as n grows, so n is found by bisection
        return (t_quantile(confidence, n - 1) + t_quantile(2 * power - 1, n - 1)) * sd / math.sqrt(n) <= abs(mean)

    if not resolves(max_seeds):
        return None
    low, high = 1, max_seeds  # resolves(high) holds; low is below every n that does
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if resolves(middle) else (middle, high)
    return high
