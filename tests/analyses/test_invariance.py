"""Invariance: hand-worked metrics, id matching, dataset fallback, and the view transforms' crop geometry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from beyond_inet.analyses.base import Context, Request
from beyond_inet.analyses.invariance import Invariance, common_ids, fmt_value, view_metrics, view_name
from beyond_inet.data.views import build_view, shift_box
from beyond_inet.engine.outputs import Outputs
from beyond_inet.models.base import Preprocessing


def _out(ids, labels, preds, conf=5.0, n_classes=1000):
    logits = np.zeros((len(ids), n_classes), np.float32)
    logits[np.arange(len(ids)), preds] = conf
    return Outputs(ids=list(ids), labels=np.asarray(labels, np.int64), logits=logits,
                   features=np.zeros((len(ids), 1), np.float32))


def _ctx(available=("imagenet-val",), **opts):
    return Context(None, options=opts, available=lambda n: n in available, n_boot=50)


def test_view_names():
    assert [view_name("scale", s) for s in (1, 1.25, 1.5, 2, 3)] == \
        ["scale-1", "scale-1.25", "scale-1.5", "scale-2", "scale-3"]
    assert view_name("shift", 30) == "shift-30" and view_name("res", 336) == "res-336"
    assert fmt_value(2.0) == "2"


def test_requests_default_and_overrides():
    reqs = Invariance().requests(_ctx())
    views = [r.view for r in reqs]
    assert views[0] == "standard" and len(views) == 16 and {r.dataset for r in reqs} == {"imagenet-val"}
    assert {"scale-1", "scale-1.25", "scale-3", "shift-0", "shift-100", "res-112", "res-640"} <= set(views)
    reqs = Invariance().requests(_ctx(("imagenet-sample",), invariance_scales=[1, 2], invariance_shifts=[7],
                                      invariance_resolutions=[]))
    assert reqs == [Request("imagenet-sample", v) for v in ("standard", "scale-1", "scale-2", "shift-7")]


def test_view_metrics_hand_worked():
    # 3 classes; logits chosen so the softmax is easy to check.
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]]))
    labels = np.array([0, 2, 0, -1])
    ref = np.array([0, 1, 1, 2])
    m = view_metrics(logits, labels, ref)
    np.testing.assert_array_equal(m["top1"][0], [1, 0, 1])          # unlabelled sample left out
    np.testing.assert_array_equal(m["top1"][1], [1, 1, 1, 0])       # ... and the mask says which are in
    np.testing.assert_allclose(m["true_prob"][0], [0.7, 0.3, 0.5])
    np.testing.assert_array_equal(m["agree"][0], [1, 1, 0, 1])      # label-free: all 4 samples


def test_compute_matches_by_id_and_skips_missing():
    ids = ["a", "b", "c", "d"]
    std = _out(ids, [1, 2, 3, 4], [1, 2, 3, 9])
    # scale-2: different order, sample "c" skipped (corrupt); predictions: a ok, b wrong, d wrong
    s2 = _out(["d", "b", "a"], [4, 2, 1], [9, 7, 1])
    views = {"standard": std, "scale-2": s2, "shift-5": _out(ids, [1, 2, 3, 4], [1, 2, 3, 4])}
    ctx = _ctx(invariance_scales=[2], invariance_shifts=[5], invariance_resolutions=[336])
    res = Invariance().compute(ctx, "m", lambda r: views.get(r.view))
    rows = {r.metric: r for r in res.rows}
    assert all(r.dataset == "imagenet-val" for r in res.rows)
    # common ids: a, b, d (c missing from scale-2)
    assert rows["top1_scale_2"].value == pytest.approx(1 / 3) and rows["top1_scale_2"].n == 3
    assert rows["agree_scale_2"].value == pytest.approx(2 / 3)        # a and d agree with standard
    assert rows["top1_shift_5"].value == 1.0 and rows["agree_shift_5"].value == pytest.approx(2 / 3)
    p = math.exp(5) / (math.exp(5) + 999)
    assert rows["true_prob_shift_5"].value == pytest.approx(p)
    assert rows["true_prob_scale_2"].value == pytest.approx((p + 2 * (1 / (math.exp(5) + 999))) / 3)
    reasons = " ".join(s.reason for s in res.skips)
    assert "res-336" in reasons and "1 samples" in reasons
    art = res.artifacts["invariance/scale"]
    assert art["x"] == [2.0] and art["top1"][0] == pytest.approx(1 / 3) and art["dataset"] == "imagenet-val"
    assert "invariance/res" not in res.artifacts


def test_fallback_dataset_recorded_in_rows():
    ids = ["n1.JPEG", "n2.JPEG"]
    outs = {"standard": _out(ids, [0, 1], [0, 1]), "scale-1": _out(ids, [0, 1], [0, 0])}
    ctx = _ctx(("imagenet-sample",), invariance_scales=[1], invariance_shifts=[], invariance_resolutions=[])
    res = Invariance().compute(ctx, "m", lambda r: outs.get(r.view) if r.dataset == "imagenet-sample" else None)
    rows = {r.metric: r for r in res.rows}
    assert rows["top1_scale_1"].dataset == "imagenet-sample" and rows["top1_scale_1"].value == 0.5


def test_nothing_available_is_a_skip():
    res = Invariance().compute(_ctx(()), "m", lambda r: None)
    assert not res.rows and any("no outputs for any" in s.reason for s in res.skips)


def test_common_ids_order():
    a, b = _out(["x", "y", "z"], [0, 0, 0], [0, 0, 0]), _out(["z", "x"], [0, 0], [0, 0])
    assert common_ids([a, b]) == ["x", "z"]


# --- views.py geometry, checked against hand-computed crops -------------------------------------------

def _test_image(w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 11) % 256, (yy * 13) % 256, ((xx + yy) * 7 + 1) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


def _identity_norm(input_size: int, resize: int, interpolation: str = "bicubic") -> Preprocessing:
    return Preprocessing(input_size=input_size, resize=resize, interpolation=interpolation,
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_shift_box_hand_computed():
    pre = Preprocessing(input_size=224, resize=256)
    # landscape 500x375 as the paper's CropShift computes it: top = 16*375/256 = 23.4375 -> 23,
    # left = ((500/375*256 - 224)/2*375)/256 = 85.9375 -> 85 (int() truncates), side 224*375/256 = 328.125 -> 328;
    # the shift moves `left` (longer side)
    assert shift_box(500, 375, pre, 0) == (23, 85, 328, 328)
    assert shift_box(500, 375, pre, 30) == (23, 115, 328, 328)
    # portrait: the shift moves `top` (85.9375 + 75 -> 160)
    assert shift_box(375, 500, pre, 75) == (160, 23, 328, 328)


def test_shift_view_crop_with_zero_padding():
    img = _test_image(20, 15)
    pre = _identity_norm(12, 15)          # scale 1: the crop is 12x12 original pixels, no resampling
    # box: top = int(1.5) = 1, left = int(4.0) + 5 = 9, columns 9..20
    arr = np.asarray(img).astype(np.float32) / 255
    padded = np.zeros((15, 21, 3), np.float32)
    padded[:, :20] = arr
    expected = padded[1:13, 9:21]          # last column lies past the border: zeros
    got = build_view("shift-5", pre)(img).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.all(got[:, -1] == 0)


def test_shift_view_resamples_to_input():
    img = _test_image(20, 15)
    # crop side 8*15/10 = 12; top int(1.5) = 1; left ((20/15*10 - 8)/2*15)/10 is 3.999999999999999 in floating
    # point, truncated to 3 as in the paper's code, + 3 -> 6
    pre = _identity_norm(8, 10)
    expected = np.asarray(img.crop((6, 1, 18, 13)).resize((8, 8), Image.BILINEAR)).astype(np.float32) / 255
    got = build_view("shift-3", pre)(img).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_scale_view_hand_computed():
    img = _test_image(20, 15)
    pre = _identity_norm(8, 10, "bicubic")  # the scale view is bilinear whatever the model's interpolation
    # scale 2: shorter side int(2*10) = 20 -> 26x20 (long side int(20*20/15)); center crop 8 at top 6, left 9
    expected = np.asarray(img.resize((26, 20), Image.BILINEAR).crop((9, 6, 17, 14))).astype(np.float32) / 255
    got = build_view("scale-2", pre)(img).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert isinstance(build_view("scale-1.25", pre)(img), torch.Tensor)


def test_resolution_preprocessing():
    pre = Preprocessing(input_size=224, resize=256).at_resolution(336)
    assert (pre.input_size, pre.resize) == (336, 384)
    assert build_view("res-336", pre)(_test_image(500, 400)).shape == (3, 336, 336)


@pytest.mark.slow
def test_shift_sweep_follows_the_papers_code(shared_data, tmp_path):
    """The invariance analysis' shift numbers (real weights, real images) equal those of the paper's own
    loop: CropShift -> ToTensor -> Normalize -> model -> top-1 and mean true-class softmax probability."""
    from beyond_inet.data import catalog
    from beyond_inet.engine.plan import select_positions
    from beyond_inet.models import create_model
    from beyond_inet.pipeline import RunConfig, run
    from beyond_inet.report.results import ResultsDB
    from tests.data.test_views import _paper_crop_shift

    spec, n, shifts = "packaged:efficientnet_lite0", 24, (0, 5, 75)
    out = tmp_path / "out"
    run(RunConfig(models=[spec], analyses=["invariance"], out=str(out), data_root=str(shared_data), limit=n,
                  num_workers=0, batch_size=24, n_boot=20, progress=False, report=False,
                  options={"invariance_dataset": "imagenet-sample", "invariance_scales": [1],
                           "invariance_shifts": list(shifts), "invariance_resolutions": [224]}))
    rows = {r.metric: r.value for r in ResultsDB(out).rows() if r.analysis == "invariance"}
    model = create_model(spec)
    module, pre = model.module.eval(), model.preprocessing
    ds = catalog.open_dataset("imagenet-sample", str(shared_data))
    pos = select_positions(len(ds), n)
    images, labels = [ds.load(int(i)) for i in pos], np.array([ds.label(int(i)) for i in pos])
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    for s in shifts:
        x = []
        for img in images:
            arr = np.asarray(_paper_crop_shift(img, s, pre.input_size, pre.resize), np.float32) / 255.0
            x.append((torch.from_numpy(arr).permute(2, 0, 1) - mean) / std)
        with torch.inference_mode():
            p = torch.softmax(module(torch.stack(x)).double(), dim=1).numpy()
        assert rows[f"top1_shift_{s}"] == pytest.approx(float(np.mean(p.argmax(1) == labels)), abs=1e-12), s
        assert rows[f"true_prob_shift_{s}"] == pytest.approx(float(np.mean(p[np.arange(n), labels])), abs=1e-5), s
