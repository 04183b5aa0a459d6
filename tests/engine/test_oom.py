"""Out-of-memory back-off: the batch is halved and retried, and the stored outputs are the same bytes as
a run that never ran out of memory (simulated: the forward raises torch.cuda.OutOfMemoryError for
batches larger than k; the per-sample tiny model makes outputs independent of batching)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scale_helpers import make_imagenet_val, store_files, tiny_model

from beyond_inet.data import catalog
from beyond_inet.engine import infer
from beyond_inet.engine.store import Store


def _oom_above(model, k: int, calls: list[int]):
    inner = model.forward_fn

    def forward(m, x):
        calls.append(x.shape[0])
        if x.shape[0] > k:
            raise torch.cuda.OutOfMemoryError(f"simulated: batch {x.shape[0]} > {k}")
        return inner(m, x)

    model.forward_fn = forward
    return model


def _run(tmp_path, name: str, model, batch_size: int = 8):
    ds = catalog.open_dataset("imagenet-val", str(tmp_path / "data"))
    pos = np.arange(len(ds))
    store = Store(tmp_path / name)
    entries = {v: store.entry(f"key-{v}", len(pos), {"view": v}) for v in ("standard", "scale-1.5")}
    stats = infer.run_pass(model, ds, pos, entries, batch_size=batch_size, num_workers=0)
    return stats, store_files(tmp_path / name)


@pytest.fixture()
def data(tmp_path):
    make_imagenet_val(tmp_path / "data", n=19)
    return tmp_path


def test_oom_halving_gives_identical_outputs(data):
    ref_stats, ref = _run(data, "ref", tiny_model())
    calls: list[int] = []
    stats, got = _run(data, "oom", _oom_above(tiny_model(), 3, calls))
    assert got == ref  # same files, same bytes (ids, labels, logits, features)
    assert ref_stats.batch_size == 8 and stats.batch_size == 2  # 8 -> 4 -> 2, then kept
    assert stats.images == ref_stats.images == 19
    assert calls[:3] == [8, 4, 2]  # first batch: two failed attempts, then micro-batches of 2
    assert max(calls[3:]) <= 2


def test_oom_at_batch_one_is_raised(data):
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _run(data, "fail", _oom_above(tiny_model(), 0, []))


def test_non_oom_errors_are_not_swallowed(data):
    model = tiny_model()

    def broken(m, x):
        raise ValueError("not an OOM")

    model.forward_fn = broken
    with pytest.raises(ValueError):
        _run(data, "err", model)
