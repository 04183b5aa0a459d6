"""scikit-image's bundled photos as a tiny labelled set (offline, no data root needed).

Labels are ImageNet indices, with every acceptable class listed (ReaL-style multi-labels) where the
photo's class is clear; the astronaut has no ImageNet class and is unlabelled (-1).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from beyond_inet.data.readers import ImageDataset

# (skimage.data function, acceptable ImageNet indices)
PHOTOS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("chelsea", (281, 282, 285)),       # tabby, tiger cat, Egyptian cat
    ("coffee", (967,)),                 # espresso
    ("rocket", (657, 812, 744)),        # missile, space shuttle, projectile
    ("stereo_motorcycle", (670, 665)),  # motor scooter, moped
    ("astronaut", ()),
)


class SkimagePhotos(ImageDataset):
    name = "skimage-photos"

    def __init__(self):
        self._ids = [f"{fn}.png" for fn, _ in PHOTOS]
        self._labels = [labs[0] if labs else -1 for _, labs in PHOTOS]
        self._multi = [list(labs) for _, labs in PHOTOS]

    def _open(self, i: int) -> Image.Image:
        from skimage import data

        arr = getattr(data, PHOTOS[i][0])()
        if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
            arr = arr[0]
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        return Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")
