"""Which differences between models are real: paired tests on the same images, from stored outputs.

A point estimate with a CI per model does not say whether two models differ: their errors are
correlated (same images), so overlapping CIs can hide a real difference and the paired test is
the right tool. For every metric that can be recomputed per sample from the stored outputs, this
module rebuilds the per-sample quantities of every model, restricts them to the images all
compared models share, and tests every pair:

* accuracies (0/1 outcomes on one image set): exact two-sided McNemar test (``stats.mcnemar_exact``,
  a binomial test on the discordant pairs);
* everything else (ECE, error ratios, shape bias, averages over several datasets): a paired
  bootstrap: both models are scored on the *same* resampled images and the two-sided p-value is
  that of a zero difference (the convention of ``stats.paired_bootstrap``).

P-values are Holm-corrected across the pairs of models within one metric, and a pair gets the
verdict "A > B" (A is significantly *better*; for ECE and error ratios lower is better), "B > A",
or "no significant difference" at level alpha.

Metrics are registered by rules over (analysis, dataset, metric) names (`comparable_for`), so new
rows of a known kind are picked up without code changes. Every bootstrap metric is a function of
per-replicate *sums* of per-sample vectors (``V``: [n, k]); replicates are ``counts @ V`` with the
resample multiplicities, computed once for all models of a metric, which keeps 8 models x 50k
images x 1000 replicates cheap. The per-sample extractors mirror the analyses' scoring rules;
the recomputed values are checked against the stored rows (a mismatch is reported, not hidden).
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import sparse

from beyond_inet.analyses import stats
from beyond_inet.analyses.accuracy import topk_correct
from beyond_inet.analyses.base import Row
from beyond_inet.analyses.calibration import bin_index
from beyond_inet.analyses.stats import bootstrap_p, resample_counts
from beyond_inet.analyses.stats import percentile_interval as percentile
from beyond_inet.data.catalog import IMAGENET_C_CORRUPTIONS
from beyond_inet.engine.outputs import Outputs

ALPHA = stats.ALPHA
NO_DIFF = "no significant difference"
N_BINS = 15  # the paper's ECE bins; the calibration analysis's N_BINS wins when it is importable
_CHUNK = 8192  # logits rows handled at once

# The 7 variants averaged by the robustness analysis (used when its artifact does not list them).
VARIANTS = ("imagenet-v2", "imagenet-a", "imagenet-c", "imagenet-hard", "imagenet-r", "imagenet-sketch",
            "imagenet-real")
# The 15 ImageNet-C benchmark corruptions (the robustness analysis's ImageNet-C average covers these).
C_CORRUPTIONS = IMAGENET_C_CORRUPTIONS
INVARIANCE_KINDS = ("scale", "shift", "res")
_INV_RE = re.compile(r"^top1_(scale|shift|res)_(.+)$")


class Untestable(Exception):
    """Raised when a metric cannot be recomputed per sample from the stored outputs (message = why)."""


# ------------------------------------------------------------------------------------------------
# Pure statistics
# ------------------------------------------------------------------------------------------------
def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and do not count towards m)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def verdict(a: str, b: str, diff: float, p_adjusted: float, alpha: float, higher_is_better: bool) -> str:
    """'a > b' when a is significantly better than b, 'b > a' for the converse, else no difference."""
    if not (math.isfinite(diff) and math.isfinite(p_adjusted)) or p_adjusted >= alpha or diff == 0:
        return NO_DIFF
    a_better = (diff > 0) == higher_is_better
    return f"{a} > {b}" if a_better else f"{b} > {a}"


def discordant(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(#images A right and B wrong, #images A wrong and B right): McNemar's discordant counts."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    return int((a & ~b).sum()), int((~a & b).sum())


def replicate_sums(V: np.ndarray | sparse.spmatrix, n_boot: int, seed: int) -> np.ndarray:
    """Column sums of V over `n_boot` bootstrap resamples of its rows: [n_boot, k].

    The resamples are those of ``stats.replicate_indices(n, n_boot, seed)``, so the replicates of
    a mean equal ``stats.bootstrap``'s for the same seed.
    """
    n = V.shape[0]
    Vt = sparse.csr_matrix(V).T.tocsr()  # [k, n]: nnz-proportional products for one-hot bins
    out = [np.asarray(Vt @ resample_counts(idx, n).astype(np.float64).T).T
           for idx in stats.replicate_indices(n, n_boot, seed)]
    return np.vstack(out) if out else np.zeros((0, V.shape[1]))


def compressed_replicate_sums(V: np.ndarray, n_boot: int, seed: int) -> np.ndarray | None:
    """Replicate column sums via the distinct rows of V, or None when rows are mostly distinct.

    Resampling n images with replacement gives each distinct row u a count; jointly the counts are
    Multinomial(n, n_u / n). Drawing those counts directly is exact in distribution and costs
    O(n_boot x #distinct rows) instead of O(n_boot x n): 0/1 correctness of 8 models has at most 256
    distinct rows, however many images. (Other random numbers than `replicate_sums`, same law.)
    """
    n = V.shape[0]
    if n < 64:
        return None
    uniq, inverse = np.unique(np.asarray(V, np.float64), axis=0, return_inverse=True)
    if uniq.shape[0] > n // 4:
        return None
    counts = np.bincount(np.ravel(inverse), minlength=uniq.shape[0])
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_boot)
    return draws.astype(np.float64) @ uniq


def column_sums(V: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Column sums as a [1, k] float array (the point estimate's 'replicate')."""
    return np.asarray(V.sum(axis=0), dtype=np.float64).reshape(1, -1)


# ------------------------------------------------------------------------------------------------
# Per-sample extractors: one model's stored outputs -> per-image quantities (mirroring the analyses)
# ------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """Per-image arrays of one model on one (dataset, view); every array's first axis follows `ids`."""

    ids: list[str]
    data: dict[str, np.ndarray]

    def take(self, pos: np.ndarray) -> "Sample":
        return Sample([self.ids[i] for i in pos], {k: v[pos] for k, v in self.data.items()})


@dataclass
class Env:
    """What extractors may need besides the outputs (from the run records)."""

    data_root: str | None = None
    options: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)


def _argmax(logits: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """ImageNet index of the top logit (over `classes` only when given), in row chunks."""
    z = np.asarray(logits)
    out = np.empty(z.shape[0], np.int64)
    for s in range(0, z.shape[0], _CHUNK):
        block = z[s:s + _CHUNK]
        out[s:s + _CHUNK] = block.argmax(1) if classes is None else classes[block[:, classes].argmax(1)]
    return out


def topk_hits(logits: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """0/1 per row: is one of the row's true classes (truth [n, K], -1 = padding) among the k top logits?"""
    t = np.asarray(truth, np.int64)
    return topk_correct(logits, t[:, 0], k, t)


def _subset_ids(out: Outputs, keep: np.ndarray) -> list[str]:
    return [out.ids[i] for i in np.flatnonzero(keep)]


def ex_topk(out: Outputs, dataset: str, env: Env, k: int = 1) -> Sample:
    """Top-k over 1000 classes; multi-label sets count any listed class (the accuracy analysis's rule)."""
    labels = np.asarray(out.labels, np.int64)
    ml = out.multilabels
    keep = labels >= 0
    if ml is not None:
        keep = keep | (np.asarray(ml) >= 0).any(1)
    truth = np.asarray(ml, np.int64) if ml is not None else labels[:, None]
    correct = topk_hits(np.asarray(out.logits)[keep], truth[keep], k)
    return Sample(_subset_ids(out, keep), {"correct": correct})


def ex_top1_labels(out: Outputs, dataset: str, env: Env) -> Sample:
    """Top-1 == the single label (multi-labels ignored), the robustness analysis's plain rule."""
    labels = np.asarray(out.labels, np.int64)
    keep = labels >= 0
    correct = (_argmax(np.asarray(out.logits)[keep]) == labels[keep]).astype(np.float64)
    return Sample(_subset_ids(out, keep), {"correct": correct})


def ex_top1_subset(out: Outputs, dataset: str, env: Env) -> Sample:
    """Argmax over the 200 classes of ImageNet-A / -R only (the paper's ``output[:, mask]``)."""
    from beyond_inet.data.labelspaces import subset_indices

    classes = subset_indices(dataset.split("/")[0])
    labels = np.asarray(out.labels, np.int64)
    keep = labels >= 0
    correct = (_argmax(np.asarray(out.logits)[keep], classes) == labels[keep]).astype(np.float64)
    return Sample(_subset_ids(out, keep), {"correct": correct})


def ex_top1_any(out: Outputs, dataset: str, env: Env) -> Sample:
    """Argmax (1000) is any of the image's labels (ImageNet-Hard); images without labels are left out."""
    ml = out.multilabels if out.multilabels is not None else np.asarray(out.labels)[:, None]
    ml = np.asarray(ml, np.int64)
    keep = (ml >= 0).any(1)
    pred = _argmax(np.asarray(out.logits)[keep])
    hit = ((ml[keep] == pred[:, None]) & (ml[keep] >= 0)).any(1)
    return Sample(_subset_ids(out, keep), {"correct": hit.astype(np.float64)})


def ex_real(out: Outputs, dataset: str, env: Env) -> Sample:
    """ReaL: argmax in the image's ReaL set; images with an empty set or a non-val id are left out."""
    from beyond_inet.data.labelspaces import real_labels, val_number

    real = real_labels()
    pred = _argmax(out.logits)
    keep, correct = [], []
    for i, sid in enumerate(out.ids):
        num = val_number(sid)
        if num is None or not (1 <= num <= len(real)) or not real[num - 1]:
            continue
        keep.append(i)
        correct.append(pred[i] in real[num - 1])
    if not keep:
        raise Untestable("no output id is an ImageNet val file name with ReaL labels")
    return Sample([out.ids[i] for i in keep], {"correct": np.asarray(correct, np.float64)})


def ex_objectnet(out: Outputs, dataset: str, env: Env) -> Sample:
    """ObjectNet: argmax over the union of mapped ImageNet classes is one of the image's classes."""
    ml = out.multilabels if out.multilabels is not None else np.asarray(out.labels)[:, None]
    ml = np.asarray(ml, np.int64)
    union = np.unique(ml[ml >= 0])
    if union.size == 0:
        raise Untestable("no ObjectNet image maps to an ImageNet class")
    keep = (ml >= 0).any(1)
    pred = _argmax(np.asarray(out.logits)[keep], union)
    hit = ((ml[keep] == pred[:, None]) & (ml[keep] >= 0)).any(1)
    return Sample(_subset_ids(out, keep), {"correct": hit.astype(np.float64)})


def ex_calib(out: Outputs, dataset: str, env: Env) -> Sample:
    """Max-softmax confidence, correctness, Brier term and NLL; 200-class softmax on ImageNet-R (as the
    calibration analysis: only R is restricted). Uses the analysis' own functions."""
    from beyond_inet.analyses.calibration import restrict_logits, softmax_stats

    z_all = np.asarray(out.logits)
    labels = np.asarray(out.labels, np.int64)
    base = dataset.split("/")[0]
    if base == "imagenet-r":
        from beyond_inet.data.labelspaces import subset_indices

        z_all, labels = restrict_logits(z_all, labels, subset_indices(base))
    keep = np.flatnonzero(labels >= 0)
    if keep.size < labels.size:  # copy only when some rows drop out
        z_all, labels = z_all[keep], labels[keep]
    st = softmax_stats(z_all, labels)
    return Sample([out.ids[i] for i in keep], {k: st[k] for k in ("conf", "correct", "brier", "nll")})


def ex_imagenet_x(out: Outputs, dataset: str, env: Env) -> Sample:
    """Correctness against the ImageNet-X class and the 16 top-factor flags (prototypes removed)."""
    try:
        from beyond_inet.analyses import imagenet_x as ix

        ann = ix.load_annotations("top", True)
        out_pos, ann_pos = ix.join_on_file_name(out.ids, ann["file_name"])
        factors = list(ix.FACTORS)
    except Exception as e:  # missing package, renamed helper, bad ids
        raise Untestable(f"ImageNet-X annotations unavailable: {e}") from None
    if out_pos.size == 0:
        raise Untestable("no output id is an annotated ImageNet val file name")
    pred = _argmax(np.asarray(out.logits)[out_pos])
    sub = ann.iloc[ann_pos]
    correct = (pred == sub["class"].to_numpy()).astype(np.float64)
    return Sample([out.ids[i] for i in out_pos],
                  {"correct": correct, "factors": sub[factors].to_numpy(np.float64)})


def ex_cue(out: Outputs, dataset: str, env: Env, category: str | None = None) -> Sample:
    """Cue-conflict images with shape != texture: is the 16-class decision the shape / the texture?"""
    try:
        from beyond_inet.analyses.shape_bias import CATEGORIES, decisions16, parse_cue_conflict_name
    except Exception as e:
        raise Untestable(f"shape-bias helpers unavailable: {e}") from None
    keep, shapes, textures = [], [], []
    labels = np.asarray(out.labels, np.int64)
    for i, sid in enumerate(out.ids):
        try:
            _, tex = parse_cue_conflict_name(sid)
        except ValueError:
            continue
        if labels[i] < 0 or CATEGORIES[labels[i]] == tex:
            continue
        if category is not None and CATEGORIES[labels[i]] != category:
            continue
        keep.append(i)
        shapes.append(labels[i])
        textures.append(CATEGORIES.index(tex))
    if not keep:
        raise Untestable("no usable cue-conflict images")
    idx = np.asarray(keep)
    d = decisions16(np.asarray(out.logits)[idx])
    is_shape = d == np.asarray(shapes)
    is_tex = d == np.asarray(textures)
    return Sample([out.ids[i] for i in keep], {"shape": is_shape.astype(np.float64),
                                               "cue": (is_shape | is_tex).astype(np.float64)})


def ex_acc16(out: Outputs, dataset: str, env: Env) -> Sample:
    """16-class accuracy (edge / silhouette): the category decision equals the label."""
    try:
        from beyond_inet.analyses.shape_bias import decisions16
    except Exception as e:
        raise Untestable(f"shape-bias helpers unavailable: {e}") from None
    labels = np.asarray(out.labels, np.int64)
    keep = labels >= 0
    correct = (decisions16(np.asarray(out.logits)[keep]) == labels[keep]).astype(np.float64)
    return Sample(_subset_ids(out, keep), {"correct": correct})


def pug_mapping_path(env: Env) -> Path | None:
    if env.options.get("pug_mapping"):
        return Path(env.options["pug_mapping"])
    if env.data_root:
        return Path(env.data_root) / "pug-imagenet" / "class_to_imagenet_idx.json"
    return None


def ex_pug(out: Outputs, dataset: str, env: Env, rule: str = "any") -> Sample:
    """PUG correctness of the ImageNet argmax under the analysis's rule ('any' or 'paper')."""
    path = pug_mapping_path(env)
    if path is None or not path.is_file():
        raise Untestable(f"PUG class mapping not found ({path or 'no data root recorded'})")
    try:
        from beyond_inet.analyses.synthetic import pug_correct
        from beyond_inet.data.pug import load_class_mapping

        mapping = load_class_mapping(path)
    except Exception as e:
        raise Untestable(f"PUG helpers unavailable: {e}") from None
    labels = np.asarray(out.labels, np.int64)
    keep = (labels >= 0) & (labels < len(mapping))
    correct = np.asarray(pug_correct(np.asarray(out.logits)[keep], labels[keep], mapping, rule), np.float64)
    return Sample(_subset_ids(out, keep), {"correct": correct})


def _extractor(name: str) -> Callable[[Outputs, str, Env], Sample]:
    """Extractor by name; a ':' suffix is its argument (``top:5``, ``cue:bird``, ``pug:any``)."""
    head, _, arg = name.partition(":")
    if head == "top":
        return lambda o, d, e: ex_topk(o, d, e, int(arg or 1))
    if head == "cue":
        return lambda o, d, e: ex_cue(o, d, e, arg or None)
    if head == "pug":
        return lambda o, d, e: ex_pug(o, d, e, arg or "any")
    table = {"top1_labels": ex_top1_labels, "top1_subset": ex_top1_subset, "top1_any": ex_top1_any,
             "real": ex_real, "objectnet": ex_objectnet, "calib": ex_calib, "imagenet_x": ex_imagenet_x,
             "acc16": ex_acc16}
    return table[head]


# ------------------------------------------------------------------------------------------------
# Comparable metrics
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One extractor applied to one model's (dataset, view) outputs."""

    dataset: str
    view: str
    extractor: str


@dataclass
class Stratum:
    """Images resampled together: the units' samples are aligned on common ids, then `make` -> V [n, k].

    `kind` names what `make` builds (e.g. ``col:correct``, ``ece:15``): equal (units, kind) means equal
    V, so replicate sums are shared between metrics (ECE and MCE; the 17 ImageNet-X ratios).
    """

    units: tuple[Unit, ...]
    make: Callable[[list[Sample]], Any]
    kind: str = ""


Finish = Callable[[list[np.ndarray], list[int]], np.ndarray]


@dataclass
class Comparable:
    """A metric that can be recomputed per sample for every model, with how to test it."""

    analysis: str
    dataset: str
    metric: str
    higher_is_better: bool
    test: str  # "mcnemar" | "bootstrap"
    strata: list[Stratum]
    finish: Finish  # per-stratum replicate sums [b, k] and sizes -> metric values [b]
    derived: bool = False  # computed by the report, no stored row (e.g. invariance sweep means)
    description: str = ""
    members: set[str] | None = None  # derived metrics: the models that have every component row

    @property
    def key(self) -> tuple[str, str, str]:
        return self.analysis, self.dataset, self.metric

    def units(self) -> list[Unit]:
        return [u for s in self.strata for u in s.units]


def col(name: str) -> Callable[[list[Sample]], np.ndarray]:
    """V = one per-sample column of the (single) unit."""
    return lambda samples: np.asarray(samples[0].data[name], np.float64)[:, None]


def mean_of_units(name: str = "correct") -> Callable[[list[Sample]], np.ndarray]:
    """V = per-image mean of a column over the aligned units (e.g. correct under every scale view)."""
    return lambda samples: np.mean([np.asarray(s.data[name], np.float64) for s in samples], axis=0)[:, None]


def weighted_mean_finish(weights: Sequence[float], column: int = 0) -> Finish:
    """sum_s w_s * mean_s: one stratum = an accuracy on one image set."""
    w = list(weights)

    def finish(S: list[np.ndarray], n: list[int]) -> np.ndarray:
        return np.sum([wi * Si[:, column] / ni for wi, Si, ni in zip(w, S, n)], axis=0)

    return finish


def mean_finish(S: list[np.ndarray], n: list[int]) -> np.ndarray:
    return S[0][:, 0] / n[0]


def ratio_finish(S: list[np.ndarray], n: list[int]) -> np.ndarray:
    """sum(col 0) / sum(col 1), e.g. shape decisions / (shape + texture decisions)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(S[0][:, 1] > 0, S[0][:, 0] / S[0][:, 1], np.nan)


def calibration_bins() -> int:
    try:
        from beyond_inet.analyses.calibration import N_BINS as bins

        return int(bins)
    except Exception:
        return N_BINS


def ece_make(n_bins: int) -> Callable[[list[Sample]], sparse.csr_matrix]:
    """V = [one-hot bin, conf in bin, correct in bin] (sparse [n, 3B])."""
    def make(samples: list[Sample]) -> sparse.csr_matrix:
        conf = np.asarray(samples[0].data["conf"], np.float64)
        corr = np.asarray(samples[0].data["correct"], np.float64)
        b = bin_index(conf, n_bins)
        n = conf.size
        r = np.arange(n)
        rows = np.concatenate([r, r, r])
        cols = np.concatenate([b, n_bins + b, 2 * n_bins + b])
        vals = np.concatenate([np.ones(n), conf, corr])
        return sparse.csr_matrix((vals, (rows, cols)), shape=(n, 3 * n_bins))

    return make


def ece_finish(n_bins: int) -> Finish:
    """ECE = sum_b (n_b/N)|conf_b - acc_b| = sum_b |sum conf_b - sum correct_b| / N."""
    def finish(S: list[np.ndarray], n: list[int]) -> np.ndarray:
        s = S[0]
        return np.abs(s[:, n_bins:2 * n_bins] - s[:, 2 * n_bins:]).sum(1) / s[:, :n_bins].sum(1)

    return finish


def mce_finish(n_bins: int) -> Finish:
    """Maximum |conf_b - acc_b| over non-empty bins."""
    def finish(S: list[np.ndarray], n: list[int]) -> np.ndarray:
        s = S[0]
        cnt = s[:, :n_bins]
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.abs(s[:, n_bins:2 * n_bins] - s[:, 2 * n_bins:]) / cnt
        return np.where(cnt > 0, gap, 0.0).max(1)

    return finish


def imagenet_x_make(samples: list[Sample]) -> np.ndarray:
    """V = [factor * correct (F), factor (F), correct (1)]."""
    c = np.asarray(samples[0].data["correct"], np.float64)
    f = np.asarray(samples[0].data["factors"], np.float64)
    return np.concatenate([f * c[:, None], f, c[:, None]], axis=1)


def error_ratio_finish(which: int | None) -> Finish:
    """(1 - acc_f) / (1 - acc) for factor `which`, or the mean over factors with images (None)."""
    def finish(S: list[np.ndarray], n: list[int]) -> np.ndarray:
        s = S[0]
        k = (s.shape[1] - 1) // 2
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = (1.0 - s[:, :k] / s[:, k:2 * k]) / (1.0 - s[:, 2 * k] / n[0])[:, None]
        if which is not None:
            return ratio[:, which]
        fin = np.isfinite(ratio)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(fin.any(1), np.where(fin, ratio, 0.0).sum(1) / fin.sum(1), np.nan)

    return finish


def robustness_unit(ds: str) -> Unit:
    """The robustness analysis's scoring rule for one dataset, as an extractor unit."""
    if ds in ("imagenet-a", "imagenet-r"):
        return Unit(ds, "standard", "top1_subset")
    if ds == "imagenet-hard":
        return Unit(ds, "standard", "top1_any")
    if ds == "imagenet-real":
        return Unit("imagenet-val", "standard", "real")
    if ds == "objectnet":
        return Unit(ds, "standard", "objectnet")
    return Unit(ds, "standard", "top1_labels")


def mcnemar_comparable(analysis: str, ds: str, metric: str, unit: Unit, description: str = "") -> Comparable:
    return Comparable(analysis, ds, metric, True, "mcnemar", [Stratum((unit,), col("correct"), "col:correct")],
                      mean_finish, description=description)


def stratified_mean(analysis: str, ds: str, metric: str, units_weights: list[tuple[Unit, float]],
                    description: str) -> Comparable:
    """An average of accuracies on independent image sets; each set is resampled on its own."""
    strata = [Stratum((u,), col("correct"), "col:correct") for u, _ in units_weights]
    return Comparable(analysis, ds, metric, True, "bootstrap", strata,
                      weighted_mean_finish([w for _, w in units_weights]), description=description)


@dataclass
class RowIndex:
    """Rows keyed for rule look-ups: (analysis, dataset, metric) -> {model: Row}."""

    rows: dict[tuple[str, str, str], dict[str, Row]]

    @classmethod
    def build(cls, rows: Iterable[Row]) -> "RowIndex":
        d: dict[tuple[str, str, str], dict[str, Row]] = {}
        for r in rows:
            if r.model in ("*", "all") or r.value is None or not math.isfinite(r.value):
                continue
            d.setdefault((r.analysis, r.dataset, r.metric), {})[r.model] = r
        return cls(d)

    def models(self, analysis: str, dataset: str, metric: str) -> set[str]:
        return set(self.rows.get((analysis, dataset, metric), {}))

    def datasets(self, analysis: str, metric: str, prefix: str = "") -> list[str]:
        return sorted({d for (a, d, m) in self.rows if a == analysis and m == metric and d.startswith(prefix)})


def _c_parts(index: RowIndex, corruptions: Iterable[str] | None) -> list[str]:
    """ImageNet-C part datasets (imagenet-c/<c>/<s>) with top1 rows, optionally of some corruptions."""
    out = []
    for d in index.datasets("robustness", "top1", "imagenet-c/"):
        bits = d.split("/")
        if len(bits) == 3 and (corruptions is None or bits[1] in corruptions):
            out.append(d)
    return out


def _variants_present(index: RowIndex, env: Env) -> list[str]:
    """The variants the robustness average covers: the artifact's list (common to all models), or rows."""
    lists = [set(v["variants_present"]) for (a, m, k), v in env.artifacts.items()
             if a == "robustness" and k == "robustness/top1" and isinstance(v, dict) and "variants_present" in v]
    if lists:
        common = set.intersection(*lists)
        return [v for v in VARIANTS if v in common] + sorted(common - set(VARIANTS))
    present = [v for v in VARIANTS if index.models("robustness", v, "top1")]
    if "imagenet-c" in present and not index.models("robustness", "imagenet-c", "mce"):
        present.remove("imagenet-c")  # the analysis averages C in only when all 75 parts are there
    return present


def comparable_for(analysis: str, ds: str, metric: str, index: RowIndex, env: Env) -> Comparable | None:
    """The paired test of one stored metric, or None when it is not a registered kind.

    Registered: accuracies (accuracy, robustness, shape-bias acc16, synthetic, invariance views:
    McNemar), averages over image sets (ImageNet-C, robustness variants, PUG: stratified paired
    bootstrap), ECE / MCE / Brier / NLL, ImageNet-X error ratios and shape bias (paired bootstrap).
    """
    if analysis == "accuracy":
        if metric in ("top1", "top5"):
            return mcnemar_comparable(analysis, ds, metric, Unit(ds, "standard", f"top:{metric[3:]}"))
        if metric == "top1_real" and ds == "imagenet-val":
            return mcnemar_comparable(analysis, ds, metric, Unit(ds, "standard", "real"))
        return None
    if analysis == "robustness":
        if metric == "top1" and ds == "imagenet-c":
            parts = _c_parts(index, C_CORRUPTIONS)
            return stratified_mean(analysis, ds, metric, [(Unit(p, "standard", "top1_labels"), 1 / len(parts))
                                                          for p in parts],
                                   "mean top-1 over the ImageNet-C parts") if parts else None
        if metric == "top1" and ds.startswith("imagenet-c/") and ds.count("/") == 1:
            parts = _c_parts(index, [ds.split("/")[1]])
            return stratified_mean(analysis, ds, metric, [(Unit(p, "standard", "top1_labels"), 1 / len(parts))
                                                          for p in parts],
                                   "mean top-1 over severities") if parts else None
        if metric == "top1":
            return mcnemar_comparable(analysis, ds, metric, robustness_unit(ds))
        if metric == "top1_avg" and ds == "variants":
            present = _variants_present(index, env)
            if not present:
                return None
            units: list[tuple[Unit, float]] = []
            for v in present:
                if v == "imagenet-c":
                    parts = _c_parts(index, C_CORRUPTIONS)
                    units += [(Unit(p, "standard", "top1_labels"), 1 / (len(present) * len(parts))) for p in parts]
                else:
                    units.append((robustness_unit(v), 1 / len(present)))
            return stratified_mean(analysis, ds, metric, units, f"mean top-1 over {', '.join(present)}")
        return None
    if analysis == "calibration" and metric in ("ece", "mce", "brier", "nll"):
        unit = Unit(ds, "standard", "calib")
        if metric in ("brier", "nll"):
            st = Stratum((unit,), col(metric), f"col:{metric}")
            return Comparable(analysis, ds, metric, False, "bootstrap", [st], mean_finish)
        b = calibration_bins()
        fin = ece_finish(b) if metric == "ece" else mce_finish(b)
        return Comparable(analysis, ds, metric, False, "bootstrap", [Stratum((unit,), ece_make(b), f"ece:{b}")], fin,
                          description=f"{b} equal-width bins, (lower, upper]")
    if analysis == "imagenet-x" and ds == "imagenet-val" and metric.startswith("error_ratio_"):
        factor = metric[len("error_ratio_"):]
        try:
            from beyond_inet.analyses.imagenet_x import FACTORS
        except Exception:
            return None
        if factor != "mean" and factor not in FACTORS:
            return None
        which = None if factor == "mean" else list(FACTORS).index(factor)
        return Comparable(analysis, ds, metric, False, "bootstrap",
                          [Stratum((Unit(ds, "standard", "imagenet_x"),), imagenet_x_make, "imagenet_x")],
                          error_ratio_finish(which))
    if analysis == "shape-bias":
        if ds == "cue-conflict" and (metric == "shape_bias" or metric.startswith("shape_bias_")):
            cat = metric[len("shape_bias_"):] if metric != "shape_bias" else ""
            unit = Unit(ds, "native", f"cue:{cat}" if cat else "cue")
            return Comparable(analysis, ds, metric, True, "bootstrap",
                              [Stratum((unit,), lambda s: np.stack([s[0].data["shape"], s[0].data["cue"]], 1),
                                       "shape_cue")],
                              ratio_finish, description="higher = more shape decisions (humans: ~0.96)")
        if metric == "acc16":
            return mcnemar_comparable(analysis, ds, metric, Unit(ds, "native", "acc16"))
        return None
    if analysis == "synthetic":
        m = re.match(r"^top1_(any|paper)$", metric)
        if m and ds.startswith("pug-imagenet/"):
            return mcnemar_comparable(analysis, ds, metric, Unit(ds, "standard", f"pug:{m.group(1)}"))
        m = re.match(r"^top1_avg_(any|paper)$", metric)
        if m and ds == "pug-imagenet":
            factors = index.datasets(analysis, f"top1_{m.group(1)}", "pug-imagenet/")
            if not factors:
                return None
            return stratified_mean(analysis, ds, metric,
                                   [(Unit(f, "standard", f"pug:{m.group(1)}"), 1 / len(factors)) for f in factors],
                                   "mean top-1 over the PUG factors")
        return None
    if analysis == "invariance":
        m = _INV_RE.match(metric)
        if m:
            view = f"{m.group(1)}-{m.group(2).replace('m', '-')}"
            return mcnemar_comparable(analysis, ds, metric, Unit(ds, view, "top1_labels"))
        return None
    return None


def invariance_summaries(index: RowIndex) -> list[Comparable]:
    """Derived: per sweep kind, the mean top-1 over its views (per image: fraction of views correct).

    All views hold the same images, so they are resampled together (one stratum); this is the
    area under the paper's invariance curve, normalised to the number of views.
    """
    out = []
    by: dict[tuple[str, str], dict[str, set[str]]] = {}
    for (a, d, m), per_model in index.rows.items():
        mm = _INV_RE.match(m) if a == "invariance" else None
        if mm:
            view = f"{mm.group(1)}-{mm.group(2).replace('m', '-')}"
            by.setdefault((d, mm.group(1)), {})[view] = set(per_model)
    for (ds, kind), views in sorted(by.items()):
        units = tuple(Unit(ds, v, "top1_labels") for v in sorted(views, key=_view_value))
        out.append(Comparable("invariance", ds, f"top1_mean_{kind}", True, "bootstrap",
                              [Stratum(units, mean_of_units("correct"), "mean_units:correct")], mean_finish,
                              derived=True,
                              description=f"mean top-1 over the {len(units)} {kind} views (computed by the report)",
                              members=set.intersection(*views.values())))
    return out


def _view_value(view: str) -> float:
    try:
        return float(view.split("-", 1)[1])
    except (IndexError, ValueError):
        return math.inf


# ------------------------------------------------------------------------------------------------
# Running the tests
# ------------------------------------------------------------------------------------------------
@dataclass
class PairResult:
    a: str
    b: str
    value_a: float
    value_b: float
    diff: float  # value_a - value_b
    ci_low: float  # paired-bootstrap CI of the difference (NaN for McNemar)
    ci_high: float
    p: float
    p_holm: float
    verdict: str
    winner: str | None = None  # the significantly better model, None when no significant difference
    n01: int | None = None  # McNemar: A right, B wrong
    n10: int | None = None  # McNemar: A wrong, B right


@dataclass
class Comparison:
    analysis: str
    dataset: str
    metric: str
    higher_is_better: bool
    test: str
    derived: bool
    description: str
    models: list[str]
    values: dict[str, tuple[float, float, float]]  # value, ci_low, ci_high on the common images
    n: int
    pairs: list[PairResult]
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.analysis, self.dataset, self.metric

    def pair(self, a: str, b: str) -> PairResult | None:
        for p in self.pairs:
            if {p.a, p.b} == {a, b}:
                return p
        return None


@dataclass
class Untested:
    analysis: str
    dataset: str
    metric: str
    reason: str


@dataclass
class CompareResult:
    comparisons: list[Comparison]
    untested: list[Untested]
    alpha: float
    n_boot: int
    seed: int

    def get(self, analysis: str, dataset: str, metric: str) -> Comparison | None:
        for c in self.comparisons:
            if c.key == (analysis, dataset, metric):
                return c
        return None


class UnitCache:
    """Loads each (model, dataset, view) output once and keeps only the extracted per-sample arrays."""

    def __init__(self, out_dir: Path, output_keys: dict[tuple[str, str, str], str], env: Env):
        from beyond_inet.engine.store import Store

        self.store = Store(Path(out_dir) / "store")
        self.keys = output_keys
        self.env = env
        self.samples: dict[tuple[str, Unit], Sample] = {}
        self.errors: dict[tuple[str, Unit], str] = {}
        self.ids: dict[str, list[str]] = {}  # one id list per dataset, shared by every model and view

    def prefetch(self, model: str, units: Iterable[Unit]) -> None:
        """Extract every unit of `model`, loading each (dataset, view) output once."""
        by_dv: dict[tuple[str, str], list[Unit]] = {}
        for u in units:
            if (model, u) not in self.samples and (model, u) not in self.errors:
                by_dv.setdefault((u.dataset, u.view), []).append(u)
        for (ds, view), us in by_dv.items():
            out = None
            key = self.keys.get((model, ds, view))
            entry = self.store.existing(key) if key else None
            if entry is None:
                reason = (f"no stored outputs of {model} on {ds} ({view})" if key is None
                          else f"stored outputs of {model} on {ds} ({view}) are missing from the store")
            else:
                try:
                    out = entry.load()
                except Exception as e:  # a deleted or partial shard
                    reason = f"cannot load outputs of {model} on {ds} ({view}): {e}"
                else:
                    # 75 ImageNet-C parts x 8 models x 50k ids: share the strings instead of holding copies
                    canonical = self.ids.setdefault(ds.split("/")[0], out.ids)
                    if canonical is not out.ids and canonical == out.ids:
                        out.ids = canonical
            for u in us:
                if out is None:
                    self.errors[(model, u)] = reason
                    continue
                try:
                    self.samples[(model, u)] = _extractor(u.extractor)(out, ds, self.env)
                except Untestable as e:
                    self.errors[(model, u)] = str(e)
                except Exception as e:  # a changed helper must not take the report down
                    self.errors[(model, u)] = f"{u.extractor} failed on {ds}: {type(e).__name__}: {e}"
            del out

    def get(self, model: str, unit: Unit) -> Sample | None:
        return self.samples.get((model, unit))

    def error(self, model: str, unit: Unit) -> str | None:
        return self.errors.get((model, unit))


def _align(samples: dict[str, list[Sample]]) -> tuple[dict[str, list[Sample]], int]:
    """Restrict every model's unit samples to the ids all of them share (order of the first)."""
    flat = [s for ss in samples.values() for s in ss]
    first = flat[0].ids
    if all(s.ids == first for s in flat):
        return samples, len(first)
    for s in flat:
        if len(set(s.ids)) != len(s.ids):
            raise Untestable("sample ids are not unique and differ between models; cannot pair images")
    common = set(first)
    for s in flat[1:]:
        common &= set(s.ids)
    ids = [i for i in first if i in common]
    out = {}
    for m, ss in samples.items():
        aligned = []
        for s in ss:
            pos = {sid: k for k, sid in enumerate(s.ids)}
            aligned.append(s.take(np.array([pos[i] for i in ids], np.int64)))
        out[m] = aligned
    return out, len(ids)


def run_comparison(comp: Comparable, models: list[str], cache: UnitCache, alpha: float, n_boot: int,
                   seed: int, rep_cache: dict | None = None) -> Comparison | Untested:
    """Recompute `comp` for `models` on their common images and test every pair."""
    notes = []
    usable = []
    for m in models:
        missing = [cache.error(m, u) or "not extracted" for u in comp.units() if cache.get(m, u) is None]
        if missing:
            notes.append(f"{m} left out: {missing[0]}")
        else:
            usable.append(m)
    if len(usable) < (1 if comp.derived else 2):
        reason = notes[0].split(" left out: ", 1)[-1] if notes else "fewer than two models"
        return Untested(comp.analysis, comp.dataset, comp.metric,
                        f"fewer than two models with per-sample data ({reason})")
    Vs: dict[str, list[Any]] = {m: [] for m in usable}
    sizes = []
    for st in comp.strata:
        try:
            aligned, n = _align({m: [cache.get(m, u) for u in st.units] for m in usable})
        except Untestable as e:
            return Untested(comp.analysis, comp.dataset, comp.metric, str(e))
        if n == 0:
            return Untested(comp.analysis, comp.dataset, comp.metric, "the models share no images")
        sizes.append(n)
        for m in usable:
            Vs[m].append(st.make(aligned[m]))
    point = {m: float(comp.finish([column_sums(V) for V in Vs[m]], sizes)[0]) for m in usable}
    values = {m: (point[m], math.nan, math.nan) for m in usable}
    pairs_idx = [(i, j) for i in range(len(usable)) for j in range(i + 1, len(usable))]
    raw = []
    if comp.test == "mcnemar":
        for i, j in pairs_idx:
            a, b = usable[i], usable[j]
            ca, cb = Vs[a][0][:, 0], Vs[b][0][:, 0]
            n01, n10 = discordant(ca, cb)
            raw.append((point[a] - point[b], math.nan, math.nan, stats.mcnemar_exact(ca, cb), n01, n10))
    else:
        reps = bootstrap_all(Vs, comp.finish, sizes, n_boot, [stratum_seed(seed, st) for st in comp.strata],
                             [(st.units, st.kind) if st.kind else None for st in comp.strata],
                             rep_cache)
        for m in usable:
            values[m] = (point[m], *percentile(reps[m], alpha))
        for i, j in pairs_idx:
            a, b = usable[i], usable[j]
            d = reps[a] - reps[b]
            lo, hi = percentile(d, alpha)
            raw.append((point[a] - point[b], lo, hi, bootstrap_p(d), None, None))
    adj = holm([r[3] for r in raw])
    pairs = []
    for (i, j), (diff, lo, hi, p, n01, n10), pa in zip(pairs_idx, raw, adj):
        a, b = usable[i], usable[j]
        v = verdict(a, b, diff, pa, alpha, comp.higher_is_better)
        winner = None if v == NO_DIFF else (a if (diff > 0) == comp.higher_is_better else b)
        pairs.append(PairResult(a, b, point[a], point[b], diff, lo, hi, p, float(pa), v, winner, n01, n10))
    return Comparison(comp.analysis, comp.dataset, comp.metric, comp.higher_is_better, comp.test, comp.derived,
                      comp.description, usable, values, sizes[0] if len(sizes) == 1 else int(sum(sizes)), pairs, notes)


def bootstrap_all(Vs: dict[str, list[Any]], finish: Finish, sizes: list[int], n_boot: int,
                  seeds: int | Sequence[int], keys: Sequence[Any] | None = None,
                  cache: dict | None = None) -> dict[str, np.ndarray]:
    """Replicate metric values [n_boot] per model; every model sees the same resamples of each stratum.

    Strata are resampled independently (seed per stratum). With `keys` and `cache`, the replicate
    sums of a stratum are computed once for every metric that shares its (units, kind, models).
    """
    models = list(Vs)
    seeds = [int(seeds) + s for s in range(len(sizes))] if isinstance(seeds, (int, np.integer)) else list(seeds)
    sums: dict[str, list[np.ndarray]] = {m: [] for m in models}
    for s in range(len(sizes)):
        blocks = [Vs[m][s] for m in models]
        widths = np.cumsum([0] + [b.shape[1] for b in blocks])
        ck = None if keys is None or cache is None or keys[s] is None else (keys[s], tuple(models), seeds[s], n_boot)
        S = cache.get(ck) if ck is not None else None
        if S is None:
            if not any(sparse.issparse(b) for b in blocks) and widths[-1] <= 64:
                S = compressed_replicate_sums(np.hstack([np.asarray(b, np.float64) for b in blocks]), n_boot, seeds[s])
            if S is None:
                S = replicate_sums(sparse.hstack([sparse.csr_matrix(b) for b in blocks]).tocsr(), n_boot, seeds[s])
            if ck is not None:
                cache[ck] = S
        for k, m in enumerate(models):
            sums[m].append(S[:, widths[k]:widths[k + 1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return {m: np.asarray(finish(sums[m], sizes), np.float64) for m in models}


def stratum_seed(seed: int, st: Stratum) -> int:
    """A reproducible resampling stream per image set (independent across strata, shared across metrics)."""
    return (int(seed) * 1_000_003 + zlib.crc32(repr(st.units).encode())) % (2 ** 32)


def compare_all(out_dir: str | Path, rows: Sequence[Row], output_keys: dict[tuple[str, str, str], str],
                models: Sequence[str], env: Env | None = None, alpha: float = ALPHA, n_boot: int = 1000,
                seed: int = 0) -> CompareResult:
    """Paired tests for every registered metric that at least two models have (see module doc)."""
    env = env or Env()
    index = RowIndex.build(rows)
    order = {m: i for i, m in enumerate(models)}
    comps: list[Comparable] = []
    for (a, d, m), by_model in sorted(index.rows.items()):
        if len(by_model) < 2:
            continue
        c = comparable_for(a, d, m, index, env)
        if c is not None:
            comps.append(c)
    comps += invariance_summaries(index)
    cache = UnitCache(Path(out_dir), output_keys, env)
    wanted: dict[str, set[Unit]] = {}
    members: dict[tuple[str, str, str], list[str]] = {}
    for c in comps:
        ms = c.members if c.members is not None else index.models(*c.key)
        members[c.key] = sorted(ms, key=lambda m: (order.get(m, len(order)), m))
        for m in members[c.key]:
            wanted.setdefault(m, set()).update(c.units())
    for m in sorted(wanted, key=lambda m: (order.get(m, len(order)), m)):
        cache.prefetch(m, wanted[m])
    results, untested = [], []
    rep_cache: dict = {}
    for c in comps:
        ms = members[c.key]
        if len(ms) < (1 if c.derived else 2):  # derived values are wanted (with CIs) even for one model
            continue
        r = run_comparison(c, ms, cache, alpha, n_boot, seed, rep_cache)
        if isinstance(r, Untested):
            untested.append(r)
            continue
        if not c.derived:
            for m in r.models:
                row = index.rows[c.key].get(m)
                v = r.values[m][0]
                if row is not None and row.n == r.n and not math.isclose(row.value, v, rel_tol=1e-6, abs_tol=1e-9):
                    r.notes.append(f"recomputed {m} = {v:.6g} differs from the stored row {row.value:.6g} "
                                   f"(same {r.n} images): the scoring rules may have drifted")
        results.append(r)
    for (a, d, m), by_model in sorted(index.rows.items()):
        if a == "transfer" and m in ("top1", "top1_avg") and len(by_model) >= 2:
            untested.append(Untested(a, d, m, "per-image linear-probe predictions are not stored; "
                                              "compare the CIs instead"))
    return CompareResult(results, untested, alpha, n_boot, seed)


@dataclass
class Choice:
    """Which model to pick for one property."""

    best: str | None
    tied: list[str]  # models not significantly different from the best (best included)
    tested: bool
    text: str


def choose(values: dict[str, float], higher_is_better: bool, comparison: Comparison | None) -> Choice:
    """The best model by value and the models the paired tests cannot tell apart from it."""
    vals = {m: v for m, v in values.items() if v is not None and math.isfinite(v)}
    if not vals:
        return Choice(None, [], False, "not computed")
    best = (max if higher_is_better else min)(vals, key=lambda m: vals[m])
    if len(vals) == 1:
        return Choice(best, [best], False, "only one model has this property")
    if comparison is None or best not in comparison.models:
        return Choice(best, [best], False, "best value; no paired test available")
    tied = [best] + [m for m in comparison.models if m != best and (p := comparison.pair(best, m)) is not None
                     and p.verdict == NO_DIFF]
    if len(tied) == 1:
        return Choice(best, tied, True, "significantly better than every other model tested")
    return Choice(best, tied, True, f"{len(tied)} models are tied (no significant difference from the best)")
