"""The label rule of a dataset, in one place: which images are scored, over which classes.

Every analysis that says whether a prediction is right on an ImageNet-labelled dataset (accuracy,
calibration, ``--log-samples``) takes its images, logits and labels from ``scored_outputs``, so a top-1
reported by two analyses of the same (model, dataset, view) is the same number:

- unlabelled images are left out;
- a class-subset dataset (ImageNet-A/R, a user's ImageNet-subset folder: ``catalog.class_subset``) has its
  logits cut to its classes *before* anything is computed from them (the paper's ``output[:, mask]``: the
  argmax and the softmax are over those classes) and its labels mapped into them; images labelled outside
  the classes are left out and counted;
- a multi-label dataset (ImageNet-Hard, scikit-image photos) counts a prediction right when it is any
  listed class (``labelspaces.truth_sets``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from beyond_inet.analyses.base import Outputs
from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import truth_sets


def restrict_logits(logits: np.ndarray, labels: np.ndarray, subset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut logits to the subset's classes and map ImageNet labels into 0..len(subset)-1.

    Labels outside the subset become -1 (the caller drops them). This is the paper's
    ``output[:, imagenet_r_mask]`` before the softmax.
    """
    subset = np.asarray(subset, np.int64)
    lab = np.asarray(labels, np.int64)
    pos = np.clip(np.searchsorted(subset, lab), 0, subset.size - 1)
    mapped = np.where((lab >= 0) & (subset[pos] == lab), pos, -1)
    return np.asarray(logits)[:, subset], mapped



@dataclass
class Scored:
    """The images of one dataset that accuracy scores, under the dataset's one label rule."""

    outputs: Outputs  # the scored images (labelled, label inside the dataset's classes)
    logits: np.ndarray  # over the dataset's classes when it is a class subset, else the 1000 ImageNet classes
    labels: np.ndarray  # in the same label space as `logits`
    classes: np.ndarray | None  # the ImageNet classes a class-subset dataset keeps (argmax over those only)
    outside: int  # labelled images whose label lies outside those classes (left out)
    kept: np.ndarray  # bool [len(original outputs)]: which of the original images are scored


def scored_outputs(dataset: str, out: Outputs) -> Scored:
    """The label rule of `dataset` (ImageNet label space): unlabelled images are left out; a class-subset
    dataset (ImageNet-A/R, a user's ImageNet-subset folder) takes the argmax over its classes and leaves
    out images labelled outside them; multi-labels count any listed class (``topk_correct``). One function,
    used by the accuracy analysis and by ``--log-samples``, so a logged prediction is the scored one."""
    kept = (truth_sets(out.labels, out.multilabels) >= 0).any(axis=1)
    o = out.subset(kept)
    logits, labels = o.logits, o.labels
    classes = catalog.class_subset(dataset)
    outside = 0
    if classes is not None and o.multilabels is None:
        logits, labels = restrict_logits(o.logits, o.labels, classes)
        inside = labels >= 0
        if not inside.all():
            outside = int((~inside).sum())
            o, logits, labels = o.subset(inside), logits[inside], labels[inside]
            kept[np.flatnonzero(kept)[~inside]] = False
    else:
        classes = None
    return Scored(o, logits, labels, classes, outside, kept)


def subset_top1(dataset: str, out: Outputs) -> tuple[np.ndarray, list[str]]:
    """(0/1 top-1 correctness, ids) of a class-subset dataset under its label rule: the argmax over its
    classes; images labelled outside them left out (robustness, error consistency)."""
    s = scored_outputs(dataset, out)
    return (np.asarray(s.logits).argmax(axis=1) == s.labels).astype(np.float64), list(s.outputs.ids)
