"""The ``native`` view (model-vs-human's stimuli as they are) for every input size: planning resolves it per
model, the model then sees the stimulus pixels unchanged (or, only when it cannot take that size, the whole
stimulus resized, never cropped), and the store key changes with what is computed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from beyond_inet.contracts import Request
from beyond_inet.data.views import NATIVE_AS_IS, NATIVE_OPEN_CLIP, NATIVE_RESIZED, build_view
from beyond_inet.engine.executors import ExecConfig, execute_job
from beyond_inet.engine.plan import DatasetCache, native_plan, plan_model_jobs, store_key
from beyond_inet.engine.store import Store
from beyond_inet.models.base import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, VisionModel
from beyond_inet.models.timm_models import timm_forward, wrap_timm

SIZES = (192, 224, 240, 260, 288, 384)
CUES = [("airplane", "bicycle"), ("bear", "cat"), ("cat", "cat"), ("knife", "truck"), ("truck", "bear")]


@pytest.fixture
def stimuli(tmp_path):
    """A cue-conflict folder of 224 x 224 PNGs with fine detail (any resampling changes pixels)."""
    rng = np.random.default_rng(0)
    for k, (shape, tex) in enumerate(CUES):
        d = tmp_path / "data" / "cue-conflict" / shape
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(d / f"{shape}{k + 1}-{tex}1.png")
    return tmp_path / "data"


def _pre(size: int) -> Preprocessing:
    return Preprocessing(input_size=size, resize=int(size / 0.875), interpolation="bicubic", mean=IMAGENET_MEAN,
                         std=IMAGENET_STD)


def _convnet(size: int) -> VisionModel:
    import timm

    torch.manual_seed(0)
    module = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    return wrap_timm("timm:resnet10t@random", module, f"random:resnet10t@{size}", _pre(size))


def _plan(model: VisionModel, data, tmp_path):
    datasets = DatasetCache(str(data), None)
    store = Store(tmp_path / "store")
    (job,) = plan_model_jobs(model, [Request("cue-conflict", "native")], datasets, store)
    return job, datasets


def _images(data) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted((data / "cue-conflict").glob("*/*.png"))]


@pytest.mark.parametrize("size", SIZES)
def test_native_view_feeds_224_stimuli_unchanged_at_every_input_size(size, stimuli, tmp_path):
    model = _convnet(size)
    job, _ = _plan(model, stimuli, tmp_path)
    assert job.run_as["native"] == NATIVE_AS_IS
    assert job.resolution_of("native") == (None if size == 224 else 224)
    variant = model.rebuild(job.resolution_of("native") or size)
    fn = build_view(job.run_as["native"], variant.preprocessing, uint8=True)
    for img in _images(stimuli):
        assert torch.equal(fn(img), TF.pil_to_tensor(img))  # bit-identical pixels: no resampling


@pytest.mark.parametrize("size", (240, 384))
def test_native_outputs_equal_the_network_on_the_raw_stimulus(size, stimuli, tmp_path):
    """Through the engine (plan, execute, store): the stored logits are the network's on the stimulus as it
    is (ToTensor + Normalize), not on a 224 -> resize -> crop of it."""
    model = _convnet(size)
    job, datasets = _plan(model, stimuli, tmp_path)
    execute_job(job, ExecConfig(str(tmp_path / "store"), str(stimuli), None, num_workers=0, batch_size=4),
                model, datasets)
    out = Store(tmp_path / "store").existing(job.keys["native"]).load()
    x = torch.stack([TF.normalize(TF.to_tensor(im), IMAGENET_MEAN, IMAGENET_STD) for im in _images(stimuli)])
    with torch.inference_mode():
        want = model.module(x).numpy()
    np.testing.assert_allclose(out.logits, want, rtol=0, atol=1e-4)
    assert out.meta["native_rule"] == "stimuli as they are" and out.meta["input_size"] == 224


def test_vit_is_rebuilt_at_the_stimulus_size(stimuli, tmp_path):
    import timm

    torch.manual_seed(0)
    module = timm.create_model("vit_tiny_patch16_384", pretrained=False)
    model = wrap_timm("timm:vit_tiny_patch16_384@random", module, "random:vit", _pre(384))
    job, _ = _plan(model, stimuli, tmp_path)
    assert (job.run_as["native"], job.resolution_of("native")) == (NATIVE_AS_IS, 224)
    rebuilt = model.rebuild(224)
    assert tuple(rebuilt.module.pos_embed.shape[1:]) == (14 * 14 + 1, 192)  # position grid interpolated


def _fixed_size_model(size: int) -> VisionModel:
    """A network that refuses any other input size and cannot be rebuilt (e.g. fixed windows)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten(),
                              torch.nn.Linear(4 * (size // 8) ** 2, 1000))

    def forward(m, x):
        feats = m[:2](x)
        return m[2](feats), feats

    return VisionModel("fixed", net, _pre(size), forward, "fixed:0")


def test_a_model_that_cannot_take_the_size_gets_the_whole_stimulus_resized(stimuli, tmp_path):
    model = _fixed_size_model(240)
    job, _ = _plan(model, stimuli, tmp_path)
    assert (job.run_as["native"], job.resolution_of("native")) == (NATIVE_RESIZED, None)
    fn = build_view(job.run_as["native"], model.preprocessing, uint8=True)
    for img in _images(stimuli):  # the whole image, never cropped: PIL's resize of all of it
        want = torch.from_numpy(np.array(img.resize((240, 240), Image.BICUBIC))).permute(2, 0, 1)
        assert torch.equal(fn(img), want)


def test_clip_models_keep_open_clips_transform():
    clip = VisionModel("open_clip:ViT-L-14-336@x", torch.nn.Identity(),
                       Preprocessing(336, 336, "bicubic", IMAGENET_MEAN, IMAGENET_STD), timm_forward,
                       "open_clip:ViT-L-14-336@x:abc")
    assert native_plan(clip, 224) == (NATIVE_OPEN_CLIP, None)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    assert torch.equal(build_view(NATIVE_OPEN_CLIP, clip.preprocessing)(img),
                       build_view("standard", clip.preprocessing)(img))


@pytest.mark.parametrize("size", (224, 240))
def test_stores_of_the_old_native_view_are_not_reused(size, stimuli, tmp_path):
    """Before the rule, `native` was keyed by that name with the model's own preprocessing; the resolved
    view (and, for a rebuilt model, its preprocessing) is in the key now, so no old store is read."""
    model = _convnet(size)
    job, datasets = _plan(model, stimuli, tmp_path)
    _, _, fp = datasets.get("cue-conflict")
    old = store_key(model.weights_id, model.preprocessing.describe(), "native", "cue-conflict", fp, None, model.info)
    assert job.keys["native"] != old
