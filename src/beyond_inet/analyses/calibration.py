"""Calibration: ECE as the paper computes it, plus MCE, adaptive ECE, Brier, NLL, temperature scaling.

Paper protocol (paper-spec §2.3, ``ECELoss`` of Jonathan-Pearce/calibration_library): confidence =
max softmax; 15 equal-width bins on [0, 1]; a sample is in bin b when ``lower < conf <= upper``;
``ECE = sum_b (n_b / N) |mean_conf_b - acc_b|``. On ImageNet-R the logits are cut to the 200 R classes
*before* the softmax and labels are mapped to 0..199.

Beyond the paper (same bins unless said otherwise):
  mce              max over non-empty bins of |mean_conf_b - acc_b|
  ece_adaptive     ECE over 15 equal-mass bins: samples sorted by confidence, rank r in bin
                   floor(r * 15 / N) (equals netcal ``ECE(equal_intervals=False)`` when no confidence
                   sits on a quantile edge)
  overconfidence   sum_b (n_b / N)(mean_conf_b - acc_b) = mean(conf) - accuracy; > 0 overconfident
  brier            mean over samples of sum_k (p_k - onehot_k)^2 (multiclass, not halved)
  nll              mean cross-entropy of the true class
  ece_temp_scaled  ECE on a held-out half after one temperature T fitted by NLL on the other half
                   (seeded permutation); ``temperature`` is that T

Declared per-sample metrics (scored, CI'd and paired-tested by the shared code): ece, mce,
overconfidence (columns: per-bin one-hot, confidence and correctness; finish = ``_ece_from_sums``), top1,
brier, nll (means) and ece_temp_scaled (ECE columns on the evaluation half). ece_adaptive (bins move
with the resample) and temperature (a fit) are plain rows with their own CIs as below.

Confidence intervals: percentile bootstrap over images (ctx.n_boot, ctx.seed). All metrics of one
dataset come from one pass over the resamples: each replicate is reduced to per-sample counts
(``np.bincount`` on the [b, n] index matrix) and every sum-type statistic is ``counts @ V``; the
equal-mass bins of a resample are found from cumulative counts, so no replicate is ever sorted.
The temperature CI uses one Newton step from the fitted T on each resampled fit half (the NLL is
convex in 1/T, so one step from the full-sample optimum is accurate to second order); the
``ece_temp_scaled`` CI resamples the evaluation half at the fitted T.
"""
from __future__ import annotations

import math

import numpy as np

from beyond_inet.analyses.base import (
    LOGITS,
    Analysis,
    AnalysisResult,
    Context,
    Fetch,
    Metric,
    Request,
    Row,
    Skip,
    register_analysis,
)
from beyond_inet.analyses.scoring import scored_outputs
from beyond_inet.analyses.stats import (  # noqa: F401 - re-exported for callers of this module
    ALPHA,
    mean_metric,
    jsonable,
    percentile_ci,
    replicate_indices,
    resample_counts,
    resampled_sums,
)
from beyond_inet.data import catalog, labelspaces

N_BINS = 15
DATASETS = ("imagenet-val", "imagenet-r")
_ROW_CHUNK = 4096  # rows of logits processed at once (bounds memory for 50k x 1000 logits)


# ----------------------------------------------------------------------------------------------
# Bootstrap plumbing shared by the analyses of this family
# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# Per-sample quantities from logits
# ----------------------------------------------------------------------------------------------


def softmax_stats(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Per-sample confidence, prediction, correctness, Brier term and NLL of softmax(logits / T).

    Computed in float64, in row chunks, so 50k x 1000 logits never need a full float64 copy.
    """
    z_all = np.asarray(logits)
    y_all = np.asarray(labels, np.int64)
    n = z_all.shape[0]
    conf = np.empty(n)
    pred = np.empty(n, np.int64)
    brier = np.empty(n)
    nll = np.empty(n)
    for s in range(0, n, _ROW_CHUNK):
        z = z_all[s:s + _ROW_CHUNK].astype(np.float64) / temperature
        y = y_all[s:s + _ROW_CHUNK]
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        tot = e.sum(axis=1)
        p = e / tot[:, None]
        r = np.arange(z.shape[0])
        py = p[r, y]
        pred[s:s + z.shape[0]] = p.argmax(axis=1)
        conf[s:s + z.shape[0]] = p.max(axis=1)
        brier[s:s + z.shape[0]] = (p * p).sum(axis=1) - 2.0 * py + 1.0
        nll[s:s + z.shape[0]] = np.log(tot) + m[:, 0] - z[r, y]
    return {"conf": conf, "pred": pred, "correct": (pred == y_all).astype(np.float64), "brier": brier, "nll": nll}


# ----------------------------------------------------------------------------------------------
# Equal-width bins (paper ECE, MCE, over/under-confidence)
# ----------------------------------------------------------------------------------------------
def bin_edges(n_bins: int = N_BINS) -> np.ndarray:
    """Bin boundaries 0, 1/B, ..., 1 (``torch.linspace(0, 1, B + 1)`` in float64)."""
    return np.linspace(0.0, 1.0, n_bins + 1)


def bin_index(conf: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence with (lower, upper] semantics: first i with edges[i] >= conf, minus 1.

    A confidence of exactly 0 (impossible for a softmax maximum) goes to bin 0.
    """
    return np.clip(np.searchsorted(bin_edges(n_bins), conf, side="left") - 1, 0, n_bins - 1)


def binned(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, sum of confidence, sum of correct) per equal-width bin."""
    b = bin_index(conf, n_bins)
    return (np.bincount(b, minlength=n_bins).astype(np.float64),
            np.bincount(b, weights=conf, minlength=n_bins),
            np.bincount(b, weights=np.asarray(correct, np.float64), minlength=n_bins))


def _ece_from_sums(cnt: np.ndarray, csum: np.ndarray, asum: np.ndarray) -> dict[str, np.ndarray]:
    """ECE, MCE and signed (over-confidence) score from per-bin sums; works on [..., B] arrays."""
    total = cnt.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = (csum - asum) / cnt  # mean_conf_b - acc_b, NaN in empty bins
        w = cnt / total[..., None]
    gap0 = np.where(cnt > 0, gap, 0.0)
    ece = (w * np.abs(gap0)).sum(axis=-1)
    signed = (w * gap0).sum(axis=-1)
    mce = np.abs(gap0).max(axis=-1)
    return {"ece": ece, "mce": mce, "overconfidence": signed}


def ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error, the paper's ECELoss."""
    return float(_ece_from_sums(*binned(conf, correct, n_bins))["ece"])


def mce(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Maximum calibration error over non-empty equal-width bins."""
    return float(_ece_from_sums(*binned(conf, correct, n_bins))["mce"])


def overconfidence(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Signed calibration gap sum_b (n_b/N)(mean_conf_b - acc_b): > 0 over-, < 0 under-confident."""
    return float(_ece_from_sums(*binned(conf, correct, n_bins))["overconfidence"])


# ----------------------------------------------------------------------------------------------
# Equal-mass bins (adaptive ECE)
# ----------------------------------------------------------------------------------------------
def _mass_bounds(total: int, n_bins: int) -> np.ndarray:
    """Rank boundaries L_k = ceil(k * total / B): rank r lies in bin floor(r * B / total)."""
    k = np.arange(n_bins + 1, dtype=np.int64)
    return -((-k * total) // n_bins)


def equal_mass_sums(counts: np.ndarray, values: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin (count, value sums) of equal-mass bins for multisets given as counts over sorted samples.

    counts: [b, n] multiplicities of the n samples, which are sorted by confidence ascending.
    values: [n, k] per-sample values to sum (e.g. confidence, correct).
    Copies of one sample may straddle a bin boundary; they are split between the bins, exactly as
    sorting the expanded multiset and cutting it at ranks L_k would.
    Returns bin counts [b, B] and bin sums [b, B, k].
    """
    c = np.asarray(counts, np.int64)
    v = np.asarray(values, np.float64)
    b, n = c.shape
    cum = np.cumsum(c, axis=1)  # [b, n]
    total = int(cum[0, -1])
    assert np.all(cum[:, -1] == total), "every resample must have the same size"
    bounds = _mass_bounds(total, n_bins)  # [B + 1]
    inner = bounds[1:-1]
    # Flattened searchsorted over monotone rows: offset row r by r * (total + 1) (in place, then undone).
    offs = (np.arange(b, dtype=np.int64) * (total + 1))[:, None]
    cum += offs
    g = np.searchsorted(cum.ravel(), (inner[None, :] + offs).ravel(), side="right").reshape(b, -1)
    cum -= offs
    j = g - (np.arange(b, dtype=np.int64) * n)[:, None]  # sample holding rank L (cum_{j-1} <= L < cum_j)
    np.minimum(j, n - 1, out=j)  # L == total (only when total < B): the last sample, S(L) is then the total
    rows = np.arange(b)[:, None]
    # Value sums over [0, j_1), [j_1, j_2), ..., [j_{B-1}, n): one reduceat pass per value column.
    k = v.shape[1]
    cf = c.astype(np.float64)
    starts = np.concatenate([np.zeros((b, 1), np.int64), j], axis=1) + (np.arange(b, dtype=np.int64) * n)[:, None]
    flat_starts = starts.ravel()
    seg = np.stack([np.add.reduceat((cf * v[:, q]).ravel(), flat_starts) for q in range(k)], axis=1)
    seg = seg.reshape(b, n_bins, k)
    empty = np.zeros((b, n_bins), bool)
    empty[:, :-1] = starts[:, 1:] == starts[:, :-1]  # reduceat returns the start element for empty segments
    seg[empty] = 0.0
    prefix = np.cumsum(seg, axis=1)  # prefix[:, m] = sum over samples before starts[m + 1]
    c_j = c[rows, j]
    before = cum[rows, j] - c_j  # copies ranked before sample j
    sums = np.empty((b, n_bins + 1, k))
    sums[:, 0] = 0.0
    sums[:, -1] = prefix[:, -1]
    sums[:, 1:-1] = prefix[:, :-1] + (inner[None, :] - before)[:, :, None] * v[j]
    bin_counts = np.diff(bounds).astype(np.float64)[None, :].repeat(b, axis=0)
    return bin_counts, np.diff(sums, axis=1)


def adaptive_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE over equal-mass bins (ties in confidence broken by input order)."""
    order = np.argsort(conf, kind="stable")
    vals = np.stack([np.asarray(conf, np.float64)[order], np.asarray(correct, np.float64)[order]], axis=1)
    cnt, sums = equal_mass_sums(np.ones((1, len(order)), np.int64), vals, n_bins)
    return float(_ece_from_sums(cnt, sums[..., 0], sums[..., 1])["ece"][0])


# ----------------------------------------------------------------------------------------------
# Temperature scaling
# ----------------------------------------------------------------------------------------------
def _temp_derivatives(logits: np.ndarray, labels: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample NLL, d/ds and d2/ds2 of NLL(softmax(s * z)) at inverse temperature s.

    nll = lse(s z) - s z_y;  d/ds = E_p[z] - z_y;  d2/ds2 = Var_p[z] >= 0 (so NLL is convex in s).
    """
    n = logits.shape[0]
    f, g, h = np.empty(n), np.empty(n), np.empty(n)
    y_all = np.asarray(labels, np.int64)
    for a in range(0, n, _ROW_CHUNK):
        z = np.asarray(logits[a:a + _ROW_CHUNK], np.float64)
        y = y_all[a:a + _ROW_CHUNK]
        u = s * z
        m = u.max(axis=1, keepdims=True)
        e = np.exp(np.subtract(u, m, out=u), out=u)  # unnormalised softmax, in place
        tot = e.sum(axis=1)
        ez_un = np.multiply(e, z, out=e)
        ez = ez_un.sum(axis=1) / tot
        ez2 = np.einsum("ij,ij->i", ez_un, z) / tot
        zy = z[np.arange(z.shape[0]), y]
        f[a:a + z.shape[0]] = np.log(tot) + m[:, 0] - s * zy
        g[a:a + z.shape[0]] = ez - zy
        h[a:a + z.shape[0]] = np.maximum(ez2 - ez * ez, 0.0)
    return f, g, h


def fit_temperature(logits: np.ndarray, labels: np.ndarray, t_min: float = 1e-2, t_max: float = 1e2,
                    tol: float = 1e-10, max_iter: int = 100) -> float:
    """Temperature T minimising the mean NLL of softmax(logits / T), T within [t_min, t_max]."""
    return _fit_temperature(logits, labels, t_min, t_max, tol, max_iter)[0]


def _fit_temperature(logits: np.ndarray, labels: np.ndarray, t_min: float = 1e-2, t_max: float = 1e2,
                     tol: float = 1e-10, max_iter: int = 100) -> tuple[float, np.ndarray, np.ndarray]:
    """(T, per-sample d/ds, per-sample d2/ds2 at the last iterate) of the NLL fit.

    Newton on s = 1/T, where the NLL is convex (its derivative is increasing in s), kept inside a
    bracket that the derivative's sign shrinks; a step leaving the bracket is replaced by bisection.
    """
    lo, hi = 1.0 / t_max, 1.0 / t_min
    s = min(max(1.0, lo), hi)
    g = h = np.zeros(0)
    for _ in range(max_iter):
        _, g, h = _temp_derivatives(logits, labels, s)
        gm, hm = float(g.mean()), float(h.mean())
        if gm == 0.0:
            break
        if gm > 0:
            hi = s
        else:
            lo = s
        s_new = s - gm / hm if hm > 0 else math.nan
        if abs(s_new - s) <= tol * s:  # converged (checked before the bracket: s may sit on its edge)
            s = s_new
            break
        if not (lo <= s_new <= hi):
            s_new = 0.5 * (lo + hi)
        if hi - lo <= tol * s:
            s = s_new
            break
        s = s_new
    return float(1.0 / s), g, h


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split into (fit, eval) halves for temperature scaling."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


# ----------------------------------------------------------------------------------------------
# Everything for one dataset
# ----------------------------------------------------------------------------------------------
def reliability(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Reliability-diagram data: per-bin accuracy, mean confidence, count (JSON-able)."""
    cnt, csum, asum = binned(conf, correct, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = asum / cnt
        mconf = csum / cnt
    return {"edges": bin_edges(n_bins).tolist(), "accuracy": jsonable(acc), "confidence": jsonable(mconf),
            "count": cnt.astype(int).tolist(), "fraction": jsonable(cnt / max(cnt.sum(), 1.0))}


def _bootstrap_main(conf: np.ndarray, correct: np.ndarray, brier: np.ndarray, nll: np.ndarray,
                    n_bins: int, n_boot: int, seed: int) -> dict[str, tuple[float, float]]:
    """CIs of every single-pass metric, from one set of resamples."""
    order = np.argsort(conf, kind="stable")
    conf, correct, brier, nll = conf[order], correct[order], brier[order], nll[order]
    n = conf.size
    bidx = bin_index(conf, n_bins)
    r = np.arange(n)
    V = np.zeros((n, 3 * n_bins + 3))
    V[r, bidx] = 1.0
    V[r, n_bins + bidx] = conf
    V[r, 2 * n_bins + bidx] = correct
    V[:, 3 * n_bins] = correct
    V[:, 3 * n_bins + 1] = brier
    V[:, 3 * n_bins + 2] = nll
    mass_vals = np.stack([conf, correct], axis=1)
    names = ("ece", "mce", "overconfidence", "top1", "brier", "nll", "ece_adaptive")
    reps = []
    for c, S in resampled_sums(V, n_boot, seed):
        S = S.astype(np.float64)
        eq = _ece_from_sums(S[:, :n_bins], S[:, n_bins:2 * n_bins], S[:, 2 * n_bins:3 * n_bins])
        mcnt, msum = equal_mass_sums(c, mass_vals, n_bins)
        ada = _ece_from_sums(mcnt, msum[..., 0], msum[..., 1])["ece"]
        reps.append(np.stack([eq["ece"], eq["mce"], eq["overconfidence"], S[:, 3 * n_bins] / n,
                              S[:, 3 * n_bins + 1] / n, S[:, 3 * n_bins + 2] / n, ada], axis=1))
    lo, hi = percentile_ci(np.concatenate(reps))
    return {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(names)}


def _bootstrap_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile CI of the equal-width ECE alone (vectorised over replicates)."""
    n = conf.size
    bidx = bin_index(conf, n_bins)
    r = np.arange(n)
    V = np.zeros((n, 3 * n_bins))
    V[r, bidx] = 1.0
    V[r, n_bins + bidx] = conf
    V[r, 2 * n_bins + bidx] = correct
    reps = [_ece_from_sums(S[:, :n_bins].astype(np.float64), S[:, n_bins:2 * n_bins].astype(np.float64),
                           S[:, 2 * n_bins:].astype(np.float64))["ece"]
            for _, S in resampled_sums(V, n_boot, seed)]
    lo, hi = percentile_ci(np.concatenate(reps))
    return float(lo[0]), float(hi[0])


def ece_bootstrap(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS, n_boot: int = 1000,
                  seed: int = 0) -> tuple[float, float, float]:
    """(ECE, ci_low, ci_high) with a vectorised percentile bootstrap."""
    lo, hi = _bootstrap_ece(np.asarray(conf, np.float64), np.asarray(correct, np.float64), n_bins, n_boot, seed)
    return ece(conf, correct, n_bins), lo, hi


def _temperature_ci(g: np.ndarray, h: np.ndarray, s_hat: float, n_boot: int, seed: int) -> tuple[float, float]:
    """CI of T from one Newton step in s = 1/T on each resampled fit half."""
    reps = []
    for _, S in resampled_sums(np.stack([g, h], axis=1), n_boot, seed):
        S = S.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            s_b = s_hat - S[:, 0] / S[:, 1]
            reps.append(np.where(s_b > 0, 1.0 / s_b, np.nan))
    lo, hi = percentile_ci(np.concatenate(reps))
    return float(lo[0]), float(hi[0])


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS, n_boot: int = 1000,
                        seed: int = 0) -> tuple[dict[str, tuple[float, float, float, int]], dict]:
    """All calibration metrics of one dataset: {metric: (value, ci_low, ci_high, n)} and artifacts.

    The analysis' own path (declarations scored by the shared bootstrap), for callers with bare arrays.
    `labels` must index the columns of `logits` (already restricted for ImageNet-R) and be >= 0.
    """
    from beyond_inet.analyses.base import score_metrics

    ctx = Context(None, n_boot=n_boot, seed=seed)
    res = AnalysisResult()
    ids = [str(i) for i in range(len(labels))]
    Calibration()._declare_dataset(ctx, "", "d", ids, np.asarray(logits), np.asarray(labels, np.int64), None, res,
                                   n_bins)
    rows = score_metrics(ctx, "", Calibration.name, res.metrics) + res.rows
    return ({r.metric: (r.value, r.ci_low, r.ci_high, r.n) for r in rows},
            {k.rsplit("/", 1)[0]: v for k, v in res.artifacts.items()})


def ece_columns(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Per-sample ECE columns [n, 3B]: bin one-hot, confidence in its bin, correctness in its bin."""
    conf = np.asarray(conf, np.float64)
    n = conf.size
    b = bin_index(conf, n_bins)
    r = np.arange(n)
    V = np.zeros((n, 3 * n_bins))
    V[r, b] = 1.0
    V[r, n_bins + b] = conf
    V[r, 2 * n_bins + b] = np.asarray(correct, np.float64)
    return V


def ece_metric(dataset: str, metric: str, conf: np.ndarray, correct: np.ndarray, ids: list[str],
               n_bins: int = N_BINS, which: str = "ece") -> Metric:
    """ECE / MCE / over-confidence as a declared metric: a function of per-bin column sums."""
    def finish(S: np.ndarray) -> np.ndarray:
        return _ece_from_sums(S[:, :n_bins], S[:, n_bins:2 * n_bins], S[:, 2 * n_bins:])[which]

    return Metric(dataset, metric, ece_columns(conf, correct, n_bins), ids, finish,
                  higher_is_better=None if which == "overconfidence" else False, unit="calibration error",
                  description=f"{n_bins} equal-width bins, (lower, upper]")


@register_analysis
class Calibration(Analysis):
    """ECE and friends on ImageNet-val and ImageNet-R (200-class softmax)."""

    name = "calibration"
    description = ("ECE (15 equal-width bins, (lower, upper]), MCE, adaptive ECE, Brier, NLL, over-confidence "
                   "and temperature-scaled ECE on ImageNet-val and ImageNet-R (logits cut to the 200 R classes).")

    def requests(self, ctx: Context) -> list[Request]:
        return [Request(ds, "standard", frozenset({LOGITS}))
                for ds in ctx.option_list("calibration_datasets", DATASETS)]

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        res = AnalysisResult()
        for ds in ctx.option_list("calibration_datasets", DATASETS):
            out = fetch(Request(ds, "standard"))
            if out is None:
                res.skips.append(Skip(self.name, model, ds, f"{ds} outputs not available (dataset absent)"))
                continue
            # The dataset's one label rule (analyses.scoring, as accuracy and --log-samples use it): a class
            # subset (ImageNet-A/R, a user's subset folder) has its logits cut to its classes before the softmax.
            scored = scored_outputs(ds, out)
            o, logits, labels = scored.outputs, np.asarray(scored.logits), np.asarray(scored.labels, np.int64)
            if scored.classes is not None and catalog.user_dataset(ds) is not None:
                res.rows.append(Row(model, ds, self.name, "n_classes", float(scored.classes.size), n=len(labels)))
            # multi-labels decide "correct"; NLL and Brier need the one label, so images without one are left out
            keep = labels >= 0
            truth = labelspaces.truth_sets(o.labels, o.multilabels)[keep] if o.multilabels is not None else None
            logits, labels = logits[keep], labels[keep]
            ids = [i for i, k in zip(o.ids, keep) if k]
            left_out = len(out.ids) - len(ids)
            if left_out:
                res.skips.append(Skip(self.name, model, ds, f"{left_out} images without a label "
                                                            f"in the evaluated label space were left out"))
            if labels.size == 0:
                res.skips.append(Skip(self.name, model, ds, "no labelled images"))
                continue
            self._declare_dataset(ctx, model, ds, ids, logits, labels, truth, res)
        return res

    def _declare_dataset(self, ctx: Context, model: str, ds: str, ids: list[str], logits: np.ndarray,
                         labels: np.ndarray, truth: np.ndarray | None, res: AnalysisResult,
                         n_bins: int = N_BINS) -> None:
        st = softmax_stats(logits, labels)
        conf, correct = st["conf"], st["correct"]
        if truth is not None:
            correct = labelspaces.in_truth(np.asarray(logits).argmax(axis=1), truth)
        n = conf.size
        for which in ("ece", "mce", "overconfidence"):
            res.metrics.append(ece_metric(ds, which, conf, correct, ids, n_bins, which))
        res.metrics.append(mean_metric(ds, "top1", correct, ids))
        res.metrics.append(mean_metric(ds, "brier", st["brier"], ids, higher_is_better=False, unit="Brier score"))
        res.metrics.append(mean_metric(ds, "nll", st["nll"], ids, higher_is_better=False, unit="nats"))
        cis = _bootstrap_main(conf, correct, st["brier"], st["nll"], n_bins, ctx.n_boot, ctx.seed)
        res.rows.append(Row(model, ds, self.name, "ece_adaptive", adaptive_ece(conf, correct, n_bins),
                            *cis["ece_adaptive"], n))
        point_ece = float(_ece_from_sums(*binned(conf, correct, n_bins))["ece"])
        rel = {**reliability(conf, correct, n_bins), "ece": point_ece, "top1": float(correct.mean()), "n": n}
        res.artifacts[f"reliability/{ds}"] = rel
        res.artifacts[f"confidence_hist/{ds}"] = {"edges": rel["edges"], "fraction": rel["fraction"], "n": n}
        if n >= 4:
            fit, ev = split_halves(n, ctx.seed)
            t, g, h = _fit_temperature(logits[fit], labels[fit])
            t_lo, t_hi = _temperature_ci(g, h, 1.0 / t, ctx.n_boot, ctx.seed)
            st_ev = softmax_stats(logits[ev], labels[ev], temperature=t)
            res.rows.append(Row(model, ds, self.name, "temperature", t, t_lo, t_hi, int(fit.size)))
            # a temperature T > 0 leaves the argmax alone: the evaluation half's correctness is `correct`'s
            # (under the dataset's label rule, multi-labels included)
            res.metrics.append(ece_metric(ds, "ece_temp_scaled", st_ev["conf"], correct[ev],
                                          [ids[i] for i in ev], n_bins))
            res.artifacts[f"reliability_temp_scaled/{ds}"] = {
                **reliability(st_ev["conf"], correct[ev], n_bins),
                "ece": ece(st_ev["conf"], correct[ev], n_bins), "temperature": t, "n": int(ev.size)}
