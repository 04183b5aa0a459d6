"""A pass keeps torch's intra-op threads + its loader workers within the cores the process may use
(beyond_inet.cores), restores the thread count afterwards, and stores the same numbers either way."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scale_helpers import make_imagenet_val, tiny_model

from beyond_inet import cores
from beyond_inet.data import catalog
from beyond_inet.engine import infer
from beyond_inet.engine.store import Store


def _recording(model, seen: list[int]):
    inner = model.forward_fn

    def forward(m, x):
        seen.append(torch.get_num_threads())
        return inner(m, x)

    model.forward_fn = forward
    return model


@pytest.mark.parametrize("workers", [0, 1])
def test_threads_and_workers_fit_the_cores(tmp_path, monkeypatch, workers):
    make_imagenet_val(tmp_path / "data", n=12)
    ds = catalog.open_dataset("imagenet-val", str(tmp_path / "data"))
    pos = np.arange(len(ds))
    monkeypatch.setattr(cores, "usable_cores", lambda *a, **k: 2)  # a 2-core budget on any machine
    before = torch.get_num_threads()
    torch.set_num_threads(4)  # what torch picks on a 4-CPU host whose container may use 2
    try:
        seen: list[int] = []
        e = Store(tmp_path / f"s{workers}").entry("k", len(pos), {"view": "standard"})
        infer.run_pass(_recording(tiny_model(), seen), ds, pos, {"standard": e}, batch_size=4, num_workers=workers)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen and all(t + workers <= 2 for t in seen), seen
    assert after == 4  # the caller's setting is back once the pass is over
    ref = Store(tmp_path / "ref").entry("k", len(pos), {"view": "standard"})
    infer.run_pass(tiny_model(), ds, pos, {"standard": ref}, batch_size=4, num_workers=0)
    a, b = e.load(), ref.load()
    assert a.ids == b.ids
    np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-6)


def test_layer_statistics_pass_fits_the_cores_too(tiny_imagenet, tmp_path, monkeypatch):
    from beyond_inet.engine.layer_stats import StatsConfig, compute_layer_stats
    from beyond_inet.engine.plan import DatasetCache
    from beyond_inet.models import create_model

    model = create_model("timm:test_vit@random")
    ds, pos, fp = DatasetCache(str(tiny_imagenet), None).get("imagenet-val")
    seen: list[int] = []
    inner = model.forward
    monkeypatch.setattr(model, "forward", lambda x: (seen.append(torch.get_num_threads()), inner(x))[1])
    monkeypatch.setattr(cores, "usable_cores", lambda *a, **k: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        compute_layer_stats(model, ds, pos, "imagenet-val", fp, tmp_path, StatsConfig(n_images=8, batch_size=4),
                            num_workers=1)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen and all(t + 1 <= 2 for t in seen), seen
    assert after == 4
