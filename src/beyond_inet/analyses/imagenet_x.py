"""ImageNet-X: per-factor accuracy and error ratio on ImageNet val (paper-spec §2.1).

Exactly what ``imagenet_x.get_factor_accuracies`` computes with its defaults (imagenet-x 0.0.7):
top-factor annotations (``imagenet_x_val_top_factor.jsonl``), prototypical images removed, predictions
inner-joined on the val file name, correct = argmax == annotated class;

    acc_f       = #correct among images with factor f / #images with factor f
    acc         = accuracy over all annotated non-prototype images       (metric ``acc_annotated``)
    error_ratio = (1 - acc_f) / (1 - acc)                                (``error_ratio_<factor>``)

plus ``error_ratio_mean``, the unweighted mean of the 16 ratios (the paper figure's "Average").
The annotation files ship inside the pip package; they are read here with pandas, and the package's
own functions are only the test reference.

Beyond the paper (other dataset names so that the main table stays the paper's):
  ``imagenet-val/metaclass/<name>``  the same per metaclass: the package's 1000 -> 100 metaclass map,
      names outside its 16 METACLASSES grouped as "other" (17 groups); acc and ratios are within the
      metaclass (``compute_factor_metaclass_accuracies`` + ``error_ratio``). Factors absent from a
      metaclass get no row; its error_ratio_mean averages the factors present.
  ``imagenet-val/multi-factor``      the multi-factor annotations (an image counts for every factor
      marked), when ``ctx.options["imagenet_x_multi_factor"]`` is true.

Every row is a declared per-sample metric (``factor_metrics``: columns [factor*correct, factor, correct, 1],
every number a function of their sums), scored by the shared bootstrap over annotated images; per-factor
rows rest on (n =) their factor's images. The figure's error bars are the scored rows' CIs.
"""
from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas (75 MB resident) is imported by the two functions that read annotations, not by a run
    import pandas as pd

from beyond_inet.analyses.base import (
    Analysis,
    AnalysisResult,
    Context,
    SUMMARY,
    Fetch,
    Request,
    Metric,
    Row,
    Skip,
    register_analysis,
)
from beyond_inet.analyses.stats import jsonable

# Order as in imagenet_x.utils (tested against the package).
FACTORS = (
    "pose", "background", "pattern", "color", "smaller", "shape", "partial_view", "subcategory",
    "texture", "larger", "darker", "object_blocking", "person_blocking", "style", "brighter", "multiple_objects",
)
METACLASSES = (
    "device", "dog", "commodity", "bird", "structure", "covering", "wheeled_vehicle", "food", "equipment",
    "insect", "vehicle", "furniture", "primate", "vessel", "snake", "natural_object", "other",
)
DATASET = "imagenet-val"


def annotation_dir() -> Path | None:
    """The installed imagenet_x package's annotation folder, or None when the package is missing."""
    spec = importlib.util.find_spec("imagenet_x")  # locate without importing the package's code
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "annotations"
    return d if d.is_dir() else None


@lru_cache(maxsize=4)
def load_annotations(which_factor: str = "top", filter_prototypes: bool = True) -> pd.DataFrame:
    """Val annotations: columns file_name, class, metaclass and the 16 factor 0/1 columns.

    `which_factor`: "top" (one factor per image, the paper) or "multi" (every factor marked).
    """
    import pandas as pd

    d = annotation_dir()
    if d is None:
        raise FileNotFoundError("the imagenet-x package is not installed (pip install imagenet-x==0.0.7)")
    df = pd.read_json(d / f"imagenet_x_val_{which_factor}_factor.jsonl", lines=True)
    df = df[["file_name", "class", *FACTORS]].copy()
    meta = pd.read_csv(d / "imagenet_1k_classes_to_100_metaclasses.csv")["name"]
    meta = meta.where(meta.isin(METACLASSES), "other").to_numpy()  # row i = ImageNet class i
    df["metaclass"] = meta[df["class"].to_numpy()]
    if filter_prototypes:
        protos = pd.read_csv(d / "prototypical_paths.csv")["file_name"]
        df = df[~df["file_name"].isin(protos)]
    return df.reset_index(drop=True)


def join_on_file_name(ids: list[str], file_names: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Inner join of output ids (directory parts stripped) with annotation file names.

    Returns (positions in the outputs, positions in the annotations) of the matched pairs.
    Raises ValueError when a file name occurs twice in the outputs.
    """
    import pandas as pd

    names = pd.Index([str(i).replace("\\", "/").rsplit("/", 1)[-1] for i in ids])
    if not names.is_unique:
        dup = names[names.duplicated()][:3].tolist()
        raise ValueError(f"outputs hold duplicate file names, e.g. {dup}")
    pos = names.get_indexer(pd.Index(file_names))
    ann = np.flatnonzero(pos >= 0)
    return pos[ann], ann


def factor_accuracies(correct: np.ndarray, factors: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-factor accuracy, count and error ratio, overall accuracy and the mean ratio.

    correct: [n] 0/1; factors: [n, F] 0/1 (one-hot for top-factor, multi-hot otherwise).
    The mean ratio averages the factors that have at least one image.
    """
    c = np.asarray(correct, np.float64)
    f = np.asarray(factors, np.float64)
    count = f.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_f = (f * c[:, None]).sum(axis=0) / count
        overall = c.mean() if c.size else math.nan
        ratio = (1.0 - acc_f) / (1.0 - overall)
    present = count > 0
    mean = float(np.mean(ratio[present])) if present.any() else math.nan
    return {"acc": acc_f, "count": count, "acc_annotated": float(overall), "error_ratio": ratio,
            "error_ratio_mean": mean}


def factor_metrics(dataset: str, correct: np.ndarray, factors: np.ndarray, ids: list[str],
                   per_factor_acc: bool) -> list[Metric]:
    """Declarations of one factor table: columns [factor*correct (F), factor (F), correct, 1]; every
    number is a function of their sums (the rule of `factor_accuracies`). Factors without images get
    none; per-factor metrics rest on their factor's images."""
    c = np.asarray(correct, np.float64)
    f = np.asarray(factors, np.float64)
    k = f.shape[1]
    V = np.concatenate([f * c[:, None], f, c[:, None], np.ones((c.size, 1))], axis=1)
    present = f.sum(axis=0) > 0
    point = factor_accuracies(c, f)

    def overall(S):
        return S[:, 2 * k] / S[:, 2 * k + 1]

    def ratio(S):
        return (1.0 - S[:, :k] / S[:, k:2 * k]) / (1.0 - overall(S))[:, None]

    def mean_ratio(S):
        r = np.where(present[None, :], ratio(S), np.nan)
        fin = np.isfinite(r)
        return np.where(fin.any(axis=1), np.where(fin, r, 0.0).sum(axis=1) / np.maximum(fin.sum(axis=1), 1), np.nan)

    out = [Metric(dataset, "acc_annotated", V, ids, overall, True, "fraction")]
    for i, fac in enumerate(FACTORS):
        if not present[i]:
            continue
        if per_factor_acc:
            out.append(Metric(dataset, f"acc_{fac}", V, ids, lambda S, i=i: S[:, i] / S[:, k + i], True, "fraction",
                              rests_on=k + i))
        if math.isfinite(point["error_ratio"][i]):
            out.append(Metric(dataset, f"error_ratio_{fac}", V, ids, lambda S, i=i: ratio(S)[:, i], False, "ratio",
                              rests_on=k + i))
    if math.isfinite(point["error_ratio_mean"]):
        out.append(Metric(dataset, "error_ratio_mean", V, ids, mean_ratio, False, "ratio"))
    return out


def _artifact(point: dict, dataset: str) -> dict:
    """Figure data of one factor table; its error-ratio CIs are filled from the scored rows (`compute`)."""
    return {"dataset": dataset, "factors": list(FACTORS), "acc": jsonable(point["acc"]),
            "error_ratio": jsonable(point["error_ratio"]), "count": point["count"].astype(int).tolist(),
            "acc_annotated": point["acc_annotated"], "error_ratio_mean": jsonable([point["error_ratio_mean"]])[0]}


def _fill_cis(artifact: dict, rows: list[Row]) -> None:
    by = {r.metric: r for r in rows if r.dataset == artifact["dataset"]}
    for end, attr in (("low", "ci_low"), ("high", "ci_high")):
        artifact[f"error_ratio_ci_{end}"] = jsonable(
            [getattr(by[f"error_ratio_{f}"], attr) if f"error_ratio_{f}" in by else math.nan for f in FACTORS])


@register_analysis
class ImageNetX(Analysis):
    """Per-factor error ratios on ImageNet val (ImageNet-X annotations)."""

    name = "imagenet-x"
    description = ("ImageNet-X per-factor accuracy and error ratio (1 - acc_factor) / (1 - acc), top-factor "
                   "annotations without prototypes, as imagenet_x.get_factor_accuracies; plus per-metaclass "
                   "and (option imagenet_x_multi_factor) multi-factor variants.")

    def requests(self, ctx: Context) -> list[Request]:
        return [Request(DATASET, "standard", frozenset({SUMMARY}))]  # the top-1 alone

    def compute(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        """Scored rows; the figures' error bars are those rows' CIs."""
        res = super().compute(ctx, model, fetch)
        for key, art in res.artifacts.items():
            for a in (art.values() if key == "imagenet-x/metaclass" else [art]):
                _fill_cis(a, res.rows)
        return res

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        res = AnalysisResult()
        out = fetch(Request(DATASET, "standard"))
        if out is None:
            res.skips.append(Skip(self.name, model, DATASET, "imagenet-val outputs not available (dataset absent)"))
            return res
        try:
            ann = load_annotations("top", True)
        except (FileNotFoundError, ModuleNotFoundError) as e:
            res.skips.append(Skip(self.name, model, DATASET, f"ImageNet-X annotations unavailable: {e}"))
            return res
        try:
            out_pos, ann_pos = join_on_file_name(out.ids, ann["file_name"])
        except ValueError as e:
            res.skips.append(Skip(self.name, model, DATASET, f"cannot join outputs with ImageNet-X: {e}"))
            return res
        if out_pos.size == 0:
            example = out.ids[0] if len(out.ids) else "<none>"
            res.skips.append(Skip(self.name, model, DATASET,
                                  f"none of the {len(out.ids)} output ids is an annotated ImageNet val file name "
                                  f"(ILSVRC2012_val_XXXXXXXX.JPEG), e.g. {example!r}; no ImageNet-X metrics"))
            return res
        if out_pos.size < len(ann):
            res.skips.append(Skip(self.name, model, DATASET,
                                  f"only {out_pos.size} of {len(ann)} annotated non-prototype val images are in "
                                  f"the outputs; ImageNet-X metrics cover those only"))
        pred_all = out.top1()
        pred = pred_all[out_pos]
        sub = ann.iloc[ann_pos]
        cls = sub["class"].to_numpy()
        labels = np.asarray(out.labels)[out_pos]
        bad = int(((labels >= 0) & (labels != cls)).sum())
        if bad:
            res.skips.append(Skip(self.name, model, DATASET,
                                  f"{bad} output labels disagree with the ImageNet-X class; scored against ImageNet-X"))
        correct = (pred == cls).astype(np.float64)
        F = sub[list(FACTORS)].to_numpy(np.float64)

        ids = [out.ids[i] for i in out_pos]
        point = factor_accuracies(correct, F)
        res.metrics += factor_metrics(DATASET, correct, F, ids, per_factor_acc=True)
        res.artifacts["imagenet-x/factors"] = _artifact(point, DATASET)

        # Per metaclass: the same table within each group.
        meta = sub["metaclass"].to_numpy()
        per_meta = {}
        for m in METACLASSES:
            sel = meta == m
            if not sel.any():
                continue
            p = factor_accuracies(correct[sel], F[sel])
            res.metrics += factor_metrics(f"{DATASET}/metaclass/{m}", correct[sel], F[sel],
                                          [i for i, k in zip(ids, sel) if k], per_factor_acc=False)
            per_meta[m] = {**_artifact(p, f"{DATASET}/metaclass/{m}"), "n": int(sel.sum())}
        res.artifacts["imagenet-x/metaclass"] = per_meta

        if ctx.options.get("imagenet_x_multi_factor"):
            multi = load_annotations("multi", True)
            mo, ma = join_on_file_name(out.ids, multi["file_name"])
            msub = multi.iloc[ma]
            mcorrect = (pred_all[mo] == msub["class"].to_numpy()).astype(np.float64)
            MF = msub[list(FACTORS)].to_numpy(np.float64)
            p = factor_accuracies(mcorrect, MF)
            res.metrics += factor_metrics(f"{DATASET}/multi-factor", mcorrect, MF, [out.ids[i] for i in mo],
                                          per_factor_acc=True)
            res.artifacts["imagenet-x/multi-factor"] = _artifact(p, f"{DATASET}/multi-factor")
        return res
