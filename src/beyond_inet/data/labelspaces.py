"""Label spaces and class subsets, in one place.

Every ImageNet-derived dataset stores labels as ImageNet-1k indices (sorted-wnid order, the order of
timm, torchvision's ImageFolder and open_clip's class names). 200-class subsets (A, R) are masks over
those indices taken from timm's bundled index lists; the 16 model-vs-human categories map to lists of
ImageNet indices. Model adapters never see any of this.
"""
from __future__ import annotations

import json
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
