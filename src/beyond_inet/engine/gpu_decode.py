"""Decoding JPEGs on the GPU (`--gpu-decode`): the loader workers only read the raw file bytes; the main
process decodes a whole batch with nvJPEG (`torchvision.io.decode_jpeg(..., device="cuda")`) and cuts every
view with tensor ops. Decoding is then no longer bound by the CPU cores.

The tensor views follow `data.views` step by step (the same resize sizes, crop boxes, zero padding and
normalisation; resampled pixels are rounded to 0..255 as PIL does). They are close to the CPU path but not
bit-identical: nvJPEG's IDCT and chroma upsampling differ from libjpeg's, and the tensor resampling kernels
differ from PIL's by about one grey level. The store key does not change with the decoder (as it does not
with the device or bf16 autocast), so mixing decoders in one output set mixes those small differences.

Anything the GPU path does not take is decoded on the CPU exactly as without the flag: non-JPEG files
(PNG, ...), JPEGs that are not 8-bit baseline/progressive with 1 or 3 components (CMYK, lossless,
arithmetic-coded, Adobe RGB-transform), readers whose raw bytes are not reachable (parquet, PUG, synthetic
sets), and any image nvJPEG refuses.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from beyond_inet.data.readers import ImageDataset
from beyond_inet.data.views import NATIVE_OPEN_CLIP, NATIVE_VIEWS, build_view, normalize_uint8, shift_box
from beyond_inet.errors import UserError
from beyond_inet.models.base import Preprocessing

log = logging.getLogger("beyond_inet")
TensorViewFn = Callable[[torch.Tensor], torch.Tensor]
_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}


def raw_bytes(ds: ImageDataset, i: int) -> bytes | None:
    """The encoded bytes of sample `i` when the reader decodes them unchanged from a file or tar member;
    None for readers that build or transform images themselves (then the CPU path is used)."""
    if isinstance(ds, ImageDataset) and type(ds).load is not ImageDataset.load:
        return None  # a reader whose `load` changes what the file holds
    if getattr(ds, "exif_transpose", False):
        return None  # nvJPEG ignores EXIF orientation: decode on the CPU, which applies it
    fn = getattr(ds, "load_bytes", None)  # FileListDataset, WdsDataset, or any reader that offers it
    return fn(i) if callable(fn) else None


def gpu_decodable(data: bytes) -> bool:
    """True for an 8-bit baseline/extended/progressive Huffman JPEG with 1 (grey) or 3 (YCbCr) components.

    Walks the marker segments up to the frame header; anything unusual returns False (-> CPU decoding).
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return False
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            i += 2
            continue
        seg = int.from_bytes(data[i + 2:i + 4], "big")
        adobe_rgb = marker == 0xEE and data[i + 4:i + 9] == b"Adobe" and i + 15 < n and data[i + 15] == 0
        if adobe_rgb and _components_after(data, i + 2 + seg) == 3:
            return False  # Adobe "no transform": RGB-coded, which PIL and nvJPEG read differently
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in (0xC0, 0xC1, 0xC2) or i + 10 > n:
                return False
            return data[i + 4] == 8 and data[i + 9] in (1, 3)
        if marker == 0xDA:  # scan before any frame header
            return False
        i += 2 + seg
    return False


def _components_after(data: bytes, i: int) -> int | None:
    """Components of the first frame header at or after offset `i` (None when there is none)."""
    n = len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[i + 9] if i + 10 <= n else None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _resize(x: torch.Tensor, size, interpolation: InterpolationMode) -> torch.Tensor:
    """Antialiased resampling of a 0..255 float image, rounded and clamped like PIL's uint8 result."""
    return F.resize(x, size, interpolation=interpolation, antialias=True).round_().clamp_(0, 255)


def tensor_view(view: str, pre: Preprocessing) -> TensorViewFn:
    """The view `view` (see `data.views`) on a decoded uint8 [3, H, W] tensor, on any device."""
    interp = _INTERP.get(pre.interpolation, InterpolationMode.BICUBIC)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x / 255.0, pre.mean, pre.std)

    def standard(img: torch.Tensor) -> torch.Tensor:
        return norm(F.center_crop(_resize(img.float(), pre.resize, interp), pre.input_size))

    if view == "standard" or view.startswith("res-") or view == NATIVE_OPEN_CLIP:
        return standard  # res-<r>: `pre` is already the rebuilt model's preprocessing
    if view == "native" or view in NATIVE_VIEWS:
        def native(img: torch.Tensor) -> torch.Tensor:  # whole image, never cropped (see data.views)
            if tuple(img.shape[-2:]) == (pre.input_size, pre.input_size):
                return norm(img.float())
            return norm(_resize(img.float(), [pre.input_size, pre.input_size], interp))

        return native
    try:
        if view.startswith("scale-"):
            side = int(float(view[6:]) * pre.resize)

            def scale(img: torch.Tensor) -> torch.Tensor:
                x = _resize(img.float(), side, InterpolationMode.BILINEAR)
                return norm(F.center_crop(x, pre.input_size))

            return scale
        if view.startswith("shift-"):
            px = int(view[6:])

            def shift(img: torch.Tensor) -> torch.Tensor:
                h, w = img.shape[-2:]
                top, left, hh, ww = shift_box(int(w), int(h), pre, px)
                x = F.crop(img.float(), top, left, hh, ww)  # zero-pads past the border, as PIL's crop
                return norm(_resize(x, [pre.input_size, pre.input_size], InterpolationMode.BILINEAR))

            return shift
    except ValueError:
        pass
    raise UserError(f"unknown view {view!r}; use standard, native, scale-<s>, shift-<px> or res-<r>")


def _decode(raws: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | Exception]:
    """Decode JPEG byte tensors to uint8 RGB [3, H, W] on `device`: one batched nvJPEG call, then one by
    one when the batch call fails (so one bad file costs only itself)."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    if not raws:
        return []
    with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec on every call
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        try:
            return list(decode_jpeg(raws, mode=ImageReadMode.RGB, device=device))
        except Exception as e:  # noqa: BLE001 - retried per image below
            log.debug("batched JPEG decoding failed (%s); decoding one by one", e)
        res: list[torch.Tensor | Exception] = []
        for r in raws:
            try:
                res.append(decode_jpeg(r, mode=ImageReadMode.RGB, device=device))
            except Exception as e:  # noqa: BLE001
                res.append(e)
        return res


class TensorDecoder:
    """Turns a loader batch of raw JPEG bytes / CPU-made views into per-view batches on `device`."""

    def __init__(self, ds: ImageDataset, positions, pre_by_view: dict[str, Preprocessing], device: torch.device):
        self.ds, self.positions, self.device = ds, positions, device
        self.pre_by_view = pre_by_view
        self.fns = {v: tensor_view(v, p) for v, p in pre_by_view.items()}
        self.cpu_fns = {v: build_view(v, p) for v, p in pre_by_view.items()}
        self.fallbacks = 0  # images nvJPEG refused, decoded on the CPU instead

    def __call__(self, ok: list[int], items: list) -> tuple[list[int], dict[str, torch.Tensor], list[tuple[int, str]]]:
        """`items[k]` is sample `ok[k]`: a 1-D uint8 tensor of JPEG bytes or a dict view -> CPU tensor.
        Returns the samples that made it, their view batches and (sample, error) for the others."""
        raw_at = [k for k, it in enumerate(items) if isinstance(it, torch.Tensor)]
        decoded = dict(zip(raw_at, _decode([items[k] for k in raw_at], self.device)))
        keep, per_view, errors = [], {v: [] for v in self.fns}, []
        for k, j in enumerate(ok):
            it = items[k]
            try:
                if isinstance(it, torch.Tensor):
                    img = decoded[k]
                    if isinstance(img, Exception):
                        self.fallbacks += 1
                        pil = self.ds.load(int(self.positions[j]))  # CPU decode, as without the flag
                        views = {v: fn(pil).to(self.device, non_blocking=True) for v, fn in self.cpu_fns.items()}
                    else:
                        views = {v: fn(img) for v, fn in self.fns.items()}
                else:  # decoded by a loader worker: uint8 crops, normalised here like the CPU path
                    views = {v: normalize_uint8(t.to(self.device, non_blocking=True)[None], self.pre_by_view[v])[0]
                             for v, t in it.items()}
            except Exception as e:  # noqa: BLE001 - counted as unreadable, like the CPU path
                errors.append((j, f"{type(e).__name__}: {str(e)[:160]}"))
                continue
            keep.append(j)
            for v, ts in per_view.items():
                ts.append(views[v])
        batch = {v: torch.stack(ts) for v, ts in per_view.items()} if keep else {}
        return keep, batch, errors
