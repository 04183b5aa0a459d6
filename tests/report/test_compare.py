"""Paired tests of the report (compare.py), against independent references.

References: scipy's binomtest (McNemar exact), stats.paired_bootstrap (same resamples), a hand-worked
Holm correction, the calibration / imagenet-x analyses' own metric functions (ECE, error ratio).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from beyond_inet.analyses import stats
from beyond_inet.report import compare as cmp


def test_holm_hand_worked():
    # sorted p: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone: 0.06)
    adj = cmp.holm([0.04, 0.01, 0.03])
    assert np.allclose(adj, [0.06, 0.03, 0.06])
    assert np.allclose(cmp.holm([0.5, 0.9]), [1.0, 1.0])  # 2 x 0.5 capped at 1; 0.9 raised to keep monotone
    out = cmp.holm([0.02, math.nan])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1])  # NaN does not count towards m


def test_verdict_direction():
    assert cmp.verdict("A", "B", 0.1, 0.001, 0.05, True) == "A > B"
    assert cmp.verdict("A", "B", -0.1, 0.001, 0.05, True) == "B > A"
    assert cmp.verdict("A", "B", 0.1, 0.001, 0.05, False) == "B > A"  # ECE: larger is worse
    assert cmp.verdict("A", "B", 0.1, 0.2, 0.05, True) == cmp.NO_DIFF
    assert cmp.verdict("A", "B", 0.0, 0.0, 0.05, True) == cmp.NO_DIFF


def test_mcnemar_equals_binomtest_on_discordant_counts():
    # 15 images A right / B wrong, 5 the other way, 30 both right, 10 both wrong.
    a = np.array([1] * 15 + [0] * 5 + [1] * 30 + [0] * 10)
    b = np.array([0] * 15 + [1] * 5 + [1] * 30 + [0] * 10)
    assert cmp.discordant(a, b) == (15, 5)
    assert stats.mcnemar_exact(a, b) == pytest.approx(binomtest(15, 20, 0.5).pvalue)


def test_replicate_sums_match_stats_paired_bootstrap():
    # continuous per-image values: every row distinct -> the index-resampling path, same resamples as stats
    rng = np.random.default_rng(1)
    a = rng.normal(0.7, 0.3, 300)
    b = a - 0.05 + rng.normal(0, 0.2, 300)
    lo, hi, p = stats.paired_bootstrap(lambda i: a[i].mean(1), lambda i: b[i].mean(1), 300, 400, seed=7)
    reps = cmp.bootstrap_all({"a": [a[:, None]], "b": [b[:, None]]}, cmp.mean_finish, [300], 400, 7)
    d = reps["a"] - reps["b"]
    assert cmp.bootstrap_p(d) == pytest.approx(p)
    assert cmp.percentile(d) == pytest.approx((lo, hi))


def test_compressed_rows_path_has_the_resampling_law():
    # 0/1 outcomes: few distinct rows -> multinomial counts of rows; same law as resampling images
    rng = np.random.default_rng(3)
    a = (rng.random(2000) < 0.7).astype(float)
    b = np.where(rng.random(2000) < 0.8, a, 1 - a)
    V = np.stack([a, b], 1)
    S = cmp.compressed_replicate_sums(V, 4000, 0)
    assert S is not None and S.shape == (4000, 2)
    d = (S[:, 0] - S[:, 1]) / 2000
    ref = cmp.replicate_sums(V, 4000, 0)
    dr = (ref[:, 0] - ref[:, 1]) / 2000
    assert d.mean() == pytest.approx((a - b).mean(), abs=2e-3)
    assert d.std() == pytest.approx(dr.std(), rel=0.08)
    lo, hi, _ = stats.paired_bootstrap(lambda i: a[i].mean(1), lambda i: b[i].mean(1), 2000, 4000, seed=0)
    assert cmp.percentile(d) == pytest.approx((lo, hi), abs=4e-3)
    assert cmp.compressed_replicate_sums(rng.normal(size=(500, 2)), 10, 0) is None  # all rows distinct


def test_shared_replicates_are_reused_between_metrics():
    conf = np.linspace(0.05, 1, 200)
    corr = (np.arange(200) % 3 > 0).astype(float)
    s = cmp.Sample([str(i) for i in range(200)], {"conf": conf, "correct": corr})
    V = {"m1": [cmp.ece_make(15)([s])], "m2": [cmp.ece_make(15)([s])]}
    cache: dict = {}
    e = cmp.bootstrap_all(V, cmp.ece_finish(15), [200], 50, [1], [("u", "ece:15")], cache)
    m = cmp.bootstrap_all(V, cmp.mce_finish(15), [200], 50, [1], [("u", "ece:15")], cache)
    assert len(cache) == 1 and np.array_equal(e["m1"], e["m2"]) and (m["m1"] >= e["m1"] - 1e-12).all()


def test_resample_counts_are_multiplicities():
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    assert cmp.resample_counts(idx, 3).tolist() == [[2, 0, 1], [0, 1, 2]]


def test_ece_and_mce_from_sums_match_calibration_module():
    calibration = pytest.importorskip("beyond_inet.analyses.calibration")
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.05, 1.0, 500)
    conf[:5] = [1 / 15, 2 / 15, 0.5, 1.0, 14 / 15]  # exactly on bin edges: (lower, upper] semantics
    correct = (rng.random(500) < conf).astype(float)
    s = cmp.Sample([str(i) for i in range(500)], {"conf": conf, "correct": correct})
    V = cmp.ece_make(15)([s])
    S = [cmp.column_sums(V)]
    assert cmp.ece_finish(15)(S, [500])[0] == pytest.approx(calibration.ece(conf, correct, 15), abs=1e-12)
    assert cmp.mce_finish(15)(S, [500])[0] == pytest.approx(calibration.mce(conf, correct, 15), abs=1e-12)


def test_ece_hand_worked():
    # two bins used: conf 0.95 (3 images, 2 right) and 0.25 (1 image, right): (|2.85 - 2| + |0.25 - 1|) / 4
    s = cmp.Sample(list("abcd"), {"conf": np.array([0.95, 0.95, 0.95, 0.25]), "correct": np.array([1, 1, 0, 1.0])})
    V = cmp.ece_make(15)([s])
    assert cmp.ece_finish(15)([cmp.column_sums(V)], [4])[0] == pytest.approx((0.85 + 0.75) / 4)


def test_error_ratio_matches_imagenet_x_module():
    ix = pytest.importorskip("beyond_inet.analyses.imagenet_x")
    rng = np.random.default_rng(2)
    n, k = 400, len(ix.FACTORS)
    factors = np.zeros((n, k))
    factors[np.arange(n), rng.integers(0, k - 1, n)] = 1  # the last factor has no image
    correct = (rng.random(n) < 0.7).astype(float)
    ref = ix.factor_accuracies(correct, factors)
    s = cmp.Sample([str(i) for i in range(n)], {"correct": correct, "factors": factors})
    S = [cmp.column_sums(cmp.imagenet_x_make([s]))]
    assert cmp.error_ratio_finish(None)(S, [n])[0] == pytest.approx(ref["error_ratio_mean"])
    assert cmp.error_ratio_finish(3)(S, [n])[0] == pytest.approx(ref["error_ratio"][3])


def test_stratified_mean_point_is_weighted_mean_of_set_means():
    fin = cmp.weighted_mean_finish([0.5, 0.25, 0.25])
    S = [np.array([[3.0]]), np.array([[1.0]]), np.array([[4.0]])]
    assert fin(S, [4, 2, 8])[0] == pytest.approx(0.5 * 0.75 + 0.25 * 0.5 + 0.25 * 0.5)


def test_topk_hits_multilabel_and_padding():
    logits = np.array([[0, 5, 4, 3], [9, 1, 2, 0]], float)
    truth = np.array([[2, -1], [3, -1]])
    assert cmp.topk_hits(logits, truth, 1).tolist() == [0, 0]
    assert cmp.topk_hits(logits, truth, 2).tolist() == [1, 0]
    assert cmp.topk_hits(logits, np.array([[-1, 1], [-1, -1]]), 1).tolist() == [1, 0]


def _comparison(values, pairs):
    return cmp.Comparison("a", "d", "m", True, "mcnemar", False, "", list(values), {m: (v, 0, 0) for m, v in
                                                                                       values.items()}, 10, pairs)


def test_choose_best_and_ties():
    vals = {"x": 0.9, "y": 0.89, "z": 0.5}
    pairs = [cmp.PairResult("x", "y", .9, .89, .01, 0, 0, .5, .5, cmp.NO_DIFF),
             cmp.PairResult("x", "z", .9, .5, .4, 0, 0, 1e-6, 2e-6, "x > z", "x"),
             cmp.PairResult("y", "z", .89, .5, .39, 0, 0, 1e-6, 2e-6, "y > z", "y")]
    c = cmp.choose(vals, True, _comparison(vals, pairs))
    assert c.best == "x" and c.tied == ["x", "y"] and c.tested
    low = cmp.choose({"x": 0.2, "y": 0.1}, False, None)
    assert low.best == "y" and not low.tested
    assert cmp.choose({"x": 0.2}, True, None).text.startswith("only one model")
