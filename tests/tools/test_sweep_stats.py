"""Statistics over seeds (``od2.tools.sweep_stats``) against scipy on made-up numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from od2.tools.sweep_stats import mean_interval, paired_difference, seeds_for_power, t_quantile, t_two_sided_p


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_t_quantile_matches_scipy_for_df_1_to_30(confidence):
    for df in range(1, 31):
        expected = stats.t.ppf((1 + confidence) / 2, df)
        assert t_quantile(confidence, df) == pytest.approx(expected, rel=1e-10), df


def test_t_two_sided_p_matches_scipy():
    for df in range(1, 31):
        for statistic in (0.0, 0.3, -1.2, 2.5, 7.0):
            assert t_two_sided_p(statistic, df) == pytest.approx(2 * stats.t.sf(abs(statistic), df), abs=1e-12)


@pytest.mark.parametrize("bad", [(0.95, 0), (0.95, 1.5), (1.0, 3), (0.0, 3)])
def test_t_quantile_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        t_quantile(*bad)


@pytest.mark.parametrize("values", [[0.412, 0.398], [0.412, 0.398, 0.431, 0.405, 0.420]], ids=["n=2", "n=5"])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_mean_interval_matches_scipy(values, confidence):
    result = mean_interval(values, confidence)
    low, high = stats.t.interval(confidence, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert result.n == len(values) and result.defined and not result.zero_spread
    assert result.mean == pytest.approx(np.mean(values), abs=1e-15)
    assert result.sd == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert (result.low, result.high) == (pytest.approx(low, rel=1e-10), pytest.approx(high, rel=1e-10))


def test_mean_interval_of_one_or_no_value_is_undefined():
    one = mean_interval([0.4])
    assert one.mean == 0.4 and not one.defined and one.half_width is None and one.sd is None
    none = mean_interval([])
    assert none.n == 0 and none.mean is None and not none.defined


@pytest.mark.parametrize("n", [2, 5])
def test_paired_difference_matches_ttest_rel(n):
    rng = np.random.default_rng(n)
    reference = rng.uniform(0.3, 0.5, n)
    arm = reference + rng.normal(0.01, 0.01, n)
    result = paired_difference(dict(enumerate(arm)), dict(enumerate(reference)))
    test = stats.ttest_rel(arm, reference)
    low, high = test.confidence_interval(0.95)
    assert result.p_value == pytest.approx(test.pvalue, rel=1e-9)
    assert (result.interval.low, result.interval.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert result.interval.mean == pytest.approx(np.mean(arm - reference), abs=1e-15)
    assert result.signs == " ".join("+" if d > 0 else "-" for d in arm - reference)


def test_paired_difference_pairs_by_seed_and_leaves_out_missing_seeds():
    reference = {1: 0.40, 2: 0.42, 3: 0.41, 5: 0.39}
    arm = {1: 0.43, 3: 0.40, 4: 0.50, 5: 0.44}  # seed 2 failed for the arm, seed 4 for the reference
    result = paired_difference(arm, reference)
    assert result.seeds == (1, 3, 5)
    assert result.differences == pytest.approx((0.03, -0.01, 0.05))
    assert result.signs == "+ - +"
    test = stats.ttest_rel([0.43, 0.40, 0.44], [0.40, 0.41, 0.39])
    assert result.p_value == pytest.approx(test.pvalue, rel=1e-9)
    assert (result.interval.low, result.interval.high) == pytest.approx(test.confidence_interval(0.95))
    assert result.verdict == "not resolved"  # the interval contains 0


def test_zero_variance_difference_has_an_interval_of_width_zero():
    # every seed gains the same 0.25 (exact in binary) and 0.2 (with float rounding): scipy gives nan or a t of 1e15
    for gain in (0.25, 0.2):
        reference = {1: 0.25, 2: 0.5, 3: 0.125}
        result = paired_difference({s: v + gain for s, v in reference.items()}, reference)
        assert result.interval.zero_spread and result.interval.half_width == 0.0
        assert result.interval.low == result.interval.high == pytest.approx(gain)
        assert result.p_value == 0.0 and result.verdict == "better" and result.signs == "+ + +"
    same = paired_difference(reference, reference)
    assert same.interval.zero_spread and same.p_value is None and same.signs == "0 0 0"
    assert same.verdict == "not resolved"


def test_fewer_than_two_paired_seeds_leave_the_interval_undefined():
    result = paired_difference({1: 0.5, 2: 0.6}, {2: 0.4, 3: 0.4})
    assert result.seeds == (2,) and not result.interval.defined and result.p_value is None
    assert result.verdict == "not resolved" and result.signs == "+"
    assert not any(isinstance(v, float) and math.isnan(v) for v in (result.interval.mean, result.interval.sd))


def test_verdict_follows_the_interval():
    reference = {1: 0.40, 2: 0.41, 3: 0.42}
    assert paired_difference({1: 0.45, 2: 0.455, 3: 0.47}, reference).verdict == "better"
    assert paired_difference({1: 0.35, 2: 0.355, 3: 0.37}, reference).verdict == "worse"


def exact_paired_power(n: int, effect: float, confidence: float) -> float:
    """Power of the two-sided paired t test with n pairs at standardised effect mean/sd (noncentral t)."""
    critical = stats.t.ppf((1 + confidence) / 2, n - 1)
    noncentrality = effect * math.sqrt(n)
    return stats.nct.sf(critical, n - 1, noncentrality) + stats.nct.cdf(-critical, n - 1, noncentrality)


def exact_seeds_for_power(effect: float, confidence: float = 0.95, power: float = 0.8) -> int:
    """The smallest number of pairs whose exact (noncentral t) power reaches ``power``."""
    return next(n for n in range(2, 1000) if exact_paired_power(n, abs(effect), confidence) >= power)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
@pytest.mark.parametrize("effect", [0.3, 0.5, 0.8, 1.0, 1.5, 2.5])
def test_seeds_for_power_is_within_a_seed_of_the_noncentral_t_answer(effect, confidence):
    exact = exact_seeds_for_power(effect, confidence)
    planned = seeds_for_power(effect * 0.02, 0.02, confidence, power=0.8)
    assert abs(planned - exact) <= 1
    assert exact_paired_power(planned, effect, confidence) > 0.7
    assert seeds_for_power(-effect * 0.02, 0.02, confidence) == planned  # the sign does not matter


def test_seeds_for_power_grows_with_the_spread_and_has_limits():
    assert seeds_for_power(0.02, 0.01) < seeds_for_power(0.02, 0.02) < seeds_for_power(0.02, 0.04)
    assert seeds_for_power(0.02, 0.0) == 2  # no spread: any two seeds resolve it
    assert seeds_for_power(0.0, 0.02) is None  # no difference: no number of seeds resolves it
    assert seeds_for_power(0.0001, 0.05, max_seeds=50) is None
    with pytest.raises(ValueError):
        seeds_for_power(0.02, 0.01, power=1.0)
    with pytest.raises(ValueError):
        seeds_for_power(0.02, -0.01)
