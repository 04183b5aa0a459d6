"""open_clip zero-shot head on a tiny random-weight config: shapes, head construction, caching."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("clipcfg")
    (d / "bi-tiny-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(d / "bi-tiny-clip.json")
    return "open_clip:bi-tiny-clip@random"


def test_clip_zero_shot_head_cached_and_correct(tiny_clip, monkeypatch):
    import open_clip
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from beyond_inet.data.labelspaces import imagenet_classnames
    from beyond_inet.data.views import build_view
    from beyond_inet.models import create_model
    from tests.conftest import skimage_photo

    m = create_model(tiny_clip)
    assert m.info["logit_scale"] == 100.0
    assert m.preprocessing.resize == m.preprocessing.input_size == 224
    assert m.preprocessing.interpolation == "bicubic" and m.preprocessing.mean[0] == pytest.approx(0.48145466)
    w = m.module.zs_weights
    assert w.shape == (32, 1000)
    # Independent check of class 0's column: mean of normalised template embeddings, renormalised.
    clip = open_clip.create_model("bi-tiny-clip", pretrained=None)
    clip.load_state_dict({**clip.state_dict(), **{f"visual.{k}": v for k, v in m.module.visual.state_dict().items()}})
    tok = open_clip.get_tokenizer("bi-tiny-clip")
    torch.manual_seed(0)
    ref_model = open_clip.create_model("bi-tiny-clip", pretrained=None)
    with torch.inference_mode():
        for c in (0, 999):
            texts = [t(imagenet_classnames()[c]) for t in OPENAI_IMAGENET_TEMPLATES]
            e = F.normalize(ref_model.encode_text(tok(texts)), dim=-1).mean(0)
            torch.testing.assert_close(w[:, c], F.normalize(e, dim=0), atol=1e-5, rtol=1e-4)
        x = torch.stack([build_view("standard", m.preprocessing)(skimage_photo("coffee"))])
        logits, feats = m.forward(x)
        emb = ref_model.encode_image(x)
        torch.testing.assert_close(logits, 100.0 * F.normalize(emb, dim=-1) @ w, atol=1e-4, rtol=1e-4)
    assert feats.shape == (1, 32)

    # Built once: a second model reads the cache instead of encoding 80 x 1000 prompts again.
    def boom(*a, **k):
        raise AssertionError("zero-shot head rebuilt despite the cache")

    monkeypatch.setattr(open_clip, "build_zero_shot_classifier", boom)
    m2 = create_model(tiny_clip, logit_scale=50.0)
    torch.testing.assert_close(m2.module.zs_weights, w)
    assert m2.info["logit_scale"] == 50.0

    big = m.rebuild(320)
    assert big.preprocessing.input_size == 320
    x = torch.stack([build_view("standard", big.preprocessing)(skimage_photo("coffee"))])
    with torch.inference_mode():
        assert big.forward(x)[0].shape == (1, 1000)
