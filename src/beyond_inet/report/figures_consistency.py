"""Error-consistency figures: a model x model kappa matrix per dataset, and model-vs-human's plot of each
model's kappa with the human subjects next to the human-human range.

Drawn from the ``error-consistency`` analysis' artifacts (stored under model ``*``); kept apart from
`figures` so other sections can grow there without touching this one.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from beyond_inet.report import figures as fg

ANALYSIS = "error-consistency"


def _artifact(artifacts: dict, name: str) -> dict:
    a = artifacts.get((ANALYSIS, "*", name))
    return a if isinstance(a, dict) else {}


def matrix_figure(matrices: dict[str, dict]) -> Figure:
    """One heatmap panel per dataset: kappa for every pair of models (diagonal = 1)."""
    sets = list(matrices)
    k = max(len(matrices[d]["models"]) for d in sets)
    side = max(2.6, 0.45 * k + 1.6)
    fig = Figure(figsize=(side * len(sets) + 0.8, side + 0.6))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    im = None
    for ax, ds in zip(axes, sets):
        models = matrices[ds]["models"]
        mat = np.array([[math.nan if v is None else v for v in row] for row in matrices[ds]["kappa"]], float)
        im = ax.imshow(mat, vmin=-1, vmax=1, cmap="RdBu_r")
        ticks = [fg.label(m) for m in models]
        ax.set_xticks(range(len(models)), ticks, rotation=45, ha="right")
        ax.set_yticks(range(len(models)), ticks if ax is axes[0] else [""] * len(models))
        if len(models) <= 8:
            for i in range(len(models)):
                for j in range(len(models)):
                    if math.isfinite(mat[i, j]):
                        ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=8,
                                color="white" if abs(mat[i, j]) > 0.6 else "black")
        # two lines: one line ran into the next panel's title at two or three models per panel
        ax.set_title(f"{fg.label(ds, 24)}\nn = {matrices[ds].get('n', '?')} images")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="error consistency (kappa)")
    return fig


def humans_figure(data: dict[str, dict], models: Sequence[str], colors: dict) -> Figure:
    """Per dataset: each model's mean kappa with the subjects (95% CI), and the human-human pairs' range
    (grey band) and mean (black diamond)."""
    sets = list(data)
    fig = Figure(figsize=(max(4.5, 1.5 * len(sets) + 2.5), 3.6))
    ax = fig.add_axes((0.12, 0.14, 0.62, 0.76))
    ms = [m for m in models if any(m in data[d]["models"] for d in sets)]
    step = min(0.12, 0.6 / max(len(ms), 1))
    for x, ds in enumerate(sets):
        hh = data[ds].get("human_human")
        if hh:
            pairs = [p for p in hh.get("pairs", []) if p is not None]
            if pairs:
                ax.fill_between([x - 0.4, x + 0.4], min(pairs), max(pairs), color="0.85", lw=0, zorder=1)
            ax.scatter([x], [hh["kappa"]], marker="D", s=40, color="black", zorder=4)
        for k, m in enumerate(ms):
            r = data[ds]["models"].get(m)
            if not r:
                continue
            xx = x + (k - (len(ms) - 1) / 2) * step
            lo, hi = (math.nan if v is None else v for v in r.get("ci", [None, None]))
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([xx, xx], [lo, hi], color=colors[m], lw=1.2, zorder=2)
            ax.scatter([xx], [r["kappa"]], marker=fg.marker(models, m), s=30, color=colors[m], zorder=3,
                       edgecolor="white", linewidth=0.3)
    ax.axhline(0, color="0.5", lw=0.8, ls=":")
    ax.set_xticks(range(len(sets)), sets)
    ax.set_xlim(-0.6, len(sets) - 0.4)
    ax.set_ylabel("error consistency with humans (kappa)")
    ax.set_title("Error consistency with human subjects")
    handles = [Line2D([], [], color=colors[m], marker=fg.marker(models, m), ls="", label=fg.label(m)) for m in ms]
    handles += [Line2D([], [], color="black", marker="D", ls="", label="humans (mean over pairs)"),
                Patch(color="0.85", label="human-human pairs (range)")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.76, 0.5), frameon=False)
    return fig


def consistency_figures(artifacts: dict, models: Sequence[str], fig_dir, colors: dict) -> list[fg.FigureFile]:
    """The figures the artifacts allow (none when the analysis did not run)."""
    out = []
    matrices = _artifact(artifacts, "error-consistency/matrix")
    if matrices:
        n = min(int(m.get("n", 0)) for m in matrices.values())
        few = f" Some panels rest on fewer than 30 images (fewest: {n}): read them as rough." if n < 30 else ""
        out.append(fg.save(matrix_figure(matrices), fig_dir, "error-consistency-matrix",
                           "Error consistency between models",
                           "Kappa (Geirhos et al. 2020) for every pair of models per dataset: 0 = errors no more "
                           "shared than their accuracies imply, 1 = the same images wrong. 16-class decisions on "
                           "cue-conflict/edge/silhouette, top-1 on ImageNet-labelled sets." + few))
    humans = _artifact(artifacts, "error-consistency/humans")
    if humans:
        n = min(int(r.get("n", 0)) for d in humans.values() for r in d["models"].values())
        few = f" Fewest images behind a point: {n} (fewer than 30: read it as rough)." if n < 30 else \
            f" Each point rests on at least {n} images."
        subj = max(len(d.get("subjects", [])) for d in humans.values())
        out.append(fg.save(humans_figure(humans, models, colors), fig_dir, "error-consistency-humans",
                           "Error consistency with humans",
                           f"Each model's kappa with each of the {subj} human subjects (model-vs-human raw data), "
                           f"averaged; whiskers: 95% bootstrap CI over images. Black diamonds: mean kappa over all "
                           f"pairs of subjects (the human ceiling); grey: its range over the pairs." + few))
    return out


fg.SECTION_FIGURES["error-consistency"] = consistency_figures
