"""One restriction rule for datasets over a subset of the ImageNet classes: accuracy's top-1 on ImageNet-R (and
a user's ImageNet-subset folder) is the argmax over the subset's columns, the robustness analysis' rule."""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.analyses import Context, Request
from beyond_inet.analyses.accuracy import Accuracy
from beyond_inet.analyses.robustness import top1_correct
from beyond_inet.contracts import Outputs
from beyond_inet.data.labelspaces import subset_indices


def test_accuracy_on_imagenet_r_takes_the_argmax_over_its_200_classes():
    rng = np.random.default_rng(0)
    cols = subset_indices("imagenet-r")
    n = 300
    labels = cols[rng.integers(0, cols.size, n)]
    logits = rng.normal(size=(n, 1000)).astype(np.float32)
    logits[np.arange(n), labels] += 2.0
    outside = np.setdiff1d(np.arange(1000), cols)
    logits[np.arange(0, n, 2), outside[rng.integers(0, outside.size, n // 2)]] += 8.0  # a class R does not have
    out = Outputs([f"r{i}" for i in range(n)], labels, logits, np.zeros((n, 2), np.float32))
    ctx = Context(None, options={"accuracy_datasets": ["imagenet-r"]}, n_boot=50)
    res = Accuracy().compute(ctx, "m", lambda req: out if req == Request("imagenet-r") else None)
    rows = {r.metric: r for r in res.rows}
    want = top1_correct(logits, labels, cols).mean()
    assert want != pytest.approx((logits.argmax(1) == labels).mean(), abs=0.05)  # the rules differ here
    assert rows["top1"].value == pytest.approx(want, abs=1e-12)
    assert rows["n_classes"].value == 200 and rows["top1"].n == n
    z = logits[:, cols]
    top5 = np.argsort(-z, axis=1)[:, :5]
    assert rows["top5"].value == pytest.approx((cols[top5] == labels[:, None]).any(1).mean(), abs=1e-12)
