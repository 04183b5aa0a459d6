"""Layer-wise linear CKA between models (paper §2.8, the `*_1x8_cka` figures), from stored statistics.

Estimator: minibatch linear CKA with the unbiased HSIC estimator (Nguyen, Raghu & Kornblith 2021):
for layer i of model A and layer j of model B,

    CKA(i, j) = Σ_t HSIC₁(K_i^t, L_j^t) / sqrt(Σ_t HSIC₁(K_i^t, K_i^t) · Σ_t HSIC₁(L_j^t, L_j^t))

over minibatches t of the same images, where K^t is the batch's Gram matrix and HSIC₁ the unbiased
estimator of Song et al. (2012), computed as the scaled inner product of U-centred Gram matrices.
Batch statistics come from ``engine.layer_stats`` (one pass per model, stored), so a new pair costs
arithmetic only: per batch, one [L_A, b²] x [b², L_B] product.

Rows (model = A, for every ordered pair of models including A with itself): ``diag[<type>] vs <B>`` =
mean CKA over corresponding relative depths of the two models' layers of that type, with a 95%
delete-one-minibatch jackknife CI (t quantile; `jackknife_columns`), n = images; and ``batches vs <B>``
= the number of minibatches that interval resampled (n = images again). A minibatch is a random group
of the chosen images (``engine.layer_stats.batch_order``), so minibatches are exchangeable units.
Artifacts hold the full layer x layer matrices for the heatmaps.

The analysis needs a per-model step (`prepare`) that runs the statistics pass while the model is
built, then `compare` once every model has run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np

from beyond_inet.analyses.base import (Analysis, AnalysisResult, Context, Request, Row, Skip,
                                       register_analysis)
from beyond_inet.contracts import LAYER_TYPES

DEFAULT_DATASET = "imagenet-val"
DEFAULT_IMAGES = 10_000
DEFAULT_BATCH = 256
DEFAULT_LAYERS = ",".join(LAYER_TYPES)
DEFAULT_REDUCE = "flatten"
MIN_BATCH = 4  # the unbiased HSIC estimator divides by n(n-3)
MIN_CI_BATCHES = 10  # fewer minibatches give no meaningful interval: none is reported


# ------------------------------------------------------------------------------------------------
# Math (pure functions over Gram matrices)
# ------------------------------------------------------------------------------------------------
def u_center(K: np.ndarray) -> np.ndarray:
    """U-centre Gram matrices [..., n, n] (Székely & Rizzo 2014): zero diagonal, off-diagonal entries
    minus row and column means taken over n-2 and plus the grand mean over (n-1)(n-2). Then
    <Ǔ(K), Ǔ(L)> / (n(n-3)) is the unbiased HSIC estimator."""
    K = np.array(K, dtype=np.float64, copy=True)
    n = K.shape[-1]
    if n < MIN_BATCH:
        raise ValueError(f"U-centring needs at least {MIN_BATCH} samples, got {n}")
    d = np.arange(n)
    K[..., d, d] = 0.0
    means = K.sum(axis=-2) / (n - 2)
    means -= means.sum(axis=-1, keepdims=True) / (2 * (n - 1))
    K -= means[..., :, None]
    K -= means[..., None, :]
    K[..., d, d] = 0.0
    return K


def batch_hsic(Ka: np.ndarray, Kb: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unbiased HSIC of one minibatch between every layer of A ([La, n, n]) and of B ([Lb, n, n]):
    (cross [La, Lb], self_a [La], self_b [Lb]). `Kb=None` compares A with itself."""
    n = Ka.shape[-1]
    scale = 1.0 / (n * (n - 3))
    Ua = u_center(Ka).reshape(Ka.shape[0], -1)
    Ub = Ua if Kb is None else u_center(Kb).reshape(Kb.shape[0], -1)
    self_a = np.einsum("ij,ij->i", Ua, Ua) * scale
    self_b = self_a if Kb is None else np.einsum("ij,ij->i", Ub, Ub) * scale
    return (Ua @ Ub.T) * scale, self_a, self_b


def cka_from_sums(cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray) -> np.ndarray:
    """CKA matrix from HSIC sums (or means) over minibatches; NaN where a layer is constant."""
    den = np.sqrt(np.outer(self_a, self_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, cross / np.where(den > 0, den, 1.0), np.nan)


def minibatch_cka(pairs: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """Minibatch CKA [La, Lb] from (Ka, Kb) Gram stacks per batch (Kb None: A with itself)."""
    acc = HsicSums()
    for Ka, Kb in pairs:
        acc.add(*batch_hsic(Ka, Kb))
    return acc.cka()


@dataclass
class HsicSums:
    """Running HSIC sums over minibatches, plus the per-batch values at chosen (i, j) layer pairs
    (the per-unit columns a bootstrap needs)."""

    cross: np.ndarray | None = None
    self_a: np.ndarray | None = None
    self_b: np.ndarray | None = None
    watch: list[tuple[int, int]] = field(default_factory=list)
    per_batch: list[np.ndarray] = field(default_factory=list)

    def add(self, cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray) -> None:
        if self.cross is None:
            self.cross, self.self_a, self.self_b = cross.copy(), self_a.copy(), self_b.copy()
        else:
            self.cross += cross
            self.self_a += self_a
            self.self_b += self_b
        if self.watch:
            i, j = np.array(self.watch).T
            self.per_batch.append(np.concatenate([cross[i, j], self_a[i], self_b[j]]))

    def cka(self) -> np.ndarray:
        return cka_from_sums(self.cross, self.self_a, self.self_b)


def depth_pairs(na: int, nb: int) -> list[tuple[int, int]]:
    """Layer pairs at corresponding relative depths: min(na, nb) evenly spaced depths q in [0, 1],
    layer round(q·(n-1)) of each model."""
    g = min(na, nb)
    if g == 0:
        return []
    q = np.linspace(0.0, 1.0, g) if g > 1 else np.zeros(1)
    return [(int(round(x * (na - 1))), int(round(x * (nb - 1)))) for x in q]


def diagonal_columns(per_batch: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Per-unit columns V[T, 3k] of the diagonal summary for the watched pairs `sel` (indices into
    the watch list): cross HSIC, self HSIC of A, self HSIC of B, per batch."""
    g = per_batch.shape[1] // 3
    return np.concatenate([per_batch[:, sel], per_batch[:, g + sel], per_batch[:, 2 * g + sel]], axis=1)


def diagonal_finish(sums: np.ndarray) -> float:
    """Mean CKA over the pairs from the column sums (or means) of `diagonal_columns`."""
    k = sums.shape[-1] // 3
    c, a, b = sums[..., :k], sums[..., k:2 * k], sums[..., 2 * k:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(c / np.sqrt(a * b), axis=-1)


def jackknife_columns(V: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """`level` CI of `diagonal_finish` from the delete-one-minibatch jackknife: estimate ± t_{T-1} · SE_jack
    over the T units (rows of V).

    Why not the percentile bootstrap used elsewhere: with the 10-100 minibatches a CKA run has, it covered
    a known population CKA 88.7% (10 batches) to 94.6% (100) of the time (a ratio of sums; the bootstrap
    distribution is too narrow for few units); the jackknife with a t quantile 93.2% to 95.2%
    (benchmarks/bench_cka_coverage.py, tests/analyses/test_cka_coverage.py, docs/cka.md)."""
    from scipy.stats import t as student_t

    T = V.shape[0]
    if T < 2:
        return math.nan, math.nan
    total = V.sum(0)
    est = float(diagonal_finish(total))
    loo = diagonal_finish(total[None, :] - V)  # the estimate without each minibatch in turn
    if not (math.isfinite(est) and np.all(np.isfinite(loo))):
        return math.nan, math.nan
    se = math.sqrt((T - 1) / T * float(np.sum((loo - loo.mean()) ** 2)))
    q = float(student_t.ppf(0.5 + level / 2, T - 1))
    return est - q * se, est + q * se


# ------------------------------------------------------------------------------------------------
# Pairing two models' stored statistics
# ------------------------------------------------------------------------------------------------
class BatchMismatch(ValueError):
    """The two models' statistics were not taken on the same minibatches."""


def paired_batches(a, b) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(Ka, Kb) per shared minibatch of two `LayerStats` (Kb None when a is b); batches under
    `MIN_BATCH` images are passed over. Raises `BatchMismatch` if the batches hold different images."""
    if a is b or a.root == b.root:
        for ids, K in a.batches():
            if len(ids) >= MIN_BATCH:
                yield K, None
        return
    it_b = b.batches()
    for ids_a, Ka in a.batches():
        try:
            ids_b, Kb = next(it_b)
        except StopIteration:
            raise BatchMismatch("the second model has fewer minibatches") from None
        if ids_a != ids_b:
            raise BatchMismatch(f"minibatches differ (first ids {ids_a[:1]} vs {ids_b[:1]})")
        if len(ids_a) >= MIN_BATCH:
            yield Ka, Kb
    if next(it_b, None) is not None:
        raise BatchMismatch("the second model has more minibatches")


def type_groups(types: list[str]) -> dict[str, list[int]]:
    """Layer indices per panel: "all" plus each layer type present (in LAYER_TYPES order)."""
    groups = {"all": list(range(len(types)))}
    for t in LAYER_TYPES:
        idx = [i for i, x in enumerate(types) if x == t]
        if idx:
            groups[t] = idx
    return groups


def compare_pair(a, b, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Everything the analysis reports about one pair of `LayerStats`: the full layer x layer
    matrix, and per panel the diagonal summary with its CI and per-depth values. `n_boot` <= 0 withholds
    the interval (as ``--n-boot 0`` does elsewhere); the jackknife needs no replicates, so `seed` is unused."""
    ga, gb = type_groups(a.types), type_groups(b.types)
    panels = [p for p in ga if p in gb]
    watch: list[tuple[int, int]] = []
    spans: dict[str, tuple[int, int]] = {}
    for p in panels:
        pairs = [(ga[p][i], gb[p][j]) for i, j in depth_pairs(len(ga[p]), len(gb[p]))]
        spans[p] = (len(watch), len(watch) + len(pairs))
        watch += pairs
    acc = HsicSums(watch=watch)
    n_images, n_batches = 0, 0
    for Ka, Kb in paired_batches(a, b):
        acc.add(*batch_hsic(Ka, Kb))
        n_images += Ka.shape[-1]
        n_batches += 1
    if acc.cross is None:
        raise BatchMismatch(f"no minibatch of at least {MIN_BATCH} images")
    full = acc.cka()
    per_batch = np.stack(acc.per_batch)
    summary = {}
    for p in panels:
        s, e = spans[p]
        sel = np.arange(s, e)
        V = diagonal_columns(per_batch, sel)
        value = float(diagonal_finish(V.sum(0)))
        lo, hi = jackknife_columns(V) if n_batches >= MIN_CI_BATCHES and n_boot > 0 else (math.nan, math.nan)
        summary[p] = {"value": value, "ci": [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi],
                      "pairs": [list(w) for w in watch[s:e]],
                      "diagonal": [float(full[i, j]) for i, j in watch[s:e]]}
    return {"cka": full, "summary": summary, "n_images": n_images, "n_batches": n_batches}


# ------------------------------------------------------------------------------------------------
# The analysis
# ------------------------------------------------------------------------------------------------
def parse_options(ctx: Context):
    """(dataset, StatsConfig) from the `cka_*` options; ValueError with the fix on bad values."""
    from beyond_inet.engine.layer_stats import StatsConfig

    try:
        n = int(ctx.options.get("cka_images", DEFAULT_IMAGES))
        b = int(ctx.options.get("cka_batch_size", DEFAULT_BATCH))
    except (TypeError, ValueError):
        raise ValueError("cka_images and cka_batch_size must be whole numbers") from None
    types = tuple(ctx.option_list("cka_layers", DEFAULT_LAYERS))
    reduce = str(ctx.options.get("cka_reduce", DEFAULT_REDUCE))
    return str(ctx.options.get("cka_dataset", DEFAULT_DATASET)), StatsConfig(n_images=n, batch_size=b, types=types,
                                                                             reduce=reduce)


@register_analysis
class CKA(Analysis):
    name = "cka"
    description = "layer-wise linear CKA between models (minibatch, unbiased HSIC)"
    compares_models: ClassVar[bool] = True

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}  # model spec -> LayerStats, filled by `prepare`
        self.prepare_skips: dict[str, Skip] = {}

    def requests(self, ctx: Context) -> list[Request]:
        """None: the statistics come from this analysis' own pass (`prepare`). Called before any work,
        so bad `cka_*` options stop the run here, with one line."""
        from beyond_inet.errors import UserError

        try:
            parse_options(ctx)
        except ValueError as e:
            raise UserError(f"bad cka option: {e}") from None
        return []

    def prepare_datasets(self, ctx: Context) -> list[str]:
        return [str(ctx.options.get("cka_dataset", DEFAULT_DATASET))]

    def prepare(self, ctx: Context, model, env) -> list[Skip]:
        """Run (or find stored) layer statistics of a built `model`; see ``engine.layer_stats``."""
        import torch

        from beyond_inet.engine.layer_stats import compute_layer_stats

        dataset, cfg = parse_options(ctx)  # validated by `requests`
        got = env.datasets.get(dataset)
        if got is None:
            return [self._skip(model.spec, dataset, env.datasets.missing.get(dataset, "dataset not available"))]
        ds, positions, fingerprint = got
        try:
            stats = compute_layer_stats(model, ds, positions, dataset, fingerprint, Path(env.out) / "layer-stats",
                                        cfg, device=env.device, num_workers=env.num_workers, amp=env.amp,
                                        numerics=env.numerics, progress=env.progress,
                                        decoding=env.datasets.decoding, damaged=env.damaged)
        except ValueError as e:
            return [self._skip(model.spec, dataset, str(e))]
        except torch.cuda.OutOfMemoryError:  # the chunks already written stay: a rerun resumes
            torch.cuda.empty_cache()
            return [self._skip(model.spec, dataset, f"out of memory in the layer-statistics pass at batch size "
                                                    f"{cfg.batch_size}; lower --option cka_batch_size")]
        if not stats.complete():
            return [self._skip(model.spec, dataset, "no readable image for the layer statistics")]
        self.stats[model.spec] = stats
        return []

    def _skip(self, model: str, dataset: str, reason: str) -> Skip:
        s = Skip(self.name, model, dataset, reason)
        self.prepare_skips[model] = s
        return s

    def compute(self, ctx: Context, model: str, fetch) -> AnalysisResult:
        return AnalysisResult()  # cross-model only: see `compare`

    def compare(self, ctx: Context, models: list[str], fetch=None) -> AnalysisResult:
        res = AnalysisResult()
        dataset = str(ctx.options.get("cka_dataset", DEFAULT_DATASET))
        have = [m for m in models if m in self.stats]
        res.skips += [Skip(self.name, m, dataset, "no layer statistics for this model")
                      for m in models if m not in self.stats and m not in self.prepare_skips]
        matrices = []
        for x, a in enumerate(have):
            for b in have[x:]:
                sa, sb = self.stats[a], self.stats[b]
                try:
                    out = compare_pair(sa, sb, ctx.n_boot, ctx.seed)
                except BatchMismatch as e:
                    res.skips.append(Skip(self.name, "*", dataset, f"{a} vs {b}: statistics not comparable: {e}"))
                    continue
                if out["n_batches"] < MIN_CI_BATCHES:
                    res.skips.append(Skip(self.name, "*", dataset,
                                          f"{a} vs {b}: no confidence interval: {out['n_batches']} minibatches, "
                                          f"at least {MIN_CI_BATCHES} needed (raise cka_images or lower "
                                          f"cka_batch_size)"))
                for m, other in ((a, b), (b, a)) if a != b else ((a, a),):
                    for p, s in out["summary"].items():
                        lo, hi = (math.nan if v is None else v for v in s["ci"])
                        res.rows.append(Row(m, sa.meta["dataset"], self.name, f"diag[{p}] vs {other}", s["value"],
                                            lo, hi, out["n_images"]))
                    # The interval's unit is the minibatch: say how many there were, next to the images.
                    res.rows.append(Row(m, sa.meta["dataset"], self.name, f"batches vs {other}",
                                        float(out["n_batches"]), math.nan, math.nan, out["n_images"]))
                matrices.append({"a": a, "b": b, "dataset": sa.meta["dataset"], "n_images": out["n_images"],
                                 "n_batches": out["n_batches"], "batch_size": sa.meta["config"]["batch_size"],
                                 "shuffle_seed": sa.meta["config"].get("shuffle_seed"),
                                 "reduce": sa.meta["config"]["reduce"],
                                 "layers_a": sa.layers, "types_a": sa.types, "layers_b": sb.layers,
                                 "types_b": sb.types,
                                 "cka": [[None if not math.isfinite(v) else round(float(v), 5) for v in row]
                                         for row in out["cka"]],
                                 "summary": out["summary"]})
        if matrices:
            res.artifacts["matrices"] = matrices
        return res
