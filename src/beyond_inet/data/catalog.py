"""The dataset catalog: every benchmark of the paper, where it lies under --data-root, its label
space, where users get it and its license.

Names may carry a part: ``imagenet-c/fog/3``, ``pug-imagenet/Worlds``, ``vtab/cifar100/train``.
`open_dataset(name, data_root)` returns a reader or raises `DatasetMissing` with how to get it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from beyond_inet.data import readers
from beyond_inet.data.pug import FACTORS
from beyond_inet.data.labelspaces import (
    CUE_CONFLICT_CATEGORIES,
    LabelSpace,
    detect_label_space,
    imagenet_wnids,
    subset_indices,
    wnid_to_index,
)
from beyond_inet.data.user import OWN, UserDataset, open_user_dataset
from beyond_inet.errors import DatasetMissing, UserError

IMAGENET_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
PUG_FACTORS = FACTORS  # the 10 factor folders of the paper's PUG layout
# The paper's 19 VTAB tasks as CLIP_benchmark names them (hosted as clip-benchmark/wds_<name with / -> ->).
VTAB_TASKS = {
    "caltech101": "vtab/caltech101", "cifar100": "vtab/cifar100", "dtd": "vtab/dtd", "flowers": "vtab/flowers",
    "pets": "vtab/pets", "sun397": "sun397", "svhn": "vtab/svhn", "pcam": "vtab/pcam", "eurosat": "vtab/eurosat",
    "resisc45": "vtab/resisc45", "diabetic_retinopathy": "vtab/diabetic_retinopathy",
    "clevr_count_all": "vtab/clevr_count_all", "clevr_closest_object_distance": "vtab/clevr_closest_object_distance",
    "dmlab": "vtab/dmlab", "dsprites_label_x_position": "vtab/dsprites_label_x_position",
    "dsprites_label_orientation": "vtab/dsprites_label_orientation",
    "kitti_closest_vehicle_distance": "vtab/kitti_closest_vehicle_distance",
    "smallnorb_label_azimuth": "vtab/smallnorb_label_azimuth", "smallnorb_label_elevation": "vtab/smallnorb_label_elevation",
}


def bundled_path(folder: str) -> Path | None:
    """A folder of the demo data shipped in the package (``data/bundled/``), or None if absent."""
    p = Path(__file__).resolve().parent / "bundled" / folder
    return p if p.is_dir() else None


def wds_repo(cb_name: str) -> str:
    return "clip-benchmark/wds_" + cb_name.replace("/", "-")


@dataclass(frozen=True)
class Entry:
    """One benchmark: declarative metadata plus the kind of reader that opens it."""

    name: str
    title: str
    kind: str
    dirs: tuple[str, ...]  # candidate folders under --data-root, first found wins
    layout: str
    label_space: str
    source: str  # "hf:<repo>@<revision>", "url:<url>", "pip:<pkg>", "bundled:<where>" or "manual: ..."
    license: str
    sha256: str | None = None
    paper: str = ""
    extras: dict = field(default_factory=dict, hash=False, compare=False)
    # A copy shipped inside the package (folder under data/bundled/), used when --data-root lacks the set.
    bundled: str = ""

    def find(self, data_root: str | Path | None) -> Path | None:
        for d in self.dirs if data_root else ():
            p = Path(data_root) / d
            if p.exists():
                return p
        return bundled_path(self.bundled) if self.bundled else None

    def uses_bundled(self, data_root: str | Path | None) -> bool:
        """Is the set read from the package's bundled copy (no copy under the data root)?"""
        found = self.find(data_root)
        return bool(self.bundled) and found is not None and found == bundled_path(self.bundled)

    def how_to_get(self) -> str:
        if self.source.startswith(("hf:", "url:")):
            return f"get it with `beyond-inet download {self.name} --data-root DIR`; expected layout: {self.layout}"
        return f"{self.source.removeprefix('manual: ')}; expected layout: {self.layout}"


def _flat_by_wnid_prefix(name: str, root: Path) -> "readers.FileListDataset":
    """A flat folder of ``<wnid>_<anything>.JPEG`` files (the imagenet-sample-images clone as published),
    labelled by the wnid each file name starts with."""
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png")
                   and wnid_to_index().get(p.name.split("_", 1)[0]) is not None)
    if not files:
        raise UserError(f"dataset {name!r}: {root} has neither labels.csv nor <wnid>_<name>.JPEG images")
    return readers.FileListDataset(name, [str(p) for p in files], [p.name for p in files],
                                   [wnid_to_index()[p.name.split("_", 1)[0]] for p in files])


def _imagenet_label(folder: str) -> int | None:
    idx = wnid_to_index().get(folder)
    if idx is not None:
        return idx
    if folder.isdigit() and 0 <= int(folder) < 1000:  # ImageNet-V2 folders 0..999 (padded or not)
        return int(folder)
    return None


def _cue_label(folder: str) -> int | None:
    return CUE_CONFLICT_CATEGORIES.index(folder) if folder in CUE_CONFLICT_CATEGORIES else None


ENTRIES: dict[str, Entry] = {}


def _add(e: Entry) -> None:
    ENTRIES[e.name] = e


_IN_LAYOUT = "{d}/<wnid>/<image> (ImageFolder) or {d}/<split>/*.tar + {d}/classnames.txt (clip-benchmark wds)"
_add(Entry("imagenet-val", "ImageNet-1k validation (50k)", "imagenet", ("imagenet-val", "imagenet/val", "wds_imagenet1k"),
           _IN_LAYOUT.format(d="imagenet-val") + "; files named ILSVRC2012_val_XXXXXXXX.JPEG",
           "imagenet1k", "hf:clip-benchmark/wds_imagenet1k@main (gated original: ILSVRC/imagenet-1k)",
           "ImageNet terms of access (non-commercial research)", paper="§2.1, §2.3, §2.4, §2.7",
           extras={"split": "test", "id_style": "filename"}))
_add(Entry("imagenet-v2", "ImageNet-V2 matched-frequency", "imagenet", ("imagenet-v2", "imagenetv2", "wds_imagenetv2"),
           _IN_LAYOUT.format(d="imagenet-v2") + "; class folders 0..999 or wnids", "imagenet1k",
           "hf:clip-benchmark/wds_imagenetv2@main", "MIT (ImageNetV2)", paper="§2.4", extras={"split": "test"}))
_add(Entry("imagenet-a", "ImageNet-A (7.5k, 200 classes)", "imagenet", ("imagenet-a", "wds_imagenet-a"),
           _IN_LAYOUT.format(d="imagenet-a"), "imagenet1k (200-class mask)", "hf:clip-benchmark/wds_imagenet-a@main",
           "MIT", paper="§2.4", extras={"split": "test", "space": "imagenet-a"}))
_add(Entry("imagenet-r", "ImageNet-R (30k, 200 classes)", "imagenet", ("imagenet-r", "wds_imagenet-r"),
           _IN_LAYOUT.format(d="imagenet-r"), "imagenet1k (200-class mask)", "hf:clip-benchmark/wds_imagenet-r@main",
           "MIT", paper="§2.3, §2.4", extras={"split": "test", "space": "imagenet-r"}))
_add(Entry("imagenet-sketch", "ImageNet-Sketch (50k)", "imagenet", ("imagenet-sketch", "sketch", "wds_imagenet_sketch"),
           _IN_LAYOUT.format(d="imagenet-sketch"), "imagenet1k", "hf:clip-benchmark/wds_imagenet_sketch@main",
           "MIT", paper="§2.4", extras={"split": "test"}))
_add(Entry("imagenet-c", "ImageNet-C (15 corruptions x 5 severities)", "imagenet-c", ("imagenet-c",),
           "imagenet-c/<corruption>/<severity 1-5>/<wnid>/<image>", "imagenet1k",
           "url:https://zenodo.org/record/2235448/files/{blur,digital,extra,noise,weather}.tar",
           "CC BY 4.0", paper="§2.4"))
_add(Entry("imagenet-hard", "ImageNet-Hard (multi-label)", "parquet", ("imagenet-hard",),
           "imagenet-hard/**/*.parquet (the HF release: columns image, label=list of ImageNet indices)",
           "imagenet1k (multi-label)", "hf:taesiri/imagenet-hard@main", "MIT", paper="§2.4"))
_add(Entry("imagenet-real", "ReaL labels for ImageNet val", "labels", (),
           "bundled with timm (timm/data/_info/imagenet_real_labels.json); needs imagenet-val images",
           "imagenet1k (multi-label)", "bundled:timm", "Apache-2.0", paper="§2.4"))
_add(Entry("imagenet-x", "ImageNet-X factor annotations", "labels", (),
           "bundled with the imagenet-x pip package; needs imagenet-val images", "16 factors",
           "pip:imagenet-x==0.0.7", "CC BY-NC 4.0", paper="§2.1"))
_add(Entry("objectnet", "ObjectNet (113 ImageNet-overlapping classes)", "wds", ("objectnet", "wds_objectnet"),
           "objectnet/test/*.tar (clip-benchmark wds) + objectnet/imagenet_indices.json "
           "({objectnet class index: [ImageNet indices]})", "objectnet113 -> imagenet1k",
           "hf:clip-benchmark/wds_objectnet@main", "ObjectNet license (no training)", paper="beyond the paper",
           extras={"split": "test"}))
_add(Entry("cue-conflict", "Cue-conflict (1280 stylised images, 16 classes)", "cue", ("cue-conflict",),
           "cue-conflict/<shape>/<shape>N-<texture>M.png", "16 model-vs-human categories",
           "url:https://github.com/bethgelab/model-vs-human/releases/download/v0.1/cue-conflict.tar.gz",
           "CC BY 4.0", paper="§2.2", bundled="cue-conflict",
           extras={"bundled_note": "160 of the 1280 images (10 per shape category, all conflict images) are "
                                   "bundled with the package"}))
_add(Entry("edge", "Edge drawings (160, 16 classes)", "cue", ("edge",), "edge/<category>/<image>.png",
           "16 model-vs-human categories",
           "url:https://github.com/bethgelab/model-vs-human/releases/download/v0.1/edge.tar.gz", "CC BY 4.0",
           paper="beyond the paper", bundled="edge", extras={"bundled_note": "all 160 images are bundled", "bundled_complete": True}))
_add(Entry("silhouette", "Silhouettes (160, 16 classes)", "cue", ("silhouette",), "silhouette/<category>/<image>.png",
           "16 model-vs-human categories",
           "url:https://github.com/bethgelab/model-vs-human/releases/download/v0.1/silhouette.tar.gz", "CC BY 4.0",
           paper="beyond the paper", bundled="silhouette", extras={"bundled_note": "all 160 images are bundled", "bundled_complete": True}))
# model-vs-human's other 14 datasets (Geirhos et al. 2021), as its release ships them: trials of the model
# "subject" in <name>/dnn/session-1/NNNN_<exp>_dnn_<condition>_<category>_<...>.png; the category and the
# condition are read from the file name (model-vs-human's InfoMappingWithSessions). Licenses from its
# LICENSES_OVERVIEW: ImageNet-derived (12 parametric sets via generalisation-humans-DNNs, stylized via
# texture-vs-shape), sketch from ImageNet-Sketch (MIT).
MVH_RELEASE = "https://github.com/bethgelab/model-vs-human/releases/download/v0.1/{name}.tar.gz"
_MVH_SETS = {
    "colour": "colour vs greyscale", "contrast": "contrast 100% .. 1%", "high-pass": "high-pass filtered",
    "low-pass": "low-pass filtered (blur)", "phase-scrambling": "phase noise 0-180 deg",
    "power-equalisation": "power-spectrum equalised", "false-colour": "opponent colour",
    "rotation": "rotated 0/90/180/270", "eidolonI": "Eidolon I", "eidolonII": "Eidolon II",
    "eidolonIII": "Eidolon III", "uniform-noise": "uniform noise", "sketch": "ImageNet-Sketch subset (800)",
    "stylized": "Stylized-ImageNet subset (800)",
}
for _n, _t in _MVH_SETS.items():
    _lic = ("MIT (ImageNet-Sketch)" if _n == "sketch" else
            "ImageNet terms of access (non-commercial research); derived via rgeirhos/"
            + ("texture-vs-shape" if _n == "stylized" else "generalisation-humans-DNNs"))
    _add(Entry(_n, f"model-vs-human {_n}: {_t}, 16 classes", "mvh", (f"model-vs-human/{_n}",),
               f"model-vs-human/{_n}/dnn/session-1/NNNN_<exp>_dnn_<condition>_<category>_<...>.png",
               "16 model-vs-human categories", "url:" + MVH_RELEASE.format(name=_n), _lic,
               paper="beyond the paper (model-vs-human benchmark)"))

_add(Entry("pug-imagenet", "PUG: ImageNet (88k renders, 151 classes, 10 factors)", "pug", ("pug-imagenet", "PUG_ImageNet"),
           "pug-imagenet/class_to_imagenet_idx.json + pug-imagenet/<Factor>/<class>/<image> "
           "(or the HF parquet release in pug-imagenet/**/*.parquet)", "pug151 -> imagenet1k",
           "hf:facebook/PUG_ImageNet@main", "CC BY-NC 4.0", paper="§2.6"))
_add(Entry("vtab", "VTAB: the paper's 19 tasks (clip-benchmark wds)", "vtab", ("vtab",),
           "vtab/<task>/{train,test[,val]}/*.tar + vtab/<task>/classnames.txt (or wds_vtab-<task>/ at the root)",
           "per task", "hf:clip-benchmark/wds_vtab-<task>@main (sun397: clip-benchmark/wds_sun397)",
           "per task (see each HF dataset card)", paper="§2.5"))
_add(Entry("imagenet-sample", "ImageNet sample images (1 per class, downscaled)", "flat",
           ("imagenet-sample-images",), "imagenet-sample-images/<wnid>_<name>.JPEG + labels.csv", "imagenet1k",
           "manual: git clone https://github.com/EliSchwartz/imagenet-sample-images DIR/imagenet-sample-images "
           "(labels from the <wnid>_ file names when there is no labels.csv)",
           "ImageNet terms of access", paper="smoke test"))
_add(Entry("skimage-photos", "scikit-image's bundled photos (chelsea, coffee, rocket, ...)", "skimage", (),
           "bundled with scikit-image (no data root needed)", "imagenet1k (multi-label where clear)",
           "pip:scikit-image", "BSD-3 / public domain (see skimage.data)", paper="demo"))


# The user's own folders of this run (``--dataset NAME=PATH``), set by the run before any dataset is opened.
USER_DATASETS: dict[str, UserDataset] = {}


def set_user_datasets(datasets: list[UserDataset]) -> None:
    """Make exactly these user folders known by name (replaces any of an earlier run in this process)."""
    USER_DATASETS.clear()
    USER_DATASETS.update({d.name: d for d in datasets})


def user_dataset(name: str) -> UserDataset | None:
    """The user's folder registered under `name`, or None for catalog datasets."""
    return USER_DATASETS.get(name)


def class_subset(name: str):
    """The ImageNet classes a dataset's predictions are restricted to (ascending int64 array), or None: the
    200 of ImageNet-A/R and the classes of a user's ImageNet-subset folder."""
    import numpy as np

    ud = USER_DATASETS.get(name)
    if ud is not None:
        return None if ud.subset is None else np.asarray(ud.subset, np.int64)
    entry = ENTRIES.get(name.split("/")[0])
    space = entry.extras.get("space") if entry is not None else None
    return subset_indices(space) if space in ("imagenet-a", "imagenet-r") else None


def own_label_space(name: str) -> bool:
    """Is `name` a user's folder with its own classes (labels 0..K-1 that are no ImageNet classes)?"""
    ud = USER_DATASETS.get(name)
    return ud is not None and ud.kind == OWN


def split_name(name: str) -> tuple[Entry, str]:
    head, _, part = name.partition("/")
    if head not in ENTRIES:
        raise UserError(f"unknown dataset {name!r}; see `beyond-inet datasets` for the catalog")
    return ENTRIES[head], part


def _vtab_root(data_root: Path, task: str) -> Path | None:
    for cand in (data_root / "vtab" / task, data_root / f"wds_{VTAB_TASKS.get(task, task).replace('/', '-')}"):
        if cand.is_dir():
            return cand
    return None


def parts(name: str, data_root: str | Path | None) -> list[str]:
    """The parts of a multi-part dataset present under the data root."""
    entry, _ = split_name(name)
    root = entry.find(data_root)
    if entry.kind == "imagenet-c" and root:
        return [f"{c}/{s}" for c in IMAGENET_C_CORRUPTIONS for s in range(1, 6) if (root / c / str(s)).is_dir()]
    if entry.kind == "pug" and root:
        folders = [f for f in PUG_FACTORS if (root / f).is_dir()]
        if not folders and any(root.rglob("*.parquet")):  # the HF parquet release: factors from its columns
            return list(PUG_FACTORS)
        return folders
    if entry.kind == "vtab" and data_root:
        out = []
        for task in VTAB_TASKS:
            r = _vtab_root(Path(data_root), task)
            if r:
                out += [f"{task}/{s}" for s in ("train", "val", "test") if (r / s).is_dir()]
        return out
    return []


def available(name: str, data_root: str | Path | None) -> bool:
    if name in USER_DATASETS:
        return True
    try:
        entry, part = split_name(name)
    except UserError:
        return False
    if entry.kind in ("labels", "skimage"):
        return True
    if entry.kind in ("imagenet-c", "pug", "vtab"):
        ps = parts(entry.name, data_root)
        return (part in ps) if part else bool(ps)
    return entry.find(data_root) is not None


def open_dataset(name: str, data_root: str | Path | None, exif_transpose: bool = False) -> readers.ImageDataset:
    """A reader for `name`, or `DatasetMissing` saying how to get it. `exif_transpose`: apply EXIF
    orientation when decoding (off by default, as torchvision's ImageFolder; see `data.decode`)."""
    return _open_dataset(name, data_root).set_decoding(exif_transpose)


def _open_dataset(name: str, data_root: str | Path | None) -> readers.ImageDataset:
    if name in USER_DATASETS:
        return open_user_dataset(USER_DATASETS[name])
    entry, part = split_name(name)
    root = entry.find(data_root)
    if entry.kind == "skimage":
        from beyond_inet.data.skimage_photos import SkimagePhotos

        return SkimagePhotos()
    if entry.kind == "labels":
        raise UserError(f"{name!r} is a label set, not an image dataset; it is used through imagenet-val")
    if entry.kind == "vtab":
        task, _, split = part.partition("/")
        r = _vtab_root(Path(data_root), task) if data_root and task else None
        if r is None:
            raise DatasetMissing(name, f"VTAB task {task!r} not found under {data_root}", entry.how_to_get())
        if not (r / split).is_dir():
            raise DatasetMissing(name, f"VTAB task {task!r} has no {split!r} split at {r / split}", entry.how_to_get())
        ds = readers.WdsDataset(name, r, split)
        ds.name = name
        return ds
    if root is None:
        raise DatasetMissing(name, f"not found under {data_root}" if data_root else "no --data-root given",
                             entry.how_to_get())
    ds = _open_entry(entry, part, root, name)
    ds.name = name
    return ds


def _open_entry(entry: Entry, part: str, root: Path, name: str) -> readers.ImageDataset:
    if entry.kind == "imagenet":
        split = entry.extras.get("split", "test")
        space = entry.extras.get("space", "imagenet1k")
        if (root / split).is_dir() and list((root / split).glob("*.tar")):
            return _imagenet_wds(name, root, split, space)
        ds = readers.class_folder_dataset(name, _class_tree(root), _imagenet_label,
                                          entry.extras.get("id_style", "relpath"))
        if space != "imagenet1k":
            _check_subset(ds, name, space)
        return ds
    if entry.kind == "imagenet-c":
        corruption, _, severity = part.partition("/")
        sub = root / corruption / severity
        if not part or not sub.is_dir():
            raise DatasetMissing(name, f"ImageNet-C part {part!r} not found at {sub}", entry.how_to_get())
        return readers.class_folder_dataset(name, sub, _imagenet_label)
    if entry.kind == "cue":
        return readers.class_folder_dataset(name, root, _cue_label)
    if entry.kind == "mvh":
        return mvh_session_dataset(name, root)
    if entry.kind == "flat":
        if not (root / "labels.csv").exists():  # the upstream clone: <wnid>_<name>.JPEG, no CSV
            return _flat_by_wnid_prefix(name, root)
        return readers.labelled_flat_dataset(name, root)
    if entry.kind == "parquet":
        files = sorted(root.rglob("*.parquet"))
        return readers.ParquetDataset(name, files, "image", "label")
    if entry.kind == "pug":
        return _open_pug(entry, part, root, name)
    if entry.kind == "wds":
        ds = readers.WdsDataset(name, root, entry.extras.get("split", "test"))
        mapping = root / "imagenet_indices.json"
        if mapping.exists():
            m = {int(k): [int(x) for x in v] for k, v in json.loads(mapping.read_text()).items()}
            ds._multi = [m.get(lab, []) for lab in ds._labels]
            ds._labels = [m.get(lab, [-1])[0] for lab in ds._labels]
        return ds
    raise UserError(f"dataset {name!r} cannot be opened as images")


def mvh_session_dataset(name: str, root: Path) -> readers.FileListDataset:
    """model-vs-human's session layout ``<root>/dnn/session-*/<trial name>.png``; the label is the category
    in the trial name (its 5th '_' field), the sample id ``session-N/<file>`` (the file name is the
    ``imagename`` of the released decision CSVs)."""
    base = root / "dnn" if (root / "dnn").is_dir() else root
    sessions = sorted(d for d in base.glob("session-*") if d.is_dir()) if base.is_dir() else []
    if not sessions:
        raise UserError(f"dataset {name!r}: no session folders under {base} (expected {root}/dnn/session-1/*.png)")
    paths, ids, labels = [], [], []
    for sess in sessions:
        for p in readers.list_images(sess):
            parts = p.name.split("_")
            lab = _cue_label(parts[4]) if len(parts) >= 6 and parts[0].isdigit() else None
            if lab is None:
                raise UserError(f"dataset {name!r}: {p.name} is not a model-vs-human trial name "
                                f"NNNN_<exp>_dnn_<condition>_<category>_... with one of the 16 categories")
            paths.append(str(p))
            ids.append(f"{sess.name}/{p.name}")
            labels.append(lab)
    if not paths:
        raise UserError(f"dataset {name!r}: no images under {base}/session-*")
    return readers.FileListDataset(name, paths, ids, labels, classnames=list(CUE_CONFLICT_CATEGORIES))


def _imagenet_wds(name: str, root: Path, split: str, space: str) -> readers.WdsDataset:
    """A clip-benchmark webdataset release of an ImageNet(-subset) set, its labels as ImageNet-1k indices.

    The release stores each label as the index into its own ``classnames.txt`` (0..199 for A and R), so the
    class list decides the label space."""
    found = release_label_space(name, root, space)
    return readers.WdsDataset(name, root, split, label_map=found.to_imagenet)


def release_label_space(name: str, root: Path, space: str | None = None) -> LabelSpace:
    """The label space `root/classnames.txt` stands for; a UserError when the list is missing, names no
    ImageNet label space, or names another one than `space` (default: the catalog entry's)."""
    space = space or split_name(name)[0].extras.get("space", "imagenet1k")
    cn = Path(root) / "classnames.txt"
    if not cn.is_file():
        raise UserError(f"dataset {name!r}: {cn} is missing; a webdataset release's class list is needed to know "
                        f"what its labels mean")
    classes = [ln.strip() for ln in cn.read_text().splitlines() if ln.strip()]
    found = detect_label_space(classes)
    if found is None:
        want = "the 1000 ImageNet classes" if space == "imagenet1k" else f"the 200 classes of {space}"
        raise UserError(f"dataset {name!r}: the {len(classes)} class names in {cn} match no ImageNet label space "
                        f"(expected {want} in ImageNet index order, as wnids or OpenAI's class names)")
    if found.name != space:
        raise UserError(f"dataset {name!r}: {cn} lists the classes of {found.name} ({len(found.indices)} classes), "
                        f"not of {space}; is this the right release?")
    return found


def _class_tree(root: Path) -> Path:
    """`root`, or the one folder inside it when an archive was unpacked with its own top folder
    (e.g. ImageNet-V2's ``imagenetv2-matched-frequency-format-val/0..999``)."""
    subs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    if len(subs) == 1 and _imagenet_label(subs[0].name) is None and any(d.is_dir() for d in subs[0].iterdir()):
        return subs[0]
    return root


def _check_subset(ds: readers.ImageDataset, name: str, space: str) -> None:
    """Refuse class folders outside a 200-class subset: the subset's restricted argmax could never hit them."""
    allowed = set(int(i) for i in subset_indices(space))
    bad = sorted({lab for lab in ds._labels if lab not in allowed})
    if bad:
        wnids = ", ".join(imagenet_wnids()[i] for i in bad[:3])
        raise UserError(f"dataset {name!r}: {len(bad)} class folder(s) ({wnids}{' ...' if len(bad) > 3 else ''}) "
                        f"are not among the 200 classes of {space}")


def _open_pug(entry: Entry, part: str, root: Path, name: str) -> readers.ImageDataset:
    mapping = root / "class_to_imagenet_idx.json"
    if not mapping.exists():
        raise UserError(f"dataset {name!r}: {mapping} is missing (PUG's class -> ImageNet index mapping)")
    from beyond_inet.data.pug import class_labeller, load_class_mapping

    label = class_labeller(load_class_mapping(mapping))  # the rule the parquet and PugFolder readers use
    sub = root / part
    if part and not sub.is_dir() and part in PUG_FACTORS and any(root.rglob("*.parquet")):
        from beyond_inet.data.pug import PugParquet

        return readers.ReaderAdapter(name, PugParquet(root, mapping, factor=part))
    if not part or not sub.is_dir():
        raise DatasetMissing(name, f"PUG factor folder {part!r} not found at {sub}", entry.how_to_get())
    return readers.class_folder_dataset(name, sub, label)


def describe(data_root: str | Path | None) -> list[dict]:
    """One row per catalog entry: present or not, where, and how to get it."""
    rows = []
    for e in ENTRIES.values():
        present = available(e.name, data_root)
        where = e.find(data_root)
        p = parts(e.name, data_root) if e.kind in ("imagenet-c", "pug", "vtab") else []
        rows.append({"name": e.name, "title": e.title, "present": present, "path": str(where) if where else "",
                     "parts": len(p), "layout": e.layout, "label_space": e.label_space, "source": e.source,
                     "license": e.license, "paper": e.paper, "how_to_get": "" if present else e.how_to_get()})
    return rows


def default_data_root() -> str | None:
    return os.environ.get("BEYOND_INET_DATA")
