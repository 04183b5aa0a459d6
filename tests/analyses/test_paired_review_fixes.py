"""Fixes from the statistics review: paired tests never mix groups, CIs stay 95% whatever alpha, a
bootstrap p-value is never exactly 0, and the robustness average counts a val image once across C and ReaL."""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.analyses import stats
from beyond_inet.analyses.robustness import _unit_id


def _grouped(groups, n=60, seed=0):
    rng = np.random.default_rng(seed)
    gm = stats.GroupedMeans(groups)
    ids = [f"img{i}" for i in range(n)]
    for g in groups:
        gm.add(g, (rng.random(n) < 0.6).astype(float), ids)
    return gm.metric("variants", "top1_avg", lambda M: M.mean(axis=1))


def test_paired_refuses_models_whose_averages_cover_different_groups():
    a = _grouped(["fog/1", "fog/2", "snow/1"])
    b = _grouped(["fog/1", "snow/1"], seed=1)  # one part missing: its columns mean other groups
    with pytest.raises(stats.IncomparableLayouts):
        stats.paired(["a", "b"], [a, b], n_boot=50)
    c = _grouped(["fog/1", "fog/3", "snow/1"], seed=2)  # same column count, different parts
    with pytest.raises(stats.IncomparableLayouts):
        stats.paired(["a", "c"], [a, c], n_boot=50)
    same = _grouped(["fog/1", "fog/2", "snow/1"], seed=3)
    assert len(stats.paired(["a", "same"], [a, same], n_boot=50)) == 1


def test_difference_ci_is_95_percent_whatever_alpha_sets_for_verdicts():
    a = _grouped(["x", "y"], seed=4)
    b = _grouped(["x", "y"], seed=5)
    t05, = stats.paired(["a", "b"], [a, b], n_boot=400, alpha=0.05)
    t20, = stats.paired(["a", "b"], [a, b], n_boot=400, alpha=0.20)
    assert (t05.ci_low, t05.ci_high) == (t20.ci_low, t20.ci_high)


def test_bootstrap_p_is_never_zero():
    p = stats.bootstrap_p(np.full(999, 0.3))
    assert p == pytest.approx(2 / 1000) and p > 0


def test_imagenet_c_and_real_name_the_same_val_image_as_one_unit():
    c = _unit_id("imagenet-c", "n01440764/ILSVRC2012_val_00000293.JPEG")
    real = _unit_id("imagenet-real", "ILSVRC2012_val_00000293.JPEG")
    assert c == real
    assert _unit_id("imagenet-v2", "0/abc.jpeg") != _unit_id("imagenet-sketch", "0/abc.jpeg")
