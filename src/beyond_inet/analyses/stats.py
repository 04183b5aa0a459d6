"""Bootstrap confidence intervals and paired tests, vectorised over replicates.

Resampling is over images (units). Replicate index matrices are drawn in chunks so that 1000 replicates
on 50k samples stay within a few hundred MB and well under a second for mean-type statistics.

The generic part (``score``, ``paired``) works on ``contracts.Metric`` declarations: rows are first
summed per unit (``unit_sums``: an image in 75 ImageNet-C parts is ONE unit), then units are
resampled, and every statistic is ``finish(counts @ U)``. Values, CIs, ``n``, paired tests and verdicts
all come from the same declaration, so no module restates a scoring rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from beyond_inet.contracts import MIN_UNITS, Metric

# stat(idx) -> values: idx is an int array [b, n] of resampled positions, result is [b].
Stat = Callable[[np.ndarray], np.ndarray]

ALPHA = 0.05
_CHUNK_ELEMS = 8_000_000


def replicate_indices(n: int, n_boot: int, seed: int):
    """Yield int32 index matrices [b, n] totalling `n_boot` rows, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    per = max(1, _CHUNK_ELEMS // max(n, 1))
    done = 0
    while done < n_boot:
        b = min(per, n_boot - done)
        yield rng.integers(0, n, size=(b, n), dtype=np.int32 if n < 2**31 else np.int64)
        done += b


def defined_replicates(values: np.ndarray, alpha: float = ALPHA) -> np.ndarray | None:
    """The finite replicate values, or None when too many are undefined to use the rest.

    A ratio statistic is undefined (NaN) in a resample that draws none of the units of its denominator
    (e.g. a shape bias over 3 cue decisions). Dropping those replicates makes the interval conditional on
    the denominator being drawn; when more than alpha/2 of them are dropped, that conditioning can move a
    percentile bound by more than its whole tail, so the interval (and the p-value) is withheld, not
    shown too narrow. Below that, the few dropped replicates are a small, stated approximation."""
    v = np.asarray(values, np.float64).reshape(-1)
    ok = np.isfinite(v)
    if not ok.any() or (~ok).sum() > (alpha / 2) * v.size:
        return None
    return v[ok]


def percentile_interval(values: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) quantiles of replicate values; NaN when more than alpha/2 of the
    replicates are undefined (``defined_replicates``)."""
    v = defined_replicates(values, alpha)
    if v is None:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a zero difference from replicate differences (NaN when too many
    replicates are undefined, as for the interval)."""
    d = defined_replicates(diffs)
    if d is None:
        return math.nan
    # (1 + count) / (B + 1): a p-value of exactly 0 from B replicates would survive any Holm correction.
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2 * (1 + tail) / (d.size + 1)))


def bootstrap(stat: Stat, n: int, n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat` over `n` samples."""
    if n == 0:
        return math.nan, math.nan
    vals = np.concatenate([np.asarray(stat(idx), dtype=np.float64) for idx in replicate_indices(n, n_boot, seed)])
    return percentile_interval(vals, alpha)


def bootstrap_replicates(stat: Stat, n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """All replicate values of `stat` (for paired comparisons that reuse the same resamples)."""
    return np.concatenate([np.asarray(stat(idx), dtype=np.float64) for idx in replicate_indices(n, n_boot, seed)])


def mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA) -> tuple[float, float, float]:
    """Mean of per-sample values with its bootstrap CI: (value, low, high)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    lo, hi = bootstrap(lambda idx: v[idx].mean(axis=1), v.size, n_boot, seed, alpha)
    return float(v.mean()), lo, hi


def ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int = 1000, seed: int = 0,
             alpha: float = ALPHA) -> tuple[float, float, float]:
    """Ratio of sums sum(num)/sum(den) with its bootstrap CI (e.g. shape bias)."""
    a, b = np.asarray(num, np.float64), np.asarray(den, np.float64)
    if a.size == 0 or b.sum() == 0:
        return math.nan, math.nan, math.nan

    def stat(idx):
        d = b[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return a[idx].sum(axis=1) / d

    lo, hi = bootstrap(stat, a.size, n_boot, seed, alpha)
    return float(a.sum() / b.sum()), lo, hi


def paired_bootstrap(stat_a: Stat, stat_b: Stat, n: int, n_boot: int = 1000, seed: int = 0,
                     alpha: float = ALPHA) -> tuple[float, float, float]:
    """Two-sided paired bootstrap of stat_a - stat_b on the same resampled images.

    Returns (ci_low, ci_high, p) where p is the two-sided bootstrap p-value of a zero difference.
    """
    diffs = []
    for idx in replicate_indices(n, n_boot, seed):
        diffs.append(np.asarray(stat_a(idx), np.float64) - np.asarray(stat_b(idx), np.float64))
    d = np.concatenate(diffs)
    lo, hi = percentile_interval(d, alpha)  # both NaN (and p too) when too few replicates are defined
    return lo, hi, bootstrap_p(d)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value for paired 0/1 outcomes (accuracy comparisons)."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n01 = int((a & ~b).sum())
    n10 = int((~a & b).sum())
    if n01 + n10 == 0:
        return 1.0
    return float(binomtest(n01, n01 + n10, 0.5).pvalue)


# --- count-matrix bootstrap (one pass per dataset for all sum-type statistics) -------------------

def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of the n samples occurs in each resample: [b, n] int64 from a [b, n] index matrix."""
    b = idx.shape[0]
    flat = idx.astype(np.intp)  # bincount wants intp; one cast, then an in-place row offset
    flat += (np.arange(b, dtype=np.intp) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=b * n).reshape(b, n)


def resampled_sums(values: np.ndarray, n_boot: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (counts [b, n], sums [b, k]) per chunk of resamples, sums = counts @ values.

    Every sum-type bootstrap statistic (means, per-group totals, per-bin sums) is a column of
    `values`; one float32 matrix product per chunk replaces a Python loop over replicates.
    """
    v = np.asarray(values)
    n = v.shape[0]
    v32 = v.astype(np.float32)
    for idx in replicate_indices(n, n_boot, seed):
        c = resample_counts(idx, n)
        yield c, c.astype(np.float32) @ v32


def percentile_ci(reps: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise ``percentile_interval`` of replicate values [n_boot, k]."""
    reps = np.asarray(reps, np.float64)
    if reps.ndim == 1:
        reps = reps[:, None]
    lo = np.full(reps.shape[1], math.nan)
    hi = np.full(reps.shape[1], math.nan)
    for j in range(reps.shape[1]):
        lo[j], hi[j] = percentile_interval(reps[:, j], alpha)
    return lo, hi


def jsonable(x):
    """Lists of floats with NaN -> None, so artifacts are valid JSON."""
    arr = np.asarray(x, dtype=np.float64).tolist()

    def fix(v):
        if isinstance(v, list):
            return [fix(u) for u in v]
        return None if not math.isfinite(v) else v

    return fix(arr)


# --- generic scoring of metric declarations ------------------------------------------------------

def unit_sums(units: Sequence[str], columns: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sum the rows of `columns` per unit id: (unit ids in first-seen order, U [n_units, k]).

    The one place where rows that share an image (ImageNet-C parts, invariance views) become a single
    resampling unit."""
    V = np.asarray(columns, np.float64)
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(u, len(first)) for u in units), np.int64, count=len(units))
    if len(first) == V.shape[0]:
        order = np.empty_like(inverse)
        order[inverse] = np.arange(inverse.size)
        return list(first), V[order]
    U = np.zeros((len(first), V.shape[1]))
    np.add.at(U, inverse, V)
    return list(first), U


def replicate_column_sums(U: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Column sums of U's rows under `n_boot` bootstrap resamples of its rows: [n_boot, k] (float64).

    The resamples are those of ``replicate_indices(n, n_boot, seed)``, so a mean's replicates equal
    ``bootstrap``'s for the same seed."""
    n = U.shape[0]
    if n == 0:
        return np.zeros((0, U.shape[1]))
    return np.vstack([resample_counts(idx, n).astype(np.float64) @ U
                      for idx in replicate_indices(n, n_boot, seed)])


def _finish(metric: Metric, sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(metric.finish(np.atleast_2d(sums)), np.float64).reshape(-1)


def units_rested_on(metric: Metric, U: np.ndarray) -> int:
    """How many units the metric rests on (its `n`)."""
    if metric.rests_on is None:
        return int(U.shape[0])
    return int((U[:, metric.rests_on] > 0).sum())


@dataclass
class Score:
    """A scored metric: value, percentile CI and the number of units it rests on."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    @property
    def too_few(self) -> bool:
        return too_few(self.n)


def too_few(n: int) -> bool:
    """A metric resting on fewer than MIN_UNITS units is flagged and never marked best."""
    return n < MIN_UNITS


def score(metric: Metric, n_boot: int = 1000, seed: int = 0, alpha: float = ALPHA) -> Score:
    """Value, bootstrap CI over units, and n of one declared metric."""
    ids, U = unit_sums(metric.units, metric.columns)
    n = units_rested_on(metric, U)
    if U.shape[0] == 0:
        return Score(math.nan, math.nan, math.nan, 0)
    value = float(_finish(metric, U.sum(axis=0))[0])
    if n_boot <= 0:
        return Score(value, math.nan, math.nan, n)
    lo, hi = percentile_interval(_finish(metric, replicate_column_sums(U, n_boot, seed)), alpha)
    return Score(value, lo, hi, n)


def align_units(metrics: Sequence[Metric]) -> tuple[list[str], list[np.ndarray]]:
    """Per-unit sums of several models' declarations of one metric, restricted to the units all share
    (order of the first): (ids, [U_model [n, k]])."""
    summed = [unit_sums(m.units, m.columns) for m in metrics]
    common = set(summed[0][0])
    for ids, _ in summed[1:]:
        common &= set(ids)
    ids = [u for u in summed[0][0] if u in common]
    out = []
    for uids, U in summed:
        if uids == ids:
            out.append(U)
            continue
        pos = {u: i for i, u in enumerate(uids)}
        out.append(U[np.array([pos[u] for u in ids], np.int64)] if ids else U[:0])
    return ids, out


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


class IncomparableLayouts(ValueError):
    """Models' declarations of one metric stand for different groups (parts, variants): no paired test."""


@dataclass
class PairTest:
    """One paired comparison of two models on the units both have."""

    a: str
    b: str
    value_a: float
    value_b: float
    diff: float  # value_a - value_b
    ci_low: float  # paired-bootstrap CI of the difference (NaN for McNemar)
    ci_high: float
    p: float
    n: int
    test: str
    p_holm: float = math.nan
    n01: int | None = None  # McNemar: units A right, B wrong
    n10: int | None = None  # McNemar: units A wrong, B right


def paired(models: Sequence[str], metrics: Sequence[Metric], n_boot: int = 1000, seed: int = 0,
           alpha: float = ALPHA) -> list[PairTest]:
    """Every pair of models tested on the same units, Holm-corrected within the metric.

    McNemar's exact test for accuracies declared ``test="mcnemar"`` (one 0/1 row per unit); otherwise a
    paired bootstrap: both models are scored on the SAME resampled units (one count matrix), and the
    p-value is the two-sided bootstrap p-value of a zero difference."""
    layouts = {(m.columns.shape[1], tuple(m.layout)) for m in metrics}
    if len(layouts) > 1:  # e.g. one model lacks an ImageNet-C part: its columns mean other groups
        raise IncomparableLayouts(f"{metrics[0].metric}: the models' values average different parts "
                                  f"({'; '.join(sorted(','.join(map(str, lay)) or str(k) for k, lay in layouts))})")
    ids, Us = align_units(metrics)
    n = len(ids)
    if n == 0 or len(models) < 2:
        return []
    k = Us[0].shape[1]
    rest = metrics[0].rests_on
    if rest is not None:  # n = shared units at least one model's metric rests on (e.g. a cue decision)
        n = int(np.any([U[:, rest] > 0 for U in Us], axis=0).sum())
    points = [float(_finish(m, U.sum(axis=0))[0]) for m, U in zip(metrics, Us)]
    pairs = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))]
    out = []
    if metrics[0].test == "mcnemar":
        for i, j in pairs:
            a, b = Us[i][:, 0] > 0.5, Us[j][:, 0] > 0.5
            out.append(PairTest(models[i], models[j], points[i], points[j], points[i] - points[j],
                                math.nan, math.nan, mcnemar_exact(a, b), n, "mcnemar",
                                n01=int((a & ~b).sum()), n10=int((~a & b).sum())))
    else:
        S = replicate_column_sums(np.hstack(Us), n_boot, seed)
        reps = [_finish(m, S[:, q * k:(q + 1) * k]) for q, m in enumerate(metrics)]
        for i, j in pairs:
            d = reps[i] - reps[j]
            lo, hi = percentile_interval(d)  # always the 95% CI; alpha only sets the verdicts
            out.append(PairTest(models[i], models[j], points[i], points[j], points[i] - points[j], lo, hi,
                                bootstrap_p(d), n, "bootstrap"))
    for t, ph in zip(out, holm([t.p for t in out])):
        t.p_holm = float(ph)
    return out


NO_DIFF = "no significant difference"


def verdict(t: PairTest, alpha: float, higher_is_better: bool | None) -> str:
    """'a > b' when a is significantly better than b, 'b > a' for the converse, else no difference."""
    if higher_is_better is None or not (math.isfinite(t.diff) and math.isfinite(t.p_holm)) \
            or t.p_holm >= alpha or t.diff == 0:
        return NO_DIFF
    return f"{t.a} > {t.b}" if (t.diff > 0) == higher_is_better else f"{t.b} > {t.a}"


# --- common finishes ----------------------------------------------------------------------------

def mean_finish(S: np.ndarray) -> np.ndarray:
    """Column 0 / column 1: a (weighted) mean with its count (or weight) column."""
    return S[:, 0] / S[:, 1]


def ratio_finish(S: np.ndarray) -> np.ndarray:
    """Column 0 / column 1 when column 1 > 0, else NaN (shape decisions / cue decisions)."""
    return np.where(S[:, 1] > 0, S[:, 0] / np.where(S[:, 1] > 0, S[:, 1], 1.0), np.nan)


def mean_metric(dataset: str, metric: str, values: np.ndarray, units: Sequence[str], *,
                weights: np.ndarray | None = None, higher_is_better: bool | None = True, unit: str = "fraction",
                test: str | None = None, description: str = "") -> Metric:
    """A mean of per-row values (weighted when `weights` is given: sum(w v) / sum(w)).

    0/1 values with one row per unit and no weights get McNemar's test."""
    v = np.asarray(values, np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, np.float64)
    if test is None:
        binary = bool(np.isin(v, (0.0, 1.0)).all())
        test = "mcnemar" if binary and weights is None and len(set(units)) == v.size and unit == "fraction" \
            else "bootstrap"
    return Metric(dataset, metric, np.stack([v * w, w], axis=1), list(units), mean_finish,
                  higher_is_better, unit, test=test, description=description)


class GroupedMeans:
    """Per-sample declaration of statistics of several (weighted) group means, summed per unit on the fly.

    Each group g (an ImageNet-C part or corruption, a robustness variant ...) gets columns
    [sum w*v, sum w]; rows of one unit (an image seen in 75 ImageNet-C parts) land on one row, so the
    matrix stays [n_images, 2G] however many parts there are, and the unit is resampled as one.
    """

    def __init__(self, groups: Sequence[str]):
        self.groups = list(groups)
        self.index: dict[str, int] = {}
        self._adds: list[tuple[np.ndarray, int, np.ndarray, float]] = []

    def add(self, group: str, values: np.ndarray, units: Sequence[str], weight: float = 1.0) -> None:
        g = self.groups.index(group)
        idx = np.fromiter((self.index.setdefault(u, len(self.index)) for u in units), np.int64, count=len(units))
        self._adds.append((idx, g, np.asarray(values, np.float64), float(weight)))

    def _columns(self) -> np.ndarray:
        """The [n_units, 2G] matrix, built once and shared by every metric of this builder (75 ImageNet-C
        parts x 50k images: one 60 MB array per model, not one per declared metric)."""
        if getattr(self, "_V", None) is None or self._V.shape[0] != len(self.index) or self._built != len(self._adds):
            V = np.zeros((len(self.index), 2 * len(self.groups)))
            for idx, g, vals, w in self._adds:
                np.add.at(V[:, 2 * g], idx, w * vals)
                np.add.at(V[:, 2 * g + 1], idx, w)
            self._V, self._built = V, len(self._adds)
        return self._V

    def metric(self, dataset: str, metric: str, combine: Callable[[np.ndarray], np.ndarray], **kw) -> Metric:
        """combine(group means [b, G]) -> values [b]; e.g. the mean over groups, or mCE."""
        V = self._columns()

        def finish(S: np.ndarray) -> np.ndarray:
            return combine(S[:, 0::2] / S[:, 1::2])

        kw.setdefault("layout", tuple(self.groups))
        return Metric(dataset, metric, V, list(self.index), finish, **kw)
