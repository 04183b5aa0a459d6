"""PUG: ImageNet analysis: the two correctness rules on hand-worked cases, and the wiring."""
from __future__ import annotations

import json

import numpy as np
import pytest

from beyond_inet.analyses.base import Context, Request
from beyond_inet.analyses.synthetic import (Synthetic, any_rule_table, paper_rule_lookup, pug_correct)
from beyond_inet.data.pug import FACTORS
from beyond_inet.engine.outputs import Outputs

# A slice of the real class_to_imagenet_idx.json, with its Shirt/Sweatshirt collision.
MAPPING = {"Shirt": [841], "Sweatshirt": [841], "Bridge": [821, 839], "Zebra_like": [340], "apple_lower": [948]}
# sorted keys: Bridge 0, Shirt 1, Sweatshirt 2, Zebra_like 3, apple_lower 4 (uppercase sorts first)


def _logits(preds):
    z = np.zeros((len(preds), 1000), np.float32)
    z[np.arange(len(preds)), preds] = 9.0
    return z


def test_rules_hand_worked():
    labels = np.array([1, 2, 0, 3, 3, 4, 0])
    preds = [841, 841, 839, 5, 821, 948, 821]
    np.testing.assert_array_equal(pug_correct(_logits(preds), labels, MAPPING, "any"), [1, 1, 1, 0, 0, 1, 1])
    # paper: 841 -> Sweatshirt (the later key wins), so the Shirt image is wrong
    np.testing.assert_array_equal(pug_correct(_logits(preds), labels, MAPPING, "paper"), [0, 1, 1, 0, 0, 1, 1])
    with pytest.raises(ValueError):
        pug_correct(_logits(preds), labels, MAPPING, "nope")


def test_tables():
    lut = paper_rule_lookup(MAPPING)
    assert lut[841] == 2 and lut[821] == 0 and lut[839] == 0 and lut[948] == 4 and lut[0] == -1
    assert (lut >= 0).sum() == 5
    t = any_rule_table(MAPPING)
    assert t.shape == (5, 1000) and t[1, 841] and t[2, 841] and t.sum() == 6


def _ctx(tmp_path, **opts):
    root = tmp_path / "pug-imagenet"
    root.mkdir(exist_ok=True)
    (root / "class_to_imagenet_idx.json").write_text(json.dumps(MAPPING))
    parts = ["Worlds", "Scene_Light"]
    return Context(str(tmp_path), options=opts, parts=lambda n: parts if n == "pug-imagenet" else [], n_boot=200)


def _fetch_two_factors():
    outs = {
        "pug-imagenet/Worlds": Outputs(ids=list("abcd"), labels=np.array([1, 2, 0, 3]),
                                       logits=_logits([841, 841, 839, 5]), features=np.zeros((4, 1), np.float32)),
        "pug-imagenet/Scene_Light": Outputs(ids=list("ef"), labels=np.array([1, 4]), logits=_logits([841, 1]),
                                            features=np.zeros((2, 1), np.float32)),
    }
    return lambda r: outs.get(r.dataset)


def test_requests_follow_present_parts(tmp_path):
    assert Synthetic().requests(_ctx(tmp_path)) == [Request("pug-imagenet/Worlds"), Request("pug-imagenet/Scene_Light")]
    assert len(Synthetic().requests(Context(None))) == 10


@pytest.mark.parametrize("rule, worlds, light", [("any", 3 / 4, 1 / 2), ("paper", 2 / 4, 0.0)])
def test_compute(tmp_path, rule, worlds, light):
    opts = {} if rule == "any" else {"pug_rule": "paper"}
    res = Synthetic().compute(_ctx(tmp_path, **opts), "m", _fetch_two_factors())
    rows = {(r.dataset, r.metric): r for r in res.rows}
    assert rows[("pug-imagenet/Worlds", f"top1_{rule}")].value == worlds
    assert rows[("pug-imagenet/Scene_Light", f"top1_{rule}")].value == light
    avg = rows[("pug-imagenet", f"top1_avg_{rule}")]
    assert avg.value == pytest.approx((worlds + light) / 2) and avg.n == 6
    # 6 images over two factors: resamples that miss a factor (its accuracy undefined) are over 2.5% of
    # them, so the average's interval is withheld; each factor's own interval stays.
    assert np.isnan(avg.ci_low) and np.isnan(avg.ci_high)
    (skip,) = [s for s in res.skips if "not available" in s.reason]
    assert all(f in skip.reason for f in FACTORS if f not in ("Worlds", "Scene_Light"))
    assert res.artifacts["synthetic/pug"]["rule"] == rule


def test_missing_mapping_is_a_skip(tmp_path):
    res = Synthetic().compute(Context(str(tmp_path)), "m", _fetch_two_factors())
    assert not res.rows and "mapping not found" in res.skips[0].reason


def test_mapping_option_path(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps(MAPPING))
    res = Synthetic().compute(Context(None, options={"pug_mapping": str(p)}, n_boot=20), "m", _fetch_two_factors())
    assert any(r.metric == "top1_avg_any" for r in res.rows)
