"""OUT_DIR/report.html (one self-contained page) and OUT_DIR/report.md, from stored results only.

Inputs: results.sqlite only (rows, skips, artifacts, models, runs, output keys); the paired tests are the
``significance`` analysis' results (``report.verdicts`` reads them); no model is run. The page embeds its figures as base64 PNGs, carries
its CSS inline and has no JavaScript, so it opens offline. Everything user-controlled (model specs,
dataset names, skip reasons, options) goes through jinja2 autoescaping; the Markdown copy escapes
HTML and table pipes itself.

Layout: summary table (one row per model, one column per property, best marked, 95% CIs) -> model
selection -> which differences are real (paired tests) -> one section per analysis (figures, skips,
all rows) -> reproducibility (versions, models, datasets, settings, skips).
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import html as _html
import importlib.metadata as md
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from beyond_inet import registry
from beyond_inet.analyses.base import Row, Skip
from beyond_inet.contracts import MIN_UNITS
from beyond_inet.engine.store import atomic_write_bytes
from beyond_inet.errors import UserError
from beyond_inet.report import effective_robustness_figure as er_figure
from beyond_inet.report import figures_consistency  # noqa: F401  (registers its section's figures)
from beyond_inet.report import figures_mvh  # noqa: F401  (registers its section's figures)
from beyond_inet.report import layout
from beyond_inet.report import reproduction as reproduction_check
from beyond_inet.report import verdicts as cmp
from beyond_inet.report.figures import FigureFile, build_figures, images_scored, is_human_observer, palette
from beyond_inet.report.results import ResultsDB, options_in_effect

TEMPLATES = Path(__file__).parent / "templates"
_PERCENT = re.compile(r"^(top\d+(_.*)?|acc(16)?(_.*)?|val_top1|shape_acc|texture_acc|agree_.*"
                      r"|effective_robustness(_.*)?"  # effective robustness: a top-1 difference, in points
                      r"|probe_top1(/.*)?)$")  # a --dataset folder's k-fold probe accuracy (and per class)


# ------------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------------

def _options_in_effect(cfg: dict) -> list[tuple[str, str]]:
    """Every option of the run's analyses with the value it had (the user's, else the declared default), so
    the reproducibility block states choices such as the PUG rule even when nobody typed them."""
    out = {k: v for opts in options_in_effect(cfg).values() for k, v in opts.items()}
    return [("options in effect", json.dumps(out, default=str, sort_keys=True))] if out else []


def is_percent(metric: str) -> bool:
    """Accuracy-like fractions are shown in percent (the paper's convention); everything else as is."""
    return bool(_PERCENT.match(metric))


def fmt(v: float | None, metric: str = "") -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    if is_percent(metric):
        return f"{100 * v:.1f}"
    a = abs(v)
    if a != 0 and (a >= 1000 or a < 0.001):
        return f"{v:.3g}"
    return f"{v:.3f}"


def fmt_ci(v: float, lo: float, hi: float, metric: str = "") -> str:
    s = fmt(v, metric)
    if s != "—" and all(isinstance(x, (int, float)) and math.isfinite(x) for x in (lo, hi)):
        s += f" [{fmt(lo, metric)}, {fmt(hi, metric)}]"
    return s


def fmt_diff(v: float, metric: str) -> str:
    if not math.isfinite(v):
        return "—"
    return ("+" if v > 0 else "") + (f"{100 * v:.1f}" if is_percent(metric) else f"{v:.3f}")


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ------------------------------------------------------------------------------------------------
# Summary properties
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prop:
    """One summary column: the first candidate (analysis, dataset, metric) pattern that has rows."""

    key: str
    title: str
    candidates: tuple[tuple[str, str, str], ...]
    higher_is_better: bool
    unit: str
    derived: bool = False


PROPS = (
    Prop("top1", "Top-1", (("accuracy", "imagenet-val", "top1"), ("robustness", "imagenet-val", "top1"),
                           ("calibration", "imagenet-val", "top1"), ("accuracy", "imagenet-sample", "top1"),
                           ("accuracy", "*", "top1")), True, "%"),
    Prop("imagenet_x", "ImageNet-X error ratio", (("imagenet-x", "imagenet-val", "error_ratio_mean"),), False, "mean"),
    Prop("shape_bias", "Shape bias", (("shape-bias", "cue-conflict", "shape_bias"),), True, "fraction"),
    Prop("ece_in1k", "ECE IN-1K", (("calibration", "imagenet-val", "ece"), ("calibration", "imagenet-sample", "ece")),
         False, "fraction"),  # titled after the dataset actually used (prop_title)
    Prop("ece_inr", "ECE IN-R", (("calibration", "imagenet-r", "ece"),), False, "fraction"),
    Prop("robustness", "Robustness avg", (("robustness", "variants", "top1_avg"),), True, "%"),
    Prop("vtab", "VTAB avg", (("transfer", "vtab", "top1_avg"),), True, "%"),
    Prop("pug", "PUG avg", (("synthetic", "pug-imagenet", "top1_avg_any"), ("synthetic", "pug-imagenet", "top1_avg*")),
         True, "%"),
    Prop("inv_scale", "Scale invariance", (("invariance", "*", "top1_mean_scale"),), True, "% mean top-1"),
    Prop("inv_shift", "Shift invariance", (("invariance", "*", "top1_mean_shift"),), True, "% mean top-1"),
    Prop("inv_res", "Resolution", (("invariance", "*", "top1_mean_res"),), True, "% mean top-1"),
)

# analysis name -> (title, what it shows), from the registry; analyses it does not declare get generic sections
SECTIONS = tuple((i.name, i.title, i.blurb) for i in registry.ANALYSES.values())
AGGREGATES = {"variants"}  # dataset names of rows that average other datasets (not data sources)
FIGURE_SECTIONS = {i.name for i in registry.ANALYSES.values() if i.figures}
NOT_MODELS = {"*", "all", "human-subjects"}  # row "models" that are not models: cross-model rows, the human ceiling


def anchor(name: str) -> str:
    """A safe id for an analysis section."""
    return "a-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# (no image counts here: how many images a value rests on is its n, which --limit changes)
DATASET_SHORT = {"imagenet-val": "IN-1K", "imagenet-r": "IN-R", "imagenet-sample": "IN-1K sample",
                 "skimage-photos": "scikit-image photos"}


def prop_title(prop: Prop, key: tuple[str, str, str]) -> str:
    """The column title names the dataset actually measured (ECE on the sample set is not "ECE IN-1K")."""
    if prop.key.startswith("ece_"):
        return f"ECE {DATASET_SHORT.get(key[1], key[1])}"
    return prop.title


def resolve_prop(prop: Prop, index: cmp.RowIndex) -> tuple[str, str, str] | None:
    """The concrete (analysis, dataset, metric) a property reads, or None when nothing matches."""
    for a, d, m in prop.candidates:
        hits = sorted(k for k in index.rows if k[0] == a and fnmatch.fnmatchcase(k[1], d)
                      and fnmatch.fnmatchcase(k[2], m))
        if hits:
            return hits[0]
    return None


def too_few_note(n: int | None) -> str:
    return f" (too few: n={n})" if n is not None and n < MIN_UNITS else ""


# Rows that state how a value was computed (classes scored over, probe folds, a probe's chance level), not an
# estimate: no "too few" note on them.
SETTING_METRICS = ("n_classes", "probe_folds", "probe_chance")


# ------------------------------------------------------------------------------------------------
# Building the page data
# ------------------------------------------------------------------------------------------------
def model_order(runs: list[dict], rows: Sequence[Row], infos: dict, output_keys: dict) -> list[str]:
    """Models in the order the user listed them (runs), then any other model that has results."""
    have = {r.model for r in rows} | set(infos) | {m for (m, _, _) in output_keys}
    have -= NOT_MODELS
    order: list[str] = []
    for run in runs:
        for m in run.get("config", {}).get("models", []) or []:
            if m in have and m not in order:
                order.append(m)
    for m in list(infos) + sorted({r.model for r in rows}):
        if m in have and m not in order:
            order.append(m)
    return order


def _metric_label(analysis: str, dataset: str, metric: str) -> str:
    return f"{analysis} · {dataset} · {metric}"


def _group_skips(skips: Sequence[Skip], limit: int = 12) -> tuple[list[dict], int]:
    """Skips grouped by (dataset, reason) with the models they hit; at most `limit` groups."""
    groups: dict[tuple[str, str], list[str]] = {}
    for s in skips:
        ms = groups.setdefault((s.dataset, s.reason), [])
        if s.model not in ms:
            ms.append(s.model)
    items = [{"dataset": d, "reason": r, "models": ms} for (d, r), ms in groups.items()]
    return items[:limit], max(0, len(items) - limit)


def _results_table(rows: Sequence[Row], models: Sequence[str]) -> dict:
    """All rows of one analysis: one line per (dataset, metric), one column per model."""
    cells: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        cells.setdefault((r.dataset, r.metric), {})[r.model] = r
    cols = [m for m in models if any(m in v for v in cells.values())]
    extra = sorted({m for v in cells.values() for m in v} - set(cols))
    cols += extra
    lines = []
    for (d, m), per in sorted(cells.items()):
        lines.append({"dataset": d, "metric": m,
                      "cells": [{"text": fmt_ci(per[c].value, per[c].ci_low, per[c].ci_high, m)
                                 + (too_few_note(per[c].n) if per[c].n and m not in SETTING_METRICS else "")
                                 if c in per else "—",
                                 "n": per[c].n if c in per else None} for c in cols]})
    return {"models": cols, "lines": lines, "percent_note": any(is_percent(m) for (_, m) in cells)}


def _n_text(n: int, scored: int | None) -> str:
    """A paired test's n in the words of the rest of the report: the images, or which share of them."""
    if scored is None or n == scored:
        return f"n = {n} images"
    return f"n = {n} of the {scored} images scored (those this metric is defined on)"


def _comparison_view(c: cmp.Comparison, title: str | None = None, scored: int | None = None) -> dict:
    m = c.metric
    return {
        "n_text": _n_text(c.n, scored),
        "label": title or _metric_label(c.analysis, c.dataset, c.metric),
        "analysis": c.analysis, "dataset": c.dataset, "metric": c.metric,
        "test": "exact McNemar" if c.test == "mcnemar" else "paired bootstrap",
        "direction": {True: "higher is better", False: "lower is better"}.get(c.higher_is_better,
                                                                             "no better direction"),
        "description": c.unit, "n": c.n, "derived": False,
        "notes": [f"too few images (< {MIN_UNITS}): read the verdicts with care"] if c.n < MIN_UNITS else [],
        "percent": is_percent(m),
        "pairs": [{"a": p.a, "b": p.b, "va": fmt(p.value_a, m), "vb": fmt(p.value_b, m), "diff": fmt_diff(p.diff, m),
                   "ci": (f"[{fmt_diff(p.ci_low, m)}, {fmt_diff(p.ci_high, m)}]"
                          if math.isfinite(p.ci_low) and math.isfinite(p.ci_high) else "—"),
                   "disc": f"{p.n01} / {p.n10}" if p.n01 is not None else "—",
                   "p": fmt_p(p.p), "p_holm": fmt_p(p.p_holm), "verdict": p.verdict,
                   "significant": p.winner is not None} for p in c.pairs],
    }


def _reproducibility(runs: list[dict], infos: dict, models: Sequence[str], rows: Sequence[Row],
                     skips: Sequence[Skip], output_keys: dict, artifacts: dict) -> dict:
    from beyond_inet.data import catalog

    latest = runs[-1]["config"] if runs else {}
    versions = dict(latest.get("versions", {}))
    report_versions = {}
    for pkg in ("matplotlib", "jinja2", "scipy", "numpy"):
        try:
            report_versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    run_list = []
    for r in runs:
        cfg = r.get("config", {})
        run_list.append({"run_id": r.get("run_id"), "started": r.get("started"), "finished": r.get("finished") or
                         "(not finished)",
                         "settings": [(k, json.dumps(cfg[k]) if isinstance(cfg[k], (dict, list)) else str(cfg[k]))
                                      for k in ("models", "analyses", "data_root", "limit", "device", "amp", "precision", "numerics",
                                                "batch_size", "logit_scale", "executor", "seed", "n_boot", "options")
                                      if k in cfg] + _options_in_effect(cfg)})
    model_list = []
    for m in models:
        info = dict(infos.get(m, {}))
        model_list.append({"spec": m, "weights": info.pop("weights", "—"),
                           "preprocessing": info.pop("preprocessing", "—"),
                           "logit_scale": info.pop("logit_scale", None),
                           "other": [(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                                     for k, v in info.items() if k != "spec"]})
    names = {r.dataset for r in rows} | {d for (_, d, _) in output_keys}  # used; what was missing is in skips
    bases: dict[str, list[str]] = {}
    for n in sorted(names):
        bases.setdefault(n.split("/")[0], []).append(n)
    ds_list = []
    for base, parts in sorted(bases.items()):
        e = catalog.ENTRIES.get(base)
        if e is None and base in AGGREGATES:
            continue
        user = (latest.get("user_datasets") or {}).get(base)
        if e is None and user:  # a --dataset folder: what its labels mean and how it was scored, and warnings
            note = " ".join([user.get("note", "")] + [f"Warning: {w}" for w in user.get("warnings", [])])
            ds_list.append({"name": base, "title": note, "source": user.get("path", "—"), "revision": "—",
                            "license": "(yours)", "parts": len(parts)})
            continue
        if e is None:
            ds_list.append({"name": base, "title": "(not a catalog dataset)", "source": "—", "revision": "—",
                            "license": "—", "parts": len(parts)})
            continue
        rev = e.source.split("@", 1)[1].split(" ", 1)[0] if "@" in e.source else (
            e.source.split("==", 1)[1] if "==" in e.source else "—")
        ds_list.append({"name": base, "title": e.title, "source": e.source, "revision": rev, "license": e.license,
                        "parts": len(parts)})
    bins = sorted({len(v["edges"]) - 1 for (a, _, k), v in artifacts.items()
                   if a == "calibration" and k.startswith("reliability/") and isinstance(v, dict) and v.get("edges")})
    clip = [(m["spec"], m["logit_scale"]) for m in model_list if m["logit_scale"] is not None]
    return {"versions": sorted(versions.items()), "report_versions": sorted(report_versions.items()),
            "runs": run_list, "models": model_list, "datasets": ds_list, "clip": clip,
            "logit_scale_override": latest.get("logit_scale"),
            "bins": ", ".join(str(b) for b in bins) if bins else "15",
            "data_root": latest.get("data_root")}


# Reproduction verdict -> its style: green only for a match the CI supports; "too few" is muted like every
# other too-few value of the report.
VERDICT_CLASS = {reproduction_check.MATCHES: "matches", reproduction_check.DIFFERS: "differs",
                 reproduction_check.TOO_FEW: "muted"}


def _reproduction_section(rows: Sequence[Row], infos: dict, models: Sequence[str], artifacts: dict) -> dict:
    """The reproduction-check section: checks (also written to reproduction.csv), display lines, models
    without a verdict, and the effective-robustness baselines recorded by the robustness analysis."""
    refs, no_verdict = reproduction_check.reference_table(models, infos)
    used = {m: reproduction_check.used_settings(infos.get(m)) for m in models}
    checks = reproduction_check.compare(rows, refs, used)
    lines = []
    for c in checks:  # two decimals of a percent / three of a ratio: the published numbers' own precision
        pct = is_percent(c.metric)

        def f(v: float, sign: str = "", pct: bool = pct) -> str:
            return "—" if not math.isfinite(v) else f"{100 * v:{sign}.2f}" if pct else f"{v:{sign}.3f}"

        ci = f" [{f(c.ci_low)}, {f(c.ci_high)}]" if math.isfinite(c.ci_low) and math.isfinite(c.ci_high) else ""
        tol = f"±{100 * c.tolerance:.3g}" if pct else f"±{c.tolerance:.3g}"
        lines.append({"model": c.model, "row": f"{c.analysis} · {c.dataset} · {c.metric}",
                      "measured": f(c.measured) + ci + too_few_note(c.n), "n": c.n,
                      "published": f"{f(c.published)} {tol}", "difference": f(c.difference, "+"),
                      "verdict": c.verdict, "verdict_class": VERDICT_CLASS.get(c.verdict, "muted"),
                      "source": "paper" if c.source.startswith("paper") else "timm",
                      "source_full": c.source, "causes": c.likely_causes, "note": c.note})
    with_refs = {r.model for r in refs}
    return {"checks": checks, "lines": lines,
            "n_matches": sum(c.verdict == reproduction_check.MATCHES for c in checks),
            "n_differs": sum(c.verdict == reproduction_check.DIFFERS for c in checks),
            "n_too_few": sum(c.verdict == reproduction_check.TOO_FEW for c in checks),
            "no_verdict": sorted(no_verdict.items()),
            "no_references": [m for m in models if m not in with_refs and m not in no_verdict],
            "unmatched": sorted(m for m in with_refs if not any(c.model == m for c in checks)),
            "baselines": reproduction_check.recorded_baselines(artifacts)}


def build_context(out_dir: Path, alpha: float, n_boot: int | None, seed: int | None) -> tuple[dict, dict]:
    """Everything the page and the Markdown copy show (plain data; escaping is the renderers' job)."""
    db = ResultsDB(out_dir)
    try:
        rows, skips, artifacts = db.rows(), db.skips(), db.artifacts()
        infos, runs, output_keys = db.models(), db.runs(), db.output_keys()
        images = db.run_meta(runs[-1]["run_id"]).get("datasets", []) if runs else []
        integrity = _integrity(db)
    finally:
        db.close()
    n_rows_total = len(rows)  # = the rows of results.csv, the number the run's summary prints
    # The significance analysis' rows ("A vs B") are shown through its artifact, not as model rows.
    rows = [r for r in rows if r.analysis != cmp.SIGNIFICANCE]
    models = model_order(runs, rows, infos, output_keys)
    latest = runs[-1]["config"] if runs else {}
    n_boot = int(n_boot if n_boot is not None else latest.get("n_boot", 1000))
    seed = int(seed if seed is not None else latest.get("seed", 0))
    compare_error = None
    try:
        comps, settings = cmp.comparisons(artifacts, alpha)
    except (KeyError, TypeError, ValueError) as e:  # a malformed artifact must not take the report down
        compare_error = f"the stored paired tests are unreadable: {type(e).__name__}: {e}"
        comps, settings = {}, {}
    n_boot = int(settings.get("n_boot") or n_boot)
    seed = int(settings["seed"] if settings.get("seed") is not None else seed)
    index = cmp.RowIndex.build(rows)
    standing = cmp.Standing(index)  # the one rule behind every star, tie mark, green verdict and pick
    standing.withhold(comps.values())
    missing_data, skips = layout.split_missing(skips, latest.get("data_root"), models)
    bundled = layout.bundled_in_use(latest.get("data_root"), [d for (_, d, _) in output_keys])
    colors = palette(models)
    figures, figure_notes = build_figures(rows, artifacts, models, out_dir / "figures", colors)
    try:  # effective robustness against the published baseline, in the robustness section
        if (er := er_figure.build(rows, models, out_dir / "figures", colors)) is not None:
            figures.setdefault("robustness", []).append(er)
    except UserError:  # its file could not be written (full disk): one line, exit 2
        raise
    except Exception as e:  # a figure must not take the report down
        figure_notes.setdefault("robustness", []).append(f"effective-robustness figure could not be drawn: {e}")

    # Summary table and model selection
    columns, missing, selection = [], [], []
    for prop in PROPS:
        key = resolve_prop(prop, index)
        per = index.rows.get(key, {}) if key else {}
        vals = {m: (r.value, r.ci_low, r.ci_high) for m, r in per.items()}
        ns = {m: int(r.n) for m, r in per.items()}
        if not vals:
            missing.append(prop.title)
            continue
        title = prop_title(prop, key)
        comp = comps.get(key)
        unusable = standing.unusable(vals, key[1])
        # Published human observers (--decisions) are the reference the models are read against, not candidates.
        choice = cmp.choose({m: v[0] for m, v in vals.items() if not is_human_observer(m)}, ns,
                            prop.higher_is_better, comp, unusable)
        mark = len(vals) >= 2
        pct = prop.unit.startswith("%")
        columns.append({"prop": prop, "title": title, "key": key, "metric": key[2], "dataset": key[1],
                        "choice": choice,
                        "cells": {m: {"text": (_pct(vals[m]) if pct else fmt_ci(*vals[m])) + too_few_note(ns[m])
                                      + (f" ({cmp.NOT_USABLE})" if m in unusable else ""),
                                      "too_few": ns[m] < MIN_UNITS, "unusable": unusable.get(m),
                                      "best": mark and m == choice.best,
                                      "tied": mark and choice.tested and m in choice.tied and m != choice.best}
                                  for m in vals}})
        selection.append({"title": title, "direction": "higher" if prop.higher_is_better else "lower",
                          "best": choice.best, "tied": choice.tied, "tested": choice.tested, "text": choice.text,
                          "n_models": len(vals), "metric": _metric_label(*key)})

    # Paired tests, headline metrics first
    scored = images_scored(rows)
    headline = [c["key"] for c in columns]
    tests_head, tests_other = [], {}
    for c in sorted(comps.values(), key=lambda c: headline.index(c.key) if c.key in headline else len(headline)):
        if not c.pairs:
            continue
        if c.key in headline:
            title = next(col["title"] for col in columns if col["key"] == c.key)
            tests_head.append(_comparison_view(c, f"{title} ({_metric_label(*c.key)})", scored.get(c.dataset)))
        else:
            tests_other.setdefault(c.analysis, []).append(_comparison_view(c, scored=scored.get(c.dataset)))
    untested = [{"label": f"{s.dataset}", "reason": s.reason} for s in skips if s.analysis == cmp.SIGNIFICANCE]

    # Analysis sections
    by_analysis: dict[str, list[Row]] = {}
    for r in rows:
        if r.analysis != cmp.SIGNIFICANCE:  # shown in "Which differences are real"
            by_analysis.setdefault(r.analysis, []).append(r)
    skips_by: dict[str, list[Skip]] = {}
    for s in skips:
        if s.analysis != cmp.SIGNIFICANCE:
            skips_by.setdefault(s.analysis, []).append(s)
    known = [a for a, _, _ in SECTIONS]
    others = sorted((set(by_analysis) | set(skips_by)) - set(known))
    sections, blocked = [], []
    for name, title, blurb in [sec for sec in SECTIONS if sec[0] != cmp.SIGNIFICANCE] + [(a, a, "") for a in others]:
        rs = by_analysis.get(name, [])
        groups, more = _group_skips(skips_by.get(name, []))
        figs = figures.get(name, [])
        if not (rs or figs or figure_notes.get(name) or skips_by.get(name)):
            # Nothing to show: an analysis that was not asked for gets no section, and one that only lacked
            # data is named once (with the data it needs) instead of as an empty section.
            needs = [m.dataset for m in missing_data if name in m.analyses]
            if needs:
                blocked.append({"name": name, "title": title, "needs": needs})
            continue
        status = None
        needs = [m.dataset for m in missing_data if name in m.analyses]
        if name in FIGURE_SECTIONS and not figs and not rs and not skips_by.get(name) and needs:
            status = f"Needs data not present here: {', '.join(needs)} (see “Data not present” above)."
        elif name not in FIGURE_SECTIONS and not rs and needs:
            status = f"Needs data not present here: {', '.join(needs)} (see “Data not present” above)."
        elif name in FIGURE_SECTIONS and not figs:
            if not rs and not skips_by.get(name):
                status = "This analysis was not run."
            elif not rs:
                status = "Skipped for every model: no figure (reasons below)."
            else:
                status = "No figure: the results hold no data for it (see the reasons below and the table)."
        elif name not in FIGURE_SECTIONS and not rs:
            status = "This analysis was not run." if not skips_by.get(name) else "Skipped for every model."
        sections.append({"name": name, "id": anchor(name), "title": title, "blurb": blurb, "figures": figs,
                         "figure_notes": figure_notes.get(name, []), "status": status, "skips": groups,
                         "more_skips": more, "table": _results_table(rs, models) if rs else None,
                         "n_rows": len(rs)})

    repro = _reproducibility(runs, infos, models, rows, skips, output_keys, artifacts)
    repro["images"] = images  # what results.json states too: n and fingerprints of each dataset of the last run
    reproduction = _reproduction_section(rows, infos, models, artifacts)
    ctx = {
        "title": "beyond-inet report", "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "out_name": out_dir.resolve().name, "models": models,
        "colors": {m: "#%02x%02x%02x" % tuple(int(255 * c) for c in colors[m]) for m in models},
        "columns": columns, "missing": missing, "selection": selection,
        "alpha": alpha, "n_boot": n_boot, "seed": seed,
        "tests_head": tests_head, "tests_other": sorted(tests_other.items()), "untested": untested,
        "compare_error": compare_error,
        "sections": sections, "blocked": blocked, "repro": repro, "reproduction": reproduction,
        "skips": [{"analysis": s.analysis, "model": s.model, "dataset": s.dataset, "reason": s.reason} for s in skips],
        "n_rows": n_rows_total, "integrity": integrity,
        "missing_data": [{"dataset": m.dataset, "title": m.title, "analyses": m.analyses,
                          "models": m.models_text(len(models)), "how_to_get": m.how_to_get} for m in missing_data],
        "bundled": bundled,
        "single_model": len(models) == 1,
    }
    return ctx, {"rows": rows}


def _integrity(db: ResultsDB) -> dict:
    """Unreadable images per dataset (from the stored shards, so cached reruns list them too) and damaged
    store files that were moved aside and recomputed."""
    unreadable = db.unreadable()
    counts: dict[str, int] = {}
    for u in unreadable:
        counts[u["dataset"]] = counts.get(u["dataset"], 0) + 1
    return {"unreadable": unreadable, "unreadable_counts": sorted(counts.items()), "damaged": db.damage()}


def _pct(v: tuple[float, float, float]) -> str:
    val, lo, hi = v
    if not math.isfinite(val):
        return "—"
    s = f"{100 * val:.1f}"
    if math.isfinite(lo) and math.isfinite(hi):
        s += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return s


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------
def md_escape(text: Any) -> str:
    """A Markdown table cell: HTML escaped (Markdown passes raw HTML through), pipes and newlines neutralised."""
    return _html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ").replace("`", "\\`") \
        .replace("*", "\\*").replace("_", "\\_").replace("[", "\\[").replace("]", "\\]")


def _md_table(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(md_escape(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def _reproduction_markdown(rep: dict) -> list[str]:
    """The reproduction-check section of report.md (same content as the HTML one)."""
    parts = ["## Reproduction check", ""]
    if rep["lines"]:
        parts += [f"{rep['n_matches']} match, **{rep['n_differs']} differ**, {rep['n_too_few']} too few images "
                  "to tell (match: published value inside our 95% CI widened by its tolerance, and the CI narrow "
                  "enough to decide; differ: outside it; accuracies in %). Also in `reproduction.csv`.", "",
                  _md_table(["model", "row", "measured [95% CI]", "n", "published", "difference", "verdict", "source",
                             "likely causes / notes"],
                            [[c["model"], c["row"], c["measured"], c["n"], c["published"], c["difference"],
                              c["verdict"].upper() if c["verdict"] == "differs" else c["verdict"], c["source"],
                              "; ".join(x for x in (c["causes"], c["note"]) if x)] for c in rep["lines"]]), ""]
    else:
        parts += ["No measured row has a published counterpart in this run.", ""]
    if rep["no_verdict"]:
        parts += ["No verdict: " + md_escape("; ".join(f"{m} ({why})" for m, why in rep["no_verdict"])) + ".", ""]
    for b in rep["baselines"]:
        parts.append(f"- Effective-robustness baseline {md_escape(b['dataset'])}: slope {b['slope']:.4f}, "
                     f"intercept {b['intercept']:.4f}, {b['n_models']} standard ImageNet-1k timm models")
    if rep["baselines"]:
        parts += ["", md_escape(rep["baselines"][0]["rule"]), ""]
    return parts


def _md_data_notes(ctx: dict) -> list[str]:
    """The "Data not present" lines (one per dataset) and the bundled-data note, as Markdown."""
    parts = []
    if ctx["missing_data"]:
        parts += ["## Data not present", ""]
        parts += [f"- **{md_escape(m['dataset'])}** ({md_escape(m['title'])}): needed by "
                  f"{md_escape(', '.join(m['analyses']))} for {md_escape(m['models'])}. {md_escape(m['how_to_get'])}"
                  for m in ctx["missing_data"]] + [""]
    if ctx["bundled"]:
        parts += ["Read from the package's bundled copy: " + "; ".join(
            f"{md_escape(b['dataset'])} ({md_escape(b['note'])}"
            + (f"; full set: {md_escape(b['how_to_get'])})" if b["how_to_get"] else ")")
            for b in ctx["bundled"]) + ".", ""]
    return parts


def render_markdown(ctx: dict) -> str:
    parts = [f"# {ctx['title']}", "", f"Generated {ctx['generated']} from `results.sqlite`; "
             f"{len(ctx['models'])} model(s), {ctx['n_rows']} result rows (as in `results.csv`).", ""]
    parts += ["## Summary", ""]
    if ctx["columns"]:
        header = ["model"] + [f"{c['title']} ({'↑' if c['prop'].higher_is_better else '↓'})"
                              for c in ctx["columns"]]
        lines = []
        for m in ctx["models"]:
            line = [m]
            for c in ctx["columns"]:
                cell = c["cells"].get(m)
                line.append("—" if cell is None else cell["text"] + (" ★" if cell["best"] else " =" if cell["tied"]
                                                                     else ""))
            lines.append(line)
        parts += [_md_table(header, lines), "",
                  "★ best value; = not significantly different from the best (paired test, Holm-corrected, "
                  f"alpha {ctx['alpha']}); values with 95% CIs; accuracies in %; \"too few\": the value rests on "
                  f"fewer than {MIN_UNITS} images and is never marked best; \"{cmp.NOT_USABLE}\": the model's "
                  "top-1 there (else on ImageNet) has a 95% CI reaching chance level, and it is never picked as "
                  "best there.", ""]
    if ctx["missing"]:
        parts += ["Not computed in this run: " + md_escape(", ".join(ctx["missing"])) + ".", ""]
    if ctx["blocked"]:
        parts += ["Asked for, but the data is not present here: " + md_escape("; ".join(
            f"{b['title']} (needs {', '.join(b['needs'])})" for b in ctx["blocked"])) + ".", ""]
    parts += _md_data_notes(ctx)
    if not ctx["single_model"]:
        parts += ["## Model selection", ""]
    for s in ctx["selection"] if not ctx["single_model"] else []:
        if s["best"] is None:
            continue
        who = ", ".join(s["tied"]) if len(s["tied"]) > 1 else s["best"]
        parts.append(f"- **{md_escape(s['title'])}** ({s['direction']} is better): "
                     f"{'tied: ' if len(s['tied']) > 1 else 'pick '}{md_escape(who)} — {md_escape(s['text'])}")
    parts += ["", "## Which differences are real", ""]
    if ctx.get("compare_error"):
        parts += [f"*{md_escape(ctx['compare_error'])}*", ""]
    parts += [f"Paired tests on the images both models were scored on: exact McNemar for accuracies, paired "
              f"bootstrap ({ctx['n_boot']} resamples, seed {ctx['seed']}) otherwise. Verdicts at alpha = "
              f"{ctx['alpha']}, Holm-corrected across the pairs of models within each metric; 'A > B' = A is "
              f"significantly better.", ""]
    for t in ctx["tests_head"] + [v for _, vs in ctx["tests_other"] for v in vs]:
        parts += [f"### {md_escape(t['label'])}", "",
                  f"{t['test']}, {t['direction']}, {t['n_text']}"
                  + (f"; {md_escape(t['description'])}" if t["description"] else ""), ""]
        parts.append(_md_table(["model A", "model B", "A", "B", "A − B", "95% CI (A − B)", "A✓B✗ / A✗B✓", "p",
                                "p (Holm)", "verdict"],
                               [[p["a"], p["b"], p["va"], p["vb"], p["diff"], p["ci"], p["disc"], p["p"], p["p_holm"],
                                 p["verdict"]] for p in t["pairs"]]))
        parts += [f"- {md_escape(n)}" for n in t["notes"]] + [""]
    if ctx["untested"]:
        parts += ["Not tested:", ""] + [f"- {md_escape(u['label'])}: {md_escape(u['reason'])}" for u in ctx["untested"]]
        parts.append("")
    for s in ctx["sections"]:
        parts += [f"## {md_escape(s['title'])}", ""]
        if s["blurb"]:
            parts += [s["blurb"], ""]
        if s["status"]:
            parts += [f"*{md_escape(s['status'])}*", ""]
        for f in s["figures"]:
            parts += [f"![{md_escape(f.title)}](figures/{f.name}.png)", "", md_escape(f.caption), ""]
        for e in s["figure_notes"]:
            parts += [f"- {md_escape(e)}"]
        if s["skips"]:
            parts += ["Skipped:", ""] + [f"- {md_escape(g['dataset'])}: {md_escape(g['reason'])} "
                                         f"({md_escape(', '.join(g['models']))})" for g in s["skips"]]
            if s["more_skips"]:
                parts.append(f"- … and {s['more_skips']} more (see Skipped analyses)")
            parts.append("")
        if s["table"]:
            t = s["table"]
            parts += [_md_table(["dataset", "metric"] + t["models"],
                                [[ln["dataset"], ln["metric"]] + [c["text"] for c in ln["cells"]]
                                 for ln in t["lines"]]), ""]
    parts += _reproduction_markdown(ctx["reproduction"])
    r = ctx["repro"]
    parts += ["## Reproducibility", "", "### Package versions", "",
              _md_table(["package", "version"],
                        r["versions"] + [(f"{k} (report)", v) for k, v in r["report_versions"]]),
              "", "### Runs", ""]
    for run in r["runs"]:
        parts += [f"- run {md_escape(run['run_id'])}: {md_escape(run['started'])} → {md_escape(run['finished'])}; "
                  + "; ".join(f"{md_escape(k)} = {md_escape(v)}" for k, v in run["settings"])]
    parts += ["", "### Models", "",
              _md_table(["model", "weights", "preprocessing", "logit scale"],
                        [[m["spec"], m["weights"], m["preprocessing"], "—" if m["logit_scale"] is None
                          else m["logit_scale"]] for m in r["models"]]),
              "", "### Datasets", "",
              _md_table(["dataset", "title", "source", "revision", "license"],
                        [[d["name"], d["title"], d["source"], d["revision"], d["license"]] for d in r["datasets"]]),
              *(["", "### Images used (latest run)", "",
                  _md_table(["dataset", "images", "sample list", "files"],
                            [[d["name"], d["n"], d["fingerprint"], d["files"]] for d in r["images"]])]
                if r.get("images") else []),
              "", "### Settings", "",
              f"- Calibration: {md_escape(r['bins'])} equal-width confidence bins on [0, 1], (lower, upper]; "
              f"confidence = max softmax; ImageNet-R softmax over its 200 classes.",
              "- CLIP logit scale: " + (", ".join(f"{md_escape(s)} = {v}" for s, v in r["clip"]) if r["clip"]
                                        else "no CLIP model in this run") +
              (f" (run override: {r['logit_scale_override']})" if r["logit_scale_override"] is not None else ""),
              f"- Paired tests: alpha = {ctx['alpha']}, Holm across pairs within a metric, "
              f"{ctx['n_boot']} bootstrap resamples, seed {ctx['seed']}.", "", "### Skipped analyses", ""]
    if ctx["skips"]:
        parts.append(_md_table(["analysis", "model", "dataset", "reason"],
                               [[s["analysis"], s["model"], s["dataset"], s["reason"]] for s in ctx["skips"]]))
    else:
        parts.append("Nothing was skipped.")
    integ = ctx["integrity"]
    parts += ["", "### Unreadable images and damaged stored files", ""]
    if integ["unreadable"]:
        parts.append(_md_table(["dataset", "file", "reason"],
                               [[u["dataset"], u["file"], u["reason"]] for u in integ["unreadable"]]))
    else:
        parts.append("Every image was read.")
    parts.append("")
    if integ["damaged"]:
        parts.append(_md_table(["file", "problem", "moved to", "found"],
                               [[d["path"], d["reason"], d["moved_to"], d["found"]] for d in integ["damaged"]]))
    else:
        parts.append("No damaged stored file was found.")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------
def render_html(ctx: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**ctx)


def write_files(out_dir: str | Path, ctx: dict) -> Path:
    """Render a built context to OUT_DIR/report.md and OUT_DIR/report.html; return the HTML path."""
    out = Path(out_dir)
    md, page = render_markdown(ctx), render_html(ctx)  # both rendered before anything is replaced
    reproduction_check.write_csv(out / "reproduction.csv", ctx["reproduction"]["checks"])
    atomic_write_bytes(out / "report.md", md.encode("utf-8"))
    path = out / "report.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def write_report(out_dir: str | Path, alpha: float = cmp.ALPHA, n_boot: int | None = None,
                 seed: int | None = None) -> str:
    """Write OUT_DIR/report.html, OUT_DIR/report.md and OUT_DIR/figures/*; return the HTML path.

    alpha: level of the paired tests; n_boot / seed: bootstrap settings (default: the last run's).
    """
    out = Path(out_dir)
    ctx, _ = build_context(out, alpha, n_boot, seed)
    return str(write_files(out, ctx))


__all__ = ["write_report", "write_files", "build_context", "render_html", "render_markdown", "FigureFile"]
