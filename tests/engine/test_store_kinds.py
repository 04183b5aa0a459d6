"""Store entries hold only their output kinds, read back losslessly; a shard holding fewer kinds than a load
needs is not taken for complete."""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.contracts import FEATURES, LOGITS, SUMMARY, summarize_logits
from beyond_inet.engine.store import Entry, Store, StoreDamaged


def _write(root, kinds, n=7):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, 1000)).astype(np.float32)
    f = rng.standard_normal((n, 16)).astype(np.float32)
    y = rng.integers(-1, 1000, n)
    store = Store(root)
    e = store.entry("k", n, {"dataset": "d", "samples": "s", "kinds": sorted(kinds)})
    e.write_shard(0, np.arange(n), [f"i{j}" for j in range(n)], y, z, f, None, [])
    return store, z, f, y


@pytest.mark.parametrize("kinds", [{SUMMARY}, {LOGITS}, {FEATURES}, {LOGITS, FEATURES}, {SUMMARY, FEATURES}])
def test_an_entry_gives_back_exactly_its_kinds(tmp_path, kinds):
    store, z, f, y = _write(tmp_path, kinds)
    out = store.existing("k").load()
    assert (out.logits is not None) == (LOGITS in kinds) and (out.features is not None) == (FEATURES in kinds)
    if LOGITS in kinds:
        assert np.array_equal(out.logits, z)
    if FEATURES in kinds:
        assert np.array_equal(out.features, f)
    if kinds & {SUMMARY, LOGITS}:  # stored, or derived from the logits: the same record, bit for bit
        ref = summarize_logits(z, y)
        for k, v in out.record().items():
            assert np.array_equal(v, ref[k], equal_nan=True), k
        assert np.array_equal(out.top1(), z.argmax(1))


def test_a_shard_with_fewer_kinds_than_needed_is_not_complete(tmp_path):
    store, *_ = _write(tmp_path, {SUMMARY})
    assert store.existing("k").load(need={SUMMARY}).logits is None
    with pytest.raises(StoreDamaged, match="holds only summary; this run needs logits"):
        store.existing("k").load(need={LOGITS})
    store2, *_ = _write(tmp_path / "b", {LOGITS})
    assert store2.existing("k").load(need={SUMMARY}).record()["top_idx"].shape == (7, 5)  # derived from the logits


def test_shards_written_before_kinds_read_as_full(tmp_path):
    """An entry of today's format without kinds (every entry before this change) holds logits and features."""
    store, z, f, _ = _write(tmp_path, {LOGITS, FEATURES})
    import json

    m = json.loads((tmp_path / "k" / "meta.json").read_text())
    del m["kinds"]
    (tmp_path / "k" / "meta.json").write_text(json.dumps(m))
    e = store.existing("k")
    assert e.kinds == {LOGITS, FEATURES}
    out = Entry(e.root, e.n_samples).load()
    assert np.array_equal(out.logits, z) and np.array_equal(out.features, f)
