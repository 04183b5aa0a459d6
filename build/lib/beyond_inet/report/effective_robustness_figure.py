"""Effective robustness, drawn as Taori et al. do: variant vs ImageNet top-1 on logit axes, the published
standard models as grey dots, the baseline line through them, and the run's models on top.

The vertical distance of a model above the line is its ``effective_robustness`` row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from beyond_inet.analyses.base import Row
from beyond_inet.references import timm_results
from beyond_inet.report.figures import RC, FigureFile, _legend_right, label, marker, save

NICE = {"imagenet-v2": "ImageNet-V2", "imagenet-sketch": "ImageNet-Sketch", "imagenet-a": "ImageNet-A",
        "imagenet-r": "ImageNet-R"}
_TICKS = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99])


def points(rows: Sequence[Row], models: Sequence[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """{variant: {model: (val top-1, variant top-1)}} for models with an effective-robustness row."""
    top1 = {(r.model, r.dataset): r.value for r in rows if r.analysis == "robustness" and r.metric == "top1"}
    has_er = {(r.model, r.dataset) for r in rows if r.analysis == "robustness" and r.metric == "effective_robustness"}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for ds in timm_results.ER_VARIANTS:
        for m in models:
            if (m, ds) in has_er and (m, "imagenet-val") in top1 and (m, ds) in top1:
                out.setdefault(ds, {})[m] = (top1[(m, "imagenet-val")], top1[(m, ds)])
    return out


def figure(data: dict[str, dict[str, tuple[float, float]]], models: Sequence[str], colors: dict) -> Figure:
    sets = list(data)
    fig = Figure(figsize=(3.2 * len(sets) + 1.8, 3.3))
    table = timm_results.load()
    for k, ds in enumerate(sets):
        ax = fig.add_subplot(1, len(sets), k + 1)
        base = timm_results.baseline(ds)
        keep = set(base.models)
        col = timm_results.DATASET_COLUMN[ds]
        pts = np.array([(r.top1["val"], r.top1[col]) for r in table if f"{r.model}@{r.img_size}" in keep])
        lx, ly = timm_results.logit(pts[:, 0]), timm_results.logit(pts[:, 1])
        ax.scatter(lx, ly, s=4, color="0.75", lw=0, rasterized=True)
        ours = np.array(list(data[ds].values()))
        xs = np.linspace(min(lx.min(), timm_results.logit(ours[:, 0]).min()) - 0.2,
                         max(lx.max(), timm_results.logit(ours[:, 0]).max()) + 0.2, 50)
        ax.plot(xs, base.slope * xs + base.intercept, color="0.2", lw=1)
        for m, (v, y) in data[ds].items():
            ax.scatter(timm_results.logit(v), timm_results.logit(y), s=36, color=colors[m], marker=marker(models, m),
                       edgecolor="black", lw=0.5, zorder=3)
        ticks = timm_results.logit(_TICKS)
        ax.set_xticks(ticks, [f"{100 * t:g}" for t in _TICKS])
        ax.set_yticks(ticks, [f"{100 * t:g}" for t in _TICKS])
        lo_y = min(ly.min(), timm_results.logit(ours[:, 1]).min()) - 0.2
        hi_y = max(ly.max(), timm_results.logit(ours[:, 1]).max()) + 0.2
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(lo_y, hi_y)
        ax.set_title(label(NICE.get(ds, ds)))
        ax.set_xlabel("ImageNet val top-1 (%)")
        if k == 0:
            ax.set_ylabel("variant top-1 (%)")
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.17, top=0.88, wspace=0.3)
    extra = [Line2D([], [], color="0.75", marker="o", lw=0, markersize=3, label="standard ImageNet-1k (timm)"),
             Line2D([], [], color="0.2", lw=1, label="baseline (logit fit)")]
    _legend_right(fig, [m for m in models if any(m in d for d in data.values())], colors, extra, kind="line")
    return fig


def build(rows: Sequence[Row], models: Sequence[str], fig_dir: Path, colors: dict) -> FigureFile | None:
    """The figure when any model has an effective-robustness row, else None."""
    data = points(rows, models)
    if not data:
        for f in (fig_dir / "effective-robustness.png", fig_dir / "effective-robustness.svg"):
            f.unlink(missing_ok=True)  # from an older report of this folder
        return None
    with matplotlib.rc_context(RC):
        fig = figure(data, models, colors)
    return save(fig, fig_dir, "effective-robustness", "Effective robustness",
                "Variant vs ImageNet val top-1 on logit axes. Grey: timm's published standard ImageNet-1k models; "
                "line: the baseline fitted through them; a model's effective robustness is its height above the "
                "line (Taori et al. 2020).")
