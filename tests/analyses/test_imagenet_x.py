"""ImageNet-X error ratios against the imagenet_x package's own get_factor_accuracies / error_ratio."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from beyond_inet.analyses import imagenet_x as X
from beyond_inet.analyses.base import Context, Request
from beyond_inet.analyses.stats import replicate_indices
from beyond_inet.engine.outputs import Outputs

pkg = pytest.importorskip("imagenet_x")
# the package's own code trips pandas deprecation warnings; they are not ours
pytestmark = pytest.mark.filterwarnings("ignore:Constructing a DataFrame from a list of sequences",
                                        "ignore:Starting with pandas version 4.0")
from imagenet_x import error_ratio, get_factor_accuracies  # noqa: E402
from imagenet_x.aggregate import compute_factor_accuracies, compute_factor_metaclass_accuracies  # noqa: E402
from imagenet_x.utils import augment_model_predictions, load_annotations, load_model_predictions  # noqa: E402


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Seeded random right/wrong predictions for the 48,868 annotated val file names, as the package's
    CSV (file_name, predicted_class, predicted_probability) and as arrays.

    The package's loader compares predictions index-aligned with its 50k ``filename_label.csv``, so the
    CSV lists all 50k val images in that order; the 1,132 unannotated ones drop out in the inner join.
    """
    raw = pd.read_json(X.annotation_dir() / "imagenet_x_val_top_factor.jsonl", lines=True)
    assert len(raw) == 48_868
    fl = pd.read_csv(X.annotation_dir() / "filename_label.csv")
    cls = fl["label"].to_numpy()
    assert set(raw["file_name"]) <= set(fl["file_name"])
    rng = np.random.default_rng(123)
    right = rng.random(len(fl)) < 0.8
    pred = np.where(right, cls, (cls + rng.integers(1, 1000, len(fl))) % 1000)
    d = tmp_path_factory.mktemp("preds")
    pd.DataFrame({"file_name": fl["file_name"], "predicted_class": pred,
                  "predicted_probability": rng.random(len(fl))}).to_csv(d / "model.csv", index=False)
    # our side: shuffled order and a directory prefix on ids, to exercise the join
    perm = rng.permutation(len(fl))
    ids = [f"n00000000/{fl['file_name'].iloc[i]}" for i in perm]
    return d, ids, pred[perm]


def _ours(ids, pred, which="top"):
    ann = X.load_annotations(which, True)
    out_pos, ann_pos = X.join_on_file_name(ids, ann["file_name"])
    sub = ann.iloc[ann_pos]
    correct = (pred[out_pos] == sub["class"].to_numpy()).astype(float)
    return correct, sub[list(X.FACTORS)].to_numpy(float), sub


def test_constants_match_package():
    from imagenet_x.utils import FACTORS, METACLASSES

    assert list(X.FACTORS) == FACTORS
    assert list(X.METACLASSES) == METACLASSES


def test_annotations_match_package_loader():
    ref = load_annotations(which_factor="top", partition="val", filter_prototypes=True)
    ours = X.load_annotations("top", True)
    assert len(ours) == len(ref) == 46_110
    assert ours["file_name"].tolist() == ref["file_name"].tolist()
    assert ours["metaclass"].tolist() == ref["metaclass"].tolist()
    assert np.array_equal(ours[list(X.FACTORS)].to_numpy(), ref[list(X.FACTORS)].to_numpy())


@pytest.mark.parametrize("which", ["top", "multi"])
def test_error_ratios_equal_package(synthetic, which):
    d, ids, pred = synthetic
    ref_acc = get_factor_accuracies(str(d), which_factor=which)
    ref_ratio = error_ratio(ref_acc).loc["model"]
    correct, F, _ = _ours(ids, pred, which)
    got = X.factor_accuracies(correct, F)
    assert got["acc_annotated"] == pytest.approx(ref_acc.loc["model", "average"], abs=1e-12)
    for i, f in enumerate(X.FACTORS):
        assert got["acc"][i] == pytest.approx(ref_acc.loc["model", f], abs=1e-12), f
        assert got["error_ratio"][i] == pytest.approx(ref_ratio[f], abs=1e-9), f
    assert got["error_ratio_mean"] == pytest.approx(ref_ratio[list(X.FACTORS)].mean(), abs=1e-9)


def test_metaclass_error_ratios_equal_package(synthetic):
    d, ids, pred = synthetic
    ann = load_annotations(which_factor="top", partition="val", filter_prototypes=True)
    models, _ = load_model_predictions(str(d))
    aug = augment_model_predictions(ann, models)
    ref = compute_factor_metaclass_accuracies(aug, list(X.FACTORS), "is_correct", list(X.METACLASSES))
    ref_ratio = error_ratio(ref)
    correct, F, sub = _ours(ids, pred)
    meta = sub["metaclass"].to_numpy()
    for m in X.METACLASSES:
        sel = meta == m
        got = X.factor_accuracies(correct[sel], F[sel])
        assert got["acc_annotated"] == pytest.approx(ref.loc[("model", m), "average"], abs=1e-12)
        for i, f in enumerate(X.FACTORS):
            r = ref_ratio.loc[("model", m), f]
            if np.isnan(r):
                assert got["count"][i] == 0 or np.isnan(got["error_ratio"][i])
            else:
                assert got["error_ratio"][i] == pytest.approx(r, abs=1e-9), (m, f)


def test_factor_declarations_bootstrap_is_the_loop_bootstrap():
    """The declared error ratios, scored by the shared bootstrap, equal a per-replicate loop over
    `factor_accuracies` on the same resamples."""
    from beyond_inet.analyses import stats

    rng = np.random.default_rng(0)
    n = 200
    F = np.eye(4)[rng.integers(0, 4, n)]
    correct = (rng.random(n) < 0.7).astype(float)
    F16 = np.hstack([F, np.zeros((n, len(X.FACTORS) - 4))])
    scored = {m.metric: stats.score(m, 50, 5) for m in
              X.factor_metrics("d", correct, F16, [str(i) for i in range(n)], per_factor_acc=True)}
    ci = {"error_ratio": ([scored[f"error_ratio_{f}"].ci_low for f in X.FACTORS[:4]],
                          [scored[f"error_ratio_{f}"].ci_high for f in X.FACTORS[:4]]),
          "error_ratio_mean": (scored["error_ratio_mean"].ci_low, scored["error_ratio_mean"].ci_high),
          "acc_annotated": (scored["acc_annotated"].ci_low, scored["acc_annotated"].ci_high)}
    assert [scored[f"error_ratio_{f}"].n for f in X.FACTORS[:4]] == F.sum(axis=0).astype(int).tolist()
    loop = []
    for idx in replicate_indices(n, 50, 5):
        for row in idx:
            p = X.factor_accuracies(correct[row], F[row])
            loop.append(np.concatenate([p["error_ratio"], [p["error_ratio_mean"], p["acc_annotated"]]]))
    loop = np.array(loop)
    lo, hi = np.nanquantile(loop, [0.025, 0.975], axis=0)
    assert np.allclose(ci["error_ratio"][0][:4], lo[:4], atol=1e-5)
    assert np.allclose(ci["error_ratio"][1][:4], hi[:4], atol=1e-5)
    assert np.allclose(ci["error_ratio_mean"], (lo[4], hi[4]), atol=1e-5)
    assert np.allclose(ci["acc_annotated"], (lo[5], hi[5]), atol=1e-7)


def test_factor_accuracies_hand_worked():
    # factor 0: 2 images, 1 right -> acc .5 ; factor 1: 2 images, both right -> acc 1 ; overall 3/4
    F = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], float)
    correct = np.array([1, 0, 1, 1], float)
    got = X.factor_accuracies(correct, F)
    assert got["acc"].tolist() == [0.5, 1.0]
    assert got["error_ratio"].tolist() == pytest.approx([2.0, 0.0])
    assert got["error_ratio_mean"] == pytest.approx(1.0)


def _outputs(ids, pred, labels=None) -> Outputs:
    n = len(ids)
    logits = np.zeros((n, 1000), np.float32)
    logits[np.arange(n), pred] = 1.0
    lab = np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64)
    return Outputs(ids=list(ids), labels=lab, logits=logits, features=np.zeros((n, 1), np.float32))


def test_compute_on_a_subset_matches_package():
    ann = X.load_annotations("top", True)
    rng = np.random.default_rng(1)
    take = rng.choice(len(ann), 600, replace=False)
    names = ann["file_name"].to_numpy()[take]
    cls = ann["class"].to_numpy()[take]
    pred = np.where(rng.random(600) < 0.6, cls, (cls + 1) % 1000)
    # the package's CSV loader needs all 50k images, so its merge + aggregate functions are used directly
    preds = pd.DataFrame({"file_name": names, "predicted_class": pred, "predicted_probability": 0.5})
    aug = augment_model_predictions(load_annotations(which_factor="top", partition="val", filter_prototypes=True),
                                    {"m": preds})
    ref = error_ratio(compute_factor_accuracies(aug, list(X.FACTORS))).loc["m"]
    ctx = Context(data_root=None, n_boot=40, seed=0, options={"imagenet_x_multi_factor": True})
    an = X.ImageNetX()
    assert an.requests(ctx) == [Request("imagenet-val", "standard")]
    res = an.compute(ctx, "m", lambda r: _outputs(names, pred, cls))
    rows = {(r.dataset, r.metric): r for r in res.rows}
    n_ok = 0
    for f in X.FACTORS:
        if np.isfinite(ref[f]):
            assert rows[("imagenet-val", f"error_ratio_{f}")].value == pytest.approx(ref[f], abs=1e-9)
            n_ok += 1
    assert n_ok >= 10
    mean_row = rows[("imagenet-val", "error_ratio_mean")]
    assert mean_row.value == pytest.approx(np.nanmean(ref[list(X.FACTORS)].to_numpy(float)), abs=1e-9)
    assert mean_row.n == 600 and mean_row.ci_low <= mean_row.value <= mean_row.ci_high
    assert any(ds.startswith("imagenet-val/metaclass/") for ds, _ in rows)
    assert ("imagenet-val/multi-factor", "error_ratio_mean") in rows
    # partial coverage is reported, labels agree so no label warning
    assert any("only 600 of" in s.reason for s in res.skips)
    assert not any("disagree" in s.reason for s in res.skips)
    json.dumps(res.artifacts, allow_nan=False)


def test_ids_that_are_not_val_names_give_a_skip():
    an = X.ImageNetX()
    ctx = Context(data_root=None, n_boot=10)
    res = an.compute(ctx, "m", lambda r: _outputs([f"img_{i}.png" for i in range(5)], np.arange(5)))
    assert res.rows == []
    assert len(res.skips) == 1 and "ILSVRC2012_val_" in res.skips[0].reason
    dup = ["ILSVRC2012_val_00000001.JPEG", "x/ILSVRC2012_val_00000001.JPEG"]
    res = an.compute(ctx, "m", lambda r: _outputs(dup, np.arange(2)))
    assert res.rows == [] and "duplicate" in res.skips[0].reason
    res = an.compute(ctx, "m", lambda r: None)
    assert res.rows == [] and res.skips
