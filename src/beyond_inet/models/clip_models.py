"""`open_clip:<arch>@<pretrained-tag>` as a zero-shot ImageNet classifier.

Head (paper-spec §1): for each class, embed the 80 OpenAI templates filled with OpenAI's class name,
L2-normalise each, average, renormalise. Logits = scale * normalize(image_embedding) @ W with the scale
fixed at 100 as in the paper (configurable; recorded in `info`). The text-side weights are cached on
disk, keyed by arch, tag and weights hash, so they are built once per model.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from beyond_inet.errors import UserError, weights_unavailable
from beyond_inet.models.base import OPENAI_MEAN, OPENAI_STD, Preprocessing, VisionModel, hash_state_dict

DEFAULT_LOGIT_SCALE = 100.0


def cache_dir() -> Path:
    return Path(os.environ.get("BEYOND_INET_CACHE", Path.home() / ".cache" / "beyond-inet"))


class ZeroShotClassifier(torch.nn.Module):
    """The image tower plus a fixed text-derived linear head."""

    def __init__(self, clip_model: torch.nn.Module, weights: torch.Tensor, logit_scale: float):
        super().__init__()
        self.visual = clip_model.visual
        self.register_buffer("zs_weights", weights, persistent=False)  # [D, 1000]
        self.logit_scale = logit_scale


def clip_forward(module: ZeroShotClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    emb = module.visual(x)
    emb = emb[0] if isinstance(emb, tuple) else emb
    logits = module.logit_scale * F.normalize(emb.float(), dim=-1) @ module.zs_weights.float()
    return logits, emb


def zero_shot_weights(model: torch.nn.Module, arch: str, tag: str, weights_hash: str) -> torch.Tensor:
    """The [D, 1000] class-embedding matrix, built once and cached as safetensors."""
    import open_clip
    from safetensors.torch import load_file, save_file

    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # models sit below data: no labelspaces

    path = cache_dir() / "zeroshot" / f"{arch}-{tag}-{weights_hash}.safetensors".replace("/", "_")
    if path.exists():
        return load_file(str(path))["weights"]
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    tokenizer = open_clip.get_tokenizer(arch)
    with torch.inference_mode():
        w = open_clip.build_zero_shot_classifier(model, tokenizer, classnames=IMAGENET_CLASSNAMES,
                                                 templates=OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=10,
                                                 device="cpu", use_tqdm=False)
    w = w.float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"weights": w}, str(tmp))
    os.replace(tmp, path)
    return w


def class_weights(model: torch.nn.Module, arch: str, classnames) -> torch.Tensor:
    """The [D, K] zero-shot head for any class names: the 80 OpenAI templates, as the ImageNet head is built
    (not cached: a user's few classes cost seconds)."""
    import open_clip
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    tokenizer = open_clip.get_tokenizer(arch)
    with torch.inference_mode():
        w = open_clip.build_zero_shot_classifier(model, tokenizer, classnames=list(classnames),
                                                 templates=OPENAI_IMAGENET_TEMPLATES, num_classes_per_batch=10,
                                                 device="cpu", use_tqdm=False)
    return w.float().contiguous()


def _preprocessing(model: torch.nn.Module) -> Preprocessing:
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model) if hasattr(open_clip, "get_model_preprocess_cfg") else {}
    size = cfg.get("size", 224)
    size = size[-1] if isinstance(size, (tuple, list)) else int(size)
    interp = cfg.get("interpolation", "bicubic")
    # open_clip's eval transform: Resize(shortest side = size) + CenterCrop(size), crop ratio 1.0.
    return Preprocessing(input_size=size, resize=size, interpolation=interp,
                         mean=tuple(cfg.get("mean", OPENAI_MEAN)), std=tuple(cfg.get("std", OPENAI_STD)))


def create_open_clip(spec: str, rest: str, logit_scale: float = DEFAULT_LOGIT_SCALE) -> VisionModel:
    import open_clip

    arch, _, tag = rest.partition("@")
    if arch not in open_clip.list_models():
        raise UserError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    if not tag:
        raise UserError(f"model spec {spec!r}: name the weights, e.g. open_clip:{arch}@<pretrained-tag> "
                        f"(tags: open_clip.list_pretrained_tags_by_model({arch!r})), or @random")
    pretrained = None if tag == "random" else tag
    try:
        torch.manual_seed(0)
        model = open_clip.create_model(arch, pretrained=pretrained)
    except (OSError, ValueError, RuntimeError) as e:
        if isinstance(e, OSError) or "download" in str(e).lower():  # offline, or the hub failed
            repo = ((open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub") or "").rstrip("/") or None
            raise UserError(weights_unavailable(f"open_clip {arch}@{tag}", repo, e)) from None
        raise UserError(f"could not load open_clip {arch}@{tag}: {str(e).splitlines()[0][:200]}") from None
    model.eval()
    whash = hash_state_dict(model)
    weights = zero_shot_weights(model, arch, tag, whash)
    pre = _preprocessing(model)
    info = {"logit_scale": logit_scale, "zero_shot": "80 OpenAI templates, OpenAI ImageNet class names"}

    def build(clip_model: torch.nn.Module, p: Preprocessing, extra: dict) -> VisionModel:
        head = ZeroShotClassifier(clip_model, weights, logit_scale).eval()
        return VisionModel(spec, head, p, clip_forward, f"open_clip:{arch}@{tag}:{whash}", rebuild, {**info, **extra},
                           zero_shot_head=lambda names: class_weights(model, arch, names))

    def rebuild(r: int) -> VisionModel:
        from open_clip.model import resize_pos_embed

        new = open_clip.create_model(arch, pretrained=None, force_image_size=r)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        resize_pos_embed(state, new)  # bicubic, antialiased; keeps the class token
        new.load_state_dict(state)
        return build(new.eval(), pre.at_resolution(r), {"resolution": r})

    return build(model, pre, {})
