"""The one scoring path: declared per-sample metrics -> value, CI over images, n, paired tests.

Statistical checks run many seeded repetitions on synthetic data with a known truth, vectorised and small
enough to take seconds.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import Context, Outputs
from beyond_inet.analyses.robustness import ALEXNET_ERR, SEVERITIES, Robustness
from beyond_inet.contracts import Metric

PARTS = [f"{c}/{s}" for c in ALEXNET_ERR for s in SEVERITIES]  # the 75 ImageNet-C parts


def correlated_parts(rng, n_images: int, p_image: np.ndarray | None = None) -> np.ndarray:
    """0/1 correctness [75, n]: each image has its own difficulty q ~ Beta(0.5, 0.5) (mean 0.5), and is
    right in a part with probability q — strongly correlated across the parts, as real images are."""
    q = rng.beta(0.5, 0.5, n_images) if p_image is None else p_image
    return (rng.random((len(PARTS), n_images)) < q).astype(np.float64)


def c_mean_declaration(correct: np.ndarray, ids: list[str]) -> Metric:
    """ImageNet-C mean top-1 declared the way the robustness analysis does (one helper for all)."""
    gm = stats.GroupedMeans(PARTS)
    for p, c in zip(PARTS, correct):
        gm.add(p, c, ids)
    return gm.metric("imagenet-c", "top1", lambda M: M.mean(axis=1))


def test_unit_sums_groups_rows_of_one_image():
    ids, U = stats.unit_sums(["a", "b", "a", "c", "b"], np.array([[1, 1], [0, 1], [1, 1], [1, 1], [1, 1]]))
    assert ids == ["a", "b", "c"]
    np.testing.assert_array_equal(U, [[2, 2], [1, 2], [1, 1]])


def test_mean_declaration_reproduces_mean_ci_exactly():
    """Independent reference: the pre-existing index-matrix bootstrap (stats.mean_ci) with the same seed."""
    v = np.random.default_rng(3).random(157)
    ref = stats.mean_ci(v, 300, 11)
    s = stats.score(stats.mean_metric("d", "m", v, [str(i) for i in range(v.size)]), 300, 11)
    assert s.value == pytest.approx(ref[0], abs=1e-15)
    assert (s.ci_low, s.ci_high) == pytest.approx(ref[1:], abs=1e-12)
    assert s.n == 157


@pytest.fixture
def one_blas_thread():
    """Small bootstrap matrix products are 4x faster on one BLAS thread on a busy 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def test_imagenet_c_ci_covers_the_true_mean_95_percent_of_the_time(one_blas_thread):
    """Images shared by the 75 parts are one unit: coverage ~95%. Treating the 75 x n (image, part) pairs as
    independent samples (the old binomial-per-part rule) makes the CI several times too narrow."""
    rng = np.random.default_rng(0)
    n, reps, naive_reps = 60, 300, 30
    ids = [f"img{i}" for i in range(n)]
    pair_ids = [f"{p}:{i}" for p in PARTS for i in ids]  # every (image, part) its own unit
    cover = cover_naive = 0
    widths, naive_widths = [], []
    for r in range(reps):
        c = correlated_parts(rng, n)
        s = stats.score(c_mean_declaration(c, ids), n_boot=200, seed=int(rng.integers(1 << 30)))
        cover += s.ci_low <= 0.5 <= s.ci_high
        widths.append(s.ci_high - s.ci_low)
        if r < naive_reps:
            naive = stats.score(stats.mean_metric("c", "top1", c.ravel(), pair_ids), n_boot=200, seed=r)
            cover_naive += naive.ci_low <= 0.5 <= naive.ci_high
            naive_widths.append(naive.ci_high - naive.ci_low)
    assert 0.91 <= cover / reps <= 0.985
    assert cover_naive / naive_reps < 0.6
    assert np.mean(widths) / np.mean(naive_widths) > 3


def test_paired_test_false_positive_rate_is_at_most_alpha(one_blas_thread):
    """Two models of equal true accuracy whose per-image skill persists across the 75 parts: the paired
    bootstrap on image units rejects the true null at most ~5% of the time; on (image, part) pairs it
    rejects far more often."""
    rng = np.random.default_rng(1)
    n, reps, naive_reps = 60, 300, 30
    ids = [f"img{i}" for i in range(n)]
    pair_ids = [f"{p}:{i}" for p in PARTS for i in ids]
    rejections = naive_rejections = 0
    for r in range(reps):
        a, b = correlated_parts(rng, n), correlated_parts(rng, n)  # same law, own per-image skill
        seed = int(rng.integers(1 << 30))
        t = stats.paired(["A", "B"], [c_mean_declaration(a, ids), c_mean_declaration(b, ids)], 200, seed)[0]
        rejections += t.p_holm < 0.05
        if r < naive_reps:
            tn = stats.paired(["A", "B"], [stats.mean_metric("c", "t", a.ravel(), pair_ids, test="bootstrap"),
                                           stats.mean_metric("c", "t", b.ravel(), pair_ids, test="bootstrap")],
                              200, seed)[0]
            naive_rejections += tn.p_holm < 0.05
    assert rejections / reps <= 0.07
    assert naive_rejections / naive_reps > 0.3


def _c_outputs(correct: np.ndarray, ids: list[str]) -> dict[str, Outputs]:
    """ImageNet-C outputs whose argmax is right exactly where `correct` [75, n] says."""
    n = len(ids)
    labels = np.arange(n) % 1000
    out = {}
    for p, c in zip(PARTS, correct):
        z = np.zeros((n, 1000), np.float32)
        pred = np.where(c > 0, labels, (labels + 1) % 1000)
        z[np.arange(n), pred] = 5
        out[f"imagenet-c/{p}"] = Outputs(ids, labels.astype(np.int64), z, np.zeros((n, 1), np.float32))
    return out


def test_robustness_imagenet_c_resamples_images_not_parts():
    """The analysis itself: with images always right or always wrong across parts, the honest CI of the
    mean over parts is that of n images (sqrt(75) ~ 8.7x wider than 75 x n independent pairs)."""
    rng = np.random.default_rng(2)
    n = 80
    ids = [f"n0/ILSVRC2012_val_{i:08d}.JPEG" for i in range(n)]
    always = (rng.random(n) < 0.5).astype(np.float64)
    outs = _c_outputs(np.tile(always, (len(PARTS), 1)), ids)
    ctx = Context(None, parts=lambda name: PARTS if name == "imagenet-c" else [], n_boot=400, seed=0)
    res = Robustness().compute(ctx, "m", lambda r: outs.get(r.dataset))
    row = next(r for r in res.rows if r.dataset == "imagenet-c" and r.metric == "top1")
    p = always.mean()
    expected = 2 * 1.96 * math.sqrt(p * (1 - p) / n)
    assert row.value == pytest.approx(p)
    assert 0.75 < (row.ci_high - row.ci_low) / expected < 1.25
    assert row.n == n  # the images it rests on, not 75 x n pairs
    mce = next(r for r in res.rows if r.dataset == "imagenet-c" and r.metric == "mce")
    ref = np.mean([(1 - p) / e for e in ALEXNET_ERR.values()])
    assert mce.value == pytest.approx(ref)


def test_too_few_flag():
    assert stats.too_few(29) and not stats.too_few(30)
    s = stats.score(stats.mean_metric("d", "m", np.array([1.0]), ["x"]), 100, 0)
    assert s.n == 1 and s.too_few


def test_paired_n_counts_the_units_a_ratio_rests_on():
    """Shape bias of two models on 6 shared images: decisions on 3 of them (either model) -> n = 3."""
    ids = [f"i{i}" for i in range(6)]
    sa = np.array([1, 0, 0, 0, 0, 0.0]); ta = np.array([0, 1, 0, 0, 0, 0.0])
    sb = np.array([0, 0, 1, 0, 0, 0.0]); tb = np.zeros(6)
    decl = [Metric("cue-conflict", "shape_bias", np.stack([s, s + t], 1), ids, stats.ratio_finish, rests_on=1)
            for s, t in ((sa, ta), (sb, tb))]
    t = stats.paired(["A", "B"], decl, 50, 0)[0]
    assert t.n == 3 and t.value_a == 0.5 and t.value_b == 1.0
