"""Per-sample model outputs: what every analysis consumes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Outputs:
    """Outputs of one model on one dataset under one view, in dataset order.

    ids:      sample ids (for ImageNet val: the file name ``ILSVRC2012_val_XXXXXXXX.JPEG``).
    labels:   int64 [N]; the label in the dataset's label space (see ``data.labelspaces``), -1 if none.
    logits:   float32 [N, 1000] over the ImageNet-1k classes (sorted-wnid order).
    features: float32 [N, D] pooled pre-logit features (CLIP: the image embedding).
    multilabels: int64 [N, K] padded with -1, for multi-label sets (ImageNet-Hard); else None.
    skipped:  ids of samples that could not be decoded (not in the arrays).
    meta:     provenance: model spec, preprocessing, view, logit scale, dataset revision ...
    """

    ids: list[str]
    labels: np.ndarray
    logits: np.ndarray
    features: np.ndarray
    multilabels: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> "Outputs":
        idx = np.flatnonzero(mask)
        return Outputs(
            ids=[self.ids[i] for i in idx],
            labels=self.labels[idx],
            logits=self.logits[idx],
            features=self.features[idx],
            multilabels=None if self.multilabels is None else self.multilabels[idx],
            skipped=list(self.skipped),
            meta=dict(self.meta),
        )
