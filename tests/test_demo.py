"""The demo's bundled data (pixels, selection, human trials, licences, size) and its bare-clone configuration."""
from __future__ import annotations

import collections
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beyond_inet.analyses.shape_bias import CATEGORIES, human_raw_dir, human_reference, parse_cue_conflict_name
from beyond_inet.analyses.base import Context
from beyond_inet.data import catalog
from beyond_inet.demo import demo_config

BUNDLED = Path(catalog.__file__).resolve().parent / "bundled"


def _pngs(name: str) -> list[Path]:
    return sorted((BUNDLED / name).glob("*/*.png"))


def test_bundled_sets_are_balanced_and_small():
    cue = _pngs("cue-conflict")
    assert len(cue) == 160 and len(_pngs("edge")) == 160 and len(_pngs("silhouette")) == 160
    pairs = [parse_cue_conflict_name(f"{p.parent.name}/{p.name}") for p in cue]
    assert all(s == p.parent.name for (s, _), p in zip(pairs, cue))
    assert all(s != t for s, t in pairs)  # every image counts for shape bias
    assert collections.Counter(s for s, _ in pairs) == {c: 10 for c in CATEGORIES}
    assert collections.Counter(t for _, t in pairs) == {c: 10 for c in CATEGORIES}
    total = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert total < 20_000_000, total
    for lic in ("LICENSE-stimuli-CC-BY-4.0", "LICENSE-human-data-MIT", "README.md"):
        assert (BUNDLED / lic).stat().st_size > 500
    assert "Attribution 4.0 International" in (BUNDLED / "LICENSE-stimuli-CC-BY-4.0").read_text()
    assert "MIT" in (BUNDLED / "LICENSE-human-data-MIT").read_text()


@pytest.mark.parametrize("name", ["cue-conflict", "edge", "silhouette"])
def test_bundled_pixels_equal_the_originals(shared_data, name):
    for p in _pngs(name):
        orig = shared_data / name / p.parent.name / p.name
        with Image.open(p) as a, Image.open(orig) as b:
            assert a.mode == b.mode and a.size == b.size, p
            assert np.array_equal(np.asarray(a), np.asarray(b)), p
    if name != "cue-conflict":  # the complete sets
        assert len(_pngs(name)) == len(list((shared_data / name).glob("*/*.png")))


@pytest.mark.parametrize("name", ["cue-conflict", "edge", "silhouette"])
def test_bundled_human_trials_are_the_originals_on_those_images(shared_data, name):
    images = {p.name for p in _pngs(name)}
    src = sorted((shared_data / "model-vs-human-raw-data" / name).glob(f"{name}_subject-*.csv"))
    got = sorted((BUNDLED / "model-vs-human-raw-data" / name).glob(f"{name}_subject-*.csv"))
    assert [f.name for f in got] == [f.name for f in src] and len(got) == 10
    for a, b in zip(got, src):
        with open(a, newline="") as fa, open(b, newline="") as fb:
            mine = list(csv.DictReader(fa))
            theirs = [r for r in csv.DictReader(fb) if r["imagename"].rsplit("_", 1)[-1] in images]
        assert mine == theirs and len(mine) == 160


def test_catalog_falls_back_to_the_bundled_copy(tmp_path):
    assert catalog.available("cue-conflict", None) and catalog.ENTRIES["cue-conflict"].uses_bundled(None)
    ds = catalog.open_dataset("cue-conflict", None)
    assert len(ds) == 160 and ds.sample_id(0).startswith("airplane/")
    assert len(catalog.open_dataset("edge", str(tmp_path))) == 160  # a data root without it: bundled
    (tmp_path / "edge" / "cat").mkdir(parents=True)
    Image.new("RGB", (224, 224)).save(tmp_path / "edge" / "cat" / "cat1.png")
    assert len(catalog.open_dataset("edge", str(tmp_path))) == 1  # the data root's copy wins
    assert not catalog.ENTRIES["edge"].uses_bundled(str(tmp_path))
    assert not catalog.available("imagenet-val", None)


def test_human_reference_from_bundled_trials_matches_the_images():
    ctx = Context(data_root=None)
    raw = human_raw_dir(ctx)
    assert raw == BUNDLED / "model-vs-human-raw-data"  # bundled images -> the trials on those images
    ref = human_reference(raw)
    assert ref["n_trials_cue-conflict"] == 1600 and ref["n_images_cue-conflict"] == 160
    assert 0.9 < ref["shape_bias_mean"] <= 1.0  # humans decide by shape (model-vs-human: 0.96 on all 1280)
    assert len(ref["acc16_edge_subjects"]) == 10


def test_human_trials_follow_the_data_root(shared_data, tmp_path, monkeypatch):
    """Full cue-conflict under the data root: its full human trials, not the bundled 160-image subset (whose
    images would mostly not be the ones the models saw), even with no shared folder beside the checkout."""
    monkeypatch.setenv("BEYOND_INET_SHARED_DATA", str(tmp_path / "absent"))
    ctx = Context(data_root=str(shared_data))
    assert human_raw_dir(ctx) == shared_data / "model-vs-human-raw-data"
    assert human_reference(human_raw_dir(ctx))["n_images_cue-conflict"] == 1280


def test_demo_config_on_a_bare_clone_and_with_shared_data(shared_data):
    models, analyses, options, limit = demo_config(None)
    assert models == ["packaged:efficientnet_lite0", "packaged:efficientnet_lite1"]
    assert {"shape-bias", "error-consistency"} <= set(analyses) and limit == 160
    assert "skimage-photos" not in options["accuracy_datasets"]  # no 5-photo "best model"
    assert "invariance_dataset" not in options  # no sweep on a handful of photos
    _, analyses2, options2, _ = demo_config(str(shared_data))
    assert options2["invariance_dataset"] == "imagenet-sample" and analyses2 == analyses
