"""model-vs-human's 17 datasets in the catalog: their release URLs, downloaded through the catalog's
download path from a local HTTP server serving archives in the release's layout
(``<dataset>/dnn/session-1/<trial name>.png``), and each image's category and condition read from its
file name as model-vs-human reads them."""
from __future__ import annotations

import csv
import io
import tarfile

import pytest

from beyond_inet.analyses import model_vs_human as M
from beyond_inet.data import catalog
from beyond_inet.data import download as dl
from beyond_inet.data.labelspaces import CUE_CONFLICT_CATEGORIES
from tests.conftest import skimage_photo
from tests.hub_server import server  # noqa: F401 - a fixture

# Trial names as the release's decision CSVs write them (resnet50's first trials), with their condition
# (as model-vs-human's experiments name it) and category.
NAMES = {
    "colour": [("0001_cl_dnn_cr_oven_40_n04111531_14126.png", "cr", "oven")],
    "high-pass": [("0001_hp_dnn_0.7_boat_10_n03662601_12531.png", "0.7", "boat"),
                  ("0002_hp_dnn_3_cat_10_n02123394_133.png", "3.0", "cat")],
    "uniform-noise": [("0001_nse_dnn_0.03_elephant_10_n02504458_7209.png", "0.03", "elephant"),
                      ("0002_nse_dnn_0.00_dog_10_n02085620_1.png", "0.0", "dog")],
    "false-colour": [("0001_fc_dnn_true_knife_35_n03041632_86251.png", "True", "knife")],
    "sketch": [("0001_ske_dnn_0_airplane_00_airplane-0001-sketch-0.png", "0", "airplane")],
}


def _release_tar(dataset: str, names: list[str]) -> bytes:
    buf = io.BytesIO()
    img = io.BytesIO()
    skimage_photo("chelsea").resize((224, 224)).save(img, "PNG")
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for n in names:
            ti = tarfile.TarInfo(f"{dataset}/dnn/session-1/{n}")
            ti.size = len(img.getvalue())
            tf.addfile(ti, io.BytesIO(img.getvalue()))
    return buf.getvalue()



def test_all_seventeen_in_the_catalog_with_release_urls_and_licenses():
    for ds in M.DATASETS:
        e = catalog.ENTRIES[ds]
        assert e.source == f"url:https://github.com/bethgelab/model-vs-human/releases/download/v0.1/{ds}.tar.gz"
        assert e.license
    assert "MIT" in catalog.ENTRIES["sketch"].license
    assert "ImageNet" in catalog.ENTRIES["contrast"].license and "CC BY" in catalog.ENTRIES["edge"].license


@pytest.mark.parametrize("dataset", sorted(NAMES))
def test_download_from_release_layout_and_parse(tmp_path, server, dataset):
    names = [n for n, _, _ in NAMES[dataset]]
    url_name = catalog.ENTRIES[dataset].source.rsplit("/", 1)[1]
    server.static[url_name] = _release_tar(dataset, names)
    root = tmp_path / "data"
    got = dl.download(dataset, root, url_override=f"{server.url}/files/{url_name}", progress=False)
    assert got == root / "model-vs-human" / dataset and (got / "dnn" / "session-1" / names[0]).is_file()
    assert catalog.available(dataset, root)
    ds = catalog.open_dataset(dataset, root)
    assert len(ds) == len(names)
    by_id = {ds.sample_id(i): ds.label(i) for i in range(len(ds))}
    for n, cond, cat in NAMES[dataset]:
        assert by_id[f"session-1/{n}"] == CUE_CONFLICT_CATEGORIES.index(cat)
        assert M.trial_condition(dataset, n) == cond
    # the model's decision table: condition and category from the sample ids
    ids = [ds.sample_id(i) for i in range(len(ds))]
    t = M.decision_table("m", dataset, ids, ["dog"] * len(ids),
                         [CUE_CONFLICT_CATEGORIES[ds.label(i)] for i in range(len(ds))])
    assert sorted(zip(t["imagename"], t["condition"])) == sorted((n, c) for n, c, _ in NAMES[dataset])


def test_non_trial_names_are_refused(tmp_path):
    folder = tmp_path / "model-vs-human" / "rotation" / "dnn" / "session-1"
    folder.mkdir(parents=True)
    (folder / "cat.png").write_bytes(b"")
    with pytest.raises(Exception, match="trial name"):
        catalog.open_dataset("rotation", tmp_path)


@pytest.mark.parametrize("dataset", [d for d in M.DATASETS if d in M.PARAMETRIC or d in ("sketch", "stylized")])
def test_release_names_read_as_the_released_decisions_say(shared_data, tmp_path, dataset):
    """Every image of resnet50's released trials, laid out as the release ships it: the reader's label is
    the CSV's category, and the condition parsed from the name is the CSV's (as model-vs-human names it)."""
    csv_path = shared_data / "model-vs-human-raw-data" / dataset / f"{dataset}_resnet50_session-1.csv"
    if not csv_path.is_file():
        pytest.skip(f"{csv_path} absent")
    rows = list(csv.DictReader(open(csv_path, newline="")))
    folder = tmp_path / "model-vs-human" / dataset / "dnn" / "session-1"
    folder.mkdir(parents=True)
    for r in rows:
        (folder / r["imagename"]).write_bytes(b"")  # the reader only lists and labels here
    ds = catalog.open_dataset(dataset, tmp_path)
    labels = {ds.sample_id(i).split("/", 1)[1]: ds.label(i) for i in range(len(ds))}
    assert len(labels) == len(rows)
    for r in rows:
        assert labels[r["imagename"]] == CUE_CONFLICT_CATEGORIES.index(r["category"])
        assert M.trial_condition(dataset, r["imagename"]) == M.canonical_condition(dataset, r["condition"])
