"""Error consistency (Geirhos, Meding & Wichmann, NeurIPS 2020): do two observers err on the same images?

For two observers scored right/wrong on the same images:

* c_obs = fraction of images both get right or both get wrong;
* c_exp = p1 p2 + (1 - p1)(1 - p2), what two independent observers with accuracies p1, p2 would share;
* kappa = (c_obs - c_exp) / (1 - c_exp); 1.0 when c_obs = 1 (then c_exp may be 1 too).

Correctness, as model-vs-human scores it:

* cue-conflict, edge, silhouette: the 16-class decision (`shape_bias.decisions16`) equals the image's
  category (for cue-conflict the *shape* category), over every trial, conflict or not;
* ImageNet-1k-labelled sets (``--option error_consistency_datasets=...``): top-1 equals the label.

Humans: model-vs-human's raw trials (`shape_bias.human_raw_dir`); model and subject trials are matched on the
image name after its last underscore. "Model vs humans" is the mean kappa over the subjects; "humans" is the
mean over all pairs of subjects (the ceiling), both on the images the models were scored on.

The metric is split as the scoring contract wants it: `pair_columns` gives per-image columns (their sums are
sufficient statistics), `finish` turns column sums into kappa, vectorised over bootstrap replicates; the CI
resamples images.

Published observers (``--decisions``; ``ctx.observers``) join on the decision sets: a model-like observer is one
more observer in the pairwise rows and against the humans (correct = ``object_response == category``); the
human subjects among them, when they have trials on a set, are the humans of that set (instead of
`human_raw_dir`'s).

Rows (analysis ``error-consistency``): ``kappa_vs:<other model>`` (+ ``c_obs_vs:``/``c_exp_vs:``) for every
ordered pair of models, ``kappa_humans`` per model, and ``kappa_humans`` for model ``human-subjects``
(the human-human ceiling).
"""
from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import (LOGITS, SUMMARY, Analysis, AnalysisResult, Context, CrossFetch, Fetch, Metric,
                                       Observer, Request, Row, Skip, register_analysis)
from beyond_inet.analyses.scoring import subset_top1
from beyond_inet.analyses.shape_bias import CATEGORIES, decisions16, human_raw_dir
from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import in_truth, truth_sets
from beyond_inet.engine.outputs import Outputs

HUMANS = "human-subjects"  # the "model" column of the human-human rows
DECISION_SETS = ("cue-conflict", "edge", "silhouette")  # scored by 16-class decisions, with human data
IMAGENET_SETS = ("imagenet-val", "imagenet-v2", "imagenet-sketch", "imagenet-sample")  # scored by top-1
PAIR_COLS = 4  # per compared pair: both present, both right-or-both-wrong, a right, b right


def image_key(name: str) -> str:
    """``airplane/airplane1-bicycle2.png`` and ``0001_s5n_s01_0_airplane_00_airplane1-bicycle2.png`` ->
    ``airplane1-bicycle2.png``: how model-vs-human's trial names map to image files."""
    return name.replace("\\", "/").rsplit("/", 1)[-1].rsplit("_", 1)[-1]


def pair_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image columns [n, 4] for two observers' correctness (1/0, NaN = no trial on that image)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    present = ~np.isnan(a) & ~np.isnan(b)
    ar, br = present & (a == 1), present & (b == 1)
    return np.stack([present, present & (ar == br), ar, br], axis=1).astype(np.float64)


def kappa(c_obs: np.ndarray, c_exp: np.ndarray) -> np.ndarray:
    """Cohen-style kappa of observed vs expected consistency; 1 where c_obs == 1."""
    c_obs, c_exp = np.asarray(c_obs, np.float64), np.asarray(c_exp, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (c_obs - c_exp) / (1.0 - c_exp)
    return np.where(c_obs >= 1.0, 1.0, k)


def finish_parts(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column sums [b, 4m] (m pairs side by side) -> c_obs, c_exp, kappa, each [b, m]; NaN for an empty pair."""
    s = np.asarray(sums, np.float64)
    s = s.reshape(s.shape[0], -1, PAIR_COLS)
    n = s[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        c_obs, p1, p2 = s[..., 1] / n, s[..., 2] / n, s[..., 3] / n
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    return c_obs, c_exp, kappa(c_obs, c_exp)


def finish(sums: np.ndarray) -> np.ndarray:
    """Column sums [b, 4m] -> mean kappa over the m pairs (those with any image), [b]."""
    k = finish_parts(sums)[2]
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(k)
        return np.where(ok.any(axis=1), np.nansum(np.where(ok, k, 0.0), axis=1) / np.maximum(ok.sum(axis=1), 1),
                        math.nan)


def value_ci(columns: np.ndarray, reducer: Callable[[np.ndarray], np.ndarray], n_boot: int, seed: int
             ) -> tuple[float, float, float]:
    """reducer(column sums) with the shared bootstrap over images (a ``contracts.Metric`` scored by
    ``stats.score``: the same resampling as every other metric)."""
    decl = Metric("", "", columns, [str(i) for i in range(columns.shape[0])], reducer)
    s = stats.score(decl, n_boot if columns.shape[0] >= 2 else 0, seed)
    return s.value, s.ci_low, s.ci_high


def model_correct(ds: str, out: Outputs) -> dict[str, float]:
    """Image key -> 1.0/0.0 for one model's outputs (images without a label are left out). ImageNet-labelled
    sets follow the dataset's one label rule (``analyses.scoring``): the argmax over a class subset's classes
    (ImageNet-A/R, a user's subset folder), any listed class of a multi-label set."""
    if ds.split("/", 1)[0] not in DECISION_SETS:
        # ImageNet sets: the sample id is the unit (class folders can repeat a file name).
        if catalog.class_subset(ds) is not None:
            ok, ids = subset_top1(ds, out)
            return {i: float(v) for i, v in zip(ids, ok)}
        truth = truth_sets(out.labels, out.multilabels)
        keep = (truth >= 0).any(axis=1)
        ok = in_truth(out.top1()[keep], truth[keep])  # the full logits' argmax, or the compact record's top-1
        return {i: float(v) for i, v in zip((i for i, k in zip(out.ids, keep) if k), ok)}
    keep = np.asarray(out.labels) >= 0
    pred = decisions16(out.logits[keep])
    ok = (pred == np.asarray(out.labels)[keep]).astype(np.float64)
    ids = [i for i, k in zip(out.ids, keep) if k]
    keyed = {image_key(i): float(v) for i, v in zip(ids, ok)}
    if len(keyed) != len(ids):  # two images with one trial name would silently merge
        raise ValueError(f"{ds}: {len(ids) - len(keyed)} images share a file name after the last '_'; "
                         f"cannot match them to model-vs-human's trials")
    return keyed


def human_correct(raw_dir: Path, ds: str) -> tuple[dict[str, dict[str, float]], int]:
    """Subject -> {image key: 1.0/0.0} from model-vs-human's ``<ds>/<ds>_subject-*.csv`` (response ==
    category; "na" and other non-categories count as wrong), and the number of repeated (subject, image)
    trials, which keep their last response."""
    out: dict[str, dict[str, float]] = {}
    repeats = 0
    for f in sorted((Path(raw_dir) / ds).glob(f"{ds}_subject-*.csv")):
        with open(f, newline="") as fh:
            for r in csv.DictReader(fh):
                subj = out.setdefault(r["subj"].strip() or f.stem, {})
                key = image_key(r["imagename"])
                repeats += key in subj
                cat = r["category"].strip()
                subj[key] = float(cat in CATEGORIES and r["object_response"].strip() == cat)
    return out, repeats


def observer_correct(observer: Observer, ds: str) -> dict[str, float]:
    """Image key -> 1.0/0.0 for a published observer's trials on `ds` (``na`` and any non-category are
    wrong, as for `human_correct`); a repeated image keeps its last trial, as `human_correct` does."""
    return {image_key(t.image): float(t.category in CATEGORIES and t.response == t.category)
            for t in observer.trials.get(ds, [])}


def _vector(correct: dict[str, float], keys: list[str]) -> np.ndarray:
    return np.array([correct.get(k, math.nan) for k in keys], np.float64)


def _units(columns: np.ndarray) -> int:
    """Images the comparison rests on: those with at least one compared pair present."""
    return int((columns[:, 0::PAIR_COLS] > 0).any(axis=1).sum())


@register_analysis
class ErrorConsistency(Analysis):
    name = "error-consistency"
    description = "Error consistency (kappa) between models and with human subjects (Geirhos et al. 2020)"
    compares_models: ClassVar[bool] = True

    def datasets(self, ctx: Context) -> list[tuple[str, str]]:
        """(dataset, view) pairs: the 16-class sets at their native size, ImageNet-labelled sets present."""
        imagenet = ctx.option_list("error_consistency_datasets", IMAGENET_SETS)
        return [(d, "native") for d in DECISION_SETS] + [(d, "standard") for d in imagenet if ctx.available(d)]

    def requests(self, ctx: Context) -> list[Request]:
        # 16-class decisions and a class subset's restricted argmax read the full logits; other ImageNet-labelled
        # sets only the top-1 (compact record).
        return [Request(d, v, frozenset({LOGITS}) if d in DECISION_SETS or catalog.class_subset(d) is not None
                        else frozenset({SUMMARY})) for d, v in self.datasets(ctx)]

    def compute(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        """Nothing per model: every number compares two observers (see `compare`)."""
        return AnalysisResult()

    def declare_observer(self, ctx: Context, observer: Observer) -> AnalysisResult:
        """Nothing per observer: `compare` reads ``ctx.observers`` beside the models."""
        return AnalysisResult()

    def compare(self, ctx: Context, models: list[str], fetch: CrossFetch) -> AnalysisResult:
        res = AnalysisResult()
        raw = human_raw_dir(ctx)
        matrices: dict[str, dict] = {}
        vs_humans: dict[str, dict] = {}
        for ds, view in self.datasets(ctx):
            correct = {}
            for m in models:
                out = fetch(m, Request(ds, view))
                if out is not None and len(out):
                    correct[m] = model_correct(ds, out)
            if ds in DECISION_SETS:
                correct.update({o.name: observer_correct(o, ds) for o in ctx.observers
                                if not o.human and o.trials.get(ds)})
            if not correct:
                continue
            keys = sorted(set().union(*correct.values()))
            vec = {m: _vector(c, keys) for m, c in correct.items()}
            present = list(vec)
            if len(present) >= 2:
                matrices[ds] = self._model_pairs(ctx, ds, present, vec, res)
            elif len(models) + len(ctx.observers) >= 2:
                res.skips.append(Skip(self.name, "*", ds, "only one model has outputs here: no model pair"))
            if ds in DECISION_SETS:
                humans = self._humans(ctx, ds, keys, vec, raw, res)
                if humans:
                    vs_humans[ds] = humans
        if matrices:
            res.artifacts["error-consistency/matrix"] = matrices
        if vs_humans:
            res.artifacts["error-consistency/humans"] = vs_humans
        return res

    def _model_pairs(self, ctx: Context, ds: str, present: list[str], vec: dict[str, np.ndarray],
                     res: AnalysisResult) -> dict:
        k = len(present)
        mat = np.eye(k)
        for i, j in itertools.combinations(range(k), 2):
            a, b = present[i], present[j]
            cols = pair_columns(vec[a], vec[b])
            v, lo, hi = value_ci(cols, finish, ctx.n_boot, ctx.seed)
            c_obs, c_exp, _ = (float(x[0, 0]) for x in finish_parts(cols.sum(axis=0, keepdims=True)))
            n = _units(cols)
            mat[i, j] = mat[j, i] = v
            for x, y in ((a, b), (b, a)):
                res.rows += [Row(x, ds, self.name, f"kappa_vs:{y}", v, lo, hi, n),
                             Row(x, ds, self.name, f"c_obs_vs:{y}", c_obs, math.nan, math.nan, n),
                             Row(x, ds, self.name, f"c_exp_vs:{y}", c_exp, math.nan, math.nan, n)]
        return {"models": present, "kappa": stats.jsonable(mat),
                "n": int(np.isfinite(np.stack([vec[m] for m in present])).all(axis=0).sum())}

    def _humans(self, ctx: Context, ds: str, keys: list[str], vec: dict[str, np.ndarray], raw: Path | None,
                res: AnalysisResult) -> dict | None:
        published = [o for o in ctx.observers if o.human and o.trials.get(ds)]
        if published:  # the --decisions humans are this run's humans
            subjects = {o.name: observer_correct(o, ds) for o in published}
            repeats, where = 0, published[0].source.get(ds, "--decisions")
            raw = Path(where).parent
        elif raw is None:
            res.skips.append(Skip(self.name, "*", ds, "no human raw data (model-vs-human) found: no kappa vs humans"))
            return None
        else:
            subjects, repeats = human_correct(raw, ds)
        hv = {s: _vector(c, keys) for s, c in subjects.items()}
        hv = {s: v for s, v in hv.items() if np.isfinite(v).any()}
        if not hv:
            res.skips.append(Skip(self.name, "*", ds, f"the human trials in {raw / ds} share no image with the models'"))
            return None
        if repeats:
            res.skips.append(Skip(self.name, "*", ds, f"{repeats} repeated human trials: the last response counts"))
        out: dict = {"models": {}, "subjects": sorted(hv), "source": str(raw)}
        for m, v in vec.items():
            cols = np.hstack([pair_columns(v, hv[s]) for s in sorted(hv)])
            val, lo, hi = value_ci(cols, finish, ctx.n_boot, ctx.seed)
            n = _units(cols)
            res.rows.append(Row(m, ds, self.name, "kappa_humans", val, lo, hi, n))
            out["models"][m] = {"kappa": val, "ci": [lo, hi], "n": n}
        if len(hv) >= 2:
            pairs = list(itertools.combinations(sorted(hv), 2))
            cols = np.hstack([pair_columns(hv[s], hv[t]) for s, t in pairs])
            val, lo, hi = value_ci(cols, finish, ctx.n_boot, ctx.seed)
            n = _units(cols)
            res.rows.append(Row(HUMANS, ds, self.name, "kappa_humans", val, lo, hi, n))
            per_pair = finish_parts(cols.sum(axis=0, keepdims=True))[2][0]
            out["human_human"] = {"kappa": val, "ci": [lo, hi], "n": n, "n_pairs": len(pairs),
                                  "pairs": stats.jsonable(per_pair)}
        return out
