"""Every on-disk layout of a dataset gives the labels of its class-folder layout.

The webdataset fixtures are written in clip-benchmark's exact format: ``<split>/<n>.tar`` with members
``<key>.webp`` / ``<key>.jpg`` and ``<key>.cls`` (ASCII integer = index into ``classnames.txt``, which lies
beside the split folders and holds OpenAI's class names, A/R: the 200-name subset in ImageNet index order).
Images are solid colours that encode their class, and an "oracle" model reads the class back from the
pixels, so top-1 through the engine and the real analyses must agree between layouts.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beyond_inet.analyses import Context, Request, get_analysis, load_builtin
from beyond_inet.data import catalog, labelspaces
from beyond_inet.data.labelspaces import imagenet_classnames, imagenet_wnids, subset_indices
from beyond_inet.engine.executors import ExecConfig, execute_job
from beyond_inet.engine.plan import DatasetCache, plan_model_jobs
from beyond_inet.engine.store import Store
from beyond_inet.errors import UserError
from beyond_inet.models.base import Preprocessing, VisionModel


# ------------------------------------------------------------------ images that carry their class
def _colour(idx: int) -> tuple[int, int, int]:
    return (idx % 50) * 5, (idx // 50) * 12, 77


def _image(idx: int, fmt: str) -> bytes:
    b = io.BytesIO()
    img = Image.new("RGB", (24, 20), _colour(idx))
    img.save(b, format=fmt, **({"lossless": True} if fmt == "WEBP" else {"quality": 95}))
    return b.getvalue()


def _oracle() -> VisionModel:
    """Predicts the ImageNet class encoded in the image's colour (a perfect model for these images)."""

    def forward(_module, x: torch.Tensor):
        c = x[:, :, x.shape[2] // 2, x.shape[3] // 2] * 255  # mean 0, std 1: back to pixel values
        idx = (c[:, 0] / 5).round().long() + 50 * (c[:, 1] / 12).round().long()
        logits = torch.zeros(x.shape[0], 1000)
        logits[torch.arange(x.shape[0]), idx] = 10.0
        return logits, c

    pre = Preprocessing(input_size=16, resize=16, interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return VisionModel("oracle", torch.nn.Identity(), pre, forward, "oracle-weights")


# ------------------------------------------------------------------ one dataset in two layouts
def _samples(classes: list[int], per_class: int = 2) -> list[tuple[str, int, int]]:
    """(key, true ImageNet class, class drawn in the image): the last image shows its neighbour's class."""
    out = []
    for ci, idx in enumerate(classes):
        for j in range(per_class):
            out.append((f"s{ci:03d}{j}", idx, idx))
    key, idx, _ = out[-1]
    out[-1] = (key, idx, classes[0])
    return out


def write_class_folders(root: Path, samples, name_of=lambda key: f"{key}.png", folder_of=None) -> None:
    folder_of = folder_of or (lambda idx: imagenet_wnids()[idx])
    for key, idx, shown in samples:
        d = root / folder_of(idx)
        d.mkdir(parents=True, exist_ok=True)
        (d / name_of(key)).write_bytes(_image(shown, "PNG"))


def write_wds(root: Path, samples, classes: list[int], classnames: list[str], split: str = "test",
              per_shard: int = 5) -> None:
    """clip-benchmark's layout: labels are positions in `classes` (the release's own class order)."""
    (root / split).mkdir(parents=True)
    shards = [samples[i:i + per_shard] for i in range(0, len(samples), per_shard)]
    for si, chunk in enumerate(shards):
        with tarfile.open(root / split / f"{si}.tar", "w") as tf:
            for n, (key, idx, shown) in enumerate(chunk):
                ext, fmt = ("webp", "WEBP") if n % 2 == 0 else ("jpg", "JPEG")
                for member, data in ((f"{key}.{ext}", _image(shown, fmt)),
                                     (f"{key}.cls", str(classes.index(idx)).encode())):
                    ti = tarfile.TarInfo(member)
                    ti.size = len(data)
                    tf.addfile(ti, io.BytesIO(data))
    (root / split / "nshards.txt").write_text(str(len(shards)))
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")


def _labels_by_key(ds) -> dict[str, int]:
    return {Path(ds.sample_id(i)).name.split(".")[0]: ds.label(i) for i in range(len(ds))}


SUBSET_CLASSES = {name: [int(subset_indices(name)[k]) for k in (0, 3, 57, 120, 199)]
                  for name in ("imagenet-a", "imagenet-r")}
VAL_CLASSES = [0, 281, 657, 744, 967, 999]  # 657/744 share OpenAI's name "missile"


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory) -> tuple[Path, Path]:
    """Data roots holding imagenet-val, -a and -r as class folders and as clip-benchmark webdatasets."""
    base = tmp_path_factory.mktemp("layouts")
    folders, wds = base / "folders", base / "wds"
    names = list(imagenet_classnames())
    for name, classes in SUBSET_CLASSES.items():
        samples = _samples(classes)
        write_class_folders(folders / name, samples)
        order = [int(i) for i in subset_indices(name)]
        write_wds(wds / name, samples, order, [names[i] for i in order])
    val = [(f"ILSVRC2012_val_{k + 1:08d}", idx, shown) for k, (_, idx, shown) in enumerate(_samples(VAL_CLASSES))]
    write_class_folders(folders / "imagenet-val", val, name_of=lambda key: f"{key}.JPEG")
    write_wds(wds / "imagenet-val", val, list(range(1000)), names)
    return folders, wds


@pytest.mark.parametrize("name", ["imagenet-val", "imagenet-a", "imagenet-r"])
def test_wds_labels_equal_class_folder_labels(two_layouts, name):
    folders, wds = two_layouts
    f, w = catalog.open_dataset(name, folders), catalog.open_dataset(name, wds)
    assert type(w).__name__ == "WdsDataset"
    assert _labels_by_key(w) == _labels_by_key(f)
    assert set(_labels_by_key(f).values()) == set(SUBSET_CLASSES.get(name, VAL_CLASSES))
    if name == "imagenet-val":
        assert sorted(f.sample_id(i) for i in range(len(f))) == sorted(w.sample_id(i) for i in range(len(w)))


def _analysis_rows(data_root: Path, work: Path) -> dict:
    """Top-1 rows of the robustness and accuracy analyses for the oracle, via the engine and the store."""
    load_builtin()
    model = _oracle()
    datasets = DatasetCache(str(data_root), None)
    store = Store(work / "store")
    names = ("imagenet-val", "imagenet-a", "imagenet-r")
    jobs = plan_model_jobs(model, [Request(d, "standard") for d in names], datasets, store)
    assert sorted(j.dataset for j in jobs) == sorted(names)
    cfg = ExecConfig(str(work / "store"), str(data_root), None, batch_size=4, num_workers=0, amp=False)
    for j in jobs:
        assert not execute_job(j, cfg, model, datasets).skipped
    keys = {(j.dataset, v): k for j in jobs for v, k in j.keys.items()}

    def fetch(req):
        k = keys.get((req.dataset, req.view))
        return None if k is None else store.existing(k).load()

    ctx = Context(data_root=str(data_root), options={"accuracy_datasets": list(names)},
                  available=lambda n: catalog.available(n, data_root), parts=lambda n: catalog.parts(n, data_root),
                  seed=0, n_boot=200)
    rows = {}
    for a in ("robustness", "accuracy"):
        for r in get_analysis(a).compute(ctx, "oracle", fetch).rows:
            rows[(a, r.dataset, r.metric)] = (r.value, r.ci_low, r.ci_high, r.n)
    return rows


def test_same_top1_from_both_layouts_through_the_analyses(two_layouts, tmp_path):
    folders, wds = two_layouts
    by_folder = _analysis_rows(folders, tmp_path / "f")
    by_wds = _analysis_rows(wds, tmp_path / "w")
    assert by_wds == by_folder
    # One image of each set shows another class: the oracle gets all but that one right.
    assert by_folder[("robustness", "imagenet-r", "top1")][0] == pytest.approx(9 / 10)
    assert by_folder[("robustness", "imagenet-a", "top1")][0] == pytest.approx(9 / 10)
    assert by_folder[("robustness", "imagenet-val", "top1")][0] == pytest.approx(11 / 12)
    assert by_folder[("accuracy", "imagenet-r", "top1")][0] == pytest.approx(9 / 10)


# ------------------------------------------------------------------ label-space detection
def test_detects_label_spaces_in_both_name_forms():
    names, wnids = list(imagenet_classnames()), list(imagenet_wnids())
    for space in ("imagenet-a", "imagenet-r"):
        idx = [int(i) for i in subset_indices(space)]
        for form in (names, wnids):
            got = labelspaces.detect_label_space([form[i] for i in idx])
            assert got.name == space and list(got.indices) == idx
    assert labelspaces.detect_label_space(names).name == "imagenet1k" and labelspaces.detect_label_space(wnids).indices == tuple(range(1000))
    # Another ascending subset is recognised class by class ...
    assert labelspaces.detect_label_space([names[5], names[10], names[700]]).indices == (5, 10, 700)
    # ... but not out of order, with an unknown or ambiguous name ("missile" names 657 and 744), or empty.
    assert labelspaces.detect_label_space([names[10], names[5]]) is None
    assert labelspaces.detect_label_space([names[5], "not a class"]) is None
    assert labelspaces.detect_label_space([names[5], "missile"]) is None
    assert labelspaces.detect_label_space([]) is None
    # Shared names are told apart by the order when only one ascending choice fits.
    assert labelspaces.detect_label_space([names[835], "sunglasses", "sunglasses", names[900]]).indices == (835, 836, 837, 900)
    assert labelspaces.detect_label_space(names[:-1]).indices == tuple(range(999))
    assert labelspaces.detect_label_space(names[:-1]).name == "imagenet1k-subset"


def test_bundled_200_class_lists_agree_with_the_shared_ones(shared_data):
    info = shared_data / "imagenet-class-info"
    for space, fname in (("imagenet-a", "imagenet_a_200_wnids.txt"), ("imagenet-r", "imagenet_r_200_wnids.txt")):
        wnids = info.joinpath(fname).read_text().split()
        got = labelspaces.detect_label_space(wnids)
        assert got is not None and got.name == space
        assert [imagenet_wnids()[i] for i in got.indices] == wnids


def _small_wds(root: Path, classnames: list[str] | None, labels=(0, 1)) -> None:
    samples = [(f"k{i}", i, i) for i in labels]
    write_wds(root, samples, list(range(max(labels) + 1)), classnames or [])
    if classnames is None:
        (root / "classnames.txt").unlink()


@pytest.mark.parametrize("classnames, expect", [
    (["cat", "dog"], "match no ImageNet label space"),
    (None, "classnames.txt is missing"),
])
def test_unknown_or_missing_class_list_is_refused(tmp_path, classnames, expect):
    _small_wds(tmp_path / "imagenet-sketch", classnames)
    with pytest.raises(UserError, match=expect):
        catalog.open_dataset("imagenet-sketch", tmp_path)
    cache = DatasetCache(str(tmp_path), None)  # the engine skips the dataset with that reason
    assert cache.get("imagenet-sketch") is None and expect.split()[0] in cache.missing["imagenet-sketch"]


def test_release_of_another_set_is_refused(tmp_path):
    names = list(imagenet_classnames())
    r = [int(i) for i in subset_indices("imagenet-r")]
    _small_wds(tmp_path / "imagenet-a", [names[i] for i in r])
    with pytest.raises(UserError, match="classes of imagenet-r .*not of imagenet-a"):
        catalog.open_dataset("imagenet-a", tmp_path)
    _small_wds(tmp_path / "imagenet-v2", [names[i] for i in r])
    with pytest.raises(UserError, match="not of imagenet1k"):
        catalog.open_dataset("imagenet-v2", tmp_path)


def test_label_outside_the_class_list_is_refused(tmp_path):
    names = list(imagenet_classnames())
    a = [int(i) for i in subset_indices("imagenet-a")]
    root = tmp_path / "imagenet-a"
    write_wds(root, [("k0", 0, 0)], [0], [names[i] for i in a])
    with tarfile.open(root / "test" / "0.tar", "w") as tf:  # label 200 of a 200-class release
        for member, data in (("k0.webp", _image(a[0], "WEBP")), ("k0.cls", b"200")):
            ti = tarfile.TarInfo(member)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    with pytest.raises(UserError, match="label 200 .*outside the 200 classes"):
        catalog.open_dataset("imagenet-a", tmp_path)


def test_class_folder_outside_the_subset_is_refused(tmp_path):
    outside = int(np.setdiff1d(np.arange(1000), subset_indices("imagenet-r"))[0])
    write_class_folders(tmp_path / "imagenet-r", [("k0", outside, outside)])
    with pytest.raises(UserError, match="not among the 200 classes of imagenet-r"):
        catalog.open_dataset("imagenet-r", tmp_path)


# ------------------------------------------------------------------ the other layouts of the catalog
def test_v2_layouts_give_the_same_labels(tmp_path):
    """ImageNet-V2: wnid folders, its own integer folders (0..999), zero-padded ones, the archive's top
    folder kept, and the clip-benchmark webdataset."""
    samples = _samples([0, 9, 10, 100, 999])
    layouts = {
        "wnid": lambda r: write_class_folders(r, samples),
        "int": lambda r: write_class_folders(r, samples, folder_of=str),
        "padded": lambda r: write_class_folders(r, samples, folder_of=lambda i: f"{i:04d}"),
        "archive-top": lambda r: write_class_folders(r / "imagenetv2-matched-frequency-format-val", samples,
                                                     folder_of=str),
        "wds": lambda r: write_wds(r, samples, list(range(1000)), list(imagenet_classnames())),
    }
    got = {}
    for layout, write in layouts.items():
        write(tmp_path / layout / "imagenet-v2")
        got[layout] = _labels_by_key(catalog.open_dataset("imagenet-v2", tmp_path / layout))
    want = {key: idx for key, idx, _ in samples}
    assert all(g == want for g in got.values()), got


def test_sketch_wds_with_wnid_class_list(tmp_path):
    samples = _samples([1, 2, 500])
    write_class_folders(tmp_path / "f" / "sketch", samples)  # ImageNet-Sketch's zip unpacks to sketch/<wnid>/
    write_wds(tmp_path / "w" / "imagenet-sketch", samples, list(range(1000)), list(imagenet_wnids()))
    f = catalog.open_dataset("imagenet-sketch", tmp_path / "f")
    w = catalog.open_dataset("imagenet-sketch", tmp_path / "w")
    assert _labels_by_key(f) == _labels_by_key(w) == {k: i for k, i, _ in samples}


def test_imagenet_c_cue_and_pug_folders_label_by_their_label_space(tmp_path):
    write_class_folders(tmp_path / "imagenet-c" / "fog" / "3", [("k0", 967, 967), ("k1", 0, 0)])
    assert _labels_by_key(catalog.open_dataset("imagenet-c/fog/3", tmp_path)) == {"k0": 967, "k1": 0}
    write_class_folders(tmp_path / "edge", [("k0", 0, 0), ("k1", 15, 15)],
                        folder_of=lambda i: ("airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
                                             "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven",
                                             "truck")[i])
    assert _labels_by_key(catalog.open_dataset("edge", tmp_path)) == {"k0": 0, "k1": 15}


# ------------------------------------------------------------------ refusal at the command line
def test_run_with_an_unusable_release_exits_2_after_the_rest(tiny_imagenet, tmp_path, capsys):
    """The other datasets are scored and kept; the run then ends with one line and exit 2."""
    from beyond_inet.cli import main
    from beyond_inet.report.results import ResultsDB

    _small_wds(tiny_imagenet / "imagenet-r", ["cat", "dog"])
    out = tmp_path / "out"
    code = main(["run", "--models", "timm:convnext_atto@random", "--analyses", "accuracy", "--data-root",
                 str(tiny_imagenet), "--out", str(out), "--workers", "0", "--bootstrap", "20", "--no-progress",
                 "--no-report", "--option", "accuracy_datasets=imagenet-val,imagenet-r"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'imagenet-r'" in err[0] and "match no ImageNet label space" in err[0]
    rows = {(r.dataset, r.metric) for r in ResultsDB(out).rows()}
    assert ("imagenet-val", "top1") in rows and not any(d == "imagenet-r" for d, _ in rows)
    assert "dataset imagenet-r could not be used" in (out / "run.log").read_text()


def test_download_refuses_a_release_it_could_not_label(tmp_path, monkeypatch):
    from beyond_inet.data import download as dl
    from tests.hub_server import HubServer, patch_hub

    names = list(imagenet_classnames())

    def release(name: str, classnames) -> dict[str, bytes]:
        d = tmp_path / "releases" / name
        _small_wds(d, classnames)
        return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}

    with HubServer() as hub:  # the real download path, against a local server speaking the Hub's protocol
        patch_hub(monkeypatch, hub, tmp_path / "hf")
        hub.add("clip-benchmark/wds_imagenet-r", release("r", [names[i] for i in subset_indices("imagenet-a")]),
                repo_type="dataset")
        hub.add("clip-benchmark/wds_imagenet-a", release("a", None), repo_type="dataset")
        with pytest.raises(UserError, match="classes of imagenet-a .*not of imagenet-r.*unusable as imagenet-r"):
            dl.download("imagenet-r", tmp_path / "r")
        with pytest.raises(UserError, match="classnames.txt is missing"):
            dl.download("imagenet-a", tmp_path / "a")
        hub.add("clip-benchmark/wds_imagenet-a", release("a2", [names[i] for i in subset_indices("imagenet-a")]),
                repo_type="dataset")
        assert dl.download("imagenet-a", tmp_path / "a2") == tmp_path / "a2" / "imagenet-a"


def test_pug_folder_and_parquet_releases_give_the_same_labels(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    mapping = {"Goldfish": [1], "Shirt": [841], "Bridge": [821, 839]}  # PUG class index: sorted keys
    files = [("Shirt", "a.png"), ("Bridge", "b.png"), ("Goldfish", "c.png"), ("Bridge", "d.png")]
    folder, parquet = tmp_path / "f" / "pug-imagenet", tmp_path / "p" / "pug-imagenet"
    for cls, name in files:
        (folder / "Worlds" / cls).mkdir(parents=True, exist_ok=True)
        (folder / "Worlds" / cls / name).write_bytes(_image(7, "PNG"))
    (parquet / "data").mkdir(parents=True)
    pq.write_table(pa.table({"image": [{"bytes": _image(7, "PNG"), "path": None} for _ in files],
                             "character_label": [c for c, _ in files], "filename": [n for _, n in files],
                             "factor": ["Worlds"] * len(files)}), parquet / "data" / "train-00000-of-00001.parquet")
    for root in (folder, parquet):
        (root / "class_to_imagenet_idx.json").write_text(json.dumps(mapping))
    f = catalog.open_dataset("pug-imagenet/Worlds", tmp_path / "f")
    p = catalog.open_dataset("pug-imagenet/Worlds", tmp_path / "p")
    assert _labels_by_key(f) == _labels_by_key(p) == {"a": 2, "b": 0, "c": 1, "d": 0}


def test_pug_class_folders_spelled_like_the_parquet_labels_get_the_same_labels(tmp_path):
    """The parquet release's labels are matched to the JSON keys up to case and punctuation; class folders
    spelled the same way (``Gold_Fish``, ``bridge``) get the same labels through the catalog (they were
    refused before), and a folder matching no key is still refused."""
    import json

    mapping = {"Goldfish": [1], "Shirt": [841], "Bridge": [821, 839]}
    root = tmp_path / "pug-imagenet"
    for cls, name in [("shirt", "a.png"), ("bridge", "b.png"), ("Gold_Fish", "c.png")]:
        (root / "Worlds" / cls).mkdir(parents=True, exist_ok=True)
        (root / "Worlds" / cls / name).write_bytes(_image(7, "PNG"))
    (root / "class_to_imagenet_idx.json").write_text(json.dumps(mapping))
    ds = catalog.open_dataset("pug-imagenet/Worlds", tmp_path)
    assert _labels_by_key(ds) == {"a": 2, "b": 0, "c": 1}
    (root / "Worlds" / "Unicorn").mkdir()
    (root / "Worlds" / "Unicorn" / "u.png").write_bytes(_image(7, "PNG"))
    with pytest.raises(UserError, match="Unicorn"):
        catalog.open_dataset("pug-imagenet/Worlds", tmp_path)
