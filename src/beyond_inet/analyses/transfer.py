"""VTAB transfer: linear probes on frozen, L2-normalised pooled features (paper §2.5).

Data: ``vtab/<task>/<split>`` (splits ``train``, ``test`` and ``val`` where hosted; ``ctx.parts("vtab")`` lists
``<task>/<split>``), view ``standard``; features = ``Outputs.features``, L2-normalised per sample.

Two probes (option ``probe``):

``lbfgs`` (default)  multinomial logistic regression fitted full-batch with L-BFGS in torch (on the GPU when
    option ``device`` is ``cuda``). Objective: sum of cross-entropies + ||W||^2 / (2C) (bias unpenalised) —
    scikit-learn's convention, so C keeps its meaning when the refit set grows. Features are centred and
    isotropically rescaled with the fitting split's statistics (a reparametrisation: the same family of L2
    solutions, better conditioned). C is chosen on the validation split over decades 1e-4..1e4, walked from
    strong to weak regularisation with warm starts (stopping after two decades without improvement), then the
    two half-decade neighbours of the best; the probe is refitted on train+val with the chosen C.

``paper``  CLIP_benchmark's ``linear_probe.py`` protocol, re-implemented: one ``nn.Linear``, AdamW, cosine LR
    without warmup stepped per batch, lr 0.1, 10 epochs, batch 64, seed 0, full-precision (CLIP_benchmark uses
    AMP). Weight decay is searched over ``logspace(-6, 2, 97)``: 7 initial points (indices 0, 16, ..., 96), then
    a bisection around the peak with spans 8, 4, 2, 1 (``find_peak``: the first strictly better validation
    accuracy wins, starting from index 0 at accuracy 0); then retrained on train+val.

Validation split: the hosted ``val`` when present, else a seeded 20% of train (option ``probe_val_fraction``).

Rows: ``top1`` per task (dataset ``vtab/<task>``, CI by bootstrap over test images), ``val_top1`` (the chosen
setting's validation accuracy), the chosen hyper-parameter as ``lbfgs_c`` or ``paper_weight_decay`` (which one
is present says the mode), and ``top1_avg`` (dataset ``vtab``): the plain mean over tasks, declared over every
task's test images (one unit each). top1 and top1_avg are declared per-sample metrics (scored by the shared
code); the paired tests skip them (declaring retrains the probes). Artifact ``transfer/probe`` records mode, per-task results and timings.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import (FEATURES, Analysis, AnalysisResult, Context, Fetch, Request, Row, Skip,
                                       register_analysis)

MODES = ("lbfgs", "paper")
PAPER_WD_GRID = np.logspace(-6, 2, num=97)
PAPER_WD_INIT = np.logspace(-6, 2, num=7)
LBFGS_DECADES = tuple(float(10.0 ** k) for k in range(-4, 5))

if TYPE_CHECKING:  # torch loads when a probe runs, not when the analysis is registered (a CLI error stays fast)
    import torch


@dataclass
class ProbeResult:
    """What one probe run produced: test predictions and how the hyper-parameter was chosen."""

    test_pred: np.ndarray
    mode: str
    hyper_name: str
    hyper: float
    val_acc: float
    search: dict[float, float] = field(default_factory=dict)
    seconds: float = 0.0


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def split_train_val(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of range(n): (train positions, val positions), val has round(fraction*n) items."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    n_val = min(max(n_val, 1), n - 1) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def resolve_device(name: str | None) -> torch.device:
    import torch
    if name and str(name).startswith("cuda") and torch.cuda.is_available():
        return torch.device(name)
    return torch.device("cpu")


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(pred) == np.asarray(y)).mean()) if len(y) else math.nan


# --- L-BFGS multinomial logistic regression ----------------------------------------------------------------

@contextmanager
def _cpu_threads(device: torch.device, work: float, small: float = 2e7):
    """One intra-op thread for small CPU problems: thread start-up costs more than the matmuls (and on a
    busy machine oversubscription makes small fits an order of magnitude slower)."""
    import torch
    if device.type != "cpu" or work >= small:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Standardizer:
    """Centre and isotropically rescale features (fitted on the fitting split only)."""

    mean: np.ndarray
    scale: float

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        mu = x.mean(axis=0)
        var = float(((x - mu) ** 2).sum(axis=1).mean()) / x.shape[1]
        return cls(mu.astype(np.float32), 1.0 / math.sqrt(var) if var > 0 else 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) * self.scale).astype(np.float32)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float,
               init: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = 500,
               tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise  sum_i CE(x_i W + b, y_i) + ||W||^2 / (2c)  full-batch with L-BFGS; returns (W, b).

    The objective is divided by n internally (same minimiser) so tolerances do not depend on the data size.
    """
    import torch
    n, d = x.shape
    if init is None:
        w = torch.zeros(d, n_classes, dtype=x.dtype, device=x.device)
        b = torch.zeros(n_classes, dtype=x.dtype, device=x.device)
    else:
        w, b = init[0].detach().clone(), init[1].detach().clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    lam = 1.0 / (c * n)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * lam * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _predict(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    import torch
    with torch.no_grad():
        return (x @ wb[0] + wb[1]).argmax(dim=1).cpu().numpy()


def lbfgs_probe(x_tr: np.ndarray, y_tr: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_te: np.ndarray,
                n_classes: int, device: str | torch.device = "cpu", grid: tuple[float, ...] = LBFGS_DECADES,
                refine: bool = True, patience: int = 2, max_iter: int = 500) -> ProbeResult:
    """C chosen on (x_val, y_val) with a warm-started path over `grid`, then refitted on train+val."""
    import torch
    dev = torch.device(device)
    with _cpu_threads(dev, float(len(y_tr) + len(y_val)) * x_tr.shape[1] * n_classes):
        return _lbfgs_probe(x_tr, y_tr, x_val, y_val, x_te, n_classes, dev, grid, refine, patience, max_iter)


def _lbfgs_probe(x_tr, y_tr, x_val, y_val, x_te, n_classes, dev, grid, refine, patience, max_iter) -> ProbeResult:
    import torch
    t0 = time.perf_counter()
    std = Standardizer.fit(x_tr)

    def t(a, dtype=torch.float32):
        return torch.as_tensor(a, dtype=dtype, device=dev)

    xtr, ytr, xval = t(std(x_tr)), t(y_tr, torch.long), t(std(x_val))
    search: dict[float, float] = {}
    fits: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    best_c, best_acc, since_best, prev = None, -1.0, 0, None
    for c in sorted(grid):
        prev = fit_logreg(xtr, ytr, n_classes, c, prev, max_iter)
        fits[c] = prev
        acc = _accuracy(_predict(xval, prev), y_val)
        search[c] = acc
        if acc > best_acc:
            best_c, best_acc, since_best = c, acc, 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    if refine:
        for c in (best_c / math.sqrt(10), best_c * math.sqrt(10)):
            nearest = min(fits, key=lambda k: abs(math.log(k / c)))
            wb = fit_logreg(xtr, ytr, n_classes, c, fits[nearest], max_iter)
            fits[c] = wb
            acc = _accuracy(_predict(xval, wb), y_val)
            search[c] = acc
            if acc > best_acc:
                best_c, best_acc = c, acc
    # refit on train+val with the chosen C, warm-started from its train-only solution when we have it
    x_all = np.concatenate([x_tr, x_val]) if len(y_val) else x_tr
    y_all = np.concatenate([y_tr, y_val]) if len(y_val) else y_tr
    std_all = std  # keep the train statistics: C then means the same thing as during the search
    xa, ya = t(std_all(x_all)), t(y_all, torch.long)
    init = fits.get(best_c)
    wb = fit_logreg(xa, ya, n_classes, best_c, init, max_iter)
    pred = _predict(t(std_all(x_te)), wb)
    return ProbeResult(pred, "lbfgs", "lbfgs_c", float(best_c), best_acc, dict(sorted(search.items())),
                       time.perf_counter() - t0)


# --- CLIP_benchmark protocol -----------------------------------------------------------------------------

def train_linear_adamw(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, lr: float = 0.1,
                       epochs: int = 10, batch_size: int = 64, seed: int = 0) -> torch.nn.Linear:
    """One nn.Linear trained with AdamW and a per-step cosine schedule without warmup (CLIP_benchmark ``train``)."""
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Linear(x.shape[1], n_classes)
    model = model.to(x.device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen).to(x.device)
        for i in range(steps_per_epoch):
            step = i + epoch * steps_per_epoch
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, total, lr)
            idx = perm[i * batch_size:(i + 1) * batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model


def find_peak(accuracy_of: Any, idxs: list[int]) -> int:
    """CLIP_benchmark's ``find_peak``: the first index whose accuracy strictly beats the best so far.

    The best starts at index 0 with accuracy 0, as upstream (so all-zero accuracies give index 0).
    """
    best_idx, max_acc = 0, 0.0
    for idx in idxs:
        acc = accuracy_of(idx)
        if max_acc < acc:
            best_idx, max_acc = idx, acc
    return best_idx


def paper_search_indices() -> list[int]:
    """Indices of the 7 initial points in the 97-point grid, found by value as upstream does."""
    init = PAPER_WD_INIT.tolist()
    return [i for i, v in enumerate(PAPER_WD_GRID.tolist()) if v in init]


def paper_wd_search(accuracy_of: Any, n_grid: int = len(PAPER_WD_GRID)) -> int:
    """CLIP_benchmark's weight-decay search: `find_peak` on the 7 initial points, then on
    [peak - span, peak, peak + span] (clipped to the grid) for span = 8, 4, 2, 1. Returns the grid index."""
    peak = find_peak(accuracy_of, paper_search_indices())
    span = 8
    while span > 0:
        left, right = max(peak - span, 0), min(peak + span, n_grid - 1)
        peak = find_peak(accuracy_of, [left, peak, right])
        span //= 2
    return peak


def cosine_lr(step: int, total: int, base_lr: float) -> float:
    """Cosine decay without warmup, as CLIP_benchmark's ``cosine_lr`` with warmup_length 0."""
    return 0.5 * (1 + math.cos(math.pi * step / total)) * base_lr


def paper_probe(x_tr: np.ndarray, y_tr: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, x_te: np.ndarray,
                n_classes: int, device: str | torch.device = "cpu", lr: float = 0.1, epochs: int = 10,
                batch_size: int = 64, seed: int = 0) -> ProbeResult:
    """Weight decay by CLIP_benchmark's 7-point + bisection search on val, then retrain on train+val."""
    import torch
    dev = torch.device(device)
    with _cpu_threads(dev, float(batch_size) * x_tr.shape[1] * n_classes):
        return _paper_probe(x_tr, y_tr, x_val, y_val, x_te, n_classes, dev, lr, epochs, batch_size, seed)


def _paper_probe(x_tr, y_tr, x_val, y_val, x_te, n_classes, dev, lr, epochs, batch_size, seed) -> ProbeResult:
    import torch
    t0 = time.perf_counter()
    xtr = torch.as_tensor(x_tr, dtype=torch.float32, device=dev)
    ytr = torch.as_tensor(y_tr, dtype=torch.long, device=dev)
    xval = torch.as_tensor(x_val, dtype=torch.float32, device=dev)
    wd_list = PAPER_WD_GRID.tolist()
    cache: dict[int, float] = {}

    def val_acc(idx: int) -> float:
        if idx not in cache:  # training is deterministic, so a re-run of the same wd would give the same value
            model = train_linear_adamw(xtr, ytr, n_classes, wd_list[idx], lr, epochs, batch_size, seed)
            with torch.no_grad():
                cache[idx] = _accuracy(model(xval).argmax(1).cpu().numpy(), y_val)
        return cache[idx]

    peak = paper_wd_search(val_acc, len(wd_list))
    best_wd = wd_list[peak]
    xa = torch.as_tensor(np.concatenate([x_tr, x_val]), dtype=torch.float32, device=dev)
    ya = torch.as_tensor(np.concatenate([y_tr, y_val]), dtype=torch.long, device=dev)
    model = train_linear_adamw(xa, ya, n_classes, best_wd, lr, epochs, batch_size, seed)
    with torch.no_grad():
        pred = model(torch.as_tensor(x_te, dtype=torch.float32, device=dev)).argmax(1).cpu().numpy()
    search = {wd_list[i]: a for i, a in sorted(cache.items())}
    return ProbeResult(pred, "paper", "paper_weight_decay", float(best_wd), cache.get(peak, math.nan), search,
                       time.perf_counter() - t0)


def run_probe(mode: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, x_val: np.ndarray | None = None,
              y_val: np.ndarray | None = None, n_classes: int | None = None, device: str | torch.device = "cpu",
              seed: int = 0, val_fraction: float = 0.2) -> ProbeResult:
    """L2-normalise features, make the validation split if none is hosted, and run the chosen probe."""
    if mode not in MODES:
        raise ValueError(f"unknown probe {mode!r}; use one of {MODES}")
    x_tr, x_te = l2_normalize(x_tr), l2_normalize(x_te)
    y_tr = np.asarray(y_tr, dtype=np.int64)
    if x_val is None or y_val is None or len(y_val) == 0:
        tr, va = split_train_val(len(y_tr), val_fraction, seed)
        x_tr, x_val, y_tr, y_val = x_tr[tr], x_tr[va], y_tr[tr], y_tr[va]
    else:
        x_val, y_val = l2_normalize(x_val), np.asarray(y_val, dtype=np.int64)
    if n_classes is None:
        n_classes = int(max(y_tr.max(), y_val.max())) + 1
    if mode == "paper":
        return paper_probe(x_tr, y_tr, x_val, y_val, x_te, n_classes, device, seed=seed)
    return lbfgs_probe(x_tr, y_tr, x_val, y_val, x_te, n_classes, device)


def vtab_tasks(ctx: Context) -> dict[str, set[str]]:
    """task -> the splits present, from ``ctx.parts("vtab")`` (``<task>/<split>``; task names may contain '/')."""
    tasks: dict[str, set[str]] = defaultdict(set)
    for part in ctx.parts("vtab"):
        task, _, split = part.rpartition("/")
        if task:
            tasks[task].add(split)
    return dict(sorted(tasks.items()))


@register_analysis
class Transfer(Analysis):
    name = "transfer"
    description = "VTAB linear probes on frozen L2-normalised features (L-BFGS default, CLIP_benchmark protocol opt-in)"

    def requests(self, ctx: Context) -> list[Request]:
        reqs = []
        for task, splits in vtab_tasks(ctx).items():
            if {"train", "test"} <= splits:
                reqs += [Request(f"vtab/{task}/{s}", "standard", frozenset({FEATURES}))
                         for s in ("train", "val", "test") if s in splits]
        return reqs

    # Declaring means training every probe again: the paired tests compare CIs instead.
    paired_tests: ClassVar[bool] = False

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        res = AnalysisResult()
        mode = str(ctx.options.get("probe", "lbfgs"))
        if mode not in MODES:
            res.skips.append(Skip(self.name, model, "vtab", f"unknown probe {mode!r}; use lbfgs or paper"))
            return res
        device = resolve_device(ctx.options.get("device"))
        frac = float(ctx.options.get("probe_val_fraction", 0.2))
        tasks = vtab_tasks(ctx)
        if not tasks:
            res.skips.append(Skip(self.name, model, "vtab", "no VTAB tasks present under the data root"))
            return res
        accs, info = {}, {}
        gm = stats.GroupedMeans(list(tasks))
        for task, splits in tasks.items():
            ds = f"vtab/{task}"
            if "train" not in splits:
                res.skips.append(Skip(self.name, model, ds, f"{ds} has no train split: a linear probe needs one"))
                continue
            if "test" not in splits:
                res.skips.append(Skip(self.name, model, ds, f"{ds} has no test split to evaluate on"))
                continue
            tr = fetch(Request(f"{ds}/train", "standard"))
            te = fetch(Request(f"{ds}/test", "standard"))
            va = fetch(Request(f"{ds}/val", "standard")) if "val" in splits else None
            if tr is None or te is None or len(tr) < 2 or len(te) == 0:
                res.skips.append(Skip(self.name, model, ds, f"{ds}: train/test outputs not available"))
                continue
            labels = [tr.labels, te.labels] + ([va.labels] if va is not None else [])
            n_classes = int(max(int(lab.max()) for lab in labels)) + 1
            r = run_probe(mode, tr.features, tr.labels, te.features,
                          va.features if va is not None else None, va.labels if va is not None else None,
                          n_classes, device, ctx.seed, frac)
            correct = (r.test_pred == te.labels).astype(np.float64)
            v = float(correct.mean())
            res.metrics.append(stats.mean_metric(ds, "top1", correct, te.ids))
            gm.add(task, correct, [f"{task}:{i}" for i in te.ids])
            n_val = len(va) if va is not None else int(round(frac * len(tr)))
            res.rows.append(Row(model, ds, self.name, "val_top1", r.val_acc, n=n_val))
            n_fit = len(tr) + (len(va) if va is not None else 0)
            res.rows.append(Row(model, ds, self.name, r.hyper_name, r.hyper, n=n_fit))
            accs[task] = v
            info[task] = {"top1": v, r.hyper_name: r.hyper, "val_top1": r.val_acc, "seconds": r.seconds,
                          "n_train": len(tr), "n_val": n_val, "n_test": len(te), "hosted_val": va is not None,
                          "search": {f"{k:.6g}": a for k, a in r.search.items()}}
        if accs:
            avg = float(np.mean(list(accs.values())))
            cols = [list(tasks).index(t) for t in accs]
            res.metrics.append(gm.metric("vtab", "top1_avg", lambda M, c=cols: M[:, c].mean(axis=1),
                                         description="mean top-1 over the VTAB tasks"))
            res.artifacts["transfer/probe"] = {"mode": mode, "device": str(device), "tasks": info, "average": avg}
        return res
