"""Shape bias: an independent per-image reimplementation, published decision CSVs, human reference, wiring."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from beyond_inet.analyses.base import Context, Request
from beyond_inet.analyses.shape_bias import (CATEGORIES, ShapeBias, category_indices, decisions16,
                                             human_reference, parse_cue_conflict_name, read_decision_csv,
                                             shape_bias_from_decisions, shape_bias_metrics)
from beyond_inet.engine.outputs import Outputs

REPO = Path(__file__).resolve().parents[2]


def _shared_path() -> Path | None:
    """Same lookup as conftest's `shared_data` fixture, for helpers that must not skip when it is absent."""
    env = os.environ.get("BEYOND_INET_SHARED_DATA")
    p = Path(env) if env else REPO / ".." / "shared" / "data"
    return p.resolve() if p.is_dir() else None


def _cue_conflict_ids() -> list[str]:
    """The 1280 real ids when the shared data is present, else names built in the same pattern."""
    p = _shared_path()
    if p is not None and (p / "cue-conflict").is_dir():
        ids = sorted(f"{d.name}/{f.name}" for d in (p / "cue-conflict").iterdir() if d.is_dir()
                     for f in d.glob("*.png"))
        if len(ids) == 1280:
            return ids
    ids = []
    for k, s in enumerate(CATEGORIES):
        for j in range(80):
            t = CATEGORIES[(k + j) % 16]
            ids.append(f"{s}/{s}{j // 16 + 1}-{t}{j % 7 + 1}.png")
    return ids


def _reference_mapping() -> dict[str, list[int]]:
    p = _shared_path()
    f = p / "imagenet-class-info" / "model_vs_human_16class_imagenet_indices.json" if p else None
    if f is not None and f.is_file():
        return json.loads(f.read_text())["categories"]
    return {c: list(v) for c, v in category_indices().items()}


def _loop_reference(ids, logits, mapping):
    """Straightforward per-image model-vs-human protocol: softmax, np.mean per category, argmax, ratio."""
    cats = list(CATEGORIES)
    decisions, shapes, textures = [], [], []
    for sid, row in zip(ids, logits):
        row = row.astype(np.float64)
        e = np.exp(row - row.max())
        p = e / e.sum()
        scores = [np.mean([p[i] for i in mapping[c]]) for c in cats]
        best = 0
        for k in range(1, len(cats)):
            if scores[k] > scores[best]:
                best = k
        decisions.append(cats[best])
        shapes.append(sid.split("/")[0])
        last = sid.split("/")[-1].split(".")[0].split("-")[-1]
        textures.append("".join(ch for ch in last if ch.isalpha()))
    n_shape = n_tex = 0
    per = {c: [0, 0] for c in cats}
    for d, s, t in zip(decisions, shapes, textures):
        if s == t:
            continue
        if d == s:
            n_shape += 1
            per[s][0] += 1
        if d == t:
            n_tex += 1
            per[s][1] += 1
    per_cat = {c: (a / (a + b) if a + b else math.nan) for c, (a, b) in per.items()}
    return decisions, n_shape / (n_shape + n_tex), per_cat, n_shape, n_tex


def test_asset_mapping_matches_shared_copy(shared_data):
    ref = json.loads((shared_data / "imagenet-class-info" / "model_vs_human_16class_imagenet_indices.json")
                     .read_text())["categories"]
    assert {c: list(v) for c, v in category_indices().items()} == ref


def test_asset_mapping_shape():
    idx = category_indices()
    assert tuple(idx) == CATEGORIES
    assert sum(len(v) for v in idx.values()) == 207
    assert idx["knife"] == (499,) and len(idx["bird"]) == 49


def test_independent_loop_implementation_matches_exactly():
    ids = _cue_conflict_ids()
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(len(ids), 1000)) * 3).astype(np.float32)
    mapping = _reference_mapping()
    # Make the decisions informative: boost a shape or texture class on many images.
    for i, sid in enumerate(ids):
        s, t = parse_cue_conflict_name(sid)
        logits[i, mapping[s if i % 3 == 0 else t][0]] += 12 if i % 5 else 0
    ref_dec, ref_sb, ref_per, n_shape, n_tex = _loop_reference(ids, logits, mapping)

    dec = decisions16(logits)
    assert [CATEGORIES[d] for d in dec] == ref_dec
    shapes = np.array([CATEGORIES.index(i.split("/")[0]) for i in ids])
    textures = np.array([CATEGORIES.index(parse_cue_conflict_name(i)[1]) for i in ids])
    m = shape_bias_metrics(dec, shapes, textures)
    assert m["n_conflict"] == 1200 and m["n_no_conflict"] == 80
    assert m["shape_bias"] == ref_sb
    assert m["shape_acc"] == n_shape / 1200 and m["texture_acc"] == n_tex / 1200
    for c in CATEGORIES:
        assert (m["per_category"][c] == ref_per[c]) or (math.isnan(ref_per[c]) and math.isnan(m["per_category"][c]))

    # The analysis wired through Outputs gives the same numbers.
    labels = shapes.astype(np.int64)
    out = Outputs(ids=ids, labels=labels, logits=logits, features=np.zeros((len(ids), 2), np.float32))
    res = ShapeBias().compute(Context(None, n_boot=50), "m", lambda r: out if r.dataset == "cue-conflict" else None)
    rows = {r.metric: r for r in res.rows if r.dataset == "cue-conflict"}
    # n = the decisions shape bias rests on (shape or texture), not every conflict image shown
    assert rows["shape_bias"].value == ref_sb and rows["shape_bias"].n == n_shape + n_tex < 1200
    assert rows["shape_bias"].ci_low <= ref_sb <= rows["shape_bias"].ci_high
    assert rows["shape_bias_dog"].value == ref_per["dog"]
    art = res.artifacts["shape-bias/per-category"]
    assert art["categories"] == list(CATEGORIES) and art["overall"] == ref_sb


def test_parse_names():
    assert parse_cue_conflict_name("airplane/airplane1-bicycle2.png") == ("airplane", "bicycle")
    assert parse_cue_conflict_name("0001_s5n_s01_0_bird_00_bird3-bird2.png") == ("bird", "bird")
    for bad in ("airplane/airplane1.png", "dog/dog1-zebra2.png", "x/foo-bar.png", "cat/cat1-dog2-cat3.png"):
        with pytest.raises(ValueError):
            parse_cue_conflict_name(bad)


def test_hand_worked_small_case():
    # categories: 0 airplane, 1 bear, 2 bicycle
    shapes = np.array([0, 0, 0, 1, 1, 2, 2])
    textures = np.array([1, 1, 2, 0, 1, 2, 0])   # rows 4 and 5 are no-conflict
    decisions = np.array([0, 1, 5, 0, 1, 0, 2])
    m = shape_bias_metrics(decisions, shapes, textures)
    # conflict rows 0,1,2,3,6 -> shape hits rows 0,6 ; texture hits rows 1,3
    assert m["shape_bias"] == 2 / 4
    assert m["shape_acc"] == 2 / 5 and m["texture_acc"] == 2 / 5
    assert m["acc16_no_conflict"] == 1 / 2          # row 4 right (bear), row 5 wrong
    assert m["per_category"]["airplane"] == 1 / 2 and m["per_category"]["bear"] == 0.0
    assert m["per_category"]["bicycle"] == 1.0 and math.isnan(m["per_category"]["bird"])


def test_mean_not_sum_aggregation():
    # dog has 109 classes, knife 1: equal per-class mass favours knife under np.mean, dog under a sum.
    idx = category_indices()
    logits = np.full((1, 1000), -50.0)
    logits[0, list(idx["dog"])] = 0.0
    logits[0, idx["knife"][0]] = 1.0
    assert CATEGORIES[decisions16(logits)[0]] == "knife"


def test_malformed_names_are_skipped_and_rest_goes_on():
    ids = ["airplane/airplane1-bicycle2.png", "bear/bear_oops.png", "bear/bear1-cat2.png", "cat/cat1-cat2.png"]
    labels = np.array([0, 1, 1, 7])
    idx = category_indices()
    logits = np.zeros((4, 1000), np.float32)
    logits[0, idx["airplane"][0]] = 20   # shape
    logits[1, idx["bear"][0]] = 20
    logits[2, idx["cat"][0]] = 20        # texture
    logits[3, idx["cat"][0]] = 20        # no-conflict, correct
    out = Outputs(ids=ids, labels=labels, logits=logits, features=np.zeros((4, 1), np.float32))
    res = ShapeBias().compute(Context(None, n_boot=20), "m", lambda r: out if r.dataset == "cue-conflict" else None)
    msgs = [s.reason for s in res.skips if s.dataset == "cue-conflict"]
    assert len(msgs) == 1 and "bear/bear_oops.png" in msgs[0]
    rows = {r.metric: r for r in res.rows}
    assert rows["shape_bias"].value == 0.5 and rows["shape_bias"].n == 2
    assert rows["acc16_no_conflict"].value == 1.0
    assert {s.dataset for s in res.skips} >= {"edge", "silhouette"}   # absent sets -> skips, not errors


def test_edge_silhouette_acc16():
    idx = category_indices()
    logits = np.zeros((3, 1000), np.float32)
    logits[0, idx["clock"][0]] = 20
    logits[1, idx["truck"][0]] = 20
    logits[2, idx["oven"][0]] = 20
    labels = np.array([CATEGORIES.index("clock"), CATEGORIES.index("oven"), CATEGORIES.index("oven")])
    out = Outputs(ids=["clock/clock1.png", "oven/oven1.png", "oven/oven2.png"], labels=labels, logits=logits,
                  features=np.zeros((3, 1), np.float32))
    res = ShapeBias().compute(Context(None, n_boot=20), "m", lambda r: out if r.dataset == "edge" else None)
    (row,) = [r for r in res.rows if r.dataset == "edge"]
    assert row.metric == "acc16" and row.value == pytest.approx(2 / 3) and row.n == 3
    assert ShapeBias().requests(Context(None)) == [Request(d, "native") for d in ("cue-conflict", "edge", "silhouette")]


@pytest.mark.parametrize("rel, expected", [
    ("model-vs-human-raw-data/cue-conflict/cue-conflict_resnet50_session-1.csv", 0.2142),
    ("texture-vs-shape-raw-data/style-transfer-512-nomask-experiment-trained-CNNs/"
     "style-transfer-512-nomask-experiment_resnet50_session-1.csv", 0.2207),
    ("beyond-inet-raw-data/cue-conflict/cue-conflict_deit3-21k_session-1.csv", 0.3986),
    ("beyond-inet-raw-data/cue-conflict/cue-conflict_convnext-base-21k_session-1.csv", 0.3330),
    ("beyond-inet-raw-data/cue-conflict/cue-conflict_vit-clip_session-1.csv", 0.4647),
    ("beyond-inet-raw-data/cue-conflict/cue-conflict_convnext-clip_session-1.csv", 0.4241),
])
def test_published_decisions(shared_data, rel, expected):
    r = shape_bias_from_decisions(read_decision_csv(shared_data / rel))
    assert r["n_conflict"] == 1200 and r["n_malformed"] == 0
    assert round(r["shape_bias"], 4) == expected


def test_human_reference(shared_data, tmp_path):
    h = human_reference(shared_data / "model-vs-human-raw-data")
    subj = h["shape_bias_subjects"]
    assert len(subj) == 10 and all(s.startswith("subject-") for s in subj)
    assert round(min(subj.values()), 3) == 0.919 and round(max(subj.values()), 3) == 0.987
    assert round(h["shape_bias_mean"], 3) == 0.958
    assert set(h["shape_bias_per_category"]) == set(CATEGORIES)
    assert 0 < h["acc16_edge_mean"] <= 1 and 0 < h["acc16_silhouette_mean"] <= 1
    # The analysis attaches it when pointed at the folder.
    res = ShapeBias().compute(Context(None, options={"mvh_raw_data": str(shared_data / "model-vs-human-raw-data")}),
                              "m", lambda r: None)
    assert res.artifacts["shape-bias/human"]["shape_bias_mean"] == h["shape_bias_mean"]
