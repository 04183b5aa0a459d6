"""Decoding an image file into the 8-bit RGB picture every view starts from, the same way in every reader.

The reference pipeline (torchvision's ImageFolder loader, which timm, open_clip and the paper's code use)
opens a file with Pillow and calls ``convert("RGB")``. We do the same, except where that silently destroys
the picture:

* 16-bit grayscale (Pillow modes ``I;16*``): ``convert`` clips every value above 255, so a 16-bit PNG turns
  white. We keep the high byte (``v >> 8``), which is what Pillow itself does for 16-bit RGB(A) PNGs.
* 32-bit integer (``I``): values within 0..255 are taken as 8-bit, within 0..65535 as 16-bit (high byte);
  anything else (negative values, wider range) is stretched linearly from its min..max to 0..255.
* float (``F``): values within 0..1 are scaled by 255; otherwise rounded and clipped to 0..255
  (NaN -> 0, +-inf -> the ends).

Alpha is dropped without compositing (as ``convert("RGB")`` does); palettes are looked up; CMYK and YCbCr
go through Pillow's conversions. EXIF orientation is ignored by default, as ImageFolder ignores it (paper
fidelity); ``exif_transpose=True`` applies it first. An image larger than ``Image.MAX_IMAGE_PIXELS`` is
refused with `DecompressionBombError` (Pillow would only warn below twice that size), without any warning
printed: the engine records it as an unreadable image like any other.
"""
from __future__ import annotations

import warnings
from typing import IO

import numpy as np
from PIL import Image, ImageOps

SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")


def _grey_to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    """An 8-bit version of a single-band high-depth array (rules in the module docstring)."""
    if mode in SIXTEEN_BIT_GREY:
        return (a.astype(np.uint16) >> 8).astype(np.uint8)
    if mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    a = a.astype(np.int64)  # mode "I"
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return (a >> 8).astype(np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_rgb8(img: Image.Image) -> Image.Image:
    """`img` (any Pillow mode) as a new 8-bit RGB image."""
    if img.mode in SIXTEEN_BIT_GREY or img.mode in ("I", "F"):
        grey = Image.fromarray(_grey_to_8bit(np.asarray(img), img.mode), "L")
        return grey.convert("RGB")
    return img.convert("RGB")


def decode_rgb(fp: str | IO[bytes], exif_transpose: bool = False) -> Image.Image:
    """Open and fully decode an image file (path or binary file object) to 8-bit RGB."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
        except Image.DecompressionBombWarning as e:
            raise Image.DecompressionBombError(str(e)) from None
    with img:
        img.load()
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        return to_rgb8(img)
