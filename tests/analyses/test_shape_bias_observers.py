"""Published decisions as observers: shape bias from model-vs-human's raw data and the paper's released CSVs.

The reference is written here from model-vs-human's ``ShapeBias.analysis`` (modelvshuman/plotting/analyses.py):
texture = the file name's last ``_`` part, without extension, after its ``-``, digits removed; rows with
shape (``category``) == texture dropped; fraction shape = #(response == shape) / #rows, likewise texture;
shape bias = shape / (shape + texture). Humans: that value per subject, then the mean (the READMEs' numbers).
"""
from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import numpy as np
import pytest

from beyond_inet.analyses.shape_bias import ShapeBias
from beyond_inet.api import evaluate
from beyond_inet.contracts import Context, Observer, Trial
from beyond_inet.data import decisions


def mvh_texture(imagename: str) -> str:
    stem = imagename.split("_")[-1].split(".")[0]
    return "".join(ch for ch in stem.split("-")[-1] if not ch.isdigit())


def mvh_shape_bias(rows: list[dict]) -> float:
    """model-vs-human's ShapeBias.analysis on one observer's rows (the full file, shape == texture included)."""
    n = len(rows)
    kept = [r for r in rows if r["category"] != mvh_texture(r["imagename"])]
    shape = sum(r["object_response"] == r["category"] for r in kept) / n
    texture = sum(r["object_response"] == mvh_texture(r["imagename"]) for r in kept) / n
    return shape / (shape + texture)


def published(folder: Path) -> dict[str, float]:
    """subj -> reference shape bias of every cue-conflict CSV, and 'humans' -> the mean over subjects."""
    out, subjects = {}, []
    for f in sorted((folder / "cue-conflict").glob("cue-conflict_*.csv")):
        with open(f, newline="") as fh:
            rows = [{k.lower(): v for k, v in r.items()} for r in csv.DictReader(fh)]
        out[rows[0]["subj"]] = mvh_shape_bias(rows)
        if rows[0]["subj"].startswith("subject-"):
            subjects.append(out[rows[0]["subj"]])
    if subjects:
        out["humans"] = float(np.mean(subjects))
    return out


def readme_values(readme: Path) -> dict[str, str]:
    """README name -> printed shape bias (as printed: its decimals are the precision to match)."""
    text = " ".join(readme.read_text().split())
    part = text[text.index("ShapeBias.analysis"):]
    out = {}
    prefix = ""
    for name, value in re.findall(r"([A-Za-z0-9_\-]+)\s+(0\.\d+)", part):
        if name.startswith("_"):  # "swag_regnety_16gf 0.299, _32gf 0.339": the family's prefix continues
            name = prefix + name
        else:
            prefix = name.rsplit("_", 1)[0] if name.startswith("swag") else ""
        out[name] = value
    return out


@pytest.fixture(scope="module")
def no_model_run(tmp_path_factory):
    from tests.conftest import shared_data_path

    shared = shared_data_path()
    if shared is None:
        pytest.skip("shared data folder absent")
    out = tmp_path_factory.mktemp("observers")
    ev = evaluate(analyses=["shape-bias"], data_root=str(shared), out=out, bootstrap=20, report=False,
                  decisions=[shared / "model-vs-human-raw-data", shared / "beyond-inet-raw-data" / "cue-conflict"])
    return shared, ev


def test_no_model_run_gives_every_published_observer_model_vs_humans_shape_bias(no_model_run, shared_data):
    shared, ev = no_model_run
    r = ev.results
    got = {m: v for m, v in r[(r.metric == "shape_bias") & (r.dataset == "cue-conflict")][["model", "value"]].values}
    want = {**published(shared / "model-vs-human-raw-data"), **published(shared / "beyond-inet-raw-data")}
    assert len([m for m in want if not m.startswith("subject-") and m != "humans"]) == 18
    assert set(got) == set(want)
    for m, v in want.items():
        assert got[m] == pytest.approx(v, abs=1e-12), m


def test_the_readmes_numbers_are_reproduced_to_their_printed_decimals(no_model_run, shared_data):
    shared, ev = no_model_run
    r = ev.results
    got = {m.replace("_", "-"): v for m, v in
           r[(r.metric == "shape_bias") & (r.dataset == "cue-conflict")][["model", "value"]].values}
    checked = 0
    for readme in (shared / "model-vs-human-raw-data" / "README.md", shared / "beyond-inet-raw-data" / "README.md"):
        for name, printed in readme_values(readme).items():
            if name == "humans":  # "humans 0.919–0.987 (mean of 10 subjects 0.958)": a range, then the mean
                continue
            key = {"subjects": "humans"}.get(name, name.replace("_", "-"))
            key = next((k for k in got if k == key or k == f"{key}-in1k"), None)
            if key is None:
                continue
            decimals = len(printed.split(".")[1])
            assert f"{got[key]:.{decimals}f}" == printed, (name, got[key], printed)
            checked += 1
    assert checked >= 18  # 9 + 9 published models (and the humans' mean)


def test_humans_are_the_mean_over_subjects_and_listed_per_subject(no_model_run, shared_data):
    _, ev = no_model_run
    r = ev.results
    sb = r[(r.metric == "shape_bias") & (r.dataset == "cue-conflict")].set_index("model")["value"]
    subjects = [m for m in sb.index if m.startswith("subject-")]
    assert len(subjects) == 10
    assert sb["humans"] == pytest.approx(np.mean(sb[subjects]), abs=1e-12)
    cat = r[(r.model == "humans") & (r.metric == "shape_bias_dog")]["value"].item()
    per = r[r.model.isin(subjects) & (r.metric == "shape_bias_dog")]["value"]
    assert cat == pytest.approx(per.mean(), abs=1e-12)


def test_observers_that_need_logits_are_skips_not_failures(tmp_path, shared_data):
    ev = evaluate(analyses=["shape-bias", "calibration"], data_root=str(shared_data), out=tmp_path, bootstrap=5,
                  report=False, decisions=[shared_data / "beyond-inet-raw-data" / "cue-conflict"])
    s = ev.skips
    assert set(s[s.analysis == "calibration"].model) >= {"vit_clip", "deit3_21k"}
    assert (ev.results.analysis == "shape-bias").any()


def _observer(rows: list[tuple[str, str, str]]) -> Observer:
    return Observer("o", False, {"cue-conflict": [Trial(img, resp, cat) for resp, cat, img in rows]})


def test_an_observers_shape_bias_does_not_depend_on_trial_order(shared_data):
    f = shared_data / "beyond-inet-raw-data" / "cue-conflict" / "cue-conflict_vit-clip_session-1.csv"
    with open(f, newline="") as fh:
        rows = [(r["object_response"], r["category"], r["imagename"]) for r in csv.DictReader(fh)]
    ctx = Context(data_root=None, n_boot=50, seed=1)
    a = ShapeBias().compute_observer(ctx, _observer(rows)).rows
    random.Random(0).shuffle(rows)
    b = ShapeBias().compute_observer(ctx, _observer(rows)).rows
    va = {x.metric: (x.value, x.n) for x in a}
    vb = {x.metric: (x.value, x.n) for x in b}
    assert va.keys() == vb.keys()
    for k in va:
        assert va[k][0] == pytest.approx(vb[k][0], abs=1e-12) and va[k][1] == vb[k][1], k
    assert va["shape_bias"][0] == pytest.approx(mvh_shape_bias(
        [{"object_response": r[0], "category": r[1], "imagename": r[2]} for r in rows]), abs=1e-12)
