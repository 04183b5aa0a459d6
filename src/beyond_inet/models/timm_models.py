"""`timm:<name>` (hub weights), `timm:<arch>@<checkpoint>` (local file) and `timm:<arch>@random`."""
from __future__ import annotations

import copy
import os
from typing import Any

import torch

from beyond_inet.errors import UserError, weights_unavailable
from beyond_inet.models.base import Preprocessing, VisionModel, hash_file, hash_state_dict


def timm_forward(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled pre-logit features and logits from one pass through the trunk."""
    feats = module.forward_head(module.forward_features(x), pre_logits=True)
    return module.get_classifier()(feats), feats


def preprocessing_from_timm(module: torch.nn.Module) -> Preprocessing:
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(module)
    return Preprocessing.from_crop_pct(cfg["input_size"][-1], cfg["crop_pct"], cfg["interpolation"], cfg["mean"],
                                       cfg["std"])


def _torch_load(path: str, mmap: bool = False) -> Any:
    """torch.load with weights_only=True (no code is unpickled); a failure is one UserError line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "documentation of torch.load" not in ln]
        msg = lines[-1] if lines else type(e).__name__
        if "Unsupported global" in str(e) or "GLOBAL " in str(e) or "REDUCE" in str(e):
            raise UserError(f"checkpoint {path!r} contains pickled code or objects and was refused "
                            f"(only tensors are loaded); re-save it as a plain state dict or safetensors") from None
        if mmap and "mmap" in str(e):  # a legacy (pre-zip) torch file cannot be memory-mapped: read it whole
            return _torch_load(path, mmap=False)
        raise UserError(f"checkpoint {path!r} could not be read (not a torch state dict or safetensors file): "
                        f"{msg[:160]}") from None


def _state_dict_of(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded torch file: unwrapped from a training checkpoint, 'module.' (DDP) removed."""
    for key in ("state_dict", "model", "model_ema", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint {path!r} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} does not exist; pass an existing .safetensors/.pth file")


def load_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch file, never unpickling code (weights_only=True)."""
    _check_exists(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
            raise UserError(f"checkpoint {path!r} is not a valid safetensors file ({type(e).__name__})") from None
    return _state_dict_of(_torch_load(path), path)


def checkpoint_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a checkpoint without reading its tensor data: the safetensors header (which must
    cover the whole file, so a truncated file fails here), or a memory-mapped torch zip file (whose central
    directory sits at the end, so a truncated file fails here too; tensors are mapped, not read)."""
    _check_exists(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # noqa: BLE001
            raise UserError(f"checkpoint {path!r} is not a valid safetensors file ({type(e).__name__}: "
                            f"{str(e)[:120]})") from None
    return {k: tuple(v.shape) for k, v in _state_dict_of(_torch_load(path, mmap=True), path).items()}


def fit_problem(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> str | None:
    """Why a state dict with shapes `got` does not fit a module whose state dict has shapes `expected`
    (strict, as `load_into`): None when it fits."""
    bad = [k for k in expected if k in got and tuple(got[k]) != tuple(expected[k])]
    if bad:
        k = bad[0]
        return (f"size mismatch for {k}: copying a param with shape {list(got[k])} from checkpoint, the shape in "
                f"current model is {list(expected[k])} ({len(bad)} tensors differ)")
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if missing or unexpected:
        return (f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                f"(e.g. {unexpected[:2]})")
    return None


def check_checkpoint(name: str, path: str) -> None:
    """Will `timm:<name>@<path>` load? Checked before any run starts, at a small cost: the architecture is
    built on the meta device (no memory, no init: ~0.2 s for a ViT-B) and the checkpoint's keys and shapes
    are read without its tensor data. Data damaged inside an intact file is not detected (nor is it by a
    full load: torch and safetensors files carry no data checksum)."""
    import timm

    got = checkpoint_shapes(path)
    with torch.device("meta"):
        module = timm.create_model(name, pretrained=False)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    why = fit_problem(expected, got)
    if why is not None:
        raise UserError(f"checkpoint {path!r} does not fit the architecture {name!r}: {why}")


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Strict load with a one-line explanation of any mismatch."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln][:1]
        detail = first[0] if first else str(e).splitlines()[0]
        raise UserError(f"checkpoint {what} does not fit the architecture: {detail}") from None
    if missing or unexpected:
        raise UserError(f"checkpoint {what} does not fit the architecture: {len(missing)} missing keys "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")


def check_classes(module: torch.nn.Module, spec: str) -> None:
    n = getattr(module, "num_classes", None)
    if n != 1000:
        raise UserError(f"model {spec!r} has {n} output classes, not the 1000 ImageNet classes; "
                        "use an ImageNet-1k classifier (e.g. a '.in1k' or '_ft_in1k' timm tag)")


def wrap_timm(spec: str, module: torch.nn.Module, weights_id: str, pre: Preprocessing | None = None,
              info: dict[str, Any] | None = None) -> VisionModel:
    """A VisionModel around a timm classifier; `rebuild` resamples ViT position embeddings."""
    module.eval()
    check_classes(module, spec)
    pre = pre or preprocessing_from_timm(module)

    def rebuild(r: int) -> VisionModel:
        new = module
        if hasattr(module, "set_input_size") and hasattr(module, "pos_embed"):
            new = copy.deepcopy(module)
            new.set_input_size(img_size=(r, r))  # bicubic, antialiased resampling of the grid
        return VisionModel(spec, new, pre.at_resolution(r), timm_forward, weights_id, rebuild,
                           {**(info or {}), "resolution": r})

    return VisionModel(spec, module, pre, timm_forward, weights_id, rebuild, dict(info or {}))


def create_timm(spec: str, rest: str, pre: Preprocessing | None = None) -> VisionModel:
    import timm

    name, _, ckpt = rest.partition("@")
    if not name:
        raise UserError(f"model spec {spec!r}: expected timm:<model-name>[@<checkpoint>|@random]")
    try:
        if ckpt == "random":
            torch.manual_seed(0)
            module = timm.create_model(name, pretrained=False)
            weights_id = "random:" + hash_state_dict(module)
        elif ckpt:
            module = timm.create_model(name, pretrained=False)
            load_into(module, load_checkpoint(ckpt), repr(ckpt))
            weights_id = "file:" + hash_file(ckpt)
        else:
            module = timm.create_model(name, pretrained=True)
            tag = module.pretrained_cfg.get("tag") or ""
            weights_id = f"hub:{module.pretrained_cfg.get('architecture', name)}.{tag}:" + hash_state_dict(module)
    except UserError:
        raise
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise UserError(f"unknown timm model {name!r}; list them with timm.list_models()") from None
        raise
    except (OSError, ValueError) as e:  # hub download failures (offline, gated, missing file)
        try:
            repo = timm.models.get_pretrained_cfg(name).hf_hub_id
        except Exception:  # noqa: BLE001 - the hint is best effort
            repo = None
        raise UserError(weights_unavailable(f"timm model {name!r}", repo, e,
                                            f"pass a local checkpoint as timm:{name}@<path>")) from None
    return wrap_timm(spec, module, weights_id, pre)
