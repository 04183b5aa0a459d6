"""PUG: ImageNet top-1 per factor of variation (paper §2.6).

Datasets ``pug-imagenet/<Factor>`` for the 10 factors (Worlds, Camera_Pitch, Camera_Yaw, Camera_Roll,
Object_Pitch, Object_Yaw, Object_Roll, Object_Scale, Object_Texture, Scene_Light); labels are PUG class
indices (sorted keys of ``class_to_imagenet_idx.json``, read from ``<data_root>/pug-imagenet/`` or the option
``pug_mapping``). The model's argmax over the 1000 ImageNet classes is judged by one of two rules:

  ``any`` (default)  correct when the argmax is *any* ImageNet class listed for the true PUG class. This fixes
                     the JSON's Shirt/Sweatshirt collision (both list 841), under which "Shirt" could never be
                     right.
  ``paper``          (option ``pug_rule="paper"``) the Beyond-INet code: an ImageNet -> PUG dict built over the
                     sorted keys, where a later key overwrites an earlier one for a shared index; argmax classes
                     not in the dict count as wrong.

The rule is part of the metric name, so results of the two rules never mix:
  ``top1_any`` / ``top1_paper``          per factor (dataset ``pug-imagenet/<Factor>``);
  ``top1_avg_any`` / ``top1_avg_paper``  the plain mean of the per-factor accuracies (dataset ``pug-imagenet``),
                                         declared per image over every factor's images (a unit per factor
                                         image, prefixed by the factor: the factors hold different images).
Factors whose outputs are absent are named in one Skip; the average is over the factors present.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import (LOGITS, Analysis, AnalysisResult, Context, Fetch, Request, Skip,
                                       register_analysis)
from beyond_inet.data.pug import FACTORS, MAPPING_FILE, class_names, load_class_mapping

RULES = ("any", "paper")


def any_rule_table(mapping: Mapping[str, Sequence[int]], n_imagenet: int = 1000) -> np.ndarray:
    """Boolean [n_pug, 1000]: table[c, k] is True when ImageNet class k is listed for PUG class c."""
    names = class_names(mapping)
    t = np.zeros((len(names), n_imagenet), dtype=bool)
    for c, name in enumerate(names):
        t[c, list(mapping[name])] = True
    return t


def paper_rule_lookup(mapping: Mapping[str, Sequence[int]], n_imagenet: int = 1000) -> np.ndarray:
    """int [1000]: ImageNet index -> PUG index as the paper's dict (later sorted keys overwrite), -1 unmapped."""
    lut = np.full(n_imagenet, -1, dtype=np.int64)
    for c, name in enumerate(class_names(mapping)):
        for k in mapping[name]:
            lut[int(k)] = c
    return lut


def pug_correct(logits: np.ndarray, labels: np.ndarray, mapping: Mapping[str, Sequence[int]],
                rule: str = "any") -> np.ndarray:
    """Per-image 0/1 correctness of the ImageNet argmax against PUG labels under `rule`."""
    pred = np.asarray(logits).argmax(axis=1)
    lab = np.asarray(labels, dtype=np.int64)
    if rule == "any":
        return any_rule_table(mapping, logits.shape[1])[lab, pred]
    if rule == "paper":
        return paper_rule_lookup(mapping, logits.shape[1])[pred] == lab
    raise ValueError(f"unknown PUG rule {rule!r}; use one of {RULES}")


def mapping_path(ctx: Context) -> Path | None:
    if ctx.options.get("pug_mapping"):
        return Path(ctx.options["pug_mapping"])
    if ctx.data_root:
        return Path(ctx.data_root) / "pug-imagenet" / MAPPING_FILE
    return None


def _factors_to_request(ctx: Context) -> list[str]:
    parts = set(ctx.parts("pug-imagenet"))
    present = [f for f in FACTORS if f in parts]
    return present or list(FACTORS)


@register_analysis
class Synthetic(Analysis):
    name = "synthetic"
    description = "PUG: ImageNet top-1 per factor of variation and their average"

    def requests(self, ctx: Context) -> list[Request]:
        return [Request(f"pug-imagenet/{f}", "standard", frozenset({LOGITS})) for f in _factors_to_request(ctx)]

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        res = AnalysisResult()
        rule = str(ctx.options.get("pug_rule", "any"))
        if rule not in RULES:
            res.skips.append(Skip(self.name, model, "pug-imagenet", f"unknown pug_rule {rule!r}; use any or paper"))
            return res
        mp = mapping_path(ctx)
        if mp is None or not mp.is_file():
            res.skips.append(Skip(self.name, model, "pug-imagenet",
                                  f"PUG class mapping not found ({mp or MAPPING_FILE}); PUG analysis skipped"))
            return res
        mapping = load_class_mapping(mp)
        n_cls = len(mapping)
        missing, per_factor = [], {}
        gm = stats.GroupedMeans(FACTORS)
        for f in FACTORS:
            out = fetch(Request(f"pug-imagenet/{f}", "standard"))
            if out is None or len(out) == 0:
                missing.append(f)
                continue
            ok = (out.labels >= 0) & (out.labels < n_cls)
            if not ok.all():
                res.skips.append(Skip(self.name, model, f"pug-imagenet/{f}",
                                      f"{int((~ok).sum())} images without a PUG label left out"))
            if not ok.any():
                missing.append(f)
                continue
            correct = pug_correct(out.logits[ok], out.labels[ok], mapping, rule).astype(np.float64)
            ids = [i for i, k in zip(out.ids, ok) if k]
            res.metrics.append(stats.mean_metric(f"pug-imagenet/{f}", f"top1_{rule}", correct, ids))
            per_factor[f] = float(correct.mean())
            gm.add(f, correct, [f"{f}:{i}" for i in ids])
        if missing:
            res.skips.append(Skip(self.name, model, "pug-imagenet",
                                  f"factor outputs not available: {', '.join(missing)}"))
        if per_factor:
            avg = float(np.mean(list(per_factor.values())))
            cols = [FACTORS.index(f) for f in per_factor]
            res.metrics.append(gm.metric("pug-imagenet", f"top1_avg_{rule}", lambda M, c=cols: M[:, c].mean(axis=1),
                                         description="mean top-1 over the PUG factors"))
            res.artifacts["synthetic/pug"] = {"rule": rule, "factors": list(per_factor),
                                              "top1": list(per_factor.values()), "average": avg,
                                              "missing": missing}
        return res
