"""Model adapters: shapes, preprocessing, resolution rebuild, checkpoints, packaged weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from beyond_inet.data.views import build_view
from beyond_inet.errors import UserError
from beyond_inet.models import create_model
from beyond_inet.models.aliases import PAPER_SUPERVISED
from tests.conftest import skimage_photo


def _batch(model, names=("chelsea", "coffee")):
    view = build_view("standard", model.preprocessing)
    return torch.stack([view(skimage_photo(n)) for n in names])


@pytest.mark.parametrize("spec,dim", [("timm:convnext_atto@random", 320), ("timm:vit_tiny_patch16_224@random", 192)])
def test_timm_random_shapes_and_logits_match_module(spec, dim):
    m = create_model(spec)
    x = _batch(m)
    with torch.inference_mode():
        logits, feats = m.forward(x)
        ref = m.module(x)
    assert logits.shape == (2, 1000) and feats.shape == (2, dim)
    torch.testing.assert_close(logits, ref)
    assert m.spec == spec and m.weights_id.startswith("random:")
    assert "Resize(" in m.describe()["preprocessing"]


def test_vit_rebuild_native_size_is_identical_and_other_size_bicubic():
    m = create_model("timm:vit_tiny_patch16_224@random")
    same = m.rebuild_fn(224)
    x = _batch(m)
    with torch.inference_mode():
        torch.testing.assert_close(same.forward(x)[0], m.forward(x)[0], rtol=0, atol=0)
    big = m.rebuild(336)
    assert big.preprocessing.input_size == 336
    assert big.preprocessing.resize == int(336 * m.preprocessing.resize / 224)
    grid = m.module.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(21, 21), mode="bicubic", antialias=True, align_corners=False)
    got = big.module.pos_embed[:, 1:].reshape(1, 21, 21, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, want)
    xb = torch.stack([build_view("standard", big.preprocessing)(skimage_photo("chelsea"))])
    assert xb.shape[-1] == 336
    with torch.inference_mode():
        assert big.forward(xb)[0].shape == (1, 1000)
    assert m.module.pos_embed.shape[1] == 197  # the original is untouched


def test_alias_random_uses_paper_preprocessing():
    m = create_model("convnext-sup@random")
    assert m.preprocessing == PAPER_SUPERVISED
    assert m.preprocessing.describe().startswith("Resize(256, bilinear) CenterCrop(224)")


def test_packaged_lite0_classifies_real_photos():
    from beyond_inet.data.labelspaces import imagenet_classnames

    m = create_model("packaged:efficientnet_lite0")
    assert m.preprocessing.mean == (0.5, 0.5, 0.5) and m.preprocessing.interpolation == "bicubic"
    with torch.inference_mode():
        logits, _ = m.forward(_batch(m))
    names = imagenet_classnames()
    top3_cat = [names[i] for i in logits[0].topk(3).indices]
    assert logits[0].argmax().item() in (281, 282, 283, 284, 285), top3_cat  # a cat class
    assert names[logits[1].argmax().item()] == "espresso"


def test_local_checkpoints_safetensors_and_state_dict(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("convnext_atto", pretrained=False)
    sf = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(sf))
    pt = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, pt)
    for path in (sf, pt):
        m = create_model(f"timm:convnext_atto@{path}")
        for k, v in src.state_dict().items():
            assert torch.equal(m.module.state_dict()[k], v)
        assert m.weights_id.startswith("file:")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, p)
    with pytest.raises(UserError, match="refused"):
        create_model(f"timm:convnext_atto@{p}")


def test_checkpoint_that_does_not_fit(tmp_path):
    import timm

    p = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), p)
    with pytest.raises(UserError, match="does not fit"):
        create_model(f"timm:convnext_atto@{p}")


def test_class_count_mismatch_and_unknown_specs(tmp_path):
    import timm

    p = tmp_path / "ten.pth"
    torch.save(timm.create_model("convnext_atto", pretrained=False, num_classes=10).state_dict(), p)
    with pytest.raises(UserError):
        create_model(f"timm:convnext_atto@{p}")
    for bad in ("nope:thing", "resnet50", "timm:not_a_model_xyz@random", "open_clip:NoSuchArch@x",
                "packaged:efficientnet_b9"):
        with pytest.raises(UserError):
            create_model(bad)
