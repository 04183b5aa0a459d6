"""Views cut in loader workers as uint8 and normalised later equal the float views bit for bit."""
from __future__ import annotations

import pytest
import torch

from beyond_inet.data.views import build_view, normalize_uint8
from beyond_inet.models.aliases import PAPER_SUPERVISED
from beyond_inet.models.base import OPENAI_MEAN, OPENAI_STD, Preprocessing
from tests.conftest import skimage_photo

CLIP = Preprocessing(224, 224, "bicubic", OPENAI_MEAN, OPENAI_STD)


@pytest.mark.parametrize("pre", [PAPER_SUPERVISED, CLIP])
@pytest.mark.parametrize("view", ["standard", "native", "scale-1.5", "shift-100", "res-336"])
def test_uint8_then_normalize_is_bit_identical(pre, view):
    if view == "res-336":
        pre = pre.at_resolution(336)
    for photo in ("chelsea", "rocket"):
        img = skimage_photo(photo)
        want = build_view(view, pre)(img)
        u8 = build_view(view, pre, uint8=True)(img)
        assert u8.dtype == torch.uint8 and u8.shape == want.shape
        assert torch.equal(normalize_uint8(u8[None], pre)[0], want)


def _paper_crop_shift(img, shift: int, target: int = 224, resize_dim: int = 256):
    """The paper's CropShift (kirill-vish/Beyond-INet utils/transforms.py), step by step on a PIL image: the
    Resize(resize_dim) + CenterCrop(target) box mapped back to original pixels in floating point, `shift`
    added to left (landscape) or top (portrait/square), every coordinate truncated with int(), a PIL crop
    (zero outside the image), then Resize((target, target)): torchvision's default bilinear on a PIL image,
    i.e. PIL's own (antialiased) bilinear resize. Written for any target/resize_dim; the paper's are
    224/256 (224/224 for CLIP)."""
    from PIL import Image

    w, h = img.size
    if w > h:
        crop_y = (resize_dim - target) / 2
        crop_x = ((w / h * resize_dim) - target) / 2
        top = (crop_y * h) / resize_dim
        left = (crop_x * h) / resize_dim + shift
        crop_h = target * h / resize_dim
        crop_w = target * h / resize_dim
    else:
        crop_y = (h / w * resize_dim - target) / 2
        crop_x = (resize_dim - target) / 2
        top = (crop_y * w) / resize_dim + shift
        left = (crop_x * w) / resize_dim
        crop_h = target * w / resize_dim
        crop_w = target * w / resize_dim
    t, l, ch, cw = int(top), int(left), int(crop_h), int(crop_w)
    return img.crop((l, t, l + cw, t + ch)).resize((target, target), Image.BILINEAR)


SHIFT_IMAGES = [(500, 375), (375, 500), (333, 500), (256, 256), (640, 427), (60, 45), (45, 60), (1600, 1200),
                (1023, 767), (900, 200), (224, 224), (257, 256)]


@pytest.mark.parametrize("pre", [PAPER_SUPERVISED, CLIP, Preprocessing(240, 274, "bicubic"),
                                 Preprocessing(260, 297, "bicubic")])
def test_shift_view_is_the_papers_crop_shift_to_the_pixel(pre):
    """Landscape, portrait, square, small and large images: the shift view's pixels are exactly those of
    the paper's CropShift (its 224/256 generalised to the model's input and resize sizes)."""
    import numpy as np

    photo = skimage_photo("chelsea")
    for w, h in SHIFT_IMAGES:
        img = photo.resize((w, h))
        for shift in (0, 5, 30, 75, 100):
            got = build_view(f"shift-{shift}", pre, uint8=True)(img)
            want = np.array(_paper_crop_shift(img, shift, pre.input_size, pre.resize))
            assert torch.equal(got, torch.from_numpy(want).permute(2, 0, 1)), (pre, w, h, shift)
            full = build_view(f"shift-{shift}", pre)(img)  # and the float view is that, normalised
            assert torch.equal(full, normalize_uint8(got[None], pre)[0])
