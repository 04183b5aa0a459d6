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
