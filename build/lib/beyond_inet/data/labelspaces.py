"""Label spaces and class subsets, in one place.

Every ImageNet-derived dataset stores labels as ImageNet-1k indices (sorted-wnid order, the order of
timm, torchvision's ImageFolder and open_clip's class names). 200-class subsets (A, R) are masks over
those indices taken from timm's bundled index lists; the 16 model-vs-human categories map to lists of
ImageNet indices. Model adapters never see any of this.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

CUE_CONFLICT_CATEGORIES = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)


def _timm_info(name: str) -> str:
    return resources.files("timm.data").joinpath("_info", name).read_text()


@lru_cache(maxsize=None)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order."""
    wnids = tuple(_timm_info("imagenet_synsets.txt").split())
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    return wnids


@lru_cache(maxsize=None)
def wnid_to_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


@lru_cache(maxsize=None)
def imagenet_classnames() -> tuple[str, ...]:
    """OpenAI's curated ImageNet class names (used for CLIP prompts and display)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


@lru_cache(maxsize=None)
def subset_indices(name: str) -> np.ndarray:
    """ImageNet-1k indices of a 200-class subset (``imagenet-a`` or ``imagenet-r``), ascending."""
    fname = {"imagenet-a": "imagenet_a_indices.txt", "imagenet-r": "imagenet_r_indices.txt"}[name]
    idx = np.array([int(x) for x in _timm_info(fname).split()], dtype=np.int64)
    assert idx.size == 200 and np.all(np.diff(idx) > 0)
    return idx


def subset_mask(name: str) -> np.ndarray:
    """Boolean mask [1000] selecting the subset's classes."""
    m = np.zeros(1000, dtype=bool)
    m[subset_indices(name)] = True
    return m


@dataclass(frozen=True)
class LabelSpace:
    """The classes of a release as ImageNet-1k indices: class k of the release is ImageNet class `indices[k]`."""

    name: str  # "imagenet1k", "imagenet-a", "imagenet-r" or "imagenet1k-subset"
    indices: tuple[int, ...]

    def to_imagenet(self, label: int) -> int | None:
        """The ImageNet index of release label `label`; None when out of range."""
        return self.indices[label] if 0 <= label < len(self.indices) else None


def _known_label_spaces() -> list[LabelSpace]:
    spaces = [LabelSpace("imagenet1k", tuple(range(1000)))]
    spaces += [LabelSpace(n, tuple(int(i) for i in subset_indices(n))) for n in ("imagenet-a", "imagenet-r")]
    return spaces


def detect_label_space(classnames: list[str]) -> LabelSpace | None:
    """The label space a release's class list (``classnames.txt``, line k = class k) stands for, or None.

    A class-folder tree over wnid folders, turned into integer labels the way torchvision's ImageFolder
    (and CLIP_benchmark's webdataset converter) does it, numbers the classes in sorted-wnid order, i.e. in
    ascending ImageNet index. So a release's list must be, in order, the 1000 ImageNet classes or the
    ascending subset of them it holds, given either as wnids or as OpenAI's curated class names (the names
    CLIP_benchmark writes). A-200 and R-200 are recognised by exact equality with their published lists;
    any other subset is accepted when exactly one ascending choice of classes fits the names (OpenAI's
    list names two classes each "missile" and "sunglasses"; the order usually tells them apart).
    """
    names = [c.strip() for c in classnames]
    if not names:
        return None
    forms = (list(imagenet_wnids()), list(imagenet_classnames()))
    for space in _known_label_spaces():
        for form in forms:
            if names == [form[i] for i in space.indices]:
                return space
    for form in forms:
        found = _ascending_match(names, form)
        if found is not None:
            return LabelSpace("imagenet1k-subset", found)
    return None


def _ascending_match(names: list[str], form: list[str]) -> tuple[int, ...] | None:
    """The one strictly ascending list of indices into `form` naming `names`, or None (none or several).

    The leftmost choice (smallest fitting index at each step) and the rightmost one bound every ascending
    choice, so they are equal exactly when the choice is unique."""
    where: dict[str, list[int]] = {}
    for i, n in enumerate(form):
        where.setdefault(n, []).append(i)
    if any(n not in where for n in names):
        return None
    left, prev = [], -1
    for n in names:
        fit = [i for i in where[n] if i > prev]
        if not fit:
            return None
        prev = fit[0]
        left.append(prev)
    right, nxt = [], len(form)
    for n in reversed(names):
        fit = [i for i in where[n] if i < nxt]
        nxt = fit[-1]
        right.append(nxt)
    return tuple(left) if left == right[::-1] else None


@lru_cache(maxsize=None)
def real_labels() -> tuple[tuple[int, ...], ...]:
    """ReaL multi-labels for the 50k val images, indexed by val number - 1 (timm's bundled copy)."""
    return tuple(tuple(x) for x in json.loads(_timm_info("imagenet_real_labels.json")))


def val_number(file_name: str) -> int | None:
    """``ILSVRC2012_val_00000042.JPEG`` -> 42; None for other names."""
    stem = file_name.rsplit("/", 1)[-1].split(".")[0]
    if stem.startswith("ILSVRC2012_val_"):
        try:
            return int(stem[len("ILSVRC2012_val_"):])
        except ValueError:
            return None
    return None


def truth_sets(labels: np.ndarray, multilabels: np.ndarray | None) -> np.ndarray:
    """The one label rule every analysis uses: an image's acceptable ImageNet classes, int [N, K] padded
    with -1 — the multi-label set when the dataset has one (scikit-image photos, ImageNet-Hard), else its
    single label. A row of -1 is an unlabelled image."""
    if multilabels is not None:
        return np.asarray(multilabels, np.int64).reshape(len(labels), -1)
    return np.asarray(labels, np.int64)[:, None]


def in_truth(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """0/1 per row: is the predicted class one of the row's acceptable classes?"""
    t = np.asarray(truth, np.int64)
    return ((t == np.asarray(pred)[:, None]) & (t >= 0)).any(axis=1).astype(np.float64)
