"""Shared contracts: the plain data every layer exchanges, in one leaf module.

Nothing here imports from beyond_inet, so models, data, engine, analyses and report can all depend on
it without cycles. What lives here:

* ``Outputs``: per-sample outputs of one model on one (dataset, view) (what the engine stores);
* ``Request``: a (dataset, view) an analysis needs; ``Fetch`` / ``CrossFetch`` to get its outputs;
* ``Row``, ``Skip``, ``AnalysisResult``: what analyses produce (the stable results schema);
* ``Context``: what an analysis may know besides the outputs;
* ``Trial``, ``Observer``: published per-trial decisions (model-vs-human raw data) that enter the
  decision-only analyses beside the models that run;
* ``Metric``: a per-sample metric declaration (per-unit columns + finish + resampling units +
  direction + unit), the ONE scoring rule from which values, CIs, paired tests and verdicts derive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

# Fewer units than this and a metric is flagged "too few" and never marked best.
MIN_UNITS = 30

# What a store entry can hold per image (docs/store.md "What is stored"): the full 1000-way logits, the pooled
# penultimate features, and the compact summary (top-k classes and logits, log-partition, sum of squared
# probabilities, true-class logit) from which top-1/top-5, confidence, true-class probability, Brier and NLL
# come out as from the full logits. Full logits imply the summary (it is derived from them on load).
LOGITS, FEATURES, SUMMARY = "logits", "features", "summary"
KINDS = (LOGITS, FEATURES, SUMMARY)
FULL = frozenset({LOGITS, FEATURES})  # what every entry held before kinds existed (and the default need)
# The layer types a CKA statistics pass can hook (models.layers finds them in a network) and how a layer's
# output is reduced to one vector per image; here, torch-free, so that naming them needs no model code.
LAYER_TYPES = ("block", "attn", "linear", "norm")
REDUCTIONS = ("flatten", "mean")
SUMMARY_TOPK = 5


def summarize_logits(logits: np.ndarray, labels: np.ndarray, k: int = SUMMARY_TOPK) -> dict[str, np.ndarray]:
    """The compact record of float32 logits [N, C]: ``top_idx`` (int16 [N, k], classes by logit, ties by
    lower index, so column 0 is ``argmax``), ``top_logit`` (their float32 logits), ``lse`` (float64 log-sum-
    exp of the float64 logits), ``sum_p2`` (float64 sum of squared softmax probabilities, for Brier) and
    ``label_logit`` (float32 logit of the label; NaN where the label is -1). Computed as
    ``calibration.softmax_stats`` computes its softmax, so what comes out of it agrees to rounding."""
    z32 = np.asarray(logits, np.float32)
    y = np.asarray(labels, np.int64)
    n, c = z32.shape[0], (z32.shape[1] if z32.ndim == 2 else 0)
    k = min(k, c)
    out = {"top_idx": np.zeros((n, k), np.int16), "top_logit": np.zeros((n, k), np.float32),
           "lse": np.zeros(n), "sum_p2": np.zeros(n), "label_logit": np.full(n, np.nan, np.float32)}
    for s in range(0, n, 4096):
        z = z32[s:s + 4096]
        idx = np.argsort(-z, axis=1, kind="stable")[:, :k]
        idx[:, 0] = z.argmax(axis=1)  # argmax's own tie (and NaN) rule for the top-1
        r = np.arange(z.shape[0])
        out["top_idx"][s:s + len(z)] = idx
        out["top_logit"][s:s + len(z)] = z[r[:, None], idx]
        zz = z.astype(np.float64)
        m = zz.max(axis=1, keepdims=True)
        e = np.exp(zz - m)
        tot = e.sum(axis=1)
        p = e / tot[:, None]
        out["lse"][s:s + len(z)] = np.log(tot) + m[:, 0]
        out["sum_p2"][s:s + len(z)] = (p * p).sum(axis=1)
        yy = y[s:s + len(z)]
        ok = (yy >= 0) & (yy < c)
        out["label_logit"][s:s + len(z)][ok] = z[r[ok], yy[ok]]
    return out


def record_stats(record: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """What ``calibration.softmax_stats`` and ``accuracy.topk_correct`` give from full logits, from the compact
    record alone (labels >= 0): ``pred``, ``top1``/``top5`` (0/1), ``conf`` (max softmax probability),
    ``p_true`` (softmax probability of the label), ``brier`` and ``nll``."""
    y = np.asarray(labels, np.int64)
    lse, z_y = record["lse"], record["label_logit"].astype(np.float64)
    p_true = np.exp(z_y - lse)
    idx = record["top_idx"].astype(np.int64)
    return {"pred": idx[:, 0], "top1": (idx[:, 0] == y).astype(np.float64),
            "top5": (idx[:, :5] == y[:, None]).any(axis=1).astype(np.float64),
            "conf": np.exp(record["top_logit"][:, 0].astype(np.float64) - lse), "p_true": p_true,
            "brier": record["sum_p2"] - 2.0 * p_true + 1.0, "nll": lse - z_y}


@dataclass
class Outputs:
    """Outputs of one model on one dataset under one view, in dataset order.

    ids:      sample ids (for ImageNet val: the file name ``ILSVRC2012_val_XXXXXXXX.JPEG``).
    labels:   int64 [N]; the label in the dataset's label space (see ``data.labelspaces``), -1 if none.
    logits:   float32 [N, 1000] over the ImageNet-1k classes (sorted-wnid order); None when the entry
              holds only the summary (``kinds``).
    features: float32 [N, D] pooled pre-logit features (CLIP: the image embedding); None when not kept.
    summary:  the compact record (``summarize_logits``); None when the entry holds neither it nor logits.
    multilabels: int64 [N, K] padded with -1, for multi-label sets (ImageNet-Hard); else None.
    skipped:  ids of samples that could not be decoded (not in the arrays).
    meta:     provenance: model spec, preprocessing, view, logit scale, dataset revision ...
    """

    ids: list[str]
    labels: np.ndarray
    logits: np.ndarray | None
    features: np.ndarray | None
    multilabels: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    summary: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def record(self) -> dict[str, np.ndarray]:
        """The compact record (``summarize_logits``): stored, or derived from the full logits."""
        if self.summary is None:
            if self.logits is None:
                raise ValueError("these outputs hold neither logits nor their summary")
            self.summary = summarize_logits(self.logits, self.labels)
        return self.summary

    def top1(self) -> np.ndarray:
        """The index of the top logit (``logits.argmax(1)``), from the logits or the compact record."""
        if self.logits is not None:
            return np.asarray(self.logits).argmax(axis=1)
        return self.record()["top_idx"][:, 0].astype(np.int64)

    def subset(self, mask: np.ndarray) -> "Outputs":
        idx = np.flatnonzero(mask)
        return Outputs(
            ids=[self.ids[i] for i in idx],
            labels=self.labels[idx],
            logits=None if self.logits is None else self.logits[idx],
            features=None if self.features is None else self.features[idx],
            multilabels=None if self.multilabels is None else self.multilabels[idx],
            skipped=list(self.skipped),
            meta=dict(self.meta),
            summary=None if self.summary is None else {k: v[idx] for k, v in self.summary.items()},
        )


@dataclass(frozen=True)
class Request:
    """One set of per-sample outputs an analysis needs.

    dataset: a catalog name, possibly with a part: ``imagenet-val``, ``imagenet-c/fog/3``,
             ``pug-imagenet/Worlds``, ``vtab/cifar100/train``.
    view:    a view name from ``data.views`` (``standard``, ``native``, ``scale-1.5``, ``shift-30``,
             ``res-336`` ...). Resolution views make the engine rebuild the model at that size.
    outputs: which stored outputs it reads (``LOGITS``, ``FEATURES``, ``SUMMARY``); the store keeps, per
             (model, dataset, view), only what some request of the run reads (not part of equality).
    """

    dataset: str
    view: str = "standard"
    outputs: frozenset = field(default=FULL, compare=False)


@dataclass
class Row:
    """One tidy result row: the stable `results.csv` schema."""

    model: str
    dataset: str
    analysis: str
    metric: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0

    COLUMNS: ClassVar[tuple[str, ...]] = ("model", "dataset", "analysis", "metric", "value", "ci_low", "ci_high", "n")

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, c) for c in self.COLUMNS)


@dataclass
class Skip:
    """Something an analysis could not do, and why (shown in the report)."""

    analysis: str
    model: str
    dataset: str
    reason: str


# finish(column sums [b, k]) -> metric values [b]; row 0 of a point estimate is the full-data sums.
Finish = Callable[[np.ndarray], np.ndarray]


@dataclass
class Metric:
    """One metric, declared per sample (the lm-evaluation-harness pattern).

    columns: float [n_rows, k], what each row contributes; every statistic is a function of the
             column SUMS over rows (means carry a count column, ECE per-bin counts and sums ...).
    units:   the resampling unit of each row (an image id). Rows that share a unit (one image in the
             75 ImageNet-C parts, or in several views) are resampled together: ONE unit.
    finish:  column sums [b, k] -> values [b]; must be vectorised over b.
    rests_on: column whose per-unit sum > 0 marks a unit the metric rests on (shape bias: shape-or-
             texture decisions); None = every unit.
    test:    "mcnemar" for an accuracy (column 0 = correct 0/1, one row per unit), else "bootstrap".
    """

    dataset: str
    metric: str
    columns: np.ndarray
    units: Sequence[str]
    finish: Finish
    higher_is_better: bool | None = True
    unit: str = "fraction"
    rests_on: int | None = None
    test: str = "bootstrap"
    description: str = ""
    # What the columns stand for, when that can differ between models (the groups of a grouped mean: the
    # ImageNet-C parts or robustness variants a model has). Paired tests compare only equal layouts.
    layout: tuple = ()

    def __post_init__(self) -> None:
        self.columns = np.asarray(self.columns, np.float64)
        if self.columns.ndim == 1:
            self.columns = self.columns[:, None]
        if self.columns.shape[0] != len(self.units):
            raise ValueError(f"{self.metric}: {self.columns.shape[0]} rows but {len(self.units)} unit ids")

    @property
    def key(self) -> tuple[str, str]:
        return self.dataset, self.metric


@dataclass
class AnalysisResult:
    rows: list[Row] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    # JSON-able data for figures (reliability bins, per-class shape bias, curves ...), keyed by name.
    artifacts: dict[str, Any] = field(default_factory=dict)
    # Per-sample declarations behind the rows (scored by the pipeline/base class into rows).
    metrics: list[Metric] = field(default_factory=list)

    def extend(self, other: "AnalysisResult") -> None:
        self.rows += other.rows
        self.skips += other.skips
        self.artifacts.update(other.artifacts)
        self.metrics += other.metrics


@dataclass(frozen=True)
class Trial:
    """One published decision: the image shown (model-vs-human's ``imagename``), the 16-class response
    (``na`` = a human gave none), the true (shape) category and the condition."""

    image: str
    response: str
    category: str
    condition: str = ""


@dataclass
class Observer:
    """A decision maker known only by its published decisions (a human subject, or a model whose per-trial
    CSV was released): it has no logits, so only analyses that need decisions alone can score it.

    name:   the CSVs' ``subj`` (``subject-01``, ``resnet50``, ``deit3_21k``);
    human:  a human subject (aggregated as model-vs-human does: per subject, then the mean);
    trials: dataset name -> its trials, in file order;
    source: dataset name -> the CSV file it came from.
    """

    name: str
    human: bool
    trials: dict[str, list[Trial]] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    """What an analysis may know besides the outputs: the data root, catalog and options."""

    data_root: str | None
    options: dict[str, Any] = field(default_factory=dict)
    # Filled by the pipeline: does the catalog find this dataset name under the data root?
    available: Callable[[str], bool] = lambda name: False
    # Parts of a multi-part dataset that are present, e.g. parts("imagenet-c") -> ["fog/1", ...].
    parts: Callable[[str], list[str]] = lambda name: []
    seed: int = 0
    n_boot: int = 1000
    # The analyses of this run (a cross-model analysis such as the paired tests compares theirs).
    analyses: tuple[str, ...] = ()
    # Published decisions (--decisions): observers beside the models, for the decision-only analyses.
    observers: tuple[Observer, ...] = ()

    def option_list(self, key: str, default) -> list:
        """An option that holds a list; a single value or a comma-separated string (from the command
        line's ``--option key=a,b``) becomes a list too."""
        v = self.options.get(key, default)
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        if isinstance(v, (int, float)):
            return [v]
        return list(v)


# fetch(request) -> Outputs, or None when that dataset is absent (the pipeline records why).
Fetch = Callable[[Request], "Outputs | None"]
# cross-model fetch(model spec, request) -> that model's stored outputs, loaded lazily, or None.
CrossFetch = Callable[[str, Request], "Outputs | None"]
