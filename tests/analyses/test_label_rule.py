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


def subset_outputs(ds: str, n: int = 60) -> tuple[Outputs, np.ndarray]:
    """Images of a class-subset dataset, class-sorted (5 per class): the highest of the 1000 logits is a class
    outside the subset for a third of them (wrong over 1000 classes, right over the subset's), a class inside
    the subset but not the label for another third (wrong either way), the label for the rest."""
    from beyond_inet.data.labelspaces import subset_indices

    classes = subset_indices(ds)
    outside = np.setdiff1d(np.arange(1000), classes)
    rng = np.random.default_rng(3)
    y = np.repeat(classes[rng.choice(200, n // 5, replace=False)], 5)
    z = rng.normal(0, 1.0, (n, 1000)).astype(np.float32)
    r = np.arange(n)
    z[r, y] = 4 + rng.random(n).astype(np.float32)
    third = r % 3
    z[r[third == 0], outside[r[third == 0]]] = 9
    wrong = classes[(np.searchsorted(classes, y) + 1) % 200]
    z[r[third == 1], wrong[third == 1]] = 6
    return Outputs([f"{ds}/img{i}.JPEG" for i in r], y, z, np.zeros((n, 2), np.float32), None), classes


@pytest.mark.parametrize("ds", ["imagenet-a", "imagenet-r"])
def test_class_subsets_are_scored_over_their_classes_by_every_analysis(ds):
    """accuracy, robustness, calibration and invariance (ImageNet-A/R used to get a 1000-way argmax in
    invariance, and A a 1000-way softmax in calibration, while accuracy and robustness cut them to the 200
    classes) report one top-1, and calibration's ECE, Brier and NLL
    are those of the 200-class softmax (netcal and a hand-written softmax as references)."""
    from netcal.metrics import ECE

    load_builtin()
    out, classes = subset_outputs(ds)
    ctx = Context(None, options={"accuracy_datasets": [ds], "calibration_datasets": [ds], "invariance_dataset": ds,
                                 "invariance_scales": [1], "invariance_shifts": [], "invariance_resolutions": []},
                  n_boot=50)
    rows = {}
    for name in ("accuracy", "robustness", "calibration", "invariance"):
        res = get_analysis(name).compute(ctx, "m", lambda req: out if req.dataset == ds else None)
        rows.update({(name, r.metric): r.value for r in res.rows if r.dataset == ds})
    z = out.logits[:, classes].astype(np.float64)
    lab = np.searchsorted(classes, out.labels)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top1 = float((p.argmax(1) == lab).mean())
    assert top1 == pytest.approx(2 / 3) and float((out.logits.argmax(1) == out.labels).mean()) == pytest.approx(1 / 3)
    for name in ("accuracy", "robustness", "calibration"):
        assert rows[(name, "top1")] == pytest.approx(top1, abs=1e-12), name
    assert rows[("invariance", "top1_scale_1")] == pytest.approx(top1, abs=1e-12)
    assert rows[("calibration", "ece")] == pytest.approx(ECE(bins=15).measure(p, lab), abs=1e-9)
    assert rows[("calibration", "nll")] == pytest.approx(float(-np.log(p[np.arange(len(lab)), lab]).mean()), abs=1e-9)
    onehot = np.eye(200)[lab]
    assert rows[("calibration", "brier")] == pytest.approx(float(((p - onehot) ** 2).sum(1).mean()), abs=1e-9)


def test_error_consistency_scores_images_by_the_datasets_label_rule():
    """Error consistency's per-image correctness on ImageNet-labelled sets used the 1000-way top-1 against the
    first label: wrong on a class subset (ImageNet-A/R) and on a multi-label set."""
    from beyond_inet.analyses.error_consistency import model_correct

    out, classes = subset_outputs("imagenet-a")
    got = model_correct("imagenet-a", out)
    z = out.logits[:, classes]
    ref = classes[z.argmax(1)] == out.labels
    assert [got[i] for i in out.ids] == ref.astype(float).tolist() and np.mean(list(got.values())) == pytest.approx(2 / 3)
    ml = multilabel_outputs()
    got = model_correct(DS, ml)
    assert np.mean([got[i] for i in ml.ids]) == pytest.approx(0.75)
