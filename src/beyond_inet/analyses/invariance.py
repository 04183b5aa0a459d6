"""Transformation invariance: accuracy under zoom (scale), shifted crops and input resolution (paper §2.7).

Views (see ``data.views``): ``scale-<s>`` (s in 1, 1.25, 1.5, 2, 3), ``shift-<px>`` (0, 5, 30, 75, 100) and
``res-<r>`` (112, 224, 336, 512, 640); the lists can be overridden with the options ``invariance_scales``,
``invariance_shifts``, ``invariance_resolutions``. Data: ``imagenet-val``, or ``imagenet-sample`` when the
val set is absent (the rows' dataset says which was used).

Per view, on the samples present in every fetched view (matched by id, so an image one view skipped does
not bias the curve):
  ``top1_<kind>_<x>``       top-1 accuracy (e.g. ``top1_scale_1.25``, ``top1_shift_30``, ``top1_res_336``);
  ``agree_<kind>_<x>``      label-free: fraction whose top-1 equals the top-1 under the ``standard`` view;
  ``true_prob_<kind>_<x>``  mean softmax probability of the true class (the paper's ``correct_class_prob``).
Artifacts ``invariance/<kind>`` hold the curves.

A run's ``--dataset`` folders are swept too (after the chosen dataset; only they when no ImageNet images are
present; not when ``invariance_dataset`` is set): a folder of ImageNet classes with the argmax over its
classes (as ImageNet-A/R), a folder with classes of its own by agreement only (the view's top-1 equals the
standard view's; CLIP models: the zero-shot top-1 over the folder names). Their curves are ``invariance/<kind>@<name>``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import (FULL, LOGITS, Analysis, AnalysisResult, Context, Fetch, Outputs, Request, Skip,
                                       register_analysis)
from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import in_truth, truth_sets

DEFAULT_SCALES: tuple[float, ...] = (1, 1.25, 1.5, 2, 3)
DEFAULT_SHIFTS: tuple[int, ...] = (0, 5, 30, 75, 100)
DEFAULT_RESOLUTIONS: tuple[int, ...] = (112, 224, 336, 512, 640)
KINDS = ("scale", "shift", "res")


def fmt_value(x: float) -> str:
    """1 -> '1', 1.25 -> '1.25', 2.0 -> '2' (the spelling used in view and metric names)."""
    return f"{float(x):g}"


def view_name(kind: str, x: float) -> str:
    return f"{kind}-{fmt_value(x)}"


def sweep(ctx: Context) -> dict[str, list[float]]:
    """The sweep values per kind, honouring the option overrides."""
    return {
        "scale": [float(v) for v in ctx.option_list("invariance_scales", DEFAULT_SCALES)],
        "shift": [int(v) for v in ctx.option_list("invariance_shifts", DEFAULT_SHIFTS)],
        "res": [int(v) for v in ctx.option_list("invariance_resolutions", DEFAULT_RESOLUTIONS)],
    }


def choose_dataset(ctx: Context) -> str:
    """The `invariance_dataset` option, else ``imagenet-val`` when present, else ``imagenet-sample`` when
    present, else ``imagenet-val`` (-> a skip)."""
    if ctx.options.get("invariance_dataset"):
        return str(ctx.options["invariance_dataset"])
    if ctx.available("imagenet-val"):
        return "imagenet-val"
    if ctx.available("imagenet-sample"):
        return "imagenet-sample"
    return "imagenet-val"


def sweep_datasets(ctx: Context) -> list[str]:
    """The chosen dataset, then the run's --dataset folders (unless `invariance_dataset` names one dataset)."""
    first = choose_dataset(ctx)
    if ctx.options.get("invariance_dataset"):
        return [first]
    user = list(catalog.USER_DATASETS)
    if user and not ctx.available(first):  # no ImageNet images at all: only the user's folders
        return user
    return [first] + [u for u in user if u != first]


def _features(out: Outputs, ids: Sequence[str]) -> np.ndarray | None:
    if out.features is None:  # not kept: only own-class folders' CLIP zero-shot reads them
        return None
    pos = {sid: k for k, sid in enumerate(out.ids)}
    return np.asarray(out.features)[[pos[i] for i in ids]]


def label_rule(ds: str, logits: np.ndarray, labels: np.ndarray, truth: np.ndarray, model: str = "",
               features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A class-subset dataset (ImageNet-A/R, a user's folder of ImageNet classes: ``catalog.class_subset``, as
    ``analyses.scoring`` rules for accuracy and calibration): logits cut to its classes, labels mapped to them
    (the prediction and agreement are the restricted argmax). A folder with classes of its own has no
    ImageNet labels: every label -1, so only agreement is scored — of the zero-shot prediction over its folder
    names for a CLIP model (head built in `prepare`), else of the model's own (ImageNet) top-1."""
    ud = catalog.user_dataset(ds)
    if ud is not None and ud.subset is None:
        from beyond_inet.analyses.accuracy import ZERO_SHOT, zero_shot_logits

        zs = ZERO_SHOT.get((model, ds))
        if zs is not None and features is not None and zs[2] == tuple(ud.classnames):
            logits = zero_shot_logits(features, zs[0], zs[1])
        return logits, np.full(len(labels), -1, np.int64), np.full((len(labels), 1), -1, np.int64)
    classes = catalog.class_subset(ds)
    if classes is None:
        return logits, labels, truth
    from beyond_inet.analyses.scoring import restrict_logits

    z, lab = restrict_logits(logits, labels, classes)
    return z, lab, lab[:, None]


def common_ids(outputs: Sequence[Outputs]) -> list[str]:
    """Ids present in every output, in the order of the first."""
    keep = set(outputs[0].ids)
    for o in outputs[1:]:
        keep &= set(o.ids)
    return [i for i in outputs[0].ids if i in keep]


def align(out: Outputs, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, labels, truth sets) of `out` reordered to `ids` (all must be present)."""
    pos = {sid: k for k, sid in enumerate(out.ids)}
    idx = np.array([pos[i] for i in ids], dtype=np.int64)
    return out.logits[idx], out.labels[idx], truth_sets(out.labels, out.multilabels)[idx]


def view_metrics(logits: np.ndarray, labels: np.ndarray, ref_pred: np.ndarray | None,
                 truth: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-sample values and the mask of samples they cover: top-1 (the dataset's label rule,
    ``labelspaces.truth_sets``), true-class probability (single-labelled samples) and agreement with
    `ref_pred` (every sample)."""
    pred = logits.argmax(axis=1)
    truth = truth_sets(labels, None) if truth is None else truth
    has = (truth >= 0).any(axis=1)
    lab = labels >= 0
    from scipy.special import softmax  # scipy loads after inference (tests/engine/test_import_footprint.py)

    p = softmax(np.asarray(logits[lab], np.float64), axis=1)
    out = {
        "top1": (in_truth(pred[has], truth[has]), has),
        "true_prob": (p[np.arange(p.shape[0]), labels[lab]], lab),
    }
    if ref_pred is not None:
        out["agree"] = ((pred == ref_pred).astype(np.float64), np.ones(pred.size, bool))
    return out


@register_analysis
class Invariance(Analysis):
    name = "invariance"
    description = "Top-1, agreement with the standard view and true-class probability under scale, shift, resolution"

    def requests(self, ctx: Context) -> list[Request]:
        reqs = []
        for ds in sweep_datasets(ctx):
            # Own-class folders: CLIP's zero-shot head reads the features; the rest reads the logits.
            kinds = FULL if catalog.own_label_space(ds) else frozenset({LOGITS})
            reqs.append(Request(ds, "standard", kinds))
            for kind, values in sweep(ctx).items():
                reqs += [Request(ds, view_name(kind, v), kinds) for v in values]
        return reqs

    def prepare(self, ctx: Context, model, env) -> list[Skip]:
        """CLIP models: the zero-shot head of each own-classes folder swept (agreement of its predictions)."""
        from beyond_inet.analyses.accuracy import build_zero_shot

        build_zero_shot(model, sweep_datasets(ctx))
        return []

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        res = AnalysisResult()
        for ds in sweep_datasets(ctx):
            self._declare_dataset(ctx, model, fetch, ds, res)
        return res

    def _declare_dataset(self, ctx: Context, model: str, fetch: Fetch, ds: str, res: AnalysisResult) -> None:
        std = fetch(Request(ds, "standard"))
        fetched: dict[tuple[str, float], Outputs] = {}
        for kind, values in sweep(ctx).items():
            for v in values:
                o = fetch(Request(ds, view_name(kind, v)))
                if o is None:
                    res.skips.append(Skip(self.name, model, ds, f"no outputs for view {view_name(kind, v)!r}"))
                else:
                    fetched[(kind, v)] = o
        if not fetched:
            res.skips.append(Skip(self.name, model, ds, f"{ds}: no outputs for any invariance view"))
            return
        if std is None:
            res.skips.append(Skip(self.name, model, ds, "no standard-view outputs: agreement rows left out"))
        everything = list(fetched.values()) + ([std] if std is not None else [])
        ids = common_ids(everything)
        if not ids:
            res.skips.append(Skip(self.name, model, ds, "the views share no sample ids"))
            return
        dropped = len(set().union(*(o.ids for o in everything))) - len(ids)
        if dropped:
            res.skips.append(Skip(self.name, model, ds, f"{dropped} samples missing from some view were left out"))
        ref_pred = label_rule(ds, *align(std, ids), model=model, features=_features(std, ids))[0].argmax(axis=1) \
            if std is not None else None

        curves: dict[str, dict[str, Any]] = {k: {"x": [], "top1": [], "agree": [], "true_prob": [], "n": len(ids),
                                                 "dataset": ds} for k in KINDS}
        per_kind: dict[str, tuple[list[np.ndarray], list[str]]] = {k: ([], []) for k in KINDS}
        for (kind, v), o in fetched.items():
            logits, labels, truth = label_rule(ds, *align(o, ids), model=model, features=_features(o, ids))
            m = view_metrics(logits, labels, ref_pred, truth)
            x = fmt_value(v).replace("-", "m")
            curves[kind]["x"].append(float(v))
            for metric in ("top1", "agree", "true_prob"):
                if metric not in m:
                    curves[kind][metric].append(math.nan)
                    continue
                vals, mask = m[metric]
                if vals.size == 0:  # no labelled image (a folder with classes of its own): agreement only
                    curves[kind][metric].append(math.nan)
                    continue
                units = [i for i, k in zip(ids, mask) if k]
                res.metrics.append(stats.mean_metric(ds, f"{metric}_{kind}_{x}", vals, units,
                                                     unit="fraction" if metric != "true_prob" else "probability"))
                curves[kind][metric].append(float(vals.mean()) if vals.size else math.nan)
                if metric == "top1":
                    per_kind[kind][0].append(vals)
                    per_kind[kind][1].extend(units)
        for kind, (vals, units) in per_kind.items():
            if vals:  # every view's rows of one image are ONE resampling unit
                res.metrics.append(stats.mean_metric(ds, f"top1_mean_{kind}", np.concatenate(vals), units,
                                                     description=f"mean top-1 over the {len(vals)} {kind} views"))
        for kind in KINDS:
            if curves[kind]["x"]:
                order = np.argsort(curves[kind]["x"], kind="stable")
                c = curves[kind]
                for key in ("x", "top1", "agree", "true_prob"):
                    c[key] = [c[key][i] for i in order]
                res.artifacts[f"invariance/{kind}" + ("" if catalog.user_dataset(ds) is None else f"@{ds}")] = c
