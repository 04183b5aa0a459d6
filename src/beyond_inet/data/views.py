"""Views: named, deterministic image transforms built from a model's preprocessing.

A view turns a decoded RGB PIL image into the normalised tensor the model sees. Several views of
one dataset are cut from one decoded image in the loader worker (see ``engine.infer``).

Names (stable, used in store keys and results):
  standard       the model's own eval preprocessing
  native         the stimulus as it is (model-vs-human's cue-conflict protocol): never cropped. The
                 engine resolves it per model and dataset into one of (``engine.plan.native_plan``):
                   native:as-is     the model runs at the stimulus size (rebuilt there if needed), so
                                    the pixels go in unchanged;
                   native:resized   the model cannot take that size: the whole stimulus is resized
                                    to input x input (the model's interpolation), never cropped;
                   native:open_clip CLIP models: open_clip's eval transform (the paper's protocol),
                                    i.e. ``standard``.
                 Both of the first two compute: unchanged when the image is input x input, else resized
                 whole to input x input.
  scale-<s>      Resize(int(s * B)) bilinear + CenterCrop(input), B = the model's resize size
  shift-<px>     the paper's CropShift (§2.7): the standard crop box in original pixels (float, then
                 truncated by int()), moved <px> along the longer side, cropped with zero padding,
                 resized to input x input (bilinear, PIL); see `shift_box`
  res-<r>        Resize(int(r * B / input)) + CenterCrop(r); the engine rebuilds the model at r
"""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from beyond_inet.errors import UserError
from beyond_inet.models.base import Preprocessing

ViewFn = Callable[[Image.Image], torch.Tensor]

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}


def _interp(name: str) -> InterpolationMode:
    return _INTERP.get(name, InterpolationMode.BICUBIC)


def _normalize(img: Image.Image, pre: Preprocessing) -> torch.Tensor:
    return F.normalize(F.to_tensor(img), pre.mean, pre.std)


def _to_uint8(img: Image.Image, pre: Preprocessing) -> torch.Tensor:
    return F.pil_to_tensor(img)


def standard_view(pre: Preprocessing, finish=_normalize) -> ViewFn:
    def fn(img: Image.Image) -> torch.Tensor:
        img = F.resize(img, pre.resize, interpolation=_interp(pre.interpolation), antialias=True)
        return finish(F.center_crop(img, pre.input_size), pre)

    return fn


NATIVE_AS_IS = "native:as-is"
NATIVE_RESIZED = "native:resized"
NATIVE_OPEN_CLIP = "native:open_clip"
NATIVE_VIEWS = (NATIVE_AS_IS, NATIVE_RESIZED, NATIVE_OPEN_CLIP)


def native_view(pre: Preprocessing, finish=_normalize) -> ViewFn:
    """The whole image at input x input: untouched (no resampling) when it already has that size, else
    resized whole (aspect ratio not kept, nothing cropped). The engine runs the model at the stimulus size
    whenever the model accepts it, so the stimulus normally goes in untouched."""
    def fn(img: Image.Image) -> torch.Tensor:
        if img.size != (pre.input_size, pre.input_size):
            img = F.resize(img, [pre.input_size, pre.input_size], interpolation=_interp(pre.interpolation),
                           antialias=True)
        return finish(img, pre)

    return fn


def scale_view(pre: Preprocessing, s: float, finish=_normalize) -> ViewFn:
    def fn(img: Image.Image) -> torch.Tensor:
        img = F.resize(img, int(s * pre.resize), interpolation=InterpolationMode.BILINEAR, antialias=True)
        return finish(F.center_crop(img, pre.input_size), pre)

    return fn


def shift_box(w: int, h: int, pre: Preprocessing, shift: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the shifted crop in original-image pixels, as the paper's CropShift
    computes it: the box of Resize(B) + CenterCrop(T) mapped back to the original image in floating point,
    `shift` added to `left` (landscape) or `top` (portrait or square), each coordinate then truncated by
    int(). The paper hard-codes T = 224 and B = 256 (224 for CLIP); here T is the model's input size and B
    its resize size, which are exactly those numbers for the paper's models. The floating-point operations
    follow the paper's order, so the truncation lands on the same pixel."""
    t, b = float(pre.input_size), float(pre.resize)
    if w > h:
        crop_y = (b - t) / 2
        crop_x = ((w / h * b) - t) / 2
        top = (crop_y * h) / b
        left = (crop_x * h) / b + shift
        crop_h = t * h / b
        crop_w = t * h / b
    else:
        crop_y = (h / w * b - t) / 2
        crop_x = (b - t) / 2
        top = (crop_y * w) / b + shift
        left = (crop_x * w) / b
        crop_h = t * w / b
        crop_w = t * w / b
    return int(top), int(left), int(crop_h), int(crop_w)


def shift_view(pre: Preprocessing, shift: int, finish=_normalize) -> ViewFn:
    def fn(img: Image.Image) -> torch.Tensor:
        top, left, hh, ww = shift_box(img.width, img.height, pre, shift)
        img = F.crop(img, top, left, hh, ww)  # zero-pads past the border
        img = F.resize(img, [pre.input_size, pre.input_size], interpolation=InterpolationMode.BILINEAR,
                       antialias=True)
        return finish(img, pre)

    return fn


def resolution_of(view: str) -> int | None:
    """The input resolution a ``res-<r>`` view asks the model to be rebuilt at."""
    return int(view[4:]) if view.startswith("res-") else None


def normalize_uint8(x: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """A uint8 batch [B, 3, H, W] from `build_view(..., uint8=True)` -> exactly the float batch that
    `build_view` would have produced (same ops, same order: bit-identical)."""
    return F.normalize(x.float().div(255), pre.mean, pre.std)


def build_view(view: str, pre: Preprocessing, uint8: bool = False) -> ViewFn:
    """The transform for `view` given the (already rebuilt, for res views) model preprocessing.

    uint8=True stops before normalisation: loader workers then ship 4x fewer bytes through shared
    memory (and to the GPU), and the engine applies `normalize_uint8` on the device."""
    finish = _to_uint8 if uint8 else _normalize
    try:
        if view == "standard":
            return standard_view(pre, finish)
        if view == NATIVE_OPEN_CLIP:
            return standard_view(pre, finish)  # open_clip's eval transform: the model's own
        if view == "native" or view in NATIVE_VIEWS:
            return native_view(pre, finish)
        if view.startswith("scale-"):
            return scale_view(pre, float(view[6:]), finish)
        if view.startswith("shift-"):
            return shift_view(pre, int(view[6:]), finish)
        if view.startswith("res-"):
            return standard_view(pre, finish)  # pre is the rebuilt model's: Resize(r*B/input)+CenterCrop(r)
    except ValueError:
        pass
    raise UserError(f"unknown view {view!r}; use standard, native, scale-<s>, shift-<px> or res-<r>")
