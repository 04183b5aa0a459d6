"""Minibatch linear CKA (unbiased HSIC) against an independent, straightforward implementation."""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.analyses.cka import (batch_hsic, depth_pairs, diagonal_columns, diagonal_finish, HsicSums,
                                      minibatch_cka, u_center)


def hsic_song(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC written out as in Song et al. (2012), eq. 5, on raw (uncentred) Gram matrices."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    return float((np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3)))


def cka_reference(X: np.ndarray, Y: np.ndarray, batch: int | None = None) -> float:
    """Minibatch CKA from per-batch Song HSICs (full batch when batch is None)."""
    n = len(X)
    b = batch or n
    xy = xx = yy = 0.0
    for s in range(0, n, b):
        K, L = X[s:s + b] @ X[s:s + b].T, Y[s:s + b] @ Y[s:s + b].T
        xy, xx, yy = xy + hsic_song(K, L), xx + hsic_song(K, K), yy + hsic_song(L, L)
    return xy / np.sqrt(xx * yy)


def grams(X: np.ndarray, batch: int) -> list[np.ndarray]:
    """Per-batch Gram stacks [1, b, b] the way the statistics pass stores them: batch-centred first."""
    out = []
    for s in range(0, len(X), batch):
        x = X[s:s + batch] - X[s:s + batch].mean(0)
        out.append((x @ x.T)[None])
    return out


def ours(X: np.ndarray, Y: np.ndarray, batch: int) -> float:
    return float(minibatch_cka(zip(grams(X, batch), grams(Y, batch)))[0, 0])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 40)) + 3.0  # a large common mean, as post-ReLU activations have
    Y = np.tanh(X @ rng.normal(size=(40, 30))) + 0.5 * rng.normal(size=(512, 30))
    return X, Y


def test_matches_straightforward_song_estimator(data):
    X, Y = data
    for batch in (512, 64, 20):  # 20: uneven batches, the last one smaller (12)
        assert ours(X, Y, batch) == pytest.approx(cka_reference(X, Y, batch), abs=1e-10)
    K, L = X[:50] @ X[:50].T, Y[:50] @ Y[:50].T
    cross, sa, sb = batch_hsic(K[None], L[None])
    assert cross[0, 0] == pytest.approx(hsic_song(K, L), rel=1e-9)
    assert sa[0] == pytest.approx(hsic_song(K, K), rel=1e-9)


def test_self_similarity_is_one(data):
    X, _ = data
    assert ours(X, X, 64) == pytest.approx(1.0, abs=1e-12)
    m = minibatch_cka((K, None) for K in grams(np.stack([X[:, :20], X[:, 20:]], 0).transpose(1, 0, 2)
                                                .reshape(512, -1), 64))
    assert m.shape == (1, 1) and m[0, 0] == pytest.approx(1.0)


def test_orthogonal_and_isotropic_scaling_invariance(data):
    X, Y = data
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    R, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    base = ours(X, Y, 64)
    assert ours(3.7 * X @ Q, Y, 64) == pytest.approx(base, abs=1e-9)
    assert ours(X, 0.02 * Y @ R, 64) == pytest.approx(base, abs=1e-9)


def test_not_invariant_to_arbitrary_invertible_maps(data):
    X, Y = data
    rng = np.random.default_rng(2)
    A = rng.normal(size=(40, 40)) @ np.diag(np.logspace(-2, 2, 40))  # invertible, far from orthogonal
    assert np.linalg.matrix_rank(A) == 40
    assert abs(ours(X @ A, Y, 64) - ours(X, Y, 64)) > 0.05


def test_minibatch_agrees_with_full_batch(data):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2048, 64))
    Y = X[:, :32] @ rng.normal(size=(32, 48)) + rng.normal(size=(2048, 48))
    full = cka_reference(X, Y)
    assert abs(ours(X, Y, 256) - full) < 0.01
    assert 0.1 < full < 0.9  # a non-trivial similarity, not a degenerate 0 or 1


def test_u_centering_ignores_batch_centring_and_needs_four_samples(data):
    X, _ = data
    raw, centred = X[:30] @ X[:30].T, grams(X[:30], 30)[0][0]
    np.testing.assert_allclose(u_center(raw), u_center(centred), atol=1e-8 * np.abs(raw).max())
    with pytest.raises(ValueError):
        u_center(np.eye(3))


def test_depth_pairs_and_diagonal_summary(data):
    assert depth_pairs(3, 5) == [(0, 0), (1, 2), (2, 4)]
    assert depth_pairs(4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert depth_pairs(1, 7) == [(0, 0)]
    X, Y = data
    layers_a = [X[:, :10], X[:, 10:], X]
    layers_b = [Y[:, :15], Y, Y[:, 15:], X[:, :5], X]
    acc = HsicSums(watch=[(i, j) for i, j in depth_pairs(3, 5)])
    for s in range(0, 512, 64):
        Ka = np.stack([g[0] for g in (grams(l[s:s + 64], 64) for l in layers_a)])
        Kb = np.stack([g[0] for g in (grams(l[s:s + 64], 64) for l in layers_b)])
        acc.add(*batch_hsic(Ka, Kb))
    full = acc.cka()
    V = diagonal_columns(np.stack(acc.per_batch), np.arange(3))
    assert V.shape == (8, 9)
    expect = np.mean([full[i, j] for i, j in depth_pairs(3, 5)])
    assert diagonal_finish(V.sum(0)) == pytest.approx(expect)
    assert diagonal_finish(V.mean(0)) == pytest.approx(expect)  # sums or means: the same
    assert full[2, 4] == pytest.approx(ours(X, X, 64)) and full[0, 0] == pytest.approx(ours(X[:, :10], Y[:, :15], 64))
