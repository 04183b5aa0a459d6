"""Accuracy: top-k against scikit-learn, multi-label and ReaL scoring against hand-worked cases."""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.analyses import Context, Request
from beyond_inet.analyses.accuracy import Accuracy, real_correct, topk_correct
from beyond_inet.data.labelspaces import real_labels
from beyond_inet.engine.outputs import Outputs


def test_topk_matches_sklearn():
    from sklearn.metrics import top_k_accuracy_score

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, 500)
    logits[np.arange(250), labels[:250]] += 3.0
    for k in (1, 5):
        want = top_k_accuracy_score(labels, logits, k=k, labels=np.arange(1000))
        assert topk_correct(logits, labels, k).mean() == pytest.approx(want, abs=1e-12)


def test_multilabel_scoring_hand_worked():
    logits = np.zeros((3, 1000), np.float32)
    logits[0, 282] = logits[1, 10] = logits[2, 967] = 5
    multi = np.array([[281, 282, 285], [281, -1, -1], [-1, -1, -1]])
    assert topk_correct(logits, multi[:, 0], 1, multi).tolist() == [1.0, 0.0, 0.0]


def test_real_scoring_uses_val_numbers_and_skips_empty_sets():
    real = real_labels()
    empty = next(i for i, r in enumerate(real) if not r) + 1
    full = next(i for i, r in enumerate(real) if len(r) >= 2) + 1
    ids = [f"ILSVRC2012_val_{full:08d}.JPEG", f"ILSVRC2012_val_{empty:08d}.JPEG", "not-a-val-name.jpg"]
    logits = np.zeros((3, 1000), np.float32)
    logits[0, real[full - 1][1]] = 1.0  # the second ReaL label: correct
    corr, keep = real_correct(logits, ids)
    assert keep.tolist() == [True, False, False] and corr[0] == 1.0


def test_accuracy_rows_and_ci():
    rng = np.random.default_rng(1)
    n = 400
    labels = rng.integers(0, 1000, n)
    logits = rng.normal(size=(n, 1000)).astype(np.float32)
    logits[np.arange(300), labels[:300]] += 10  # 75% right
    ids = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n)]
    out = Outputs(ids, labels, logits, np.zeros((n, 4), np.float32))
    ctx = Context(None, options={"accuracy_datasets": ["imagenet-val"]}, n_boot=500)
    res = Accuracy().compute(ctx, "m", lambda req: out if req == Request("imagenet-val") else None)
    rows = {r.metric: r for r in res.rows}
    assert rows["top1"].value == pytest.approx(0.75) and rows["top1"].n == n
    assert rows["top1"].ci_low < 0.75 < rows["top1"].ci_high
    se = np.sqrt(0.75 * 0.25 / n)  # the bootstrap CI is close to the normal approximation
    assert rows["top1"].ci_high - rows["top1"].ci_low == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert "top1_real" in rows


def test_list_options_from_the_command_line():
    ctx = Context(None, options={"accuracy_datasets": "imagenet-sample, skimage-photos"})
    assert [r.dataset for r in Accuracy().requests(ctx)] == ["imagenet-sample", "skimage-photos"]
    ctx = Context(None, options={"invariance_resolutions": 336})
    assert ctx.option_list("invariance_resolutions", []) == [336]
