"""A user's own folder (``--dataset NAME=PATH``): what its labels are, which label space it is, and every bad
layout refused in one line before any model is built."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import imagenet_classnames, imagenet_wnids
from beyond_inet.data.user import (IMAGENET_SUBSET, OWN, imagenet_class_of, inspect, normalize_datasets,
                                   open_user_dataset, parse_dataset_arg)
from beyond_inet.errors import UserError
from tests.conftest import skimage_photo

IMG_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".tif", ".tiff"}


def _img(path: Path, photo: str = "chelsea", k: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = skimage_photo(photo)
    w, h = im.size
    im.crop((k * 9, k * 7, w - k * 5, h - k * 3)).resize((64, 48)).save(path)


def own_folder(root: Path, n: int = 5) -> Path:
    """3 classes of real photos named by the user (not ImageNet classes), n crops each."""
    for cls, photo in (("kitty", "chelsea"), ("mug", "coffee"), ("spacecraft", "rocket")):
        for k in range(n):
            _img(root / cls / f"{photo}_{k}.png", photo, k)
    return root


def independent_walk(root: Path) -> dict[str, str]:
    """sample id -> class folder, by a plain os.walk of every visible class folder (the ImageFolder rule)."""
    out = {}
    for cls in sorted(os.listdir(root)):
        if cls.startswith(".") or not (root / cls).is_dir():
            continue
        for dirpath, dirs, files in os.walk(root / cls, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMG_EXT:
                    rel = (Path(dirpath) / f).relative_to(root / cls).as_posix()
                    out[f"{cls}/{rel}"] = cls
    return out


def test_names_match_imagenet_case_and_punctuation_insensitively_and_only_when_unambiguous():
    names = imagenet_classnames()
    gr = [n.lower() for n in names].index("golden retriever")
    assert names[gr] != "golden retriever"  # the list writes it "Golden Retriever": case must not matter
    for spelling in ("golden retriever", "Golden_Retriever", "GOLDEN-RETRIEVER", "golden  retriever"):
        assert imagenet_class_of(spelling) == gr
    assert imagenet_class_of(imagenet_wnids()[gr]) == gr
    dup = [n for n in set(names) if names.count(n) > 1]
    assert dup, "the package's list names some class twice"
    for n in dup:  # two ImageNet classes share the name: it names neither
        assert imagenet_class_of(n) is None
    assert imagenet_class_of("kitty") is None and imagenet_class_of("my own class") is None


@pytest.mark.parametrize("layout", ["flat", "nested", "mixed-case-ext", "symlinked-class", "hidden-clutter"])
def test_labels_equal_an_independent_walk_of_the_class_folders(tmp_path, layout):
    root = own_folder(tmp_path / "own", n=5)
    if layout == "nested":
        for k in range(3):
            _img(root / "mug" / "deeper" / "more" / f"x{k}.jpg", "coffee", k + 5)
    if layout == "mixed-case-ext":
        _img(root / "kitty" / "UPPER.JPG", "chelsea", 7)
        _img(root / "kitty" / "x.Jpeg", "chelsea", 8)
        (root / "kitty" / "notes.txt").write_text("not an image")
    if layout == "symlinked-class":
        real = own_folder(tmp_path / "elsewhere", n=5) / "kitty"
        os.symlink(real, root / "cat-link")
    if layout == "hidden-clutter":
        (root / ".DS_Store").write_text("x")
        _img(root / ".ipynb_checkpoints" / "a.png")
        _img(root / "mug" / ".hidden.png")
    ud = inspect("mine", str(root))
    ds = open_user_dataset(ud)
    walk = independent_walk(root)
    got = {ds.sample_id(i): ud.classnames[ds.label(i)] for i in range(len(ds))}
    assert got == walk
    assert ud.kind == OWN and list(ud.classnames) == sorted(set(walk.values()))
    assert sum(ud.counts) == len(ds) == len(walk)
    assert ds.load(0).mode == "RGB"


def test_imagenet_named_folders_are_a_subset_labelled_by_imagenet_index(tmp_path):
    names, wnids = imagenet_classnames(), imagenet_wnids()
    picked = {"Tabby_Cat": names.index("tabby cat"), wnids[967]: 967, "missile-": None}
    del picked["missile-"]  # ambiguous names are never matched (see above)
    for folder in picked:
        for k in range(5):
            _img(tmp_path / "sub" / folder / f"{k}.png", "chelsea", k)
    ud = inspect("mine", str(tmp_path / "sub"))
    assert ud.kind == IMAGENET_SUBSET
    ds = open_user_dataset(ud)
    want = {f"{c}/{k}.png": idx for c, idx in picked.items() for k in range(5)}
    assert {ds.sample_id(i): ds.label(i) for i in range(len(ds))} == want
    assert ud.subset == tuple(sorted(picked.values()))
    catalog.set_user_datasets([ud])
    try:
        assert catalog.class_subset("mine").tolist() == sorted(picked.values())
        assert catalog.available("mine", None) and not catalog.own_label_space("mine")
        assert len(catalog.open_dataset("mine", None)) == 10
    finally:
        catalog.set_user_datasets([])
    # ImageNet-A/R keep their 200-class restriction through the same lookup
    assert catalog.class_subset("imagenet-r").size == 200 and catalog.class_subset("imagenet-val") is None


def test_one_unknown_folder_name_makes_it_a_label_space_of_its_own(tmp_path):
    for folder in ("tabby cat", "my sofa"):
        for k in range(5):
            _img(tmp_path / "d" / folder / f"{k}.png", "chelsea", k)
    ud = inspect("mine", str(tmp_path / "d"))
    assert ud.kind == OWN and ud.subset is None
    ds = open_user_dataset(ud)  # sorted folder order: "my sofa" 0, "tabby cat" 1
    assert [(ds.sample_id(i).split("/")[0], ds.label(i)) for i in (0, 9)] == [("my sofa", 0), ("tabby cat", 1)]


def _bad(tmp_path: Path, case: str) -> Path:
    root = tmp_path / "bad"
    root.mkdir()
    if case == "empty":
        return root
    if case == "one class":
        for k in range(5):
            _img(root / "kitty" / f"{k}.png", k=k)
    if case == "class without images":
        own_folder(root)
        (root / "ghosts").mkdir()
        (root / "ghosts" / "readme.txt").write_text("no images")
    if case == "class without a readable image":
        own_folder(root)
        (root / "broken").mkdir()
        (root / "broken" / "a.jpg").write_bytes(b"not a jpeg at all")
    if case == "files at the top level":
        own_folder(root)
        _img(root / "stray.png")
    if case == "two folders, one class":
        for folder in ("tabby cat", imagenet_wnids()[imagenet_classnames().index("tabby cat")]):
            for k in range(5):
                _img(root / folder / f"{k}.png", k=k)
    return root


@pytest.mark.parametrize("case,needle", [
    ("empty", "the folder is empty"),
    ("one class", "only one class folder"),
    ("class without images", "class folder 'ghosts' holds no image files"),
    ("class without a readable image", "class folder 'broken' holds no readable image"),
    ("files at the top level", "file(s) at the top level (stray.png)"),
    ("two folders, one class", "name the same ImageNet class"),
])
def test_bad_layouts_are_one_clear_user_error(tmp_path, case, needle):
    root = _bad(tmp_path, case)
    with pytest.raises(UserError) as e:
        inspect("mine", str(root))
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("arg,needle", [
    ("mine", "expected NAME=PATH"),
    ("=/tmp", "expected NAME=PATH"),
    ("mine=", "expected NAME=PATH"),
    ("imagenet-r=/tmp", "is the name of a catalog dataset"),
    ("ImageNet-Val=/tmp", "is the name of a catalog dataset"),
    ("a/b=/tmp", "letters, digits"),
    ("mine=/does/not/exist", "does not exist"),
])
def test_bad_name_path_arguments(arg, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        normalize_datasets([arg], catalog.ENTRIES)


def test_same_name_twice_and_a_file_instead_of_a_folder(tmp_path):
    f = tmp_path / "f.png"
    _img(f)
    with pytest.raises(UserError, match="is a file"):
        normalize_datasets({"mine": f}, catalog.ENTRIES)
    with pytest.raises(UserError, match="given twice"):
        normalize_datasets([f"mine={tmp_path}", f"mine={tmp_path}"], catalog.ENTRIES)
    assert parse_dataset_arg("mine=/a=b") == ("mine", "/a=b")  # only the first '=' splits


def test_few_images_warn_but_pass(tmp_path):
    root = own_folder(tmp_path / "own", n=5)
    for k in range(3):
        _img(root / "tiny" / f"{k}.png", k=k)
    ud = inspect("mine", str(root))
    assert len(ud.warnings) == 1 and "tiny (3)" in ud.warnings[0] and "fewer than 5" in ud.warnings[0]
    assert not inspect("ok", str(own_folder(tmp_path / "ok", n=5))).warnings
    assert np.array_equal(ud.counts, [5, 5, 5, 3])


@pytest.mark.parametrize("limit", [None, 4])
def test_same_name_other_images_never_share_stored_outputs(tmp_path, limit):
    """The store key holds the dataset's fingerprint: a NAME pointed at another folder with the same file names,
    or an image replaced in place, must get a new one (ids and labels alone are equal)."""
    from beyond_inet.engine.plan import DatasetCache

    a = own_folder(tmp_path / "a", n=5)
    b = tmp_path / "b"
    shutil.copytree(a, b)

    def fp(root: Path) -> str:
        catalog.set_user_datasets([inspect("mine", str(root))])
        try:
            return DatasetCache(None, limit).get("mine")[2]
        finally:
            catalog.set_user_datasets([])

    first = fp(a)
    assert fp(a) == first  # unchanged folder: outputs are reused
    assert fp(b) != first  # same ids and labels, other folder
    _img(a / "mug" / "coffee_0.png", "astronaut", 3)  # the image at position 0 of class "mug"... replaced
    os.utime(a / "mug" / "coffee_0.png", ns=(1, 1))
    assert fp(a) != first
