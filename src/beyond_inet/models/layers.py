"""Named intermediate outputs of any `VisionModel`: which modules count as which layer type, and
forward hooks that hand each selected module's output, reduced to one vector per image, to a callback.

Layer names are the module paths of `VisionModel.module` (``blocks.3``, ``blocks.3.attn``,
``visual.transformer.resblocks.0.mlp.c_fc``, ``model.vit.encoder.layer.0``), so they are stable for a
given architecture whatever the weights. Each module gets at most one type:

- ``block``:  a repeated unit of the trunk: a child of a ``blocks``/``resblocks``/``layer``/``layers``/
  ``layerN`` container (in EfficientNet, the inner stage containers are looked through);
- ``attn``:   a module whose class name ends in ``Attention`` (timm ``Attention``, torch
  ``MultiheadAttention``, HF ``ViTAttention``) and that is not inside another attention module;
- ``linear``: ``nn.Linear`` and pointwise (1x1, ungrouped) ``nn.Conv2d`` — both a per-position linear map;
- ``norm``:   batch, layer, group and RMS norms (timm's ``LayerNorm2d`` and friends are subclasses).

"all" means every module of the selected types, in the order they run. A module that runs more than
once per forward contributes its first call.

Reduction to a per-image vector (``reduce``): ``flatten`` keeps every position ([B, C, H, W] -> C*H*W,
[B, T, D] -> T*D), as AntixK/PyTorch-Model-Compare, which the paper used, does; ``mean`` averages over
space/tokens ([B, C, H, W] -> C, [B, H, W, C] -> C when the module declares C channels, [B, T, D] -> D).
Flattening is memory heavy only transiently: the callback turns each output into a [B, B] Gram matrix at
once (see ``engine.layer_stats``).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from beyond_inet.contracts import LAYER_TYPES, REDUCTIONS  # noqa: F401 - the names, torch-free, live there

_BLOCK_CONTAINERS = re.compile(r"^(blocks|resblocks|layers?|layer\d+)$")
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def layer_type(name: str, module: nn.Module, parents: dict[str, nn.Module]) -> str | None:
    """The type of the module at path `name` (see the module doc), or None if it is none of them."""
    if _is_attention(module) and not any(_is_attention(p) for p in _ancestors(name, parents)):
        return "attn"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
        return "linear"
    if isinstance(module, _NORMS) or type(module).__name__.endswith(("RMSNorm", "LayerNorm", "BatchNorm2d")):
        return "norm"
    if _is_block(name, module, parents):
        return "block"
    return None


def _is_attention(module: nn.Module) -> bool:
    return type(module).__name__.endswith("Attention")


def _ancestors(name: str, parents: dict[str, nn.Module]) -> list[nn.Module]:
    parts = name.split(".")
    return [parents[".".join(parts[:i])] for i in range(1, len(parts)) if ".".join(parts[:i]) in parents]


def _is_block(name: str, module: nn.Module, parents: dict[str, nn.Module]) -> bool:
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) or "." not in name:
        return False
    parts = name.split(".")
    if not parts[-1].isdigit():
        return False
    # The nearest named container above the index: `blocks.3` -> blocks; `blocks.2.1` -> blocks (stage 2).
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].isdigit():
            container = parents.get(".".join(parts[: i + 1]))
            if not isinstance(container, (nn.Sequential, nn.ModuleList)):
                return False
            continue
        return bool(_BLOCK_CONTAINERS.match(parts[i]))
    return False


def typed_modules(root: nn.Module, types: tuple[str, ...] = LAYER_TYPES) -> dict[str, str]:
    """{module path: layer type} for every module of `root` whose type is in `types` (definition order)."""
    unknown = set(types) - set(LAYER_TYPES)
    if unknown:
        raise ValueError(f"unknown layer type(s) {sorted(unknown)}; choose from {LAYER_TYPES}")
    mods = dict(root.named_modules())
    out = {}
    for name, m in mods.items():
        if not name:
            continue
        t = layer_type(name, m, mods)
        if t in types:
            out[name] = t
    return out


def first_tensor(output) -> torch.Tensor | None:
    """The main tensor of a module's output: itself, the first tensor of a tuple/list (torch
    MultiheadAttention returns (out, weights); HF layers return tuples), or of a ModelOutput/dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for o in output:
            if isinstance(o, torch.Tensor):
                return o
    return None


def channel_count(module: nn.Module) -> int | None:
    """The number of output channels a module declares (Linear, conv, norms), or None."""
    for attr in ("out_features", "out_channels", "num_features", "num_channels"):
        v = getattr(module, attr, None)
        if isinstance(v, int):
            return v
    shape = getattr(module, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def per_image(t: torch.Tensor, batch: int, batch_axis: int, reduce: str,
              channels: int | None = None) -> torch.Tensor | None:
    """[batch, d] float32 vectors from a layer output, or None when it is not batched like the input.

    `mean` on a 4-D output averages over space: [B, C, H, W] unless the module's channel count
    `channels` sits last and not second ([B, H, W, C]: Linear/LayerNorm inside ConvNeXt and Swin blocks).
    """
    if t.ndim < 2 or t.shape[batch_axis] != batch:
        return None
    if batch_axis:
        t = t.movedim(batch_axis, 0)
    t = t.float()
    if reduce == "mean" and t.ndim == 4 and channels and t.shape[-1] == channels and t.shape[1] != channels:
        t = t.mean(dim=(1, 2))  # channels-last
    elif reduce == "mean" and t.ndim == 4:  # [B, C, H, W] (NCHW, as timm and torch convs return)
        t = t.mean(dim=(2, 3))
    elif reduce == "mean" and t.ndim == 3:  # [B, T, D] tokens
        t = t.mean(dim=1)
    elif reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose from {REDUCTIONS}")
    return t.reshape(batch, -1)


@contextmanager
def capture_layers(root: nn.Module, layers: dict[str, str], reduce: str,
                   sink: Callable[[str, torch.Tensor], None]) -> Iterator[list[str]]:
    """While active, every forward of `root` calls `sink(name, X[batch, d])` once per selected layer.

    Yields ``(order, start)``: call ``start(b)`` before each forward of a batch of b images (the hooks
    use b to find the batch axis); ``order`` then fills with the layer names in the order they ran.
    Layers whose output is not batched like the input are left out.
    """
    modules = dict(root.named_modules())
    state = {"batch": None, "seen": set()}
    order: list[str] = []

    def hook(name: str, module: nn.Module):
        axis = 1 if getattr(module, "batch_first", True) is False else 0
        channels = channel_count(module)

        def fn(mod, inputs, output):
            if name in state["seen"] or state["batch"] is None:
                return
            t = first_tensor(output)
            x = None if t is None else per_image(t.detach(), state["batch"], axis, reduce, channels)
            if x is None:
                return
            state["seen"].add(name)
            order.append(name)
            sink(name, x)

        return fn

    handles = [modules[n].register_forward_hook(hook(n, modules[n])) for n in layers]

    def start(batch: int) -> None:
        state["batch"], state["seen"] = batch, set()
        order.clear()

    try:
        yield order, start
    finally:
        for h in handles:
            h.remove()
