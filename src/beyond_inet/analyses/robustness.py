"""Robustness: top-1 on ImageNet-val and its variants, ImageNet-C mCE, effective robustness.

Scoring rules (paper-spec §2.4), all from stored 1000-way logits:
  imagenet-val, -v2, -sketch   argmax over the 1000 classes == label
  imagenet-a, imagenet-r       argmax over the dataset's 200 classes only (``labelspaces.subset_indices``,
                               the paper's ``output[:, mask]``) == label; the one label rule of
                               ``analyses.scoring`` (accuracy, calibration, invariance score by it too)
  imagenet-hard                argmax (1000) is any of the image's labels (``Outputs.multilabels``)
  imagenet-real                on imagenet-val outputs: argmax is in the image's ReaL label set
                               (``labelspaces.real_labels()[val_number - 1]``); empty sets are skipped
  imagenet-c                   per ``<corruption>/<severity>`` part: argmax == label. ``top1`` on
                               dataset ``imagenet-c`` = mean over the present parts of the 15 standard
                               corruptions (the paper's number when all 75 are there); rows per
                               corruption (``imagenet-c/<corruption>``: mean top1, and ``ce`` = mean error /
                               AlexNet's mean error) and per part; ``mce`` = mean CE over the 15, only
                               when all 15 x 5 parts are present. mCE is a ratio (x100 for the usual %).
  variants                     ``top1_avg``: plain mean of the top-1 of V2, A, C, Hard, R, Sketch, ReaL
                               that are present (C only when complete); n = number averaged.
Beyond the paper:
  --dataset folders            a user's folder of ImageNet classes: argmax over its classes == label (as A/R);
                               a row of its own, not part of ``top1_avg``.
  objectnet                    argmax over the union of ImageNet classes that ObjectNet classes map to
                               (the union of ``multilabels`` over the set) is one of the image's classes;
                               images of unmapped ObjectNet classes are left out.
  effective_robustness         per model, on V2, Sketch, A and R: the variant top-1 minus what a fixed
                               baseline predicts from the model's val top-1 (Taori et al. 2020). The
                               baseline is logit(top1_variant) = a * logit(top1_val) + b, fitted through
                               timm's published results of standard ImageNet-1k models (not through the
                               evaluated models, so CLIP models cannot drag the line to themselves;
                               ``references.timm_results.baseline``). Declared on the val and variant
                               images (one resampling unit each); n = val images + variant images.
Accuracies are fractions in [0, 1].

CIs: every row is a declared per-sample metric (``contracts.Metric``) scored by the shared bootstrap
over images. The 75 ImageNet-C parts hold the SAME 50k val images, so an image is one resampling unit
across all its parts (``stats.GroupedMeans``); treating the parts as independent made CIs ~4.7x too
narrow. Averages over variants resample each variant's images (ImageNet-C's as one unit each).
"""
from __future__ import annotations

import re

from functools import lru_cache

import numpy as np

from beyond_inet.analyses.base import (
    Analysis,
    AnalysisResult,
    LOGITS,
    SUMMARY,
    Context,
    Fetch,
    Metric,
    Outputs,
    Request,
    Row,
    Skip,
    register_analysis,
)
from beyond_inet.analyses.scoring import subset_top1
from beyond_inet.analyses.stats import GroupedMeans, mean_metric
from beyond_inet.data import catalog, labelspaces
from beyond_inet.references import timm_results

VAL = "imagenet-val"
PLAIN = ("imagenet-val", "imagenet-v2", "imagenet-sketch")
SUBSET = ("imagenet-a", "imagenet-r")
SINGLE = ("imagenet-val", "imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-hard")
VARIANTS = ("imagenet-v2", "imagenet-a", "imagenet-c", "imagenet-hard", "imagenet-r", "imagenet-sketch",
            "imagenet-real")
SEVERITIES = (1, 2, 3, 4, 5)
# The 15 ImageNet-C benchmark corruptions and AlexNet's error on each, averaged over the 5 severities:
# the "raw AlexNet errors taken from https://github.com/hendrycks/robustness" used for mCE in
# google-research/augmix imagenet.py (ALEXNET_ERR) and OpenMMLab's get_ce_alexnet.
ALEXNET_ERR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
CORRUPTIONS = tuple(ALEXNET_ERR)
# Datasets given an effective-robustness row: those with a published baseline (ReaL relabels val itself).
ER_DATASETS = timm_results.ER_VARIANTS


def user_subsets() -> list[str]:
    """The run's --dataset folders of ImageNet classes: scored like ImageNet-A/R, outside the variant average."""
    return [n for n, d in catalog.USER_DATASETS.items() if d.subset is not None]


# ----------------------------------------------------------------------------------------------
# Scoring rules
# ----------------------------------------------------------------------------------------------
def predict(logits: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """ImageNet index of the top logit, over all 1000 classes or only over `classes`."""
    z = np.asarray(logits)
    if classes is None:
        return z.argmax(axis=1)
    classes = np.asarray(classes, np.int64)
    return classes[z[:, classes].argmax(axis=1)]


def top1_correct(logits: np.ndarray, labels: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """0/1 correctness of the (optionally class-restricted) argmax for images with a label >= 0."""
    lab = np.asarray(labels, np.int64)
    keep = lab >= 0
    return (predict(np.asarray(logits)[keep], classes) == lab[keep]).astype(np.float64)


def top1_correct_of(out: Outputs, classes: np.ndarray | None = None) -> np.ndarray:
    """``top1_correct`` of stored outputs: over all classes it needs only the compact record's top-1 (the
    store keeps no full logits where nothing restricts the classes: ImageNet-C, -V2, -Sketch)."""
    if classes is not None:
        return top1_correct(out.logits, out.labels, classes)
    lab = np.asarray(out.labels, np.int64)
    keep = lab >= 0
    return (out.top1()[keep] == lab[keep]).astype(np.float64)


def multilabel_correct(pred: np.ndarray, multilabels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct for images with >= 1 label, mask of those images): pred is any of the row's labels (-1 pads)."""
    ml = np.asarray(multilabels, np.int64)
    if ml.ndim == 1:
        ml = ml[:, None]
    has = (ml >= 0).any(axis=1)
    hit = ((ml == np.asarray(pred)[:, None]) & (ml >= 0)).any(axis=1)
    return hit[has].astype(np.float64), has


@lru_cache(maxsize=1)
def real_label_table() -> np.ndarray:
    """ReaL label sets as an int array [50000, K] padded with -1 (row = val number - 1)."""
    real = labelspaces.real_labels()
    k = max((len(r) for r in real), default=1)
    table = np.full((len(real), max(k, 1)), -1, np.int64)
    for i, r in enumerate(real):
        table[i, : len(r)] = r
    return table


def real_correct(pred: np.ndarray, ids: list[str], with_ids: bool = False):
    """ReaL correctness of val predictions.

    Returns (correct over images with a non-empty ReaL set, #ids that are not val file names,
    #images skipped for an empty ReaL set).
    """
    table = real_label_table()
    nums = np.array([labelspaces.val_number(i) or 0 for i in ids], np.int64)
    valid = (nums >= 1) & (nums <= table.shape[0])
    rows = table[nums[valid] - 1]
    correct, has = multilabel_correct(np.asarray(pred)[valid], rows)
    if with_ids:  # the ids of the scored images, in order
        return correct, int((~valid).sum()), int((~has).sum()), _ids(_ids(ids, valid), has)
    return correct, int((~valid).sum()), int((~has).sum())


def imagenet_c_summary(acc: dict[tuple[str, int], float]) -> dict[str, float]:
    """Aggregate ImageNet-C accuracies {(corruption, severity): acc}.

    Returns top1 (mean over present parts of the 15 standard corruptions), per corruption mean
    accuracy ``top1/<c>`` and, when all five severities are present, ``ce/<c>`` (mean error / AlexNet's);
    ``mce`` (mean CE) when all 15 corruptions are complete. Works elementwise on replicate arrays too.
    """
    out: dict[str, float] = {}
    std = [acc[k] for k in acc if k[0] in ALEXNET_ERR]
    if std:
        out["top1"] = np.mean(std, axis=0)
    ces = []
    for c in sorted({k[0] for k in acc}):
        sev = [acc[(c, s)] for s in SEVERITIES if (c, s) in acc]
        out[f"top1/{c}"] = np.mean(sev, axis=0)
        if c in ALEXNET_ERR and len(sev) == len(SEVERITIES):
            out[f"ce/{c}"] = (1.0 - np.mean(sev, axis=0)) / ALEXNET_ERR[c]
            ces.append(out[f"ce/{c}"])
    if len(ces) == len(CORRUPTIONS):
        out["mce"] = np.mean(ces, axis=0)
    return out


def effective_robustness(val_acc, var_acc, baseline: timm_results.Baseline) -> np.ndarray:
    """Effective robustness var_acc - sigmoid(a * logit(val_acc) + b), with (a, b) the baseline's line.

    Elementwise: takes point accuracies or bootstrap replicates of both (fractions).
    """
    return np.asarray(var_acc, np.float64) - baseline.predict(val_acc)


def effective_robustness_metrics(model: str, scored: dict[str, tuple[np.ndarray, list[str]]]
                                 ) -> tuple[list[Metric], list[Skip], dict]:
    """Per-variant effective-robustness declarations of one model from its 0/1 outcomes on val and the
    variant: columns of both image sets (units prefixed by their set, so they never merge), finish =
    top1_variant - baseline(top1_val). n = val images + variant images.

    Returns (metrics, skips, artifact): the artifact records each baseline's line and its selection rule.
    """
    metrics: list[Metric] = []
    skips: list[Skip] = []
    fits: dict[str, dict] = {}
    for ds in ER_DATASETS:
        if ds not in scored:
            continue
        if VAL not in scored:
            skips.append(Skip(Robustness.name, model, ds, "effective robustness needs the imagenet-val top-1"))
            continue
        base = timm_results.baseline(ds)
        gm = GroupedMeans([VAL, ds])
        for name in (VAL, ds):
            correct, ids = scored[name]
            gm.add(name, correct, [f"{name}:{i}" for i in ids])
        metrics.append(gm.metric(ds, "effective_robustness",
                                 lambda M, base=base: effective_robustness(M[:, 0], M[:, 1], base),
                                 higher_is_better=True, unit="top-1 above the baseline",
                                 description="variant top-1 minus the published baseline's prediction"))
        fit = base.as_dict()
        fit.pop("models")
        fits[ds] = {**fit, "expected_top1": float(base.predict(float(scored[VAL][0].mean())))}
    return metrics, skips, ({"baselines": fits} if fits else {})


def _ids(ids: list[str], mask: np.ndarray) -> list[str]:
    """The ids of the rows a mask keeps (the units behind a per-sample array)."""
    return [i for i, k in zip(ids, np.asarray(mask, bool)) if k]


def _unit_set(ds: str) -> str:
    """Which image set a dataset's ids name: ReaL relabels the val images."""
    return "imagenet-val" if ds == "imagenet-real" else ds


_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})")


def _unit_id(ds: str, sample_id: str) -> str:
    """The resampling unit of one sample in an average across variants. ImageNet-C's parts and ReaL are the
    same 50,000 val images: both map to the val file number, so one image is one unit across them (not one
    per variant); other sets' images are their own units."""
    if ds in ("imagenet-c", "imagenet-real", "imagenet-val"):
        m = _VAL_FILE.search(sample_id)
        if m:
            return f"ilsvrc2012-val:{m.group(1)}"
    return f"{_unit_set(ds)}:{sample_id}"


def _part_name(part: str) -> tuple[str, int] | None:
    """"fog/3" -> ("fog", 3); None when the part is not <corruption>/<severity>."""
    bits = part.strip("/").split("/")
    if len(bits) != 2 or not bits[1].isdigit():
        return None
    return bits[0], int(bits[1])


@register_analysis
class Robustness(Analysis):
    """Top-1 on ImageNet-val, V2, A, R, Sketch, C, Hard, ReaL (+ObjectNet), their average, and mCE."""

    name = "robustness"
    description = ("Top-1 on ImageNet-val, -V2, -A and -R (200-class argmax), -Sketch, -C (mean over 15x5, "
                   "AlexNet-normalised mCE), -Hard (any label), ReaL; the average over the 7 variants; "
                   "ObjectNet when present; effective robustness against a published baseline of standard "
                   "ImageNet models.")

    def requests(self, ctx: Context) -> list[Request]:
        # Full logits only where the argmax is restricted to a class subset; elsewhere the top-1 of the
        # compact record (the store keeps only that: ImageNet-C is most of the suite's images).
        top1, restricted = frozenset({SUMMARY}), frozenset({LOGITS})
        reqs = [Request(ds, "standard", restricted if ds in SUBSET else top1) for ds in SINGLE]
        reqs += [Request(f"imagenet-c/{p}", "standard", top1) for p in ctx.parts("imagenet-c")]
        if ctx.available("objectnet"):
            reqs.append(Request("objectnet", "standard", restricted))
        reqs += [Request(ds, "standard", restricted) for ds in user_subsets()]
        return reqs

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        res = AnalysisResult()
        # dataset -> (0/1 correct, unit ids): the variant average is declared from the same outcomes
        scored: dict[str, tuple[np.ndarray, list[str]]] = {}
        values: dict[str, float] = {}

        def add(ds: str, correct: np.ndarray, ids: list[str]) -> None:
            if correct.size == 0:
                res.skips.append(Skip(self.name, model, ds, "no scorable images"))
                return
            scored[ds], values[ds] = (correct, ids), float(correct.mean())
            res.metrics.append(mean_metric(ds, "top1", correct, ids))

        for ds in SINGLE:
            out = fetch(Request(ds, "standard"))
            if out is None:
                res.skips.append(Skip(self.name, model, ds, f"{ds} outputs not available (dataset absent)"))
                if ds == VAL:
                    res.skips.append(Skip(self.name, model, "imagenet-real", "needs imagenet-val outputs"))
                continue
            if ds == "imagenet-hard":
                ml = out.multilabels if out.multilabels is not None else np.asarray(out.labels)[:, None]
                correct, has = multilabel_correct(out.top1(), ml)
                if (~has).any():
                    res.skips.append(Skip(self.name, model, ds, f"{int((~has).sum())} images without labels left out"))
                add(ds, correct, _ids(out.ids, has))
                continue
            if ds in SUBSET:  # the dataset's one label rule (analyses.scoring): argmax over its 200 classes
                add(ds, *subset_top1(ds, out))
            else:
                add(ds, top1_correct_of(out), _ids(out.ids, np.asarray(out.labels) >= 0))
            if ds == VAL:
                correct, not_val, empty, real_ids = real_correct(out.top1(), out.ids, with_ids=True)
                if not_val:
                    res.skips.append(Skip(self.name, model, "imagenet-real",
                                          f"{not_val} ids are not ImageNet val file names; left out"))
                if empty:
                    res.skips.append(Skip(self.name, model, "imagenet-real",
                                          f"{empty} images with an empty ReaL label set skipped (as ReaL prescribes)"))
                add("imagenet-real", correct, real_ids)

        for ds in user_subsets():  # a user's ImageNet-subset folder: argmax over its classes (not averaged)
            out = fetch(Request(ds, "standard"))
            if out is None:
                res.skips.append(Skip(self.name, model, ds, f"{ds} outputs not available"))
                continue
            add(ds, *subset_top1(ds, out))

        c_groups = self._imagenet_c(ctx, model, fetch, res, values)

        if ctx.available("objectnet"):
            out = fetch(Request("objectnet", "standard"))
            if out is None:
                res.skips.append(Skip(self.name, model, "objectnet", "objectnet outputs not available"))
            else:
                ml = out.multilabels if out.multilabels is not None else np.asarray(out.labels)[:, None]
                ml = np.asarray(ml, np.int64)
                union = np.unique(ml[ml >= 0])
                if union.size == 0:
                    res.skips.append(Skip(self.name, model, "objectnet",
                                          "no ObjectNet image maps to an ImageNet class"))
                else:
                    correct, has = multilabel_correct(predict(out.logits, union), ml)
                    if (~has).any():
                        res.skips.append(Skip(self.name, model, "objectnet",
                                              f"{int((~has).sum())} images of ObjectNet classes without an ImageNet "
                                              f"counterpart left out"))
                    add("objectnet", correct, _ids(out.ids, has))

        present = [v for v in VARIANTS if v in scored or (v == "imagenet-c" and c_groups is not None)]
        missing = [v for v in VARIANTS if v not in present]
        if present:
            # mean over variants of each variant's top-1; ImageNet-C's is its mean over parts, each image
            # one unit across parts. Unit ids carry the dataset so different sets never share a unit.
            groups = present if c_groups is None else [v for v in present if v != "imagenet-c"] + c_groups[0]
            gm = GroupedMeans(groups)
            for v in present:
                if v == "imagenet-c":
                    for part, correct, ids in c_groups[1]:
                        gm.add(part, correct, [_unit_id("imagenet-c", i) for i in ids])
                else:
                    correct, ids = scored[v]
                    gm.add(v, correct, [_unit_id(v, i) for i in ids])
            n_plain = len([v for v in present if v != "imagenet-c"])
            n_parts = len(groups) - n_plain

            def variant_mean(M: np.ndarray, n_plain=n_plain, n_parts=n_parts) -> np.ndarray:
                parts = [M[:, :n_plain].sum(axis=1)]
                if n_parts:
                    parts.append(M[:, n_plain:].mean(axis=1))
                return np.sum(parts, axis=0) / (n_plain + (1 if n_parts else 0))

            res.metrics.append(gm.metric("variants", "top1_avg", variant_mean,
                                         description=f"mean top-1 over {', '.join(present)}"))
        if values:
            res.artifacts["robustness/top1"] = {"datasets": list(values), "top1": [values[d] for d in values],
                                                "variants_present": present}
        if missing:
            res.skips.append(Skip(self.name, model, "variants",
                                  f"top1_avg over {len(present)} of 7 variants; missing: {', '.join(missing)}"))
        er_metrics, er_skips, er_art = effective_robustness_metrics(model, scored)
        res.metrics += er_metrics
        res.skips += er_skips
        if er_art:
            res.artifacts["robustness/effective_robustness"] = er_art
        return res

    def _imagenet_c(self, ctx: Context, model: str, fetch: Fetch, res: AnalysisResult,
                    values: dict[str, float]):
        """ImageNet-C declarations; returns (part groups, [(part, correct, ids)]) for the variant average
        when all 75 parts are present, else None. An image is one resampling unit across its parts."""
        parts: dict[tuple[str, int], tuple[np.ndarray, list[str]]] = {}
        for part in ctx.parts("imagenet-c"):
            key = _part_name(part)
            if key is None:
                res.skips.append(Skip(self.name, model, f"imagenet-c/{part}", "not a <corruption>/<severity> part"))
                continue
            out = fetch(Request(f"imagenet-c/{part}", "standard"))
            if out is None:
                continue
            correct = top1_correct_of(out)
            if correct.size == 0:
                continue
            ids = _ids(out.ids, np.asarray(out.labels) >= 0)
            parts[key] = (correct, ids)
            res.metrics.append(mean_metric(f"imagenet-c/{key[0]}/{key[1]}", "top1", correct, ids))
        want = {(c, s) for c in CORRUPTIONS for s in SEVERITIES}
        lacking = sorted(want - set(parts))
        if not parts:
            res.skips.append(Skip(self.name, model, "imagenet-c", "imagenet-c not available (no corruption parts)"))
            return None
        if lacking:
            by_c: dict[str, list[int]] = {}
            for c, s in lacking:
                by_c.setdefault(c, []).append(s)
            text = "; ".join(f"{c} (all)" if len(v) == 5 else f"{c} severities {','.join(map(str, v))}"
                             for c, v in sorted(by_c.items()))
            res.skips.append(Skip(self.name, model, "imagenet-c",
                                  f"missing parts: {text}; top1 covers the present ones, mCE needs all 15 x 5"))
        keys = sorted(parts)
        gm = GroupedMeans([f"{c}/{s}" for c, s in keys])
        for c, s in keys:
            gm.add(f"{c}/{s}", *parts[(c, s)])
        col = {k: i for i, k in enumerate(keys)}
        std = [col[k] for k in keys if k[0] in ALEXNET_ERR]
        corrs = sorted({k[0] for k in keys})
        complete = [c for c in corrs if c in ALEXNET_ERR and all((c, s) in parts for s in SEVERITIES)]
        if std:
            res.metrics.append(gm.metric("imagenet-c", "top1", lambda M, i=std: M[:, i].mean(axis=1),
                                         description="mean top-1 over the present parts of the 15 corruptions"))
        for c in corrs:
            sev = [col[k] for k in keys if k[0] == c]
            res.metrics.append(gm.metric(f"imagenet-c/{c}", "top1", lambda M, i=sev: M[:, i].mean(axis=1)))
            if c in complete:
                res.metrics.append(gm.metric(f"imagenet-c/{c}", "ce",
                                             lambda M, i=sev, c=c: (1.0 - M[:, i].mean(axis=1)) / ALEXNET_ERR[c],
                                             higher_is_better=False, unit="ratio"))
        if len(complete) == len(CORRUPTIONS):
            idx = [[col[(c, s)] for s in SEVERITIES] for c in CORRUPTIONS]
            alex = np.array([ALEXNET_ERR[c] for c in CORRUPTIONS])

            def mce(M: np.ndarray) -> np.ndarray:
                return np.mean([(1.0 - M[:, i].mean(axis=1)) / a for i, a in zip(idx, alex)], axis=0)

            res.metrics.append(gm.metric("imagenet-c", "mce", mce, higher_is_better=False, unit="ratio"))
        acc = {k: float(v[0].mean()) for k, v in parts.items()}
        point = imagenet_c_summary(acc)
        if "top1" in point:
            res.artifacts["robustness/imagenet-c"] = {
                "parts": {f"{c}/{s}": a for (c, s), a in sorted(acc.items())},
                "top1": float(point["top1"]), "mce": float(point["mce"]) if "mce" in point else None}
        if not lacking:
            values["imagenet-c"] = float(point["top1"])
            return [f"imagenet-c/{c}/{s}" for c, s in keys], \
                [(f"imagenet-c/{c}/{s}", parts[(c, s)][0], parts[(c, s)][1]) for c, s in keys]
        return None

    def summarize(self, ctx: Context, rows: list[Row]) -> AnalysisResult:
        """Records, once per run, which published models each effective-robustness baseline went through."""
        res = AnalysisResult()
        used = sorted({r.dataset for r in rows if r.analysis == self.name and r.metric == "effective_robustness"})
        for ds in used:
            res.artifacts[f"effective_robustness/baseline/{ds}"] = timm_results.baseline(ds).as_dict()
        return res
