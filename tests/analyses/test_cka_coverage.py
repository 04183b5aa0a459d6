"""The CKA interval covers the population CKA at its stated rate.

Many datasets are drawn from one known population: a mixture of 64 class clusters, so that features
cluster by class as late layers do, whose linear CKA follows from its covariances (Kornblith et al. 2019:
CKA = ||Σ_xy||²_F / (||Σ_xx||_F ||Σ_yy||_F); the unbiased HSIC estimates ||Σ_xy||²_F). Each dataset is
cut into random minibatches (i.i.d. draws, as the shuffled statistics pass gives), the analysis' own
per-batch columns and interval are computed, and the hits are counted. The longer benchmark
(benchmarks/bench_cka_coverage.py) runs more datasets and batch counts.
"""
from __future__ import annotations

import numpy as np

from beyond_inet.analyses.cka import (MIN_CI_BATCHES, batch_hsic, diagonal_columns, diagonal_finish,
                                      jackknife_columns)

DIM, NOISE_Y = 6, 1.5


def population(seed: int = 0, n_classes: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Class centres C and the map B: x = c + e, y = [c B, NOISE_Y f], c uniform over C's rows, e, f ~ N(0, I)."""
    rng = np.random.default_rng(seed)
    return 2.0 * rng.normal(size=(n_classes, DIM)), rng.normal(size=(DIM, DIM))


def population_cka(C: np.ndarray, B: np.ndarray) -> float:
    Cc = C - C.mean(0)
    S = Cc.T @ Cc / len(C)  # covariance of the class centre
    zero = np.zeros((DIM, DIM))
    sxx = S + np.eye(DIM)
    sxy = np.concatenate([S @ B, zero], 1)
    syy = np.block([[B.T @ S @ B, zero], [zero, NOISE_Y ** 2 * np.eye(DIM)]])
    return float(np.sum(sxy ** 2) / np.sqrt(np.sum(sxx ** 2) * np.sum(syy ** 2)))


def one_dataset(rng, C, B, n_batches: int, batch: int) -> tuple[float, float, float]:
    """(estimate, lo, hi) of the diagonal summary on one dataset, one layer pair."""
    rows = []
    for _ in range(n_batches):
        cls = rng.integers(0, len(C), batch)
        x = C[cls] + rng.normal(size=(batch, DIM))
        y = np.concatenate([C[cls] @ B, NOISE_Y * rng.normal(size=(batch, DIM))], 1)
        cross, sa, sb = batch_hsic((x @ x.T)[None], (y @ y.T)[None])
        rows.append(np.concatenate([cross[0], sa, sb]))
    V = diagonal_columns(np.array(rows), np.arange(1))
    return (float(diagonal_finish(V.sum(0))), *jackknife_columns(V))


def test_interval_covers_the_population_cka_at_95_percent_with_the_fewest_batches_it_is_given_for():
    C, B = population()
    true = population_cka(C, B)
    rng = np.random.default_rng(1)
    runs = [one_dataset(rng, C, B, MIN_CI_BATCHES, 32) for _ in range(1000)]
    est = np.array([r[0] for r in runs])
    hits = np.mean([lo <= true <= hi for _, lo, hi in runs])
    assert abs(est.mean() - true) < 0.01  # the estimator itself is (nearly) unbiased at 10 random batches
    # 1000 datasets: the binomial SE of a 95% rate is 0.7 points; the percentile bootstrap over batches
    # gave 90-92% here (too narrow), the jackknife-t 94-95%.
    assert 0.93 <= hits <= 0.97, hits
