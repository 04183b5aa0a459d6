"""`--dataset NAME=PATH` / `evaluate(datasets=...)` end to end with real weights on real images: a folder of
ImageNet classes (the shared ImageNet sample images) scored with the argmax over its classes, and a folder of
the user's own classes (scikit-image photos) scored by a k-fold linear probe; bad folders exit 2 in one line
before any model is built."""
from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import beyond_inet
from beyond_inet.data.labelspaces import imagenet_classnames, imagenet_wnids
from beyond_inet.errors import UserError
from tests.conftest import skimage_photo
from tests.test_cli_errors import LITE0, assert_one_line_exit_2, run_cli

# ImageNet indices of the subset: most are classes on whose sample image EfficientNet-Lite0's 1000-way argmax
# is wrong (tabby -> Egyptian cat, lion, gorilla, trash can, barrel, clogs, sombrero, hot dog) while the
# restricted argmax can be right: so the restricted and the unrestricted top-1 differ.
SUBSET = (0, 281, 291, 366, 412, 427, 502, 808, 934, 949)


def _spell(i: int, j: int) -> str:
    """Folder names as users write them: wnids, and class names in other cases and punctuation."""
    name = imagenet_classnames()[i]
    return [imagenet_wnids()[i], name.upper().replace(" ", "_"), name.title().replace(" ", "-"), name][j % 4]


def subset_folder(shared: Path, root: Path) -> Path:
    src = shared / "imagenet-sample-images"
    for j, i in enumerate(SUBSET):
        f = next(src.glob(f"{imagenet_wnids()[i]}_*"))
        d = root / _spell(i, j)
        d.mkdir(parents=True)
        shutil.copy(f, d / f.name)
    return root


def own_folder(root: Path, n: int = 6) -> Path:
    for cls, photo in (("kitty", "chelsea"), ("mug", "coffee"), ("spacecraft", "rocket")):
        d = root / cls
        d.mkdir(parents=True)
        im = skimage_photo(photo)
        w, h = im.size
        for k in range(n):
            im.crop((k * 11, k * 5, w - k * 7, h - k * 6)).resize((160, 128)).save(d / f"{k}.jpg", quality=90)
    return root


def stored(out: Path, dataset: str, view: str = "standard"):
    from beyond_inet.engine.store import Store
    from beyond_inet.report.results import ResultsDB

    db = ResultsDB(out)
    try:
        key = db.output_keys()[(LITE0, dataset, view)]
    finally:
        db.close()
    return Store(out / "store").existing(key).load()


def rows(out: Path) -> dict[tuple[str, str, str], dict]:
    with open(out / "results.csv", newline="") as f:
        return {(r["dataset"], r["analysis"], r["metric"]): r for r in csv.DictReader(f)}


def ece_15(conf: np.ndarray, correct: np.ndarray) -> float:
    """The paper's ECE, written out: 15 equal-width bins (lower, upper], sum_b n_b/N |conf_b - acc_b|."""
    edges = np.linspace(0, 1, 16)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return total


def test_imagenet_subset_folder_cli_and_api(shared_data, tmp_path):
    data = subset_folder(shared_data, tmp_path / "mine")
    out = tmp_path / "out"
    r = run_cli("run", "--models", LITE0, "--dataset", f"mine={data}", "--analyses", "accuracy", "calibration",
                "--out", out, "--bootstrap", 200, "--no-progress", "--device", "cpu", "--workers", 0)
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [ln for ln in r.stderr.splitlines() if "fewer than 5 images" in ln]
    assert len(warn) == 1 and warn[0].startswith("beyond-inet: warning:")  # one image per class: one line
    got = rows(out)
    top1, ece = got[("mine", "accuracy", "top1")], got[("mine", "calibration", "ece")]
    assert int(top1["n"]) == 10 and int(ece["n"]) == 10
    assert float(got[("mine", "accuracy", "n_classes")]["value"]) == 10
    for row in (top1, ece):
        lo, v, hi = float(row["ci_low"]), float(row["value"]), float(row["ci_high"])
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= v <= hi

    # Independent: argmax over the subset's columns of the stored logits, labels = ImageNet indices.
    o = stored(out, "mine")
    cols = np.array(sorted(SUBSET))
    assert sorted(set(o.labels.tolist())) == cols.tolist()
    restricted = cols[o.logits[:, cols].argmax(1)] == o.labels
    unrestricted = o.logits.argmax(1) == o.labels
    assert restricted.mean() != unrestricted.mean()  # the data tells the two rules apart
    assert float(top1["value"]) == pytest.approx(restricted.mean(), abs=1e-12)
    z = o.logits[:, cols].astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert float(ece["value"]) == pytest.approx(ece_15(p.max(1), restricted.astype(float)), abs=1e-9)

    report = (out / "report.md").read_text() + (out / "report.html").read_text()
    assert "argmax over these 10 classes only" in report and "fewer than 5 images" in report

    # The Python path: same folder, same numbers, stored outputs reused (no inference).
    ev = beyond_inet.evaluate(LITE0, ["accuracy"], out=out, datasets={"mine": data}, device="cpu", workers=0,
                              bootstrap=200, report=False)
    assert ev.summary["jobs"] == 0
    r2 = ev.results[(ev.results.dataset == "mine") & (ev.results.metric == "top1")].iloc[0]
    assert r2.value == pytest.approx(restricted.mean(), abs=1e-12) and r2.n == 10


def test_own_label_space_folder_gets_a_kfold_probe(tmp_path):
    data = own_folder(tmp_path / "pets")
    out = tmp_path / "out"
    ev = beyond_inet.evaluate(LITE0, ["accuracy"], out=out, datasets={"pets": data}, device="cpu", workers=0,
                              bootstrap=200, report=True, probe_folds=3)
    res = ev.results[ev.results.dataset == "pets"].set_index("metric")
    assert "top1" not in res.index  # its labels are no ImageNet classes: no ImageNet top-1
    assert res.loc["probe_top1", "n"] == 18 and res.loc["probe_folds", "value"] == 3
    lo, v, hi = res.loc["probe_top1", ["ci_low", "value", "ci_high"]]
    assert 0 <= lo <= v <= hi <= 1
    per_class = [res.loc[f"probe_top1/{c}"] for c in ("kitty", "mug", "spacecraft")]
    assert all(r.n == 6 for r in per_class)
    assert v == pytest.approx(np.mean([r.value for r in per_class]), abs=1e-12)  # equal class sizes
    assert v > 0.9  # three very different photos: the features separate them
    # what the report judges chance by: 3 classes of 6 images each
    assert res.loc["n_classes", "value"] == 3 and res.loc["probe_chance", "value"] == pytest.approx(1 / 3)
    assert "linear probe with stratified k-fold" in (out / "report.md").read_text()


def test_bad_folders_exit_2_before_any_model(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("run", "--models", LITE0, "--dataset", f"mine={empty}", "--out", tmp_path / "o", "--device", "cpu")
    assert_one_line_exit_2(r, "the folder is empty")
    r = run_cli("run", "--models", LITE0, "--dataset", "imagenet-val=" + str(empty), "--out", tmp_path / "o")
    assert_one_line_exit_2(r, "is the name of a catalog dataset")
    assert not (tmp_path / "o").exists()
    own = own_folder(tmp_path / "own", n=2)
    with pytest.raises(UserError, match="labels cannot be scored as ImageNet classes"):
        beyond_inet.evaluate(LITE0, ["calibration"], out=tmp_path / "o", datasets={"own": own}, device="cpu",
                             calibration_datasets=["own"])
    assert not (tmp_path / "o").exists()


def test_invariance_and_robustness_take_both_kinds_of_folder(shared_data, tmp_path):
    sub = subset_folder(shared_data, tmp_path / "mine")
    own = own_folder(tmp_path / "pets", n=5)
    out = tmp_path / "out"
    ev = beyond_inet.evaluate(LITE0, ["invariance", "robustness"], out=out, datasets={"mine": sub, "pets": own},
                              device="cpu", workers=0, bootstrap=100, report=False, invariance_scales=[1.5],
                              invariance_shifts=[30], invariance_resolutions=[160])
    res = ev.results.set_index(["dataset", "analysis", "metric"])
    cols = np.array(sorted(SUBSET))
    std, view = stored(out, "mine"), stored(out, "mine", "scale-1.5")
    assert std.ids == view.ids
    pred_std, pred_view = cols[std.logits[:, cols].argmax(1)], cols[view.logits[:, cols].argmax(1)]
    top1_view = (pred_view == view.labels).mean()
    assert res.loc[("mine", "invariance", "top1_scale_1.5"), "value"] == pytest.approx(top1_view)
    assert res.loc[("mine", "invariance", "agree_scale_1.5"), "value"] == pytest.approx((pred_view == pred_std).mean())
    assert res.loc[("mine", "robustness", "top1"), "value"] == pytest.approx((pred_std == std.labels).mean())
    # Own classes: agreement of the model's own top-1 only; no accuracy against labels that are no ImageNet classes.
    pstd, pview = stored(out, "pets"), stored(out, "pets", "shift-30")
    assert res.loc[("pets", "invariance", "agree_shift_30"), "value"] == pytest.approx(
        (pview.logits.argmax(1) == pstd.logits.argmax(1)).mean())
    assert res.loc[("pets", "invariance", "agree_shift_30"), "n"] == 15
    pets = ev.results[ev.results.dataset == "pets"]
    assert not pets.metric.str.startswith(("top1", "true_prob")).any() and set(pets.analysis) == {"invariance"}


def test_clip_zero_shot_through_evaluate(tmp_path, monkeypatch):
    """Plumbing only (a tiny random CLIP): the pipeline builds the head from the folder names while the model is
    built and the accuracy rows score it from the stored embeddings, next to the probe."""
    import json

    import open_clip
    import torch

    from beyond_inet import validate
    from beyond_inet.analyses.accuracy import ZERO_SHOT, zero_shot_logits
    from beyond_inet.models import clip_models
    from tests.analyses.test_user_zero_shot import TINY

    (tmp_path / "bi-tiny-clip3.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "bi-tiny-clip3.json")
    monkeypatch.setattr(validate, "check_model_spec", lambda spec: None)  # not in the shipped name index
    monkeypatch.setattr(clip_models, "zero_shot_weights", lambda *a: torch.zeros(32, 1000))  # unused here
    built = []
    real = clip_models.class_weights
    monkeypatch.setattr(clip_models, "class_weights",
                        lambda m, a, names: built.append(list(names)) or real(m, a, names))
    spec = "open_clip:bi-tiny-clip3@random"
    data = own_folder(tmp_path / "pets", n=4)
    out = tmp_path / "out"
    try:
        ev = beyond_inet.evaluate(spec, ["accuracy", "invariance"], out=out, datasets={"pets": data}, device="cpu",
                                  workers=0, bootstrap=100, report=False, probe_folds=2, invariance_scales=[3],
                                  invariance_shifts=[30], invariance_resolutions=[224])
        w, scale, names = ZERO_SHOT[(spec, "pets")]
    finally:
        ZERO_SHOT.clear()
    assert built == [["kitty", "mug", "spacecraft"]] and names == ("kitty", "mug", "spacecraft") and scale == 100.0
    res = ev.results[ev.results.dataset == "pets"].set_index("metric")
    o = stored_spec(out, spec, "pets")
    want = (zero_shot_logits(o.features, w, scale).argmax(1) == o.labels).mean()
    assert res.loc["top1", "value"] == pytest.approx(want, abs=1e-12) and res.loc["top1", "n"] == 12
    assert res.loc["probe_top1", "n"] == 12 and "top5" not in res.index
    # Invariance: agreement of the zero-shot predictions over the folder names, view vs standard (plumbing; the
    # rule itself is tested with designed embeddings in tests/analyses/test_user_zero_shot.py).
    v = stored_spec(out, spec, "pets", "scale-3")
    assert v.ids == o.ids
    agree = (zero_shot_logits(v.features, w, scale).argmax(1) == zero_shot_logits(o.features, w, scale).argmax(1))
    assert res.loc["agree_scale_3", "value"] == pytest.approx(agree.mean(), abs=1e-12)


def stored_spec(out: Path, spec: str, dataset: str, view: str = "standard"):
    from beyond_inet.engine.store import Store
    from beyond_inet.report.results import ResultsDB

    db = ResultsDB(out)
    try:
        key = db.output_keys()[(spec, dataset, view)]
    finally:
        db.close()
    return Store(out / "store").existing(key).load()


def test_demo_scores_the_users_folders_too(monkeypatch, tmp_path):
    """The demo sets accuracy_datasets itself (so nothing would be added): its --dataset folders join that list."""
    from beyond_inet import cli

    seen = {}
    monkeypatch.setattr(cli, "_evaluate", lambda args, models, analyses, options=None: seen.update(options))
    monkeypatch.setattr(cli, "_print_summary", lambda ev: None)
    args = cli.build_parser().parse_args(["demo", "--dataset", f"pets={tmp_path}", "--out", str(tmp_path / "o")])
    cli.cmd_demo(args)
    assert seen["accuracy_datasets"][-1] == "pets" and "imagenet-sample" in seen["accuracy_datasets"]
