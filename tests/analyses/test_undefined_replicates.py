"""Bootstrap replicates in which a ratio is undefined (no unit of its denominator drawn) are not silently
dropped when they are many: the interval is then withheld (NaN), not shown conditional and too narrow."""
from __future__ import annotations

import math

import numpy as np

from beyond_inet.analyses.stats import bootstrap_p, percentile_ci, percentile_interval, score
from beyond_inet.contracts import Metric


def _ratio_metric(n_units: int, n_decisions: int) -> Metric:
    """Shape-bias-like: column 0 = shape decision, column 1 = a cue decision at all; ratio of sums."""
    cols = np.zeros((n_units, 2))
    cols[:n_decisions, 1] = 1
    cols[: n_decisions // 2 + 1, 0] = 1
    return Metric("cue-conflict", "shape_bias", cols, [f"u{i}" for i in range(n_units)],
                  lambda S: S[:, 0] / S[:, 1], True, "fraction", rests_on=1)


def test_a_ratio_over_a_handful_of_decisions_gets_no_interval():
    # 3 decisions among 200 images: a resample draws none of them with probability (197/200)^200 = 5%,
    # more than alpha/2 = 2.5% of the replicates, so the conditional interval is withheld.
    s = score(_ratio_metric(200, 3), n_boot=2000, seed=0)
    assert math.isfinite(s.value) and s.n == 3
    assert math.isnan(s.ci_low) and math.isnan(s.ci_high)


def test_a_ratio_over_enough_decisions_keeps_its_interval():
    s = score(_ratio_metric(200, 12), n_boot=2000, seed=0)  # (188/200)^200 = 0.4% undefined
    assert s.ci_low < s.value < s.ci_high


def test_the_threshold_is_alpha_over_two_of_the_replicates():
    v = np.linspace(0, 1, 1000)
    few, many = v.copy(), v.copy()
    few[:25] = np.nan  # 2.5%: dropped, interval from the rest
    many[:26] = np.nan  # 2.6%: withheld
    assert percentile_interval(few) == tuple(np.quantile(v[25:], [0.025, 0.975]))
    assert all(math.isnan(x) for x in percentile_interval(many))
    assert math.isnan(bootstrap_p(many)) and math.isfinite(bootstrap_p(few))
    lo, hi = percentile_ci(np.stack([few, many], axis=1))
    assert math.isfinite(lo[0]) and math.isnan(lo[1]) and math.isnan(hi[1])
