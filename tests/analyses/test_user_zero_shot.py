"""CLIP zero-shot on a user's own classes: the head is built from the folder names while the model is built
(`Accuracy.prepare`) and scored from the stored image embeddings. Plumbing only (random weights): the numbers
are checked against open_clip's own text and image encoders, written out here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from beyond_inet.analyses import Context, Request
from beyond_inet.analyses.accuracy import ZERO_SHOT, Accuracy
from beyond_inet.contracts import Outputs
from beyond_inet.data import catalog
from beyond_inet.data.user import inspect
from tests.conftest import skimage_photo

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_clip(tmp_path):
    import open_clip

    (tmp_path / "bi-tiny-clip2.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "bi-tiny-clip2.json")
    return "open_clip:bi-tiny-clip2@random"


def test_zero_shot_with_folder_names_equals_open_clip(tiny_clip, tmp_path, monkeypatch):
    import open_clip

    from beyond_inet.models import clip_models

    # The 1000-class ImageNet head (80k prompts) plays no part here: a stand-in keeps the test fast.
    monkeypatch.setattr(clip_models, "zero_shot_weights", lambda *a: torch.zeros(32, 1000))
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from beyond_inet.data.views import build_view
    from beyond_inet.models import create_model

    photos = {"kitty_cat": "chelsea", "coffee_mug": "coffee", "space_rocket": "rocket"}
    for cls, photo in photos.items():
        d = tmp_path / "own" / cls
        d.mkdir(parents=True)
        for k in range(2):
            skimage_photo(photo).crop((k * 9, 0, 300, 300)).save(d / f"{k}.png")
    ud = inspect("own", str(tmp_path / "own"))
    catalog.set_user_datasets([ud])
    try:
        m = create_model(tiny_clip)
        ds = catalog.open_dataset("own", None)
        x = torch.stack([build_view("standard", m.preprocessing)(ds.load(i)) for i in range(len(ds))])
        with torch.inference_mode():
            logits, feats = m.forward(x)
        labels = np.array([ds.label(i) for i in range(len(ds))])
        out = Outputs([ds.sample_id(i) for i in range(len(ds))], labels, logits.numpy(), feats.numpy())
        ctx = Context(None, options={"accuracy_datasets": ["own"], "probe_folds": 2}, n_boot=100)
        acc = Accuracy()
        assert acc.prepare(ctx, m, None) == []
        res = acc.compute(ctx, m.spec, lambda req: out if req == Request("own") else None)
        rows = {r.metric: r for r in res.rows}

        # Independent: the folder names (underscores as spaces) in the 80 templates through the text tower.
        torch.manual_seed(0)
        ref = open_clip.create_model("bi-tiny-clip2", pretrained=None)
        tok = open_clip.get_tokenizer("bi-tiny-clip2")
        with torch.inference_mode():
            cols = []
            for cls in sorted(photos):
                e = F.normalize(ref.encode_text(tok([t(cls.replace("_", " ")) for t in OPENAI_IMAGENET_TEMPLATES])),
                                dim=-1).mean(0)
                cols.append(F.normalize(e, dim=0))
            w = torch.stack(cols, dim=1)
            z = 100.0 * F.normalize(ref.encode_image(x), dim=-1) @ w
        want = (z.argmax(1).numpy() == labels).mean()
        assert rows["top1"].value == pytest.approx(want, abs=1e-12) and rows["top1"].n == 6
        assert "top5" not in rows  # 3 classes: no top-5
        assert rows["probe_top1"].n == 6 and rows["probe_folds"].value == 2
    finally:
        catalog.set_user_datasets([])
        ZERO_SHOT.clear()


def test_non_clip_models_get_no_zero_shot_rows():
    ctx = Context(None, options={"accuracy_datasets": ["own"]})

    class NotClip:
        spec, info, zero_shot_head = "timm:x", {}, None

    assert Accuracy().prepare(ctx, NotClip(), None) == [] and not ZERO_SHOT


def test_invariance_agreement_on_own_classes_uses_the_zero_shot_prediction(tmp_path):
    """Designed embeddings: the view moves every image across the zero-shot boundary between the folder names
    while the ImageNet-head prediction stays put, so the two rules give agreement 0 and 1."""
    from beyond_inet.analyses.invariance import Invariance

    for cls in ("a", "b"):
        d = tmp_path / "own" / cls
        d.mkdir(parents=True)
        for k in range(3):
            skimage_photo("chelsea").save(d / f"{k}.png")
    catalog.set_user_datasets([inspect("own", str(tmp_path / "own"))])
    try:
        ids = [f"{c}/{k}.png" for c in "ab" for k in range(3)]
        labels = np.array([0, 0, 0, 1, 1, 1])
        imagenet_logits = np.zeros((6, 1000), np.float32)
        imagenet_logits[:, 7] = 5.0  # the same ImageNet top-1 in both views
        std_feat = np.tile([1.0, 0.1], (6, 1)).astype(np.float32)  # zero-shot: class 0 (column 0 wins)
        view_feat = np.tile([0.1, 1.0], (6, 1)).astype(np.float32)  # zero-shot: class 1
        outs = {"standard": Outputs(ids, labels, imagenet_logits, std_feat),
                "scale-2": Outputs(ids, labels, imagenet_logits, view_feat)}
        ZERO_SHOT[("clip", "own")] = (np.eye(2, dtype=np.float32), 100.0, ("a", "b"))
        ctx = Context(None, options={"invariance_scales": [2], "invariance_shifts": [], "invariance_resolutions": []},
                      n_boot=50)
        fetch = lambda req: outs.get(req.view) if req.dataset == "own" else None  # noqa: E731
        rows = {r.metric: r for r in Invariance().compute(ctx, "clip", fetch).rows if r.dataset == "own"}
        assert rows["agree_scale_2"].value == 0.0 and rows["agree_scale_2"].n == 6
        assert not any(m.startswith(("top1", "true_prob")) for m in rows)
        rows_other = {r.metric: r for r in Invariance().compute(ctx, "not-clip", fetch).rows if r.dataset == "own"}
        assert rows_other["agree_scale_2"].value == 1.0  # no zero-shot head: the model's own (ImageNet) top-1
    finally:
        catalog.set_user_datasets([])
        ZERO_SHOT.clear()
