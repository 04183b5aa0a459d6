"""The lean engine: one decode per image for the whole view suite (resolutions included), one forward per
distinct input, the same outputs as running every view on its own, and CPU micro-batches capped by pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beyond_inet.analyses.base import Request
from beyond_inet.data import readers
from beyond_inet.data.views import build_view, normalize_uint8, resolution_of
from beyond_inet.engine import infer
from beyond_inet.engine.executors import ExecConfig, LocalExecutor
from beyond_inet.engine.plan import DatasetCache, plan_model_jobs
from beyond_inet.engine.store import Store
from beyond_inet.models.base import Preprocessing, VisionModel

from scale_helpers import WNIDS, photos

# The paper's invariance suite (§2.7): 5 scales, 5 shifts, 5 resolutions, plus the standard view.
PAPER_VIEWS = (["standard"] + [f"scale-{s}" for s in ("1", "1.25", "1.5", "2", "3")]
               + [f"shift-{s}" for s in (0, 5, 30, 75, 100)] + [f"res-{r}" for r in (16, 32, 48, 64, 80)])


FORWARDED = {"rows": 0}  # image rows the tiny model has run on


def rebuildable_tiny(per_sample: bool = True) -> VisionModel:
    """A conv net whose pooled head works at any input size; `rebuild(r)` only changes the preprocessing,
    as for a ConvNet in the paper's resolution sweep. Per-sample forward: outputs do not depend on batching."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 1000))

    def forward(m: torch.nn.Module, x: torch.Tensor):
        FORWARDED["rows"] += x.shape[0]
        rows = [x[i:i + 1] for i in range(x.shape[0])] if per_sample else [x]
        feats = torch.cat([m[:4](r) for r in rows])
        return torch.cat([m[4](f[None]) for f in feats]), feats

    def build(pre: Preprocessing) -> VisionModel:
        return VisionModel("tiny-res", net, pre, forward, "tiny-res:0", rebuild_fn=lambda r: build(pre.at_resolution(r)))

    return build(Preprocessing(input_size=32, resize=36, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3))


def make_images(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """ImageNet-val layout, one photo crop per size (width, height)."""
    pics = photos()
    for k, (w, h) in enumerate(sizes, start=1):
        img = Image.fromarray(pics[k % len(pics)]).resize((w, h), Image.BILINEAR)
        d = root / "imagenet-val" / WNIDS[k % len(WNIDS)]
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"ILSVRC2012_val_{k:08d}.JPEG", quality=90)
    return root


def run_suite(tmp_path: Path, data_root: Path, model: VisionModel, views=PAPER_VIEWS, batch_size: int = 4):
    store = Store(tmp_path / "store")
    datasets = DatasetCache(str(data_root), None)
    jobs = plan_model_jobs(model, [Request("imagenet-val", v) for v in views], datasets, store)
    cfg = ExecConfig(str(store.root), str(data_root), None, batch_size=batch_size, num_workers=0)
    LocalExecutor().run([j for j in jobs if j.shards], cfg, model, datasets)
    return jobs, store, datasets


@pytest.fixture
def counted_loads(monkeypatch):
    """Counts image decodes through the reader, whichever engine version runs."""
    calls = {"n": 0}
    load = readers.FileListDataset.load

    def counting(self, i):
        calls["n"] += 1
        return load(self, i)

    monkeypatch.setattr(readers.FileListDataset, "load", counting)
    return calls


# Shorter side 36 = the model's resize size: scale-1 and shift-0 then cut exactly the standard crop.
AT_RESIZE = [(48, 36), (36, 50), (36, 36), (60, 36), (36, 44), (40, 36)]


def test_paper_suite_decodes_each_image_once(tmp_path, counted_loads):
    data_root = make_images(tmp_path / "data", AT_RESIZE)
    jobs, _, _ = run_suite(tmp_path, data_root, rebuildable_tiny())
    assert counted_loads["n"] == 6  # one decode per image (was 5: one per resolution pass)
    assert len(jobs) == 1  # one pass over the dataset for every view and resolution


def test_paper_suite_runs_13_forwards_per_image(tmp_path):
    data_root = make_images(tmp_path / "data", AT_RESIZE)
    FORWARDED["rows"] = 0
    run_suite(tmp_path, data_root, rebuildable_tiny())
    # 16 views; res-32 is the standard view, and scale-1 / shift-0 repeat its input: 13 forwards per image.
    assert FORWARDED["rows"] == 13 * 6


def test_views_that_differ_from_standard_are_still_run(tmp_path):
    # Shorter side 50 != 36: the bicubic standard resize and the bilinear scale-1 resize differ, and so does
    # shift-0 (crop, then resize): no sharing for them here.
    data_root = make_images(tmp_path / "data", [(70, 50), (50, 64)])
    FORWARDED["rows"] = 0
    run_suite(tmp_path, data_root, rebuildable_tiny())
    assert FORWARDED["rows"] == 15 * 2


def reference_outputs(data_root: Path, model: VisionModel, view: str) -> dict[str, np.ndarray]:
    """Each view on its own, as the seed code runs it: decode, float transform, one forward per image."""
    r = resolution_of(view)
    m = model.rebuild(r) if r else model
    fn = build_view(view, m.preprocessing)
    out = {}
    for p in sorted((data_root / "imagenet-val").rglob("*.JPEG")):
        x = fn(Image.open(p).convert("RGB"))[None]
        with torch.inference_mode():
            out[p.name] = m.forward(x)[0][0].numpy()
    return out


def test_every_view_bit_identical_to_running_it_alone(tmp_path):
    data_root = make_images(tmp_path / "data", [(48, 36), (70, 50), (36, 36), (50, 64), (90, 40)])
    model = rebuildable_tiny()
    jobs, store, _ = run_suite(tmp_path, data_root, model, batch_size=3)
    keys = {v: k for j in jobs for v, k in j.keys.items()}
    for view in PAPER_VIEWS:
        got = store.existing(keys[view]).load()
        ref = reference_outputs(data_root, model, view)
        assert sorted(got.ids) == sorted(ref)
        for i, sid in enumerate(got.ids):
            np.testing.assert_array_equal(got.logits[i], ref[sid], err_msg=f"{view} {sid}")


def test_uint8_path_matches_float_path_per_resolution():
    pre = Preprocessing(input_size=32, resize=36, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
    img = Image.fromarray(photos()[0]).resize((70, 50))
    for view in ("res-64", "scale-2", "shift-30"):
        p = pre.at_resolution(64) if view.startswith("res-") else pre
        a = normalize_uint8(build_view(view, p, uint8=True)(img)[None], p)[0]
        assert torch.equal(a, build_view(view, p)(img))


def test_cpu_micro_batch_is_capped_by_pixels(monkeypatch):
    monkeypatch.delenv("BEYOND_INET_CPU_BATCH_PIXELS", raising=False)
    assert infer.cpu_micro_batch(64, 224) == 8
    assert infer.cpu_micro_batch(64, 336) == 3  # 8 * 224^2 / 336^2 = 3.6
    assert infer.cpu_micro_batch(64, 640) == 1  # 0.98, never 0
    assert infer.cpu_micro_batch(64, 112) == 32
    assert infer.cpu_micro_batch(8, 224) == 8
    monkeypatch.setenv("BEYOND_INET_CPU_BATCH_PIXELS", str(64 * 224 * 224))
    assert infer.cpu_micro_batch(64, 224) == 64


def test_micro_batches_do_not_change_outputs(tmp_path, monkeypatch):
    """A pass forwarded 1 image at a time writes what one 4-image batch writes (batch-independent model)."""
    data_root = make_images(tmp_path / "data", [(48, 36), (70, 50), (50, 64), (90, 40)])
    model = rebuildable_tiny()
    outs = []
    for budget in (32 * 32, 10**9):
        monkeypatch.setenv("BEYOND_INET_CPU_BATCH_PIXELS", str(budget))
        jobs, store, _ = run_suite(tmp_path / str(budget), data_root, model, views=["standard", "res-64"])
        outs.append({v: store.existing(k).load().logits for v, k in jobs[0].keys.items()})
    for v in outs[0]:
        np.testing.assert_array_equal(outs[0][v], outs[1][v])


def test_cpu_loader_batch_is_capped_by_bytes(monkeypatch):
    monkeypatch.delenv("BEYOND_INET_CPU_LOADER_BYTES", raising=False)
    pre = Preprocessing(input_size=224, resize=256)
    suite = {**{f"v{i}": pre for i in range(13)}, **{f"res-{r}": pre.at_resolution(r) for r in (112, 336, 512, 640)}}
    assert infer.cpu_loader_batch(64, suite) == 64 * 2**20 // (3 * (13 * 224**2 + 112**2 + 336**2 + 512**2 + 640**2))
    assert infer.cpu_loader_batch(64, {"standard": pre}) == 64  # one 224 px view: 147 KB per image
    monkeypatch.setenv("BEYOND_INET_CPU_LOADER_BYTES", "1")
    assert infer.cpu_loader_batch(64, suite) == 1
