"""Top-1 / top-5 accuracy: the simplest consumer of the store.

On ImageNet val it also scores ReaL (correct if the prediction is in the image's ReaL set; images
with an empty ReaL list are left out). Datasets with multi-labels (scikit-image photos, ImageNet-Hard)
count a prediction correct if it is any listed class. Datasets over a subset of the ImageNet classes
(ImageNet-A/R, a user's ImageNet-subset folder: ``catalog.class_subset``) take the argmax over those
classes only, as the robustness analysis does; a ``n_classes`` row states the restriction.

A user's folder with classes of its own (``--dataset NAME=PATH``, docs/user-datasets.md) has no ImageNet
labels: every model gets a linear probe on its stored penultimate features, scored by stratified k-fold
cross-validation (``probe_folds``, default 5; each image predicted once, by the probe that did not see it):
``probe_top1`` and ``probe_top1/<class>`` (CIs: bootstrap over images, the probes' refits not resampled).
CLIP models also get ``top1``/``top5`` zero-shot with the folder names as class names (`prepare`).
"""
from __future__ import annotations

import numpy as np

from beyond_inet.analyses.base import (FEATURES, LOGITS, Analysis, AnalysisResult, Context, Fetch, Request,
                                      Row, Skip, register_analysis)
from beyond_inet.analyses.scoring import scored_outputs
from beyond_inet.analyses.stats import mean_metric
from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import real_labels, truth_sets, val_number

DEFAULT_DATASETS = ("imagenet-val", "imagenet-sample")
DEFAULT_FOLDS = 5


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
        # Own-class folders: the probe and CLIP zero-shot read the features; ImageNet-labelled sets: the logits.
        return [Request(d, "standard", frozenset({FEATURES}) if catalog.own_label_space(d) else frozenset({LOGITS}))
                for d in ctx.option_list("accuracy_datasets", DEFAULT_DATASETS)]

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
            if catalog.own_label_space(req.dataset):
                self._own_labels(ctx, model, req.dataset, out, res)
                continue
            scored = scored_outputs(req.dataset, out)
            o, logits, labels = scored.outputs, scored.logits, scored.labels
            if scored.outside:
                res.skips.append(Skip(self.name, model, req.dataset, f"{scored.outside} images whose label "
                                                                     f"is outside the dataset's classes left out"))
            if scored.classes is not None:
                res.rows.append(Row(model, req.dataset, self.name, "n_classes", float(scored.classes.size), n=len(o)))
            for k in (1, 5):
                res.metrics.append(mean_metric(req.dataset, f"top{k}", topk_correct(logits, labels, k,
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

    def prepare(self, ctx: Context, model, env) -> list[Skip]:
        """CLIP models: the zero-shot head of each own-classes folder, from its folder names (the model's text
        tower is only here, while the model is built); scored from the stored image embeddings in `declare`."""
        build_zero_shot(model, ctx.option_list("accuracy_datasets", DEFAULT_DATASETS))
        return []

    def _own_labels(self, ctx: Context, model: str, ds: str, out, res: AnalysisResult) -> None:
        """A folder with classes of its own: CLIP zero-shot with the folder names (when `prepare` built the head),
        k-fold linear probe on the stored features (every model) and per-class probe accuracy."""
        ud = catalog.user_dataset(ds)
        names = list(ud.classnames) if ud is not None else None
        y = np.asarray(out.labels, np.int64)
        keep = y >= 0
        x, y, ids = np.asarray(out.features)[keep], y[keep], [i for i, k in zip(out.ids, keep) if k]
        zs = ZERO_SHOT.get((model, ds))
        if zs is not None and names is not None and tuple(names) == zs[2]:
            logits = zero_shot_logits(x, zs[0], zs[1])
            desc = f"CLIP zero-shot over the {len(names)} folder names (80 OpenAI templates)"
            for k in (1, 5):
                if k <= len(names):
                    res.metrics.append(mean_metric(ds, f"top{k}", topk_correct(logits, y, k), ids, description=desc))
        folds = int(ctx.options.get("probe_folds", DEFAULT_FOLDS))
        counts = np.bincount(y)
        present = counts[counts > 0]
        k = min(folds, int(present.min())) if present.size else 0
        if present.size < 2 or k < 2:
            smallest = int(present.min()) if present.size else 0
            res.skips.append(Skip(self.name, model, ds, f"linear probe needs >= 2 classes with >= 2 images each "
                                                        f"(smallest class: {smallest})"))
            return
        pred = kfold_probe_predictions(x, y, k, str(ctx.options.get("probe", "lbfgs")), ctx.seed,
                                       n_classes=len(names) if names else int(y.max()) + 1,
                                       device=ctx.options.get("device"))
        correct = (pred == y).astype(np.float64)
        desc = f"linear probe, stratified {k}-fold cross-validation on stored features"
        res.metrics.append(mean_metric(ds, "probe_top1", correct, ids, description=desc))
        for c in np.unique(y):
            m = y == c
            label = names[c] if names and c < len(names) else str(int(c))
            res.metrics.append(mean_metric(ds, f"probe_top1/{label}", correct[m], [i for i, t in zip(ids, m) if t],
                                           description=desc))
        res.rows.append(Row(model, ds, self.name, "probe_folds", float(k), n=len(ids)))
        # what a verdict is judged against (report.verdicts): K classes; a probe trained on the labels can
        # always reach the largest class's share by predicting it
        res.rows.append(Row(model, ds, self.name, "n_classes", float(len(names) if names else present.size),
                            n=len(ids)))
        res.rows.append(Row(model, ds, self.name, "probe_chance", float(present.max() / present.sum()), n=len(ids)))
        if folds > k:
            res.skips.append(Skip(self.name, model, ds, f"probe_folds={folds} lowered to {k}: the smallest class "
                                                        f"has {k} images"))
        res.artifacts[f"probe/{ds}"] = {"folds": k, "classes": names, "n": len(ids),
                                        "per_class": {(names[c] if names else str(c)): float(correct[y == c].mean())
                                                      for c in np.unique(y)}}


# (model spec, dataset) -> (zero-shot head [D, K], logit scale, class names), filled by Accuracy.prepare.
ZERO_SHOT: dict[tuple[str, str], tuple[np.ndarray, float, tuple[str, ...]]] = {}


def build_zero_shot(model, datasets) -> None:
    """Fill `ZERO_SHOT` for a CLIP model (one with a ``zero_shot_head``) and every own-classes folder among
    `datasets` not built yet: each folder name (underscores as spaces) through the model's prompt ensemble."""
    head = getattr(model, "zero_shot_head", None)
    for ds in datasets:
        ud = catalog.user_dataset(ds)
        if head is None or ud is None or not catalog.own_label_space(ds):
            continue
        have = ZERO_SHOT.get((model.spec, ds))
        if have is not None and have[2] == tuple(ud.classnames):
            continue
        w = head([c.replace("_", " ") for c in ud.classnames])
        ZERO_SHOT[(model.spec, ds)] = (np.asarray(w.cpu(), np.float32), float(model.info.get("logit_scale", 100.0)),
                                       tuple(ud.classnames))


def zero_shot_logits(features: np.ndarray, weights: np.ndarray, scale: float) -> np.ndarray:
    """CLIP's zero-shot logits from stored image embeddings: scale * normalize(embedding) @ head."""
    f = np.asarray(features, np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return (scale * f @ np.asarray(weights, np.float64)).astype(np.float32)


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number (0..k-1) of every sample: each class's samples, in a seeded random order, dealt round-robin,
    so every fold holds about 1/k of every class (classes with >= k samples appear in every fold)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, np.int64)
    start = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        fold[idx] = (np.arange(idx.size) + start) % k  # staggered start: small classes spread over the folds
        start += idx.size
    return fold


def kfold_probe_predictions(x: np.ndarray, y: np.ndarray, k: int, mode: str = "lbfgs", seed: int = 0,
                            n_classes: int | None = None, device=None) -> np.ndarray:
    """Out-of-fold predictions of the transfer analysis' linear probe (L2-normalised features, C chosen on a
    held-out part of each training fold): each sample is predicted by the probe fitted without its fold."""
    from beyond_inet.analyses.transfer import resolve_device, run_probe

    y = np.asarray(y, np.int64)
    fold = stratified_folds(y, k, seed)
    pred = np.full(y.size, -1, np.int64)
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    dev = resolve_device(device)
    for f in range(k):
        te = fold == f
        r = run_probe(mode, x[~te], y[~te], x[te], n_classes=n_classes, device=dev, seed=seed + f)
        pred[te] = r.test_pred
    return pred
