"""`hf:<repo-id or local dir>`: Hugging Face transformers image classifiers with 1000 ImageNet outputs.

Remote code is never executed (`trust_remote_code=False`). Features are the classifier's input, captured
with a forward hook, so any architecture with a linear classifier head works.
"""
from __future__ import annotations

import torch

from beyond_inet.errors import UserError
from beyond_inet.models.base import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, VisionModel, hash_state_dict


class HFClassifier(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.head = _find_head(model)
        self._feats: torch.Tensor | None = None
        self.head.register_forward_hook(self._grab)

    def _grab(self, mod, inputs, output):
        self._feats = inputs[0]


def _find_head(model: torch.nn.Module) -> torch.nn.Module:
    for name in ("classifier", "head", "fc"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise UserError(f"{type(model).__name__}: no classifier/head/fc module to take features from")


def hf_forward(module: HFClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = module.model(pixel_values=x).logits
    feats = module._feats
    if feats.ndim > 2:  # e.g. [B, T, D] token features before a token-pooling head
        feats = feats.mean(dim=1) if feats.ndim == 3 else feats.flatten(1)
    return logits, feats


def _preprocessing(processor) -> Preprocessing:
    size = getattr(processor, "size", None) or {}
    crop = getattr(processor, "crop_size", None) or {}
    input_size = crop.get("height") or size.get("height") or size.get("shortest_edge") or 224
    if "shortest_edge" in size:
        resize = size["shortest_edge"]
        if getattr(processor, "crop_pct", None):
            resize = int(input_size / processor.crop_pct)
    else:
        resize = size.get("height", input_size)
    resample = getattr(processor, "resample", 3)
    interp = {2: "bilinear", 3: "bicubic", 0: "nearest"}.get(int(resample), "bicubic")
    mean = tuple(getattr(processor, "image_mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(processor, "image_std", None) or IMAGENET_STD)
    return Preprocessing(input_size=int(input_size), resize=int(max(resize, input_size)), interpolation=interp,
                         mean=mean, std=std)


def create_hf(spec: str, repo: str) -> VisionModel:
    try:
        from transformers import AutoImageProcessor, AutoModelForImageClassification
    except ModuleNotFoundError:
        raise UserError("hf: models need the transformers package: pip install 'beyond-inet[hf]'") from None
    try:
        model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=False)
        processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load Hugging Face model {repo!r}: {str(e).splitlines()[0][:200]}") from None
    n = model.config.num_labels
    if n != 1000:
        raise UserError(f"Hugging Face model {repo!r} has {n} labels, not the 1000 ImageNet classes")
    module = HFClassifier(model.eval()).eval()
    return VisionModel(spec, module, _preprocessing(processor), hf_forward, f"hf:{repo}:" + hash_state_dict(model),
                       None, {"source": f"transformers {type(model).__name__}"})
