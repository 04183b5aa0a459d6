"""Top-1 / top-5 accuracy: the simplest consumer of the store.

On ImageNet val it also scores ReaL (correct if the prediction is in the image's ReaL set; images
with an empty ReaL list are left out). Datasets with multi-labels (scikit-image photos, ImageNet-Hard)
count a prediction correct if it is any listed class.
"""
from __future__ import annotations

import numpy as np

from beyond_inet.analyses.base import Analysis, AnalysisResult, Context, Fetch, Request, Skip, register_analysis
from beyond_inet.analyses.stats import mean_metric
from beyond_inet.data.labelspaces import real_labels, truth_sets, val_number

DEFAULT_DATASETS = ("imagenet-val", "imagenet-sample")


_ROW_CHUNK = 8192  # rows per block: bounds the [rows, k, labels] comparison on 50k x 1000 logits


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int, multilabels: np.ndarray | None = None) -> np.ndarray:
    """Per-sample 0/1: is a true class among the k highest logits? (multi-labels: any listed class,
    -1 = padding)."""
    z = np.asarray(logits)
    truth = truth_sets(labels, multilabels)
    k = min(k, z.shape[1])
    out = np.empty(z.shape[0], bool)
    for s in range(0, z.shape[0], _ROW_CHUNK):
        block, t = z[s:s + _ROW_CHUNK], truth[s:s + _ROW_CHUNK]
        top = block.argmax(1)[:, None] if k == 1 else np.argpartition(-block, k - 1, axis=1)[:, :k]
        out[s:s + _ROW_CHUNK] = ((top[:, :, None] == t[:, None, :]) & (t[:, None, :] >= 0)).any(axis=(1, 2))
    return out.astype(np.float64)


def real_correct(logits: np.ndarray, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 correct under ReaL, mask of images that have a non-empty ReaL set)."""
    real = real_labels()
    pred = logits.argmax(1)
    correct = np.zeros(len(ids))
    keep = np.zeros(len(ids), bool)
    for i, sid in enumerate(ids):
        num = val_number(sid)
        if num is None or not (1 <= num <= len(real)) or not real[num - 1]:
            continue
        keep[i] = True
        correct[i] = pred[i] in real[num - 1]
    return correct, keep


@register_analysis
class Accuracy(Analysis):
    name = "accuracy"
    description = "top-1/top-5 accuracy (ReaL on ImageNet val)"

    def requests(self, ctx: Context) -> list[Request]:
        return [Request(d) for d in ctx.option_list("accuracy_datasets", DEFAULT_DATASETS)]

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        res = AnalysisResult()
        for req in self.requests(ctx):
            out = fetch(req)
            if out is None:
                continue
            labelled = (truth_sets(out.labels, out.multilabels) >= 0).any(axis=1)
            if not labelled.any():
                res.skips.append(Skip(self.name, model, req.dataset, "no labelled images"))
                continue
            o = out.subset(labelled)
            for k in (1, 5):
                res.metrics.append(mean_metric(req.dataset, f"top{k}", topk_correct(o.logits, o.labels, k,
                                                                                    o.multilabels), o.ids))
            if req.dataset == "imagenet-val":
                corr, keep = real_correct(o.logits, o.ids)
                if keep.any():
                    res.metrics.append(mean_metric(req.dataset, "top1_real", corr[keep],
                                                   [i for i, k in zip(o.ids, keep) if k]))
                else:
                    res.skips.append(Skip(self.name, model, "imagenet-real",
                                          "sample ids are not ImageNet val file names; ReaL needs them"))
        return res
