"""Named intermediate outputs: layer types per model family, hook order, reductions."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from beyond_inet.models.layers import capture_layers, first_tensor, per_image, typed_modules


def _capture(module, layers, reduce, x, batch=None):
    got = {}
    with capture_layers(module, layers, reduce, lambda n, v: got.__setitem__(n, v)) as (order, start):
        start(batch or x.shape[0])
        with torch.inference_mode():
            module(x)
        return list(order), got


def test_timm_vit_layers_named_typed_and_in_run_order():
    import timm

    torch.manual_seed(0)
    m = timm.create_model("test_vit", pretrained=False).eval()
    t = typed_modules(m)
    n = len(m.blocks)
    assert [k for k, v in t.items() if v == "block"] == [f"blocks.{i}" for i in range(n)]
    assert [k for k, v in t.items() if v == "attn"] == [f"blocks.{i}.attn" for i in range(n)]
    assert t["blocks.0.attn.qkv"] == "linear" and t["blocks.0.mlp.fc1"] == "linear" and t["head"] == "linear"
    assert t["blocks.0.norm1"] == "norm" and t["norm"] == "norm"
    assert "blocks.0.attn.qkv" in t and "patch_embed.proj" not in t  # a 16x16 conv is not a linear map per position
    x = torch.randn(3, 3, 160, 160)
    order, got = _capture(m, t, "flatten", x)
    # A block runs after its own attention, before the next block's first norm.
    assert order.index("blocks.0.attn") < order.index("blocks.0") < order.index("blocks.1.norm1")
    assert set(order) == set(t)  # every selected module ran
    with torch.inference_mode():
        feats = m.forward_features(x)
        logits = m.forward_head(feats)
    torch.testing.assert_close(got["norm"], feats.reshape(3, -1))  # flatten keeps every token
    torch.testing.assert_close(got["head"], logits)
    _, means = _capture(m, t, "mean", x)
    torch.testing.assert_close(means["norm"], feats.mean(1))  # mean over tokens
    assert means["blocks.0"].shape == (3, m.embed_dim)


def test_efficientnet_blocks_look_through_stages_and_pointwise_convs_are_linear():
    import timm

    m = timm.create_model("test_efficientnet", pretrained=False).eval()
    t = typed_modules(m)
    blocks = [k for k, v in t.items() if v == "block"]
    assert blocks == [f"blocks.{s}.{j}" for s, stage in enumerate(m.blocks) for j in range(len(stage))]
    assert "blocks.0" not in t  # a stage container is not a block
    convs = {k for k, mod in m.named_modules() if isinstance(mod, nn.Conv2d)}
    lin = {k for k, v in t.items() if v == "linear"} - {"classifier"}
    assert lin and lin <= convs
    assert all(m.get_submodule(k).kernel_size == (1, 1) for k in lin)
    assert all(m.get_submodule(k).kernel_size != (1, 1) or m.get_submodule(k).groups > 1 for k in convs - lin)
    x = torch.randn(2, 3, 96, 96)
    _, got = _capture(m, {"conv_stem": "x", "bn1": "norm"}, "mean", x)
    with torch.inference_mode():
        stem = m.bn1(m.conv_stem(x))
    torch.testing.assert_close(got["bn1"], stem.mean(dim=(2, 3)))  # mean over space: one value per channel


def test_mean_over_space_for_channels_last_layers_in_convnext_blocks():
    import timm

    m = timm.create_model("test_convnext", pretrained=False).eval()
    blk = m.stages[1].blocks[0]
    fc1 = "stages.1.blocks.0.mlp.fc1"
    assert typed_modules(m)[fc1] == "linear"
    x = torch.randn(2, 3, 96, 96)
    order, got = _capture(m, {fc1: "linear", "stages.1.blocks.0": "block"}, "mean", x)
    hidden = blk.mlp.fc1.out_features
    assert got[fc1].shape == (2, hidden)  # [B, H, W, C] inside the block: the mean is over H and W
    assert got["stages.1.blocks.0"].shape == (2, blk.mlp.fc2.out_features)  # the block returns NCHW
    _, flat = _capture(m, {fc1: "linear"}, "flatten", x)
    side = int(round((flat[fc1].shape[1] / hidden) ** 0.5))
    torch.testing.assert_close(got[fc1], flat[fc1].reshape(2, side, side, hidden).mean(dim=(1, 2)))


def test_open_clip_tower_attention_tuple_output(tmp_path):
    import open_clip

    from beyond_inet.models.clip_models import ZeroShotClassifier, clip_forward

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32,
                                           "patch_size": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "bi-layers-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "bi-layers-clip.json")
    torch.manual_seed(0)
    clip = open_clip.create_model("bi-layers-clip", pretrained=None).eval()
    head = ZeroShotClassifier(clip, torch.randn(32, 1000), 100.0).eval()
    t = typed_modules(head)
    assert [k for k, v in t.items() if v == "block"] == ["visual.transformer.resblocks.0",
                                                         "visual.transformer.resblocks.1"]
    assert [k for k, v in t.items() if v == "attn"] == ["visual.transformer.resblocks.0.attn",
                                                        "visual.transformer.resblocks.1.attn"]
    x = torch.randn(2, 3, 64, 64)
    got = {}
    with capture_layers(head, t, "flatten", lambda n, v: got.__setitem__(n, v)) as (order, start):
        start(2)
        with torch.inference_mode():
            clip_forward(head, x)
    tokens = (64 // 32) ** 2 + 1
    assert got["visual.transformer.resblocks.0.attn"].shape == (2, tokens * 64)  # MHA's (out, weights) -> out
    assert "visual.transformer.resblocks.0.attn.out_proj" not in order  # MHA calls it functionally: never runs


def test_hf_vit_layers(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=16, num_labels=1000)
    m = transformers.ViTForImageClassification(cfg).eval()
    t = typed_modules(m)
    # transformers 4 calls the stack vit.encoder.layer, transformers 5 vit.layers: either is a block container.
    stack = next(n for n, mod in m.named_modules() if isinstance(mod, nn.ModuleList))
    assert [k for k, v in t.items() if v == "block"] == [f"{stack}.0", f"{stack}.1"]
    assert [k for k, v in t.items() if v == "attn"] == [f"{stack}.0.attention", f"{stack}.1.attention"]
    assert t["classifier"] == "linear" and t[f"{stack}.0.mlp.fc1" if f"{stack}.0.mlp.fc1" in t
                                              else f"{stack}.0.intermediate.dense"] == "linear"
    order, got = _capture(m, t, "mean", torch.randn(2, 3, 32, 32))
    assert got[f"{stack}.1"].shape == (2, 32) and order.index(f"{stack}.0") < order.index(f"{stack}.1")


def test_first_tensor_and_batch_axis():
    a = torch.randn(4, 5, 6)
    assert first_tensor((None, a)) is a and first_tensor({"x": a}) is a and first_tensor([1, 2]) is None
    seq_first = torch.randn(7, 3, 8)  # [tokens, batch, dim]
    torch.testing.assert_close(per_image(seq_first, 3, 1, "mean"), seq_first.mean(0))
    torch.testing.assert_close(per_image(seq_first, 3, 1, "flatten")[1], seq_first[:, 1].reshape(-1))
    assert per_image(torch.randn(5, 2), 3, 0, "flatten") is None  # not batched like the input
    with pytest.raises(ValueError):
        per_image(a, 4, 0, "max")
    with pytest.raises(ValueError):
        typed_modules(nn.Linear(2, 2), ("conv",))
