"""The paper's four models by alias, with the paper's exact weights and preprocessing (paper-spec §1).

Append `@random` (e.g. `vit-sup@random`) to build the same architecture with random weights: no
download, same code path — used by tests, benchmarks and GPU throughput checks.
"""
from __future__ import annotations

from beyond_inet.models.base import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

# Supervised pair: bilinear Resize(256) + CenterCrop(224), ImageNet mean/std (the paper's main.py).
PAPER_SUPERVISED = Preprocessing(input_size=224, resize=256, interpolation="bilinear", mean=IMAGENET_MEAN,
                                 std=IMAGENET_STD)

ALIASES: dict[str, tuple[str, str]] = {
    "vit-sup": ("timm:deit3_base_patch16_224.fb_in22k_ft_in1k", "DeiT-III B/16, IN-21k -> IN-1k (ViT-sup)"),
    "convnext-sup": ("timm:convnext_base.fb_in22k_ft_in1k", "ConvNeXt-B, IN-22k -> IN-1k (ConvNeXt-sup)"),
    "vit-clip": ("open_clip:ViT-B-16@laion400m_e31", "OpenCLIP ViT-B/16, LAION-400M e31 (ViT-clip)"),
    "convnext-clip": ("open_clip:convnext_base@laion400m_s13b_b51k", "OpenCLIP ConvNeXt-B, LAION-400M (ConvNeXt-clip)"),
}


def resolve_alias(spec: str) -> tuple[str, Preprocessing | None] | None:
    """(target spec, preprocessing override) for an alias, or None if `spec` is not one."""
    name, _, suffix = spec.partition("@")
    if name not in ALIASES:
        return None
    target = ALIASES[name][0]
    if suffix == "random":
        target = (target.split("@")[0] + "@random") if target.startswith("open_clip:") else target + "@random"
    elif suffix:
        return None
    return target, (PAPER_SUPERVISED if target.startswith("timm:") else None)
