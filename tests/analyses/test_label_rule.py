"""One label rule per dataset: every analysis reporting top-1 of the same (model, dataset, view) agrees.

On a multi-label set (scikit-image photos: ReaL-style sets of acceptable classes) the demo used to report
100% from `accuracy` and 50% from `invariance` for the same model and images: one used the label set, the
other the first label only.
"""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.analyses import Context, get_analysis, load_builtin
from beyond_inet.analyses.base import Outputs

DS = "skimage-photos"


def multilabel_outputs(n: int = 40) -> Outputs:
    """Half the images are predicted as their SECOND acceptable class, a quarter as the first, a quarter wrong."""
    rng = np.random.default_rng(0)
    ml = np.full((n, 3), -1, np.int64)
    ml[:, 0] = rng.choice(1000, n, replace=False)
    ml[:, 1] = (ml[:, 0] + 500) % 1000
    pred = np.where(np.arange(n) % 2 == 0, ml[:, 1], ml[:, 0])
    pred[np.arange(n) % 4 == 3] = (ml[np.arange(n) % 4 == 3, 0] + 1) % 1000
    z = rng.normal(0, 0.1, (n, 1000)).astype(np.float32)
    z[np.arange(n), pred] = 8
    return Outputs([f"photo{i}" for i in range(n)], ml[:, 0].copy(), z, np.zeros((n, 2), np.float32), ml)


def test_every_top1_of_one_view_is_the_same():
    load_builtin()
    out = multilabel_outputs()
    ctx = Context(None, options={"accuracy_datasets": [DS], "calibration_datasets": [DS], "invariance_dataset": DS,
                                 "invariance_scales": [1], "invariance_shifts": [], "invariance_resolutions": []},
                  n_boot=50)
    top1 = {}
    for name in ("accuracy", "calibration", "invariance"):
        res = get_analysis(name).compute(ctx, "m", lambda req: out if req.dataset == DS else None)
        for r in res.rows:
            if r.dataset == DS and (r.metric == "top1" or r.metric.startswith("top1_scale_")
                                    or r.metric == "top1_mean_scale"):
                top1[(name, r.metric)] = r.value
    assert {("accuracy", "top1"), ("calibration", "top1"), ("invariance", "top1_scale_1")} <= set(top1)
    truth = np.mean([(i % 4) != 3 for i in range(len(out))])  # 3/4: any acceptable class counts
    for key, v in top1.items():
        assert v == pytest.approx(truth), key
