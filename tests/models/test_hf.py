"""`hf:` specs: a tiny random transformers ViT saved locally stands in for a hub repo."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")


def _save_tiny(path, num_labels=1000):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    image_size=64, patch_size=16, num_labels=num_labels)
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(path)
    ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)


def test_hf_classifier_logits_features_and_preprocessing(tmp_path):
    from beyond_inet.data.views import build_view
    from beyond_inet.models import create_model
    from tests.conftest import skimage_photo

    _save_tiny(tmp_path / "m")
    m = create_model(f"hf:{tmp_path / 'm'}")
    assert m.preprocessing.input_size == 64 and m.preprocessing.mean == (0.5, 0.5, 0.5)
    x = torch.stack([build_view("standard", m.preprocessing)(skimage_photo("coffee"))])
    with torch.inference_mode():
        logits, feats = m.forward(x)
        ref = m.module.model(pixel_values=x).logits
        via_head = m.module.head(feats)
    assert logits.shape == (1, 1000) and feats.shape == (1, 32)
    torch.testing.assert_close(logits, ref)
    torch.testing.assert_close(via_head, logits)  # features are exactly the classifier's input


def test_hf_wrong_class_count_is_refused(tmp_path):
    from beyond_inet.errors import UserError
    from beyond_inet.models import create_model

    _save_tiny(tmp_path / "m10", num_labels=10)
    with pytest.raises(UserError, match="10 labels"):
        create_model(f"hf:{tmp_path / 'm10'}")
