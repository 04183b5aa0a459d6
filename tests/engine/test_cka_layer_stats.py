"""The layer-statistics pass: fixed batches, Gram matrices that match the model, resume, reuse."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from beyond_inet.engine import layer_stats as ls
from beyond_inet.engine.layer_stats import (LayerStats, StatsConfig, batch_bounds, choose_positions,
                                            compute_layer_stats, plan_batches)


def test_batch_bounds_and_positions():
    assert batch_bounds(10, 4) == [(0, 4), (4, 10)]  # a last batch of 2 joins the one before
    assert batch_bounds(12, 4) == [(0, 4), (4, 8), (8, 12)]
    assert batch_bounds(3, 8) == [(0, 3)]
    pos = np.arange(100, 200)
    assert choose_positions(pos, 5).tolist() == [100, 125, 150, 174, 199]  # evenly spaced over the classes
    assert choose_positions(pos, 500).tolist() == pos.tolist()
    with pytest.raises(ValueError):
        StatsConfig(batch_size=3)
    with pytest.raises(ValueError):
        StatsConfig(types=("conv",))


@pytest.fixture
def vit_and_data(tiny_imagenet):
    from beyond_inet.engine.plan import DatasetCache
    from beyond_inet.models import create_model

    model = create_model("timm:test_vit@random")
    ds, pos, fp = DatasetCache(str(tiny_imagenet), None).get("imagenet-val")
    return model, ds, pos, fp


def test_grams_match_the_model_and_a_rerun_makes_no_forward(vit_and_data, tmp_path):
    from beyond_inet.data.views import build_view

    model, ds, pos, fp = vit_and_data
    cfg = StatsConfig(n_images=10, batch_size=4, types=("block", "linear"), reduce="flatten")
    ls.FORWARD_CALLS.clear()
    stats = compute_layer_stats(model, ds, pos, "imagenet-val", fp, tmp_path, cfg)
    assert ls.FORWARD_CALLS[model.spec] == 2  # 10 images: batches of 4 and 6
    assert stats.complete() and stats.meta["n_images"] == 10
    assert set(stats.types) == {"block", "linear"} and "head" in stats.layers
    batches = list(stats.batches())
    assert [len(ids) for ids, _ in batches] == [4, 6]
    chosen, bounds = plan_batches(pos, cfg)  # the evenly spaced images, in the seeded batch order
    assert sorted(chosen.tolist()) == choose_positions(pos, 10).tolist() and bounds == [(0, 4), (4, 10)]
    assert [i for ids, _ in batches for i in ids] == [ds.sample_id(int(p)) for p in chosen]
    # Independent check: the Gram of the batch-centred logits is the head layer's statistic.
    view = build_view("standard", model.preprocessing)
    x = torch.stack([view(ds.load(int(p))) for p in chosen[4:]])
    with torch.inference_mode():
        logits, _ = model.forward(x)
    z = logits.double().numpy()
    z -= z.mean(0)
    K = batches[1][1][stats.layers.index("head")]
    np.testing.assert_allclose(K, z @ z.T, rtol=1e-4, atol=1e-4 * np.abs(K).max())
    assert K.dtype == np.float64 and K.shape == (6, 6)

    again = compute_layer_stats(model, ds, pos, "imagenet-val", fp, tmp_path, cfg)
    assert ls.FORWARD_CALLS[model.spec] == 2 and again.root == stats.root
    other = compute_layer_stats(model, ds, pos, "imagenet-val", fp, tmp_path,
                                StatsConfig(n_images=10, batch_size=5, types=("block", "linear")))
    assert other.root != stats.root  # another batch composition is another key
    ids = [ds.sample_id(int(p)) for p in chosen]
    assert ls.stats_key(model, "imagenet-val", fp, ids, cfg, "fp32") == stats.root.name
    # The batch order is part of the key: the same images in dataset order (the old batching), or under
    # another seed, are other statistics.
    in_dataset_order = [ds.sample_id(int(p)) for p in choose_positions(pos, 10)]
    assert ls.stats_key(model, "imagenet-val", fp, in_dataset_order, cfg, "fp32") != stats.root.name
    assert ls.stats_key(model, "imagenet-val", fp, ids, replace(cfg, shuffle_seed=1), "fp32") != stats.root.name
    assert ls.stats_key(model, "imagenet-val", fp, ids, cfg, "fp32", "exif_transpose") != stats.root.name
    assert ls.stats_key(model, "imagenet-val", fp, ids, cfg, "bf16") != stats.root.name


def test_killed_pass_resumes_at_the_missing_chunk(vit_and_data, tmp_path, monkeypatch):
    model, ds, pos, fp = vit_and_data
    monkeypatch.setattr(ls, "SHARD_SIZE", 4)  # one batch per chunk
    cfg = StatsConfig(n_images=12, batch_size=4, types=("block",), reduce="mean")
    stats = compute_layer_stats(model, ds, pos, "imagenet-val", fp, tmp_path, cfg)
    assert stats.n_chunks == 3
    before = stats.chunk_path(1).read_bytes()
    stats.chunk_path(1).unlink()
    assert LayerStats.open(stats.root).missing_chunks() == [1]
    ls.FORWARD_CALLS.clear()
    compute_layer_stats(model, ds, pos, "imagenet-val", fp, tmp_path, cfg)
    assert ls.FORWARD_CALLS[model.spec] == 1
    assert stats.chunk_path(1).read_bytes() == before  # deterministic: the same bytes again
