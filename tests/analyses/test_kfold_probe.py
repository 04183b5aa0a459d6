"""The k-fold linear probe of a user's own-classes folder: stratified folds, every image predicted once by a
probe that never saw it (a leak would show as memorised noise)."""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.analyses.accuracy import kfold_probe_predictions, stratified_folds


@pytest.mark.parametrize("sizes,k", [((5, 5, 5), 5), ((12, 7, 5, 30), 5), ((3, 9), 3), ((2, 2, 40), 2)])
def test_folds_are_stratified_and_cover_every_sample_once(sizes, k):
    y = np.repeat(np.arange(len(sizes)), sizes)
    y = y[np.random.default_rng(1).permutation(y.size)]  # order must not matter
    fold = stratified_folds(y, k, seed=3)
    assert fold.shape == y.shape and set(fold.tolist()) <= set(range(k))
    for c, n in enumerate(sizes):
        per_fold = np.bincount(fold[y == c], minlength=k)
        assert per_fold.sum() == n and per_fold.max() - per_fold.min() <= 1  # as even as the count allows
    sizes_of_folds = np.bincount(fold, minlength=k)
    assert sizes_of_folds.max() - sizes_of_folds.min() <= len(sizes)
    assert np.array_equal(fold, stratified_folds(y, k, seed=3))  # seeded


def test_out_of_fold_predictions_do_not_memorise_noise():
    """Pure-noise features with random labels: a probe fitted on all samples memorises them (train accuracy
    ~1), so a leak of the test fold would score far above chance; out-of-fold it stays near 1/3."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 128)).astype(np.float32)
    y = np.repeat(np.arange(3), 30)
    pred = kfold_probe_predictions(x, y, 5, seed=0)
    assert (pred >= 0).all()
    assert (pred == y).mean() < 0.6
    from beyond_inet.analyses.transfer import run_probe

    leak = run_probe("lbfgs", x, y, x, n_classes=3).test_pred  # the same probe scored on what it saw
    assert (leak == y).mean() > 0.9


def test_separable_classes_are_found():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 32)) * 5
    y = np.repeat(np.arange(4), 8)
    x = (centres[y] + rng.normal(size=(32, 32))).astype(np.float32)
    assert (kfold_probe_predictions(x, y, 4, seed=0) == y).mean() == 1.0
