"""Planning: store keys separate what changes outputs, and dedupe what does not."""
from __future__ import annotations

import numpy as np

from beyond_inet.engine.plan import numerics_of, select_positions, store_key


def test_store_key_separates_numerics_and_inputs():
    base = dict(weights_id="w", preprocessing="p", view="standard", dataset="d", fingerprint="f", limit=None,
                info={})
    k = store_key(**base)
    assert k == store_key(**base, numerics=numerics_of("cpu", True, True))  # CPU: always fp32, CPU decode
    assert k != store_key(**base, numerics=numerics_of("cuda", True, False))
    assert store_key(**base, numerics="bf16") != store_key(**base, numerics="bf16+gpu-decode")
    for field, other in (("weights_id", "w2"), ("preprocessing", "p2"), ("view", "scale-2"), ("fingerprint", "g"),
                         ("limit", 10)):
        assert store_key(**{**base, field: other}) != k
    assert store_key(**{**base, "info": {"logit_scale": 50.0}}) != k


def test_select_positions_even_and_complete():
    assert select_positions(10, None).tolist() == list(range(10))
    assert select_positions(10, 20).tolist() == list(range(10))
    p = select_positions(1000, 4)
    assert p.tolist() == [0, 333, 666, 999] and p.dtype == np.int64


def test_shift_stores_of_the_rounded_box_are_not_reused():
    """The shift views' crop box changed (the paper's int() truncation, not rounding): their key is not the
    one the earlier code stored them under; the other views' keys are unchanged."""
    from beyond_inet import ENGINE_VERSION
    from beyond_inet.engine.store import STORE_FORMAT, make_key

    base = dict(weights_id="w", preprocessing="p", dataset="d", fingerprint="f", limit=None, info={})

    def earlier(view: str) -> str:  # the fields every key had before the change
        return make_key({"weights": "w", "pre": "p", "view": view, "dataset": "d", "samples": "f", "limit": None,
                         "logit_scale": None, "engine": ENGINE_VERSION, "store_format": STORE_FORMAT})

    for view in ("shift-0", "shift-30"):
        assert store_key(**base, view=view) != earlier(view)
    for view in ("standard", "scale-2", "res-336"):
        assert store_key(**base, view=view) == earlier(view)


def test_dataset_provenance_tells_the_sample_list_from_the_files(tmp_path):
    """results.json's dataset record: the sample-list fingerprint is the store key's (it follows --limit, not
    file times); the files' fingerprint changes when an image file is replaced in place, the list's does not."""
    import os

    from conftest import make_imagenet_folder

    from beyond_inet.engine.plan import DatasetCache

    root = make_imagenet_folder(tmp_path / "data")
    full = DatasetCache(str(root), None)
    assert full.get("imagenet-val") is not None and DatasetCache(str(root), 5).get("imagenet-val") is not None
    (n, fp, files), = full.provenance().values()
    assert n == 12 and fp == full.get("imagenet-val")[2]
    limited = DatasetCache(str(root), 5)
    limited.get("imagenet-val")
    (n5, fp5, files5), = limited.provenance().values()
    assert n5 == 5 and fp5 != fp and files5 != files
    again = DatasetCache(str(root), None)
    again.get("imagenet-val")
    assert again.provenance() == full.provenance()  # deterministic
    img = next((root / "imagenet-val").rglob("*.JPEG"))
    st = os.stat(img)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the same bytes, a new file identity
    fresh = DatasetCache(str(root), None)
    fresh.get("imagenet-val")
    (n2, fp2, files2), = fresh.provenance().values()
    assert (n2, fp2) == (n, fp) and files2 != files
    assert DatasetCache(str(root), None).provenance() == {}  # only what the run opened
