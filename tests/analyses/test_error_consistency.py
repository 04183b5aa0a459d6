"""Error consistency: an independent per-image loop, model-vs-human's published raw decisions, compare() wiring."""
from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import Context, Request
from beyond_inet.analyses.error_consistency import (HUMANS, ErrorConsistency, finish, finish_parts, human_correct,
                                                    image_key, pair_columns)
from beyond_inet.analyses.shape_bias import CATEGORIES, category_indices
from beyond_inet.engine.outputs import Outputs


def loop_kappa(a: list, b: list) -> float:
    """Geirhos et al. 2020 written out image by image (None = no trial); independent of the module."""
    both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    n = len(both)
    agree = sum(1 for x, y in both if x == y) / n
    p1 = sum(1 for x, _ in both if x) / n
    p2 = sum(1 for _, y in both if y) / n
    expected = p1 * p2 + (1 - p1) * (1 - p2)
    if agree == 1:
        return 1.0
    return (agree - expected) / (1 - expected)


def _nan(v):
    return np.array([math.nan if x is None else float(x) for x in v])


def test_kappa_matches_independent_loop_on_synthetic_decisions():
    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(20, 200))
        a = [None if rng.random() < 0.1 else bool(rng.random() < 0.7) for _ in range(n)]
        # b copies a's outcome on a random share of images: kappa from about 0 to about 1
        share = rng.random()
        b = [x if (x is not None and rng.random() < share) else bool(rng.random() < 0.6) for x in a]
        b = [None if rng.random() < 0.05 else y for y in b]
        got = finish(pair_columns(_nan(a), _nan(b)).sum(axis=0, keepdims=True))[0]
        assert got == pytest.approx(loop_kappa(a, b), abs=1e-12), trial


def test_kappa_special_cases():
    right = np.ones(50)
    mixed = np.r_[np.ones(25), np.zeros(25)]
    one = lambda a, b: finish(pair_columns(a, b).sum(axis=0, keepdims=True))[0]  # noqa: E731
    assert one(right, right) == 1.0  # c_obs = c_exp = 1: defined as 1, not 0/0
    assert one(mixed, mixed) == 1.0
    assert one(mixed, 1 - mixed) == pytest.approx(-1.0)  # errors exactly where the other is right
    # independent by construction: a right on the first half, b on every other image
    b = np.tile([1.0, 0.0], 25)
    assert one(mixed, b) == pytest.approx(loop_kappa(list(mixed == 1), list(b == 1)))
    c_obs, c_exp, k = (x[0, 0] for x in finish_parts(pair_columns(mixed, b).sum(axis=0, keepdims=True)))
    assert c_exp == pytest.approx(0.5) and k == pytest.approx((c_obs - 0.5) / 0.5)


def test_finish_is_vectorised_and_averages_pairs():
    rng = np.random.default_rng(0)
    obs = [rng.random(60) < p for p in (0.3, 0.5, 0.8)]
    cols = np.hstack([pair_columns(obs[0].astype(float), o.astype(float)) for o in obs[1:]])
    want = np.mean([loop_kappa(list(obs[0]), list(o)) for o in obs[1:]])
    sums = np.stack([cols.sum(axis=0), cols[:30].sum(axis=0)])
    got = finish(sums)
    assert got.shape == (2,) and got[0] == pytest.approx(want)
    assert got[1] == pytest.approx(np.mean([loop_kappa(list(obs[0][:30]), list(o[:30])) for o in obs[1:]]))


def test_image_key_matches_model_vs_human_names():
    assert image_key("airplane/airplane1-bicycle2.png") == "airplane1-bicycle2.png"
    assert image_key("0001_s5n_s01_0_bird_00_bird3-bird2.png") == "bird3-bird2.png"
    assert image_key("0002_edg_s01_0_airplane_00_airplane4.png") == "airplane4.png"


# --- compare() with a fake cross-model fetch --------------------------------------------------------------

def _logits_for(categories: list[int]) -> np.ndarray:
    """1000-class logits whose 16-class decision is the given category index."""
    idx = category_indices()
    z = np.zeros((len(categories), 1000), np.float32)
    for i, c in enumerate(categories):
        z[i, idx[CATEGORIES[c]][0]] = 12.0
    return z


def _write_human(raw: Path, ds: str, subj: str, names: list[str], cats: list[str], responses: list[str]) -> None:
    d = raw / ds
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{ds}_{subj}_session_1.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename"])
        for t, (nm, c, r) in enumerate(zip(names, cats, responses)):
            w.writerow([subj, 1, t + 1, 0.5, r, c, 0, f"{t + 1:04d}_edg_s01_0_{c}_00_{nm}"])


def test_compare_on_fake_fetch_matches_loops(tmp_path):
    rng = np.random.default_rng(7)
    n = 64
    labels = rng.integers(0, 16, n)
    names = [f"{CATEGORIES[c]}{i + 1}.png" for i, c in enumerate(labels)]
    ids = [f"{CATEGORIES[c]}/{nm}" for c, nm in zip(labels, names)]

    def decide(p_right):
        return [int(c) if rng.random() < p_right else int((c + 1 + rng.integers(0, 15)) % 16) for c in labels]

    dec = {"m:a": decide(0.7), "m:b": decide(0.5)}
    subjects = {f"subject-0{k}": decide(0.8) for k in range(1, 4)}
    raw = tmp_path / "raw"
    for s, d in subjects.items():
        # subject-03 missed the first four images and answered "na" on the next two
        keep = slice(4, None) if s == "subject-03" else slice(None)
        resp = [CATEGORIES[x] for x in d]
        if s == "subject-03":
            resp[4:6] = ["na", "na"]
        _write_human(raw, "edge", s, names[keep], [CATEGORIES[c] for c in labels][keep], resp[keep])
    outs = {m: Outputs(ids, labels.astype(np.int64), _logits_for(d), np.zeros((n, 2), np.float32))
            for m, d in dec.items()}

    def fetch(model: str, req: Request):
        return outs[model] if req.dataset == "edge" else None

    ctx = Context(data_root=None, options={"mvh_raw_data": str(raw)}, n_boot=200, seed=1)
    res = ErrorConsistency().compare(ctx, ["m:a", "m:b"], fetch)
    rows = {(r.model, r.dataset, r.metric): r for r in res.rows}

    right = {m: [d[i] == labels[i] for i in range(n)] for m, d in dec.items()}
    hright = {}
    for s, d in subjects.items():
        hright[s] = [d[i] == labels[i] for i in range(n)]
        if s == "subject-03":
            hright[s] = [None] * 4 + [False, False] + hright[s][6:]

    ab = rows[("m:a", "edge", "kappa_vs:m:b")]
    assert ab.value == pytest.approx(loop_kappa(right["m:a"], right["m:b"]))
    assert rows[("m:b", "edge", "kappa_vs:m:a")].value == ab.value and ab.n == n
    assert ab.ci_low <= ab.value <= ab.ci_high
    for m in dec:
        want = np.mean([loop_kappa(right[m], hright[s]) for s in subjects])
        r = rows[(m, "edge", "kappa_humans")]
        assert r.value == pytest.approx(want) and r.n == n
    hh = rows[(HUMANS, "edge", "kappa_humans")]
    assert hh.value == pytest.approx(np.mean([loop_kappa(hright[s], hright[t])
                                              for s, t in itertools.combinations(sorted(subjects), 2)]))
    # The CI resamples images: recompute it by hand from the same resamples (images in image-name order).
    order = sorted(range(n), key=lambda i: names[i])
    reps = []
    for idx in stats.replicate_indices(n, 200, 1):
        for row in idx:
            reps.append(loop_kappa([right["m:a"][order[i]] for i in row], [right["m:b"][order[i]] for i in row]))
    lo, hi = np.quantile(np.array(reps)[np.isfinite(reps)], [0.025, 0.975])
    assert (ab.ci_low, ab.ci_high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    mat = res.artifacts["error-consistency/matrix"]["edge"]
    assert mat["models"] == ["m:a", "m:b"] and mat["kappa"][0][1] == pytest.approx(ab.value)
    assert set(res.artifacts["error-consistency/humans"]["edge"]["models"]) == {"m:a", "m:b"}


def test_compare_scores_imagenet_sets_by_top1_and_skips_absent_models():
    labels = np.arange(40) % 1000
    def logits(wrong_every):
        z = np.zeros((40, 1000), np.float32)
        for i, c in enumerate(labels):
            z[i, c if i % wrong_every else (c + 1) % 1000] = 5.0
        return z
    outs = {"m:a": Outputs([f"x{i}.JPEG" for i in range(40)], labels.astype(np.int64), logits(3), np.zeros((40, 1))),
            "m:b": Outputs([f"x{i}.JPEG" for i in range(40)], labels.astype(np.int64), logits(4), np.zeros((40, 1)))}
    ctx = Context(data_root=None, options={"error_consistency_datasets": ["imagenet-sample"], "mvh_raw_data": "/nope"},
                  available=lambda d: d == "imagenet-sample", n_boot=0)
    ec = ErrorConsistency()
    assert Request("imagenet-sample", "standard") in ec.requests(ctx)
    res = ec.compare(ctx, ["m:a", "m:b", "m:c"], lambda m, r: outs.get(m) if r.dataset == "imagenet-sample" else None)
    r = {(x.model, x.metric): x for x in res.rows if x.dataset == "imagenet-sample"}
    ra = [i % 3 != 0 for i in range(40)]
    rb = [i % 4 != 0 for i in range(40)]
    assert r[("m:a", "kappa_vs:m:b")].value == pytest.approx(loop_kappa(ra, rb))
    assert not any(x.model == "m:c" for x in res.rows)
    assert not any(x.metric == "kappa_humans" for x in res.rows)  # no human data for ImageNet sets


# --- model-vs-human's published raw decisions ---------------------------------------------------------------

@pytest.mark.parametrize("ds", ["cue-conflict", "edge", "silhouette"])
def test_resnet50_vs_humans_from_published_raw_data(shared_data, ds):
    """ResNet-50's published decisions, fed to compare() as logits, give model-vs-human's error consistency:
    recomputed here the way its ErrorConsistency does it (both observers' trials sorted by image name, 16-class
    accuracy from object_response == category), and its accuracy equals the published performances CSV."""
    raw = shared_data / "model-vs-human-raw-data"
    with open(raw / ds / f"{ds}_resnet50_session-1.csv", newline="") as f:
        model_rows = sorted(csv.DictReader(f), key=lambda r: image_key(r["imagename"]))
    ids = [f"{r['category']}/{image_key(r['imagename'])}" for r in model_rows]
    labels = np.array([CATEGORIES.index(r["category"]) for r in model_rows])
    out = Outputs(ids, labels, _logits_for([CATEGORIES.index(r["object_response"]) for r in model_rows]),
                  np.zeros((len(ids), 1), np.float32))
    ctx = Context(data_root=None, options={"mvh_raw_data": str(raw)}, n_boot=0)
    res = ErrorConsistency().compare(ctx, ["tv-resnet50"], lambda m, r: out if r.dataset == ds else None)
    got = {(r.model, r.metric): r for r in res.rows if r.dataset == ds}

    m_ok = [r["object_response"] == r["category"] for r in model_rows]
    with open(raw / "performances" / "resnet50.csv", newline="") as f:
        published = {(r["dataset_name"], r["metric_name"]): float(r["performance"]) for r in csv.DictReader(f)}
    assert np.mean(m_ok) == pytest.approx(published[(ds, "accuracy (top-1)")])
    kappas, subjects = [], {}
    for p in sorted((raw / ds).glob(f"{ds}_subject-*_session_1.csv")):
        with open(p, newline="") as f:
            hrows = sorted(csv.DictReader(f), key=lambda r: image_key(r["imagename"]))
        assert [image_key(r["imagename"]) for r in hrows] == [image_key(r["imagename"]) for r in model_rows]
        h_ok = [r["object_response"] == r["category"] for r in hrows]
        subjects[p.name] = h_ok
        kappas.append(loop_kappa(m_ok, h_ok))
    assert len(kappas) == 10
    assert got[("tv-resnet50", "kappa_humans")].value == pytest.approx(np.mean(kappas), abs=1e-12)
    assert got[("tv-resnet50", "kappa_humans")].n == len(model_rows)
    hh = np.mean([loop_kappa(subjects[a], subjects[b]) for a, b in itertools.combinations(sorted(subjects), 2)])
    assert got[(HUMANS, "kappa_humans")].value == pytest.approx(hh, abs=1e-12)
    # humans agree on their errors far more than ResNet-50 does with them (Geirhos et al. 2020, Fig. 3)
    assert hh > got[("tv-resnet50", "kappa_humans")].value


def test_human_correct_reads_bundled_trials():
    from beyond_inet.data.catalog import bundled_path

    raw = bundled_path("model-vs-human-raw-data")
    assert raw is not None
    subj, repeats = human_correct(raw, "cue-conflict")
    assert len(subj) == 10 and repeats == 0
    assert all(len(v) == 160 for v in subj.values())


def test_imagenet_sets_keep_full_ids_so_same_file_names_in_two_classes_stay_apart():
    """Class folders may repeat a file name: top-1 correctness keys on the whole sample id there."""
    import numpy as np

    from beyond_inet.analyses.error_consistency import model_correct
    from beyond_inet.engine.outputs import Outputs

    logits = np.zeros((2, 1000), np.float32)
    logits[0, 0] = logits[1, 5] = 1.0
    out = Outputs(ids=["n01440764/sketch_0.JPEG", "n01443537/sketch_0.JPEG"], labels=np.array([0, 1]),
                  logits=logits, features=np.zeros((2, 1), np.float32))
    got = model_correct("imagenet-sketch", out)
    assert got == {"n01440764/sketch_0.JPEG": 1.0, "n01443537/sketch_0.JPEG": 0.0}
