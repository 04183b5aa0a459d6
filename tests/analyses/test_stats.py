"""Bootstrap helpers against loop references; McNemar against the exact binomial by hand."""
from __future__ import annotations

from math import comb

import numpy as np
import pytest

from beyond_inet.analyses import stats


def test_mean_ci_equals_loop_reference():
    rng = np.random.default_rng(0)
    v = rng.random(300)
    val, lo, hi = stats.mean_ci(v, n_boot=400, seed=3)
    reps = np.concatenate([v[idx].mean(1) for idx in stats.replicate_indices(300, 400, 3)])
    assert val == pytest.approx(v.mean())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))


def test_ratio_ci_and_chunking_cover_all_replicates(monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK_ELEMS", 1000)  # force many chunks
    num = np.array([1, 0, 1, 1, 0] * 40, float)
    den = np.ones(200)
    val, lo, hi = stats.ratio_ci(num, den, n_boot=1000, seed=0)
    assert val == pytest.approx(0.6) and lo < 0.6 < hi
    assert sum(len(i) for i in stats.replicate_indices(200, 1000, 0)) == 1000


def test_mcnemar_exact_by_hand():
    a = np.array([1] * 10 + [0] * 2 + [1] * 30, bool)  # 10 only-A right, 2 only-B right, 30 both
    b = np.array([0] * 10 + [1] * 2 + [1] * 30, bool)
    p = 2 * sum(comb(12, k) for k in range(0, 3)) / 2**12
    assert stats.mcnemar_exact(a, b) == pytest.approx(min(1.0, p))
    assert stats.mcnemar_exact(a, a) == 1.0


def test_paired_bootstrap_detects_a_real_difference():
    rng = np.random.default_rng(0)
    a = (rng.random(1000) < 0.8).astype(float)
    b = a.copy()
    b[:150] = 0  # B is worse on the same images
    lo, hi, p = stats.paired_bootstrap(lambda i: a[i].mean(1), lambda i: b[i].mean(1), 1000, 500, 0)
    assert lo > 0 and p < 0.01
    lo, hi, p = stats.paired_bootstrap(lambda i: a[i].mean(1), lambda i: a[i].mean(1), 1000, 200, 0)
    assert lo == hi == 0
