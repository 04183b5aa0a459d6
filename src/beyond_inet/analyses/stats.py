"""Bootstrap confidence intervals and paired tests, vectorised over replicates.

Resampling is over images. Replicate index matrices are drawn in chunks so that 1000 replicates
on 50k samples stay within a few hundred MB and well under a second for mean-type statistics.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

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


def percentile_interval(values: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) quantiles of replicate values, non-finite replicates dropped."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a zero difference from replicate differences."""
    d = np.asarray(diffs, np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    return float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))


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
    if not np.isfinite(d).any():
        return math.nan, math.nan, math.nan
    lo, hi = percentile_interval(d, alpha)
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
    """Column-wise percentile interval of replicate values [n_boot, k]; non-finite replicates dropped
    (the convention of ``stats.bootstrap``)."""
    reps = np.asarray(reps, np.float64)
    if reps.ndim == 1:
        reps = reps[:, None]
    lo = np.full(reps.shape[1], math.nan)
    hi = np.full(reps.shape[1], math.nan)
    for j in range(reps.shape[1]):
        col = reps[:, j][np.isfinite(reps[:, j])]
        if col.size:
            lo[j], hi[j] = np.quantile(col, [alpha / 2, 1 - alpha / 2])
    return lo, hi


def jsonable(x):
    """Lists of floats with NaN -> None, so artifacts are valid JSON."""
    arr = np.asarray(x, dtype=np.float64).tolist()

    def fix(v):
        if isinstance(v, list):
            return [fix(u) for u in v]
        return None if not math.isfinite(v) else v

    return fix(arr)
