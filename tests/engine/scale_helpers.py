"""Shared by the scale/speed tests: a tiny ImageNet-val tree of real photos and a tiny model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from beyond_inet.models.base import Preprocessing, VisionModel

WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475")  # ImageNet classes 0..4


def photos() -> list[np.ndarray]:
    from skimage import data

    return [data.chelsea(), data.coffee(), data.rocket(), data.astronaut(), data.stereo_motorcycle()[0]]


def make_imagenet_val(data_root: Path, n: int = 20, seed: int = 0, size_range=(40, 160)) -> Path:
    """`data_root/imagenet-val/<wnid>/ILSVRC2012_val_0000000k.JPEG`: random crops of skimage photos,
    downscaled to a shorter side in `size_range` (small, so decoding stays cheap)."""
    rng = np.random.default_rng(seed)
    pics = photos()
    for k in range(1, n + 1):
        p = pics[k % len(pics)]
        h, w = p.shape[:2]
        ch, cw = int(rng.integers(h // 2, h)), int(rng.integers(w // 2, w))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img = Image.fromarray(p[y:y + ch, x:x + cw])
        short = int(rng.integers(*size_range))
        s = short / min(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BILINEAR)
        d = data_root / "imagenet-val" / WNIDS[k % len(WNIDS)]
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"ILSVRC2012_val_{k:08d}.JPEG", quality=90)
    return data_root


def tiny_model(per_sample: bool = True) -> VisionModel:
    """A small conv net over the 1000 classes. With `per_sample`, every image goes through the network
    alone, so outputs cannot depend on how samples are batched (bit-for-bit)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 1000))

    def forward(m: torch.nn.Module, x: torch.Tensor):
        rows = [x[i:i + 1] for i in range(x.shape[0])] if per_sample else [x]
        feats = torch.cat([m[:4](r) for r in rows])
        return torch.cat([m[4](f[None]) for f in feats]) if per_sample else m[4](feats), feats

    pre = Preprocessing(input_size=32, resize=36, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3)
    return VisionModel("tiny", net, pre, forward, "tiny:0")


def store_files(root: Path) -> dict[str, bytes]:
    """Every file under a store folder by relative path (temp files excluded): the bytes to compare."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp")}
