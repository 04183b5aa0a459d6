"""Catalog and readers: layouts, label spaces, shared data, webdataset shards, bad layouts."""
from __future__ import annotations

import io
import tarfile

import pytest
from PIL import Image

from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import imagenet_classnames, imagenet_wnids, subset_indices, wnid_to_index
from beyond_inet.errors import DatasetMissing, UserError
from tests.conftest import skimage_photo


def test_shared_data_found_as_it_lies(shared_data):
    assert catalog.available("cue-conflict", shared_data)
    assert catalog.available("imagenet-sample", shared_data)
    cue = catalog.open_dataset("cue-conflict", shared_data)
    assert len(cue) == 1280 and cue.sample_id(0) == "airplane/airplane1-bicycle2.png" and cue.label(0) == 0
    sample = catalog.open_dataset("imagenet-sample", shared_data)
    assert len(sample) == 1000
    for i in (0, 500, 999):  # the label is the index of the wnid in the file name
        assert sample.label(i) == wnid_to_index()[sample.sample_id(i).split("_")[0]]
    assert not catalog.available("imagenet-val", shared_data)
    with pytest.raises(DatasetMissing, match="beyond-inet download imagenet-val"):
        catalog.open_dataset("imagenet-val", shared_data)


def test_200_class_masks_select_the_right_wnids(shared_data):
    info = shared_data / "imagenet-class-info"
    for name, fname in (("imagenet-a", "imagenet_a_200_wnids.txt"), ("imagenet-r", "imagenet_r_200_wnids.txt")):
        want = sorted(info.joinpath(fname).read_text().split())
        got = [imagenet_wnids()[i] for i in subset_indices(name)]
        assert got == want


def test_imagenet_folder_labels_and_filenames(tiny_imagenet):
    ds = catalog.open_dataset("imagenet-val", tiny_imagenet)
    assert len(ds) == 12
    assert ds.sample_id(0).startswith("ILSVRC2012_val_") and "/" not in ds.sample_id(0)
    assert {ds.label(i) for i in range(12)} == {wnid_to_index()[w] for w in ("n02123045", "n07920052", "n03773504",
                                                                              "n04591713")}
    assert ds.load(0).mode == "RGB"


def test_v2_numeric_folders(tmp_path):
    for folder in ("0", "0999"):
        d = tmp_path / "imagenet-v2" / folder
        d.mkdir(parents=True)
        skimage_photo("coffee").save(d / "a.jpeg")
    ds = catalog.open_dataset("imagenet-v2", tmp_path)
    assert sorted(ds.label(i) for i in range(len(ds))) == [0, 999]


def test_wrong_layout_is_one_clear_error(tmp_path):
    (tmp_path / "imagenet-val").mkdir()
    skimage_photo("coffee").save(tmp_path / "imagenet-val" / "flat.jpg")
    with pytest.raises(UserError, match="no class sub-folders"):
        catalog.open_dataset("imagenet-val", tmp_path)
    (tmp_path / "imagenet-val" / "cats").mkdir()
    with pytest.raises(UserError, match="not a class"):
        catalog.open_dataset("imagenet-val", tmp_path)
    with pytest.raises(UserError, match="unknown dataset"):
        catalog.open_dataset("imagenet-zzz", tmp_path)


def _write_wds(root, split, samples, classnames):
    (root / split).mkdir(parents=True)
    with tarfile.open(root / split / "0.tar", "w") as tf:
        for key, img, cls in samples:
            for ext, data in (("webp" if key.endswith("w") else "jpg", img), ("cls", str(cls).encode())):
                buf = io.BytesIO(data) if isinstance(data, bytes) else data
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(buf.getvalue())
                tf.addfile(ti, buf)
    (root / split / "nshards.txt").write_text("1")
    (root / "classnames.txt").write_text("\n".join(classnames))


def _jpeg(photo):
    b = io.BytesIO()
    skimage_photo(photo).resize((64, 48)).save(b, format="JPEG")
    return b.getvalue()


def test_wds_layout_for_vtab_and_imagenet(tmp_path):
    task = tmp_path / "vtab" / "cifar100"
    _write_wds(task, "train", [("s0000", _jpeg("coffee"), 1), ("s0001", _jpeg("chelsea"), 0)], ["cat", "cup"])
    _write_wds(task, "test", [("s0002", _jpeg("rocket"), 1)], ["cat", "cup"])
    assert catalog.parts("vtab", tmp_path) == ["cifar100/train", "cifar100/test"]
    tr = catalog.open_dataset("vtab/cifar100/train", tmp_path)
    assert len(tr) == 2 and tr.label(0) == 1 and tr.classnames == ["cat", "cup"] and tr.load(1).size == (64, 48)
    with pytest.raises(DatasetMissing, match="no 'val' split"):
        catalog.open_dataset("vtab/cifar100/val", tmp_path)
    val = tmp_path / "imagenet-val"
    _write_wds(val, "test", [("ILSVRC2012_val_00000007", _jpeg("coffee"), 967)], list(imagenet_classnames()))
    ds = catalog.open_dataset("imagenet-val", tmp_path)
    assert ds.sample_id(0) == "ILSVRC2012_val_00000007.JPEG" and ds.label(0) == 967


def test_imagenet_c_parts_and_datasets_listing(tmp_path):
    for c, s in (("fog", 1), ("fog", 5), ("snow", 3)):
        d = tmp_path / "imagenet-c" / c / str(s) / "n07920052"
        d.mkdir(parents=True)
        skimage_photo("coffee").save(d / "x.JPEG")
    assert catalog.parts("imagenet-c", tmp_path) == ["snow/3", "fog/1", "fog/5"]
    assert catalog.open_dataset("imagenet-c/fog/5", tmp_path).label(0) == 967
    rows = {r["name"]: r for r in catalog.describe(tmp_path)}
    assert rows["imagenet-c"]["present"] and rows["imagenet-c"]["parts"] == 3
    assert not rows["imagenet-r"]["present"] and "download imagenet-r" in rows["imagenet-r"]["how_to_get"]
    for r in rows.values():
        assert r["license"] and r["source"] and r["layout"]
    paper = {"imagenet-val", "imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-c",
             "imagenet-hard", "imagenet-real", "cue-conflict", "pug-imagenet", "vtab", "imagenet-sample"}
    assert paper <= set(rows)
    assert len(catalog.VTAB_TASKS) == 19


def test_parquet_multilabel_reader(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "imagenet-hard"
    d.mkdir()
    table = pa.table({"image": [{"bytes": _jpeg("coffee"), "path": None}, {"bytes": _jpeg("chelsea"), "path": None}],
                      "label": [[967, -1], [281, 285]]})
    pq.write_table(table, d / "validation-00000.parquet")
    ds = catalog.open_dataset("imagenet-hard", tmp_path)
    assert len(ds) == 2 and ds.label(0) == 967 and ds.multilabel(1) == [281, 285]
    assert isinstance(ds.load(1), Image.Image)
