"""The batch composition of the layer-statistics pass does not bias minibatch CKA on class-sorted data.

Datasets list images sorted by class. Features that cluster by class (as late layers do) make a batch of
one class measure within-class similarity only; the i.i.d. tests in tests/analyses cannot see that. Here
the features are class-clustered, listed by class, batched as the engine batches them (`plan_batches`),
and minibatch CKA (the analysis' estimator) is compared with the full-batch unbiased CKA written out from
Song et al. (2012), eq. 5, on all images at once.
"""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.analyses.cka import minibatch_cka
from beyond_inet.engine.layer_stats import StatsConfig, batch_order, plan_batches
from tests.analyses.test_cka_math import hsic_song  # Song et al. (2012) eq. 5, independent of analyses.cka

N_CLASSES, PER_CLASS, DIM = 64, 16, 6
# Random batches are simple random samples: minibatch and full-batch CKA differ by sampling noise only
# (|diff| <= 0.019 over data seeds 0-2 at these sizes); batches of one class miss by 0.5.
TOL = 0.03


def class_sorted_features(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """X and Y agree on the class (their class parts are linear maps of one class centre) but, within a
    class, Y varies independently of X: full-batch CKA is about 0.6, within-class CKA about 0."""
    rng = np.random.default_rng(seed)
    cls = np.repeat(np.arange(N_CLASSES), PER_CLASS)  # sorted by class, as datasets list images
    centres = 2.0 * rng.normal(size=(N_CLASSES, DIM))
    X = centres[cls] + rng.normal(size=(len(cls), DIM))
    Y = np.concatenate([centres[cls] @ rng.normal(size=(DIM, DIM)), 1.5 * rng.normal(size=(len(cls), DIM))], 1)
    return X, Y


def full_batch_cka(X: np.ndarray, Y: np.ndarray) -> float:
    K, L = X @ X.T, Y @ Y.T
    return hsic_song(K, L) / np.sqrt(hsic_song(K, K) * hsic_song(L, L))


def engine_minibatch_cka(X: np.ndarray, Y: np.ndarray, batch_size: int) -> float:
    """Minibatch CKA over the batches the statistics pass would cut from these (class-sorted) images."""
    chosen, bounds = plan_batches(np.arange(len(X)), StatsConfig(n_images=len(X), batch_size=batch_size))
    grams = []
    for a, b in bounds:
        x, y = X[chosen[a:b]], Y[chosen[a:b]]
        x, y = x - x.mean(0), y - y.mean(0)  # the pass stores Grams of batch-centred vectors
        grams.append(((x @ x.T)[None], (y @ y.T)[None]))
    return float(minibatch_cka(grams)[0, 0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minibatch_cka_matches_full_batch_cka_at_every_batch_size_on_class_sorted_data(seed):
    X, Y = class_sorted_features(seed)
    full = full_batch_cka(X, Y)
    assert 0.4 < full < 0.8  # the case is the intended one: clearly above the within-class value
    got = {b: engine_minibatch_cka(X, Y, b) for b in (16, 64, 256)}
    assert all(abs(v - full) <= TOL for v in got.values()), (full, got)


def test_batch_order_is_a_seeded_permutation_independent_of_batch_size():
    order = batch_order(1000, 0)
    assert sorted(order.tolist()) == list(range(1000)) and order.tolist() != list(range(1000))
    assert np.array_equal(order, batch_order(1000, 0)) and not np.array_equal(order, batch_order(1000, 1))
    pos = np.arange(5000, 6000)
    small, _ = plan_batches(pos, StatsConfig(n_images=1000, batch_size=16))
    big, _ = plan_batches(pos, StatsConfig(n_images=1000, batch_size=256))
    assert np.array_equal(small, big)  # every batch size cuts one image order: batches of 16 nest in 256
    # Few classes per batch: a batch of 16 from 100 classes x 10 images spans many classes, not one or two.
    chosen, bounds = plan_batches(np.arange(1000), StatsConfig(n_images=1000, batch_size=16))
    classes_per_batch = [len(set((chosen[a:b] // 10).tolist())) for a, b in bounds]
    assert np.mean(classes_per_batch) > 12
