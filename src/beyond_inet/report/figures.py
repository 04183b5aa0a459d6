"""The paper's figures, redrawn for the run's models with matplotlib (no pyplot, no display).

One function per figure draws from plain data; `collect_*` functions build that data from the
analyses' artifacts when present and fall back to the result rows, so a figure survives artifact
changes. Every figure is written as PNG and SVG under ``OUT/figures/`` (SVG text stays text and is
XML-escaped by matplotlib) and embedded in the HTML page as a base64 PNG.

Legibility with many models: one colour per model kept across figures (tab10, tab20, then evenly
spaced hues), a marker per model where points overlap, legends outside the axes, figure widths
that grow with the number of bars, and model names wrapped. Model names are user input: a ``$``
would switch matplotlib into mathtext, so it is escaped (`label`).
"""
from __future__ import annotations

import base64
import colorsys
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from beyond_inet.analyses.base import Row
from beyond_inet.errors import UserError

MARKERS = ("o", "s", "^", "v", "P", "X", "*", "h", "<", ">", "p", "8")  # no diamond: humans are diamonds
RC = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10,
      "legend.fontsize": 8, "svg.fonttype": "none", "svg.hashsalt": "beyond-inet", "figure.dpi": 100}
PNG_DPI = 110

ROBUSTNESS_SETS = {"imagenet-val": "INet-Val", "imagenet-v2": "V2", "imagenet-a": "A", "imagenet-c": "C",
                   "imagenet-hard": "Hard", "imagenet-r": "R", "imagenet-sketch": "Sketch", "imagenet-real": "ReaL",
                   "objectnet": "ObjectNet"}
PUG_FACTORS = ("Worlds", "Camera_Pitch", "Camera_Yaw", "Camera_Roll", "Object_Pitch", "Object_Yaw", "Object_Roll",
               "Object_Scale", "Object_Texture", "Scene_Light")
KIND_LABELS = {"scale": "zoom-in scale factor", "shift": "crop shift (original-image px)",
               "res": "input resolution (px)"}

CI = tuple[float, float, float]  # value, ci_low, ci_high


@dataclass
class FigureFile:
    """One written figure: files on disk and what the page embeds."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    png_b64: str
    overlaps: tuple[tuple[str, str], ...] = ()  # pairs of texts drawn over each other (should be none)


# ------------------------------------------------------------------------------------------------
# Colours and labels
# ------------------------------------------------------------------------------------------------
def palette(models: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """A distinct colour per model: tab10 up to 10 models, tab20 (dark shades first) up to 20, then hues."""
    n = len(models)
    if n <= 10:
        cols = list(matplotlib.colormaps["tab10"].colors)
    elif n <= 20:
        t20 = list(matplotlib.colormaps["tab20"].colors)
        cols = t20[0::2] + t20[1::2]
    else:
        cols = [colorsys.hls_to_rgb(i / n, 0.35 + 0.25 * (i % 3) / 2, 0.75) for i in range(n)]
    return {m: tuple(cols[i % len(cols)][:3]) for i, m in enumerate(models)}


def marker(models: Sequence[str], m: str) -> str:
    return MARKERS[list(models).index(m) % len(MARKERS)]


def label(text: str, width: int = 34) -> str:
    """Text safe for matplotlib: no mathtext, not hidden by a leading underscore, wrapped."""
    t = "\n".join(textwrap.wrap(str(text), width, break_on_hyphens=True, break_long_words=True)) or str(text)
    t = t.replace("$", r"\$")  # after wrapping, so an escape is never split from its dollar
    return "\u200b" + t if t.startswith("_") else t


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _legend_right(fig: Figure, models: Sequence[str], colors: dict, extra: Sequence[Any] = (),
                  kind: str = "patch", title: str | None = None) -> None:
    handles: list[Any] = []
    for m in models:
        if kind == "patch":
            handles.append(Patch(facecolor=colors[m], label=label(m)))
        else:
            handles.append(Line2D([], [], color=colors[m], marker=marker(models, m), label=label(m), lw=1.5))
    handles += list(extra)
    if fig.get_layout_engine() is None:
        fig.subplots_adjust(right=0.97)  # the legend sits right of the axes; no empty strip between them
    ncol = 1 if len(handles) <= 14 else 2
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, ncol=ncol,
               title=title)


# ------------------------------------------------------------------------------------------------
# Data collection: artifacts first, rows as fallback
# ------------------------------------------------------------------------------------------------
class RowTable:
    """(analysis, dataset, metric, model) -> (value, lo, hi)."""

    def __init__(self, rows: Iterable[Row]):
        self.d: dict[tuple[str, str, str, str], CI] = {}
        for r in rows:
            self.d[(r.analysis, r.dataset, r.metric, r.model)] = (_num(r.value), _num(r.ci_low), _num(r.ci_high))

    def get(self, analysis: str, dataset: str, metric: str, model: str) -> CI | None:
        v = self.d.get((analysis, dataset, metric, model))
        return v if v is not None and math.isfinite(v[0]) else None

    def keys(self, analysis: str) -> list[tuple[str, str, str]]:
        return sorted({(d, m, mo) for (a, d, m, mo) in self.d if a == analysis})


def _art(artifacts: dict, analysis: str, model: str, name: str) -> Any:
    return artifacts.get((analysis, model, name))


def collect_imagenet_x(rt: RowTable, artifacts: dict, models: Sequence[str]) -> tuple[list[str], dict]:
    """Factor names and {model: {factor | 'Average': (ratio, lo, hi)}}."""
    try:
        from beyond_inet.analyses.imagenet_x import FACTORS
        factors: list[str] = list(FACTORS)
    except Exception:
        factors = []
    data: dict[str, dict[str, CI]] = {}
    for m in models:
        a = _art(artifacts, "imagenet-x", m, "imagenet-x/factors")
        per: dict[str, CI] = {}
        if isinstance(a, dict) and a.get("factors"):
            lo_l = a.get("error_ratio_ci_low") or [None] * len(a["factors"])
            hi_l = a.get("error_ratio_ci_high") or [None] * len(a["factors"])
            for f, v, lo, hi in zip(a["factors"], a.get("error_ratio", []), lo_l, hi_l):
                if v is not None and math.isfinite(_num(v)):
                    per[f] = (_num(v), _num(lo), _num(hi))
            factors += [f for f in a["factors"] if f not in factors]
        else:
            for (ds, metric, mo) in rt.keys("imagenet-x"):
                if (mo == m and ds == "imagenet-val" and metric.startswith("error_ratio_")
                        and metric != "error_ratio_mean"):
                    f = metric[len("error_ratio_"):]
                    per[f] = rt.get("imagenet-x", ds, metric, m)  # type: ignore[assignment]
                    if f not in factors:
                        factors.append(f)
        mean = rt.get("imagenet-x", "imagenet-val", "error_ratio_mean", m)
        if mean is None and isinstance(a, dict) and a.get("error_ratio_mean") is not None:
            mean = (_num(a["error_ratio_mean"]), math.nan, math.nan)
        if mean is not None:
            per["Average"] = mean
        if per:
            data[m] = per
    return factors, data


HUMANS = "humans"  # the published human subjects' aggregate (pipeline.HUMANS)
_SUBJECT = re.compile(r"^subject-\d+$")


def is_human_observer(m: str) -> bool:
    """A published human subject or their aggregate (``--decisions``): drawn as the human reference."""
    return m == HUMANS or bool(_SUBJECT.match(m))


def published_humans(artifacts: dict) -> dict | None:
    """The human reference from published human observers (``--decisions``): per subject, then the mean,
    per category and overall (the ``humans`` aggregate's artifact); None when there is none."""
    a = _art(artifacts, "shape-bias", HUMANS, "shape-bias/per-category")
    if not (isinstance(a, dict) and a.get("categories")):
        return None
    return {"shape_bias_per_category": {c: _num(v) for c, v in zip(a["categories"], a.get("shape_bias", []))},
            "shape_bias_mean": _num(a.get("overall")), "n_subjects": len(a.get("subjects", [])),
            "aggregate": a.get("aggregate", "")}


def collect_shape_bias(rt: RowTable, artifacts: dict, models: Sequence[str]) -> tuple[list[str], dict, dict | None]:
    """Categories, {model: {'per_category': {cat: v}, 'overall': v}} and the human reference (or None).

    Published human observers (``--decisions``) are the human reference (their aggregate), not model series."""
    try:
        from beyond_inet.data.labelspaces import CUE_CONFLICT_CATEGORIES as cats0
        cats = list(cats0)
    except Exception:
        cats = []
    data: dict[str, dict] = {}
    human = published_humans(artifacts)
    for m in models:
        if is_human_observer(m):
            continue
        a = _art(artifacts, "shape-bias", m, "shape-bias/per-category")
        h = _art(artifacts, "shape-bias", m, "shape-bias/human")
        if human is None and isinstance(h, dict) and h.get("shape_bias_per_category"):
            human = h
        per: dict[str, float] = {}
        overall = None
        if isinstance(a, dict) and a.get("categories"):
            cats = list(a["categories"]) if not cats else cats
            per = {c: _num(v) for c, v in zip(a["categories"], a.get("shape_bias", []))}
            overall = _num(a.get("overall"))
        else:
            for (ds, metric, mo) in rt.keys("shape-bias"):
                if mo == m and ds == "cue-conflict" and metric.startswith("shape_bias_"):
                    v = rt.get("shape-bias", ds, metric, m)
                    if v is not None:
                        per[metric[len("shape_bias_"):]] = v[0]
        row = rt.get("shape-bias", "cue-conflict", "shape_bias", m)
        if row is not None:
            overall = row[0]
        if per or (overall is not None and math.isfinite(overall)):
            data[m] = {"per_category": per, "overall": overall}
    extra = sorted({c for d in data.values() for c in d["per_category"]} - set(cats))
    return cats + extra, data, human


def collect_reliability(artifacts: dict, models: Sequence[str], dataset: str) -> dict[str, dict]:
    out = {}
    for m in models:
        a = _art(artifacts, "calibration", m, f"reliability/{dataset}")
        if isinstance(a, dict) and a.get("edges") and a.get("accuracy") is not None:
            out[m] = a
    return out


def collect_bars(rt: RowTable, models: Sequence[str], analysis: str, members: Sequence[tuple[str, str, str]],
                 ) -> dict[str, dict[str, CI]]:
    """{model: {group label: (v, lo, hi)}} for (group label, dataset, metric) members."""
    data: dict[str, dict[str, CI]] = {}
    for m in models:
        per = {}
        for grp, ds, metric in members:
            v = rt.get(analysis, ds, metric, m)
            if v is not None:
                per[grp] = v
        if per:
            data[m] = per
    return data


def robustness_members(rt: RowTable, artifacts: dict) -> list[tuple[str, str, str]]:
    present = {ds for (ds, metric, _) in rt.keys("robustness") if metric == "top1"}
    order = list(ROBUSTNESS_SETS)
    for (a, _, k), v in artifacts.items():  # datasets the analysis reports, in its order
        if a == "robustness" and k == "robustness/top1" and isinstance(v, dict):
            order += [d for d in v.get("datasets", []) if d not in order and "/" not in d]
    members = [(ROBUSTNESS_SETS.get(d, d), d, "top1") for d in order if d in present]
    if any(ds == "variants" and metric == "top1_avg" for (ds, metric, _) in rt.keys("robustness")):
        members.append(("Average", "variants", "top1_avg"))
    return members


def vtab_members(rt: RowTable) -> list[tuple[str, str, str]]:
    try:
        from beyond_inet.data.catalog import VTAB_TASKS
        order = list(VTAB_TASKS)
    except Exception:
        order = []
    tasks = sorted({ds.split("/", 1)[1] for (ds, metric, _) in rt.keys("transfer")
                    if metric == "top1" and ds.startswith("vtab/")},
                   key=lambda t: (order.index(t) if t in order else len(order), t))
    members = [(t, f"vtab/{t}", "top1") for t in tasks]
    if any(ds == "vtab" and metric == "top1_avg" for (ds, metric, _) in rt.keys("transfer")):
        members.append(("Average", "vtab", "top1_avg"))
    return members


def pug_members(rt: RowTable, artifacts: dict) -> tuple[list[tuple[str, str, str]], str | None]:
    """Per-factor members of one scoring rule (the 'any' rule preferred), and that rule."""
    metrics = {metric for (ds, metric, _) in rt.keys("synthetic") if ds.startswith("pug-imagenet/")}
    rule = None
    for cand in ("top1_any", "top1_paper", "top1"):
        if cand in metrics:
            rule = cand
            break
    if rule is None and metrics:
        rule = sorted(metrics)[0]
    if rule is None:
        return [], None
    factors = sorted({ds.split("/", 1)[1] for (ds, metric, _) in rt.keys("synthetic")
                      if metric == rule and ds.startswith("pug-imagenet/")},
                     key=lambda f: (PUG_FACTORS.index(f) if f in PUG_FACTORS else len(PUG_FACTORS), f))
    members = [(f.replace("_", " "), f"pug-imagenet/{f}", rule) for f in factors]
    avg = "top1_avg" + rule[len("top1"):]
    if any(ds == "pug-imagenet" and metric == avg for (ds, metric, _) in rt.keys("synthetic")):
        members.append(("Average", "pug-imagenet", avg))
    return members, rule


def collect_invariance(rt: RowTable, artifacts: dict, models: Sequence[str]) -> dict[str, dict[str, dict]]:
    """{kind: {model: {'x': [...], 'top1': [...], 'lo': [...], 'hi': [...]}}} (artifact curves, else rows)."""
    out: dict[str, dict[str, dict]] = {}
    pat = re.compile(r"^top1_(scale|shift|res)_(.+)$")
    for m in models:
        from_rows: dict[str, dict[float, CI]] = {}
        for (ds, metric, mo) in rt.keys("invariance"):
            mm = pat.match(metric)
            if mo == m and mm:
                try:
                    x = float(mm.group(2).replace("m", "-"))
                except ValueError:
                    continue
                v = rt.get("invariance", ds, metric, m)
                if v is not None:
                    from_rows.setdefault(mm.group(1), {})[x] = v
        for kind in ("scale", "shift", "res"):
            a = _art(artifacts, "invariance", m, f"invariance/{kind}")
            rows_k = from_rows.get(kind, {})
            if isinstance(a, dict) and a.get("x"):
                xs = [_num(x) for x in a["x"]]
                ys = [_num(y) for y in a.get("top1", [])]
            elif rows_k:
                xs = sorted(rows_k)
                ys = [rows_k[x][0] for x in xs]
            else:
                continue
            lo = [rows_k[x][1] if x in rows_k else math.nan for x in xs]
            hi = [rows_k[x][2] if x in rows_k else math.nan for x in xs]
            out.setdefault(kind, {})[m] = {"x": xs, "top1": ys, "lo": lo, "hi": hi}
    return out


# ------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------
def grouped_bars(groups: Sequence[str], data: dict[str, dict[str, CI]], models: Sequence[str], colors: dict,
                 ylabel: str, title: str, percent: bool = False, ref: float | None = None,
                 ref_label: str | None = None) -> Figure:
    """Bars per group (x) and model (colour) with 95% CI whiskers; 'Average' set apart by a rule."""
    ms = [m for m in models if m in data]
    G, M = len(groups), max(len(ms), 1)
    width = 0.82 / M
    fig = Figure(figsize=(min(16.0, max(6.0, 1.2 + G * (0.3 + 0.11 * M))), 3.8))
    ax = fig.add_subplot()
    k = 100.0 if percent else 1.0
    for i, m in enumerate(ms):
        xs = np.arange(G) + (i - (M - 1) / 2) * width
        vals = np.array([data[m].get(g, (math.nan,) * 3)[0] for g in groups]) * k
        lo = np.array([data[m].get(g, (math.nan,) * 3)[1] for g in groups]) * k
        hi = np.array([data[m].get(g, (math.nan,) * 3)[2] for g in groups]) * k
        err = np.vstack([np.where(np.isfinite(lo), vals - lo, 0), np.where(np.isfinite(hi), hi - vals, 0)])
        err = np.where(np.isfinite(err) & (err >= 0), err, 0)
        ax.bar(xs, np.nan_to_num(vals), width, color=colors[m], edgecolor="white", linewidth=0.3,
               yerr=err, error_kw={"elinewidth": 0.7, "capsize": 1.5 if M <= 6 else 0, "ecolor": "0.25"})
        if M <= 4 and G <= 12:
            for x, v, h in zip(xs, vals, hi):
                if math.isfinite(v):
                    ax.annotate(f"{v:.1f}" if percent else f"{v:.2f}", (x, max(v, h) if math.isfinite(h) else v),
                                xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=6.5, rotation=90)
    top = ax.get_ylim()[1]
    ax.set_ylim(top=top * (1.12 if M <= 4 and G <= 12 else 1.03))
    if groups and groups[-1] == "Average" and G > 1:
        ax.axvline(G - 1.5, color="0.6", lw=0.8, ls=":")
    extra = []
    if ref is not None:
        ax.axhline(ref * k, color="0.3", lw=0.9, ls="--")
        if ref_label:
            extra.append(Line2D([], [], color="0.3", ls="--", lw=0.9, label=ref_label))
    ax.set_xticks(np.arange(G), [label(g, 18) for g in groups], rotation=35 if G > 6 else 0,
                  ha="right" if G > 6 else "center")
    ax.set_xlim(-0.6, G - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    _legend_right(fig, ms, colors, extra)
    return fig


def imagenet_x_figure(factors: Sequence[str], data: dict, models: Sequence[str], colors: dict) -> Figure:
    groups = [f for f in factors if any(f in d for d in data.values())]
    if any("Average" in d for d in data.values()):
        groups.append("Average")
    return grouped_bars([g.replace("_", " ") for g in groups],
                        {m: {g.replace("_", " "): v for g, v in d.items()} for m, d in data.items()},
                        models, colors, "error ratio (1 - acc_factor) / (1 - acc)",
                        "ImageNet-X: error ratio per factor (lower = less sensitive)", ref=1.0,
                        ref_label="1 = overall error")


def shape_bias_figure(categories: Sequence[str], data: dict, models: Sequence[str], colors: dict,
                      human: dict | None, names: dict | None = None, title: str | None = None) -> Figure:
    """Model-vs-human style: per-category fraction of shape decisions, overall value as a dashed line.
    `names`: legend names per model (default: the model); `title`: the axes title."""
    names = names or {}
    ms = [m for m in models if m in data]
    cats = [c for c in categories if any(c in d["per_category"] for d in data.values())] or list(categories)
    fig = Figure(figsize=(6.8, max(3.0, 0.32 * len(cats) + 1.4)))
    ax = fig.add_subplot()
    y = np.arange(len(cats))[::-1]
    extra = []
    if human:
        hv = [_num(human.get("shape_bias_per_category", {}).get(c)) for c in cats]
        ax.scatter(hv, y, marker="D", s=34, color="black", edgecolor="white", linewidth=0.4, zorder=4)
        hmean = _num(human.get("shape_bias_mean", human.get("shape_bias_pooled")))
        if math.isfinite(hmean):
            ax.axvline(hmean, color="black", ls="--", lw=1.4)
        extra.append(Line2D([], [], color="black", marker="D", ls="--", lw=1.4,
                            label=f"humans ({hmean:.2f})" if math.isfinite(hmean) else "humans"))
    step = min(0.12, 0.7 / max(len(ms), 1))  # models side by side within a category row: equal values stay visible
    for k, m in enumerate(ms):
        per = data[m]["per_category"]
        ax.scatter([per.get(c, math.nan) for c in cats], y + (k - (len(ms) - 1) / 2) * step, marker=marker(models, m),
                   s=30, color=colors[m],
                   edgecolor="white", linewidth=0.3, alpha=0.9, zorder=3)
        ov = data[m]["overall"]
        if ov is not None and math.isfinite(ov):
            ax.axvline(ov, color=colors[m], ls="--", lw=1.2)
    ax.set_yticks(y, cats)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.7, len(cats) - 0.3)
    ax.set_xlabel("fraction of 'shape' decisions")
    top = ax.secondary_xaxis("top", functions=(lambda x: 1 - x, lambda x: 1 - x))
    top.set_xlabel("fraction of 'texture' decisions")
    ax.grid(axis="x", color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_title(title or "Shape vs texture bias on cue-conflict (dashed: overall shape bias)")
    handles = [Line2D([], [], color=colors[m], marker=marker(models, m), ls="--", lw=1.2,
                      label=label(f"{names.get(m, m)} ({data[m]['overall']:.2f})" if data[m]["overall"] is not None
                                  and math.isfinite(data[m]["overall"]) else names.get(m, m))) for m in ms]
    fig.subplots_adjust(right=0.97)
    fig.legend(handles=handles + extra, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               ncol=1 if len(handles) <= 14 else 2)
    return fig


def reliability_figure(dataset: str, data: dict[str, dict], models: Sequence[str], colors: dict) -> Figure:
    """Per model: reliability diagram (accuracy per confidence bin, gap to mean confidence) over a
    confidence histogram (% of images per bin, with the accuracy and mean-confidence lines)."""
    ms = [m for m in models if m in data]
    ncols = min(4, len(ms))
    nrows = math.ceil(len(ms) / ncols)
    height = 4.3 * nrows + 0.5
    fig = Figure(figsize=(3.1 * ncols + 0.4, height))
    outer = fig.add_gridspec(nrows, ncols, hspace=0.32, wspace=0.28, top=1 - 0.75 / height, bottom=0.35 / height)
    for i, m in enumerate(ms):
        a = data[m]
        r, c = divmod(i, ncols)
        inner = outer[r, c].subgridspec(2, 1, height_ratios=[3, 1.25], hspace=0.08)
        ax = fig.add_subplot(inner[0])
        axh = fig.add_subplot(inner[1], sharex=ax)
        edges = np.asarray(a["edges"], float)
        centers, w = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        acc = np.array([_num(v) for v in a["accuracy"]])
        conf = np.array([_num(v) for v in a.get("confidence", [None] * len(acc))])
        cnt = np.array([_num(v) for v in a.get("count", [0] * len(acc))])
        frac = np.array([_num(v) for v in a["fraction"]]) if a.get("fraction") else cnt / max(np.nansum(cnt), 1)
        filled = np.isfinite(acc)
        ax.bar(centers[filled], acc[filled], w[filled], color=colors[m], edgecolor="black", linewidth=0.4,
               label="accuracy")
        gap = filled & np.isfinite(conf)
        ax.bar(centers[gap], conf[gap] - acc[gap], w[gap], bottom=acc[gap], color="#d62728", alpha=0.25,
               edgecolor="#d62728", linewidth=0.4, hatch="//", label="gap to mean confidence")
        ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=0.9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("auto")
        ece = _num(a.get("ece"))
        top1 = _num(a.get("top1"))
        txt = [f"ECE = {ece:.3f}" if math.isfinite(ece) else None, f"acc = {100 * top1:.1f}%" if math.isfinite(top1)
               else None]
        ax.text(0.04, 0.96, "\n".join(t for t in txt if t), transform=ax.transAxes, va="top", fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})
        ax.set_title(label(m, 30), fontsize=8.5, color=colors[m])
        if c == 0:
            ax.set_ylabel("accuracy")
            axh.set_ylabel("% of images")
        ax.tick_params(labelbottom=False)
        axh.bar(centers, 100 * np.nan_to_num(frac), w, color=colors[m], alpha=0.55, edgecolor="black", linewidth=0.3)
        mean_conf = float(np.nansum(np.nan_to_num(frac) * np.nan_to_num(conf)))
        if math.isfinite(top1):
            axh.axvline(top1, color="black", lw=1.0, label="accuracy")
        if mean_conf > 0:
            axh.axvline(mean_conf, color="#d62728", lw=1.0, ls="--", label="mean confidence")
        axh.set_xlabel("confidence (max softmax)")
        if i == 0:
            ax.legend(loc="lower right", fontsize=6.5, frameon=False)
            axh.legend(loc="upper left", fontsize=6.5, frameon=False)
    fig.suptitle(f"Reliability diagrams and confidence histograms: {dataset}", fontsize=10, y=1 - 0.12 / height,
                 va="top")
    return fig


def invariance_figure(curves: dict[str, dict[str, dict]], models: Sequence[str], colors: dict) -> Figure:
    kinds = [k for k in ("scale", "shift", "res") if k in curves]
    fig = Figure(figsize=(3.6 * len(kinds) + 0.5, 3.4))
    axes = fig.subplots(1, len(kinds), squeeze=False, gridspec_kw={"wspace": 0.32})[0]
    shown: list[str] = []
    for ax, kind in zip(axes, kinds):
        for m in models:
            cv = curves[kind].get(m)
            if not cv:
                continue
            x = np.asarray(cv["x"], float)
            y = 100 * np.asarray(cv["top1"], float)
            ax.plot(x, y, marker=marker(models, m), color=colors[m], lw=1.4, ms=4)
            lo, hi = 100 * np.asarray(cv["lo"], float), 100 * np.asarray(cv["hi"], float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(x[ok], lo[ok], hi[ok], color=colors[m], alpha=0.15, lw=0)
            if m not in shown:
                shown.append(m)
        xs = sorted({x for cv in curves[kind].values() for x in cv["x"]})
        span = (xs[-1] - xs[0]) or 1.0
        crowded = len(xs) > 1 and min(b - a for a, b in zip(xs, xs[1:])) < 0.09 * span
        ax.set_xticks(xs, [f"{x:g}" for x in xs], rotation=45 if crowded else 0)
        ax.set_xlabel(KIND_LABELS[kind])
        ax.set_ylabel("top-1 (%)")
        ax.set_title({"scale": "Scale", "shift": "Shift", "res": "Resolution"}[kind])
        ax.grid(color="0.92", lw=0.6)
    _legend_right(fig, shown, colors, kind="line")
    return fig


CKA_PANELS = ("all", "block", "attn", "linear", "norm")


def collect_cka(artifacts: dict, models: Sequence[str]) -> list[dict]:
    """The cka analysis' layer x layer matrices, pairs ordered by the report's model order."""
    pairs = [p for p in (_art(artifacts, "cka", "*", "matrices") or []) if isinstance(p, dict) and p.get("cka")]
    rank = {m: i for i, m in enumerate(models)}
    return sorted(pairs, key=lambda p: (rank.get(p["a"], len(rank)), rank.get(p["b"], len(rank))))


def _depth_ticks(n: int) -> tuple[list[float], list[str]]:
    """Tick positions (layer indices) at relative depths 0, 0.25, ..., 1 of n layers."""
    qs = (0.0, 0.25, 0.5, 0.75, 1.0) if n >= 5 else tuple(np.linspace(0, 1, max(n, 1)))
    return [q * (n - 1) for q in qs], [f"{q:.2g}" for q in qs]


def cka_figure(pair: dict) -> Figure:
    """One heatmap per layer type (the paper's `*_1x8_cka` panels): rows = model A's layers, columns =
    model B's, both in forward order, axes in relative depth (0 = input side, 1 = output side)."""
    full = np.array([[math.nan if v is None else v for v in row] for row in pair["cka"]], float)
    ta, tb = list(pair["types_a"]), list(pair["types_b"])
    panels = []
    for p in CKA_PANELS:
        ia = [i for i, t in enumerate(ta) if p == "all" or t == p]
        ib = [j for j, t in enumerate(tb) if p == "all" or t == p]
        if ia and ib and (p == "all" or len(set(ta)) > 1 or len(set(tb)) > 1):
            panels.append((p, ia, ib))
    fig = Figure(figsize=(2.6 * len(panels) + 1.4, 3.5))
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"wspace": 0.25})[0]
    im = None
    for ax, (p, ia, ib) in zip(axes, panels):
        im = ax.imshow(full[np.ix_(ia, ib)], origin="lower", cmap="magma", vmin=0.0, vmax=1.0, aspect="auto",
                       interpolation="nearest")
        ax.set_xticks(*_depth_ticks(len(ib)))
        ax.set_yticks(*_depth_ticks(len(ia)))
        ax.set_title(f"{p} ({len(ia)}x{len(ib)} layers)")
        ax.set_xlabel("relative depth")
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
    axes[0].set_ylabel(label(pair["a"], 40) + "\nrelative depth")
    fig.supxlabel(label(pair["b"], 80), y=-0.1, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=list(axes), fraction=0.025, pad=0.02, label="linear CKA")
    return fig


# ------------------------------------------------------------------------------------------------
# Legibility check
# ------------------------------------------------------------------------------------------------
def _text_box(t: Any, renderer: Any) -> np.ndarray:
    """The four corners (display px) of a text as drawn: its unrotated box turned by its rotation about the
    centre of its drawn extent (a rotated label's axis-aligned extent is far larger than the label)."""
    drawn = t.get_window_extent(renderer)
    angle = t.get_rotation()
    if angle % 180 == 0:
        return np.array([[drawn.x0, drawn.y0], [drawn.x1, drawn.y0], [drawn.x1, drawn.y1], [drawn.x0, drawn.y1]])
    t.set_rotation(0)
    try:
        flat = t.get_window_extent(renderer)
    finally:
        t.set_rotation(angle)
    w, h = flat.width / 2, flat.height / 2
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    cx, cy = (drawn.x0 + drawn.x1) / 2, (drawn.y0 + drawn.y1) / 2
    return np.array([[cx + c * x - s * y, cy + s * x + c * y] for x, y in ((-w, -h), (w, -h), (w, h), (-w, h))])


def _boxes_overlap(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Separating-axis test of two convex quadrilaterals; touching within `tol` px is not overlapping."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            norm = np.hypot(*axis)
            if norm == 0:
                continue
            axis /= norm
            pa, pb = a @ axis, b @ axis
            if pa.max() - tol <= pb.min() or pb.max() - tol <= pa.min():
                return False  # a separating axis: no overlap
    return True


def overlapping_texts(fig: Figure, tol: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts of `fig` drawn over each other (titles, tick labels, legends,
    annotations), found at draw time from their rendered extents: a figure a reader cannot read fails here."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # axis labels are placed in pixels at draw time: measure at the dpi they were placed for
    renderer = canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and (not t.get_clip_on() or t.get_clip_box() is None or _inside_clip(t, renderer))]
    boxes = [_text_box(t, renderer) for t in texts]
    out = []
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if _boxes_overlap(boxes[i], boxes[j], tol):
                out.append((texts[i].get_text(), texts[j].get_text()))
    return out


def _inside_clip(t: Any, renderer: Any) -> bool:
    """A clipped text outside its clip box is not drawn (e.g. a label of a bar beyond the limits)."""
    return t.get_window_extent(renderer).overlaps(t.get_clip_box())


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def save(fig: Figure, fig_dir: Path, name: str, title: str, caption: str) -> FigureFile:
    """Write NAME.png and NAME.svg; return the record the page embeds.

    Figures use fixed margins (no layout engine) and both files are cut to one tight box computed
    without rendering (legends sit outside the axes); one render per format, and one more that records
    any texts drawn over each other (`overlapping_texts`; the tests require none).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import io

    from beyond_inet.engine.store import atomic_write_bytes

    fig_dir.mkdir(parents=True, exist_ok=True)
    png, svg = fig_dir / f"{name}.png", fig_dir / f"{name}.svg"
    svg_buf, png_buf = io.BytesIO(), io.BytesIO()
    with matplotlib.rc_context(RC):
        canvas = FigureCanvasAgg(fig)
        box = fig.get_tightbbox(canvas.get_renderer()).padded(0.08)  # includes the legends outside the axes
        fig.savefig(svg_buf, format="svg", bbox_inches=box, metadata={"Date": None})
        fig.savefig(png_buf, format="png", dpi=PNG_DPI, bbox_inches=box, metadata={"Software": None})
        overlaps = tuple(overlapping_texts(fig))  # drawn again at the figure dpi: labels are placed in pixels
    # Rendered in memory, then each file replaced whole (temp name + rename): a full disk keeps the old ones.
    atomic_write_bytes(svg, svg_buf.getvalue())
    atomic_write_bytes(png, png_buf.getvalue())
    return FigureFile(name, title, caption, png, svg, base64.b64encode(png_buf.getvalue()).decode("ascii"),
                      overlaps)


def build_figures(rows: Sequence[Row], artifacts: dict, models: Sequence[str], fig_dir: Path,
                  colors: dict | None = None) -> tuple[dict[str, list[FigureFile]], dict[str, list[str]]]:
    """Every figure the data allows, keyed by report section (the analysis name), and per-section
    notes: a figure whose data cannot be drawn is reported there, the rest of the report still renders."""
    colors = colors or palette(models)
    rt = RowTable(rows)
    out: dict[str, list[FigureFile]] = {}
    errors: dict[str, list[str]] = {}

    def attempt(section: str, make) -> None:
        try:
            f = make()
        except UserError:  # a figure file that cannot be written (full disk): the report cannot be either
            raise
        except Exception as e:  # bad artifact data must not take the whole report down
            errors.setdefault(section, []).append(f"figure could not be drawn: {type(e).__name__}: {e}")
            return
        if isinstance(f, list):
            out.setdefault(section, []).extend(f)
        elif f is not None:
            out.setdefault(section, []).append(f)

    with matplotlib.rc_context(RC):
        def ix_fig():
            factors, ix = collect_imagenet_x(rt, artifacts, models)
            if not ix:
                return None
            return save(imagenet_x_figure(factors, ix, models, colors), fig_dir, "imagenet-x",
                        "ImageNet-X error ratios",
                        "Error ratio per ImageNet-X factor on ImageNet val (top-factor annotations, prototypes "
                        "removed); 1 means as error-prone as overall; whiskers: 95% bootstrap CI.")

        def sb_fig():
            cats, sb, human = collect_shape_bias(rt, artifacts, models)
            if not sb:
                return None
            return save(shape_bias_figure(cats, sb, models, colors, human), fig_dir, "shape-bias", "Shape bias",
                        "Fraction of shape decisions among shape-or-texture decisions per cue-conflict category; "
                        "dashed lines: overall shape bias" + (human_caption(human) if human
                                                              else "; no human reference in the artifacts.")
                        + shape_bias_units_note(rows, human) + native_view_note(artifacts, models))

        def paper_sb_fig():
            from beyond_inet.references.paper import RELEASED_DECISIONS

            cats, sb, human = collect_shape_bias(rt, artifacts, models)
            released = [m for m in RELEASED_DECISIONS if m in sb]
            if not released:
                return None
            nice = {"vit-sup": "ViT-sup", "convnext-sup": "ConvNeXt-sup", "vit-clip": "ViT-clip",
                    "convnext-clip": "ConvNeXt-clip"}
            names = {m: f"{nice[RELEASED_DECISIONS[m]]} [{m}]" for m in released}
            return save(shape_bias_figure(cats, {m: sb[m] for m in released}, released, colors, human, names,
                                          "The paper's shape-bias figure, from its released decisions"),
                        fig_dir, "shape-bias-paper", "Shape bias: the paper's figure",
                        "The paper's shape-bias figure redrawn from the decisions it released "
                        "(kirill-vish/Beyond-INet raw-data, given with --decisions): per-category fraction of shape "
                        "decisions of its four models, dashed lines their overall shape bias" +
                        (human_caption(human) if human else "; no human reference in this run.") +
                        " The paper's figure shows ConvNeXt-clip at about 0.447; its released CSV gives "
                        "0.424 (paper-spec §3; see the reproduction check).")

        def rel_fig(ds: str, nice: str):
            rel = collect_reliability(artifacts, models, ds)
            if not rel:
                return None
            return save(reliability_figure(nice, rel, models, colors), fig_dir, f"reliability-{ds}",
                        f"Reliability: {nice}",
                        f"{nice}: accuracy per equal-width confidence bin (bars) against the diagonal; hatched: gap "
                        f"to the bin's mean confidence (above the bar = over-confident). Below: share of images per "
                        f"bin, with the accuracy (solid) and mean confidence (dashed).")

        def ece_fig():
            ece = collect_bars(rt, models, "calibration",
                               [("IN-1K", "imagenet-val", "ece"), ("IN-R", "imagenet-r", "ece")])
            if not ece:
                return None
            groups = [g for g in ("IN-1K", "IN-R") if any(g in d for d in ece.values())]
            return save(grouped_bars(groups, ece, models, colors, "ECE", "Expected calibration error (lower is "
                                     "better)"), fig_dir, "ece", "ECE",
                        "ECE per dataset (the artifacts hold no reliability-diagram data).")

        def bars_fig(section: str, members, ylabel: str, title: str, name: str, nice: str, caption: str):
            data = collect_bars(rt, models, section, members)
            if not data:
                return None
            return save(grouped_bars([g for g, _, _ in members], data, models, colors, ylabel, title, percent=True),
                        fig_dir, name, nice, caption)

        def inv_fig():
            curves = collect_invariance(rt, artifacts, models)
            if not curves:
                return None
            return save(invariance_figure(curves, models, colors), fig_dir, "invariance", "Invariance",
                        "Top-1 under zoom-in scale, crop shift and input resolution; bands: 95% CI.")

        attempt("imagenet-x", ix_fig)
        attempt("shape-bias", sb_fig)
        attempt("shape-bias", paper_sb_fig)
        rel_sets = ["imagenet-val", "imagenet-r"] + sorted(
            {k.split("/", 1)[1] for (a, _, k) in artifacts if a == "calibration" and k.startswith("reliability/")}
            - {"imagenet-val", "imagenet-r"})
        for ds in rel_sets:
            nice = {"imagenet-val": "ImageNet-1K val", "imagenet-r": "ImageNet-R"}.get(ds, ds)
            before = len(out.get("calibration", []))
            attempt("calibration", lambda ds=ds, nice=nice: rel_fig(ds, nice))
            if len(out.get("calibration", [])) == before and any(
                    rt.get("calibration", ds, "ece", m) is not None for m in models):
                errors.setdefault("calibration", []).append(
                    f"No reliability diagram for {nice}: its ECE rows exist but the artifacts hold no per-bin data "
                    f"(see the table).")
        if "calibration" not in out:
            attempt("calibration", ece_fig)
        attempt("robustness", lambda: bars_fig(
            "robustness", robustness_members(rt, artifacts), "top-1 (%)",
            "Robustness: top-1 on ImageNet and its variants", "robustness", "Robustness",
            "Top-1 per dataset; Average = mean over the variants present (excluding INet-Val); whiskers: 95% CI."))
        attempt("transfer", lambda: bars_fig(
            "transfer", vtab_members(rt), "top-1 (%)", "Transfer: linear-probe top-1 per VTAB task", "vtab", "VTAB",
            "Linear-probe test top-1 per task on frozen features; Average = plain mean over tasks."))
        pug_m, rule = pug_members(rt, artifacts)
        attempt("synthetic", lambda: bars_fig(
            "synthetic", pug_m, "top-1 (%)", "PUG-ImageNet: top-1 per factor of variation", "pug", "PUG",
            f"Top-1 per PUG factor (metric {rule}); Average = mean over factors."))
        attempt("invariance", inv_fig)
        for section, builder in SECTION_FIGURES.items():  # figure modules of their own (no import cycle)
            attempt(section, lambda b=builder: b(artifacts, models, fig_dir, colors))
        for i, pair in enumerate(collect_cka(artifacts, models), 1):
            attempt("cka", lambda i=i, pair=pair: save(
                cka_figure(pair), fig_dir, f"cka-{i:02d}", f"CKA: {pair['a']} vs {pair['b']}",
                f"Linear CKA (minibatch, unbiased HSIC) between every layer of {pair['a']} (rows) and of "
                f"{pair['b']} (columns) on {pair['n_images']} {pair['dataset']} images in {pair['n_batches']} "
                f"batches of {pair['batch_size']} drawn in a seeded random order; layer outputs reduced by "
                f"{pair['reduce']}. One panel per layer type; axes in relative depth. The diagonal rows' 95% CIs "
                f"resample those {pair['n_batches']} minibatches (jackknife)."))
    remove_stale(fig_dir, {f.name for fs in out.values() for f in fs})
    return out, errors


# section -> builder(artifacts, models, fig_dir, colors) -> [FigureFile]: figure modules that import this one
# register here (``figures_consistency``), so this module never imports them back.
SECTION_FIGURES: dict = {}

OWN_FIGURES = ("imagenet-x", "shape-bias", "shape-bias-paper", "ece", "robustness", "vtab", "pug", "invariance",
               "error-consistency-matrix", "error-consistency-humans", "mvh-accuracy", "mvh-error-consistency",
               "mvh-benchmark", "mvh-scatter")


def human_caption(human: dict) -> str:
    """Where the black human diamonds come from and how they are aggregated."""
    if human.get("aggregate"):
        return (f"; black diamonds and line: humans, {human['aggregate']}, from the published decisions "
                f"(--decisions).")
    return "; black diamonds: humans (model-vs-human raw data)."


def images_scored(rows: Sequence[Row]) -> dict[str, int]:
    """Images of each dataset the run scored: the largest n of a model's row there (per-image metrics such as
    top-1 or shape_acc rest on every scored image; ratios such as shape bias on a subset). The one source of
    "N images" in captions and test headers, so one dataset is never given two image counts."""
    out: dict[str, int] = {}
    for r in rows:
        if r.n and r.model not in ("*", "all", "human-subjects") and " vs " not in r.model:
            out[r.dataset] = max(out.get(r.dataset, 0), int(r.n))
    return out


def shape_bias_units_note(rows: Sequence[Row], human: dict | None) -> str:
    """How many images the shape-bias figure rests on, and a warning when a per-category point rests on
    fewer than 30 (the bundled demo set has 10 per category)."""
    per_cat = [r.n for r in rows if r.analysis == "shape-bias" and r.dataset == "cue-conflict"
               and r.metric.startswith("shape_bias_") and r.n]
    overall = {r.model: r.n for r in rows if r.analysis == "shape-bias" and r.dataset == "cue-conflict"
               and r.metric == "shape_bias" and r.n}
    scored = images_scored(rows).get("cue-conflict")
    text = ""
    if overall:  # each model's own count of decisions: one "per model" number would misstate the others
        of = f" of the {scored} cue-conflict images scored" if scored else ""
        text = (f" Overall lines rest on each model's shape-or-texture decisions{of}: "
                + ", ".join(f"{n} ({m})" for m, n in overall.items()) + ".")
    if per_cat and min(per_cat) < 30:
        text += (f" Each per-category point rests on only {min(per_cat)}–{max(per_cat)} images (fewer than 30): "
                 f"read the points as rough, the overall lines as the result.")
    if human and human.get("n_trials_cue-conflict"):
        text += (f" Humans: {human['n_trials_cue-conflict']} trials on {human.get('n_images_cue-conflict', '?')} "
                 f"images.")
    return text


def native_view_note(artifacts: dict, models: Sequence[str]) -> str:
    """How each model saw the cue-conflict stimuli (the engine's `native` rule, see docs/views.md)."""
    parts = []
    for m in models:
        rec = (_art(artifacts, "shape-bias", m, "shape-bias/native-view") or {}).get("cue-conflict")
        if isinstance(rec, dict) and rec.get("rule"):
            size = f" at {rec['input_size']} px" if rec.get("input_size") else ""
            parts.append(f"{m}: {rec['rule']}{size}")
    return (" Stimuli entered the models as: " + "; ".join(parts) + ".") if parts else ""


def remove_stale(fig_dir: Path, keep: set[str]) -> None:
    """Delete this module's figure files that the current data no longer produces (from an older report)."""
    if not fig_dir.is_dir():
        return
    for f in list(fig_dir.glob("*.png")) + list(fig_dir.glob("*.svg")):
        if f.stem not in keep and (f.stem in OWN_FIGURES or f.stem.startswith(("reliability-", "cka-"))):
            f.unlink()
