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
