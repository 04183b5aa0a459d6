"""model-vs-human figures, drawn like model-vs-human's own: accuracy and error consistency against the
distortion level per parametric dataset (models and humans together), the benchmark's ranked bars, and
error consistency against accuracy difference.

Drawn from the ``model-vs-human`` analysis' artifacts (stored under model ``*``).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from beyond_inet.report import figures as fg

ANALYSIS = "model-vs-human"
HUMANS = "humans"
# Kept literal (the report does not import analyses): model-vs-human's experiments, plotting order.
LEVELS = {
    "colour": ("Colour", ("cr", "bw"), ("colour", "greyscale")),
    "contrast": ("Contrast (%)", ("c100", "c50", "c30", "c15", "c10", "c05", "c03", "c01"),
                 ("100", "50", "30", "15", "10", "5", "3", "1")),
    "high-pass": ("Filter std", ("inf", "3.0", "1.5", "1.0", "0.7", "0.55", "0.45", "0.4"),
                  ("inf", "3.0", "1.5", "1.0", ".7", ".55", ".45", ".4")),
    "low-pass": ("Filter std", ("0", "1", "3", "5", "7", "10", "15", "40"), None),
    "phase-scrambling": ("Phase noise width (deg)", ("0", "30", "60", "90", "120", "150", "180"), None),
    "power-equalisation": ("Power spectrum", ("0", "pow"), ("original", "equalised")),
    "false-colour": ("Colour", ("True", "False"), ("true", "opponent")),
    "rotation": ("Rotation (deg)", ("0", "90", "180", "270"), None),
    "eidolonI": ("log2 reach", tuple(f"{2 ** i}-10-10" for i in range(8)), tuple(str(i) for i in range(8))),
    "eidolonII": ("log2 reach", tuple(f"{2 ** i}-3-10" for i in range(8)), tuple(str(i) for i in range(8))),
    "eidolonIII": ("log2 reach", tuple(f"{2 ** i}-0-10" for i in range(8)), tuple(str(i) for i in range(8))),
    "uniform-noise": ("Noise width", ("0.0", "0.03", "0.05", "0.1", "0.2", "0.35", "0.6", "0.9"),
                      ("0", ".03", ".05", ".1", ".2", ".35", ".6", ".9")),
}
NICE = {"acc_diff_sq": "accuracy difference (squared)", "c_obs": "observed consistency",
        "kappa": "error consistency", "ood_accuracy": "OOD accuracy"}


def _artifact(artifacts: dict, name: str) -> dict:
    a = artifacts.get((ANALYSIS, "*", name))
    return a if isinstance(a, dict) else {}


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def lines_figure(per_condition: dict[str, list[dict]], metric: str, ylabel: str, models: Sequence[str],
                 colors: dict, chance: float | None) -> Figure | None:
    """One panel per parametric dataset: the metric per condition, a line per model and the humans
    (black), with 95% CI whiskers."""
    sets = [d for d in LEVELS if per_condition.get(d)]
    if not sets:
        return None
    cols = min(4, len(sets))
    rows_n = math.ceil(len(sets) / cols)
    fig = Figure(figsize=(3.3 * cols + 2.2, 2.8 * rows_n))
    axes = np.atleast_1d(fig.subplots(rows_n, cols, squeeze=False).ravel())
    observers = [m for m in models] + [HUMANS]
    for ax, ds in zip(axes, sets):
        xlabel, conds, shown = LEVELS[ds]
        got = {(r["observer"], r["condition"]): r for r in per_condition[ds] if r["metric"] == metric}
        x = np.arange(len(conds))
        for o in observers:
            pts = [got.get((o, c)) for c in conds]
            if not any(pts):
                continue
            y = np.array([_f(p["value"]) if p else math.nan for p in pts])
            lo = np.array([_f(p["ci_low"]) if p else math.nan for p in pts])
            hi = np.array([_f(p["ci_high"]) if p else math.nan for p in pts])
            color = "black" if o == HUMANS else colors.get(o, "0.5")
            mk = "D" if o == HUMANS else fg.marker(models, o)
            ax.errorbar(x, y, yerr=[np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)], color=color, marker=mk,
                        ms=4, lw=1, capsize=2, label="humans" if o == HUMANS else fg.label(o))
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":", lw=0.8)
        ax.set_xticks(x, list(shown or conds), rotation=45 if len(conds) > 4 else 0, fontsize=7)
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in axes[len(sets):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0 - 2.0 / fig.get_figwidth(), 0.5),
               frameon=False, fontsize=8)
    fig.subplots_adjust(right=1.0 - 2.2 / fig.get_figwidth(), hspace=0.7, wspace=0.35)
    return fig


def _bench(bench: dict) -> dict[tuple[str, str], dict]:
    return {(r["observer"], r["metric"]): r for r in bench.get("rows", []) if r["dataset"] == "benchmark"}


def benchmark_figure(bench: dict, models: Sequence[str], colors: dict) -> Figure | None:
    """model-vs-human's ranked bars: one panel per benchmark metric, observers sorted best first
    (accuracy difference: lowest first), humans in black; whiskers: 95% CI."""
    got = _bench(bench)
    obs = [o for o in list(models) + [HUMANS] if (o, "kappa") in got]
    if not obs:
        return None
    metrics = ("ood_accuracy", "acc_diff_sq", "c_obs", "kappa")
    fig = Figure(figsize=(4.0 * len(metrics), 3.6))
    for ax, k in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        order = sorted(obs, key=lambda o: _f(got[(o, k)]["value"]), reverse=k != "acc_diff_sq")
        v = np.array([_f(got[(o, k)]["value"]) for o in order])
        lo = np.array([_f(got[(o, k)]["ci_low"]) for o in order])
        hi = np.array([_f(got[(o, k)]["ci_high"]) for o in order])
        ax.bar(np.arange(len(order)), v, color=["black" if o == HUMANS else colors.get(o, "0.5") for o in order],
               yerr=[np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)], capsize=2)
        ax.set_xticks(np.arange(len(order)), [fg.label(o, 18) for o in order], rotation=90, fontsize=7)
        ax.set_title(NICE[k] + (" (lower is better)" if k == "acc_diff_sq" else ""), fontsize=9)
    fig.subplots_adjust(bottom=0.35, wspace=0.3)
    return fig


def scatter_figure(bench: dict, models: Sequence[str], colors: dict) -> Figure | None:
    """Error consistency against accuracy difference over the benchmark datasets, with 95% CIs."""
    got = _bench(bench)
    obs = [o for o in list(models) + [HUMANS] if (o, "kappa") in got and (o, "acc_diff_sq") in got]
    if not obs:
        return None
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.subplots()
    for o in obs:
        x, y = got[(o, "acc_diff_sq")], got[(o, "kappa")]
        xv, yv = _f(x["value"]), _f(y["value"])
        ax.errorbar([xv], [yv], xerr=[[max(xv - _f(x["ci_low"]), 0)], [max(_f(x["ci_high"]) - xv, 0)]],
                    yerr=[[max(yv - _f(y["ci_low"]), 0)], [max(_f(y["ci_high"]) - yv, 0)]],
                    color="black" if o == HUMANS else colors.get(o, "0.5"),
                    marker="D" if o == HUMANS else fg.marker(models, o), ms=6, capsize=2,
                    label="humans" if o == HUMANS else fg.label(o))
    ax.axhline(0.0, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("accuracy difference (squared, lower is more human-like)")
    ax.set_ylabel("error consistency (kappa)")
    ax.legend(fontsize=7, frameon=False, loc="best")
    return fig


def mvh_figures(artifacts: dict, models: Sequence[str], fig_dir, colors: dict) -> list[fg.FigureFile]:
    """The figures the artifacts allow (none when the analysis did not run)."""
    out = []
    per = _artifact(artifacts, "model-vs-human/per-condition")
    bench = _artifact(artifacts, "model-vs-human/benchmark")
    figures = [
        (lines_figure(per, "accuracy", "16-class accuracy", models, colors, 1 / 16), "mvh-accuracy",
         "model-vs-human: accuracy per distortion level",
         "16-class accuracy per condition of each parametric dataset; black: the human subjects "
         "pooled; dotted: chance (1/16); whiskers: 95% bootstrap CI over images."),
        (lines_figure(per, "kappa", "error consistency", models, colors, 0.0), "mvh-error-consistency",
         "model-vs-human: error consistency per level",
         "Kappa with each human subject, averaged over subjects (black: mean over pairs of "
         "subjects), per condition; dotted: 0 (errors no more shared than accuracies imply); "
         "whiskers: 95% bootstrap CI over images."),
        (benchmark_figure(bench, models, colors), "mvh-benchmark", "model-vs-human benchmark",
         "model-vs-human's aggregates over its 17 datasets (its excluded conditions left out): "
         "OOD accuracy, and accuracy difference / observed / error consistency averaged over "
         "conditions, then subjects, then datasets; ranked; whiskers: 95% bootstrap CI over "
         "images, each dataset resampled on its own."),
        (scatter_figure(bench, models, colors), "mvh-scatter", "Error consistency vs accuracy difference",
         "Benchmark error consistency against accuracy difference with 95% CIs; "
         "black diamond: humans (pairs of subjects)."),
    ]
    for f, name, title, caption in figures:
        if f is not None:
            out.append(fg.save(f, fig_dir, name, title, caption))
    return out


fg.SECTION_FIGURES[ANALYSIS] = mvh_figures
