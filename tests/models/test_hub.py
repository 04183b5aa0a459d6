"""Model weights over the Hugging Face Hub protocol: the paper's aliases name the published repos, and the
real loaders (timm, transformers) fetch, load and check weights from a local Hub (tests/hub_server.py)."""
from __future__ import annotations

import threading

import pytest
import torch

from beyond_inet.errors import UserError
from beyond_inet.models import create_model
from beyond_inet.models.hub import ChecksumMismatch, fetch_model, hub_source
from tests.hub_server import HubServer, patch_hub


def test_paper_aliases_resolve_to_the_published_repos():
    """What `download vit-sup ...` fetches: the repos of paper-spec §1, at main (no network needed)."""
    assert hub_source("vit-sup") == ("timm/deit3_base_patch16_224.fb_in22k_ft_in1k", "main")
    assert hub_source("convnext-sup") == ("timm/convnext_base.fb_in22k_ft_in1k", "main")
    assert hub_source("vit-clip") == ("timm/vit_base_patch16_clip_224.laion400m_e31", "main")
    assert hub_source("convnext-clip") == ("laion/CLIP-convnext_base-laion400M-s13B-b51K", "main")
    assert hub_source("timm:hf-hub:timm/test_vit.r160_in1k") == ("timm/test_vit.r160_in1k", "main")
    assert hub_source("hf:google/vit-base-patch16-224") == ("google/vit-base-patch16-224", "main")
    for spec in ("vit-sup@random", "vit-clip@random", "timm:resnet18@random", "packaged:efficientnet_lite0"):
        assert hub_source(spec) is None


def _timm_repo(tmp_path, name: str = "test_vit.r160_in1k") -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    """timm's published layout (config.json + model.safetensors) written by timm's own `save_for_hf`."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(3)
    m = timm.create_model(name, pretrained=False)
    save_for_hf(m, str(tmp_path / "repo"), safe_serialization=True)
    return {p.name: p.read_bytes() for p in (tmp_path / "repo").iterdir()}, m.state_dict()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer() as s:
        patch_hub(monkeypatch, s, tmp_path / "hf")
        yield s
    assert not [t for t in threading.enumerate() if t.name == "hub-server"]  # stopped, no thread left


def test_timm_hub_weights_load_exactly(hub, tmp_path):
    files, state = _timm_repo(tmp_path)
    hub.add("timm/test_vit.r160_in1k", files)
    for spec in ("timm:test_vit.r160_in1k", "timm:hf-hub:timm/test_vit.r160_in1k"):  # tag, and hf-hub: name
        got = create_model(spec).module.state_dict()
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    line = fetch_model("timm:test_vit.r160_in1k")
    assert "timm/test_vit.r160_in1k@main in the Hugging Face cache, 2 file(s) checked" in line  # config too now
    assert {r[1].rsplit("/", 1)[-1] for r in hub.requests if r[0] == "HEAD"} >= {"config.json", "model.safetensors"}


def test_corrupt_weights_are_refused_and_removed(hub, tmp_path):
    files, _ = _timm_repo(tmp_path)
    hub.add("timm/test_vit.r160_in1k", files)
    hub.corrupt("model.safetensors")  # the tensor bytes, not the header: the model would load, wrongly
    with pytest.raises(ChecksumMismatch) as e:
        fetch_model("timm:test_vit.r160_in1k")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("checksum mismatch for timm/test_vit.r160_in1k@main: model.safetensors")
    blobs = list((tmp_path / "hf" / "hub" / "models--timm--test_vit.r160_in1k" / "blobs").iterdir())
    assert not any(b.stat().st_size == len(files["model.safetensors"]) for b in blobs)  # not kept for a run
    hub._corrupt.clear()
    assert "1 file(s) checked" in fetch_model("timm:test_vit.r160_in1k")  # fetched again, now whole


def test_offline_without_cache_is_one_line_naming_the_repo(hub, tmp_path, monkeypatch):
    patch_hub(monkeypatch, hub, tmp_path / "empty", offline=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        fetch_model("timm:test_vit.r160_in1k")
    assert "\n" not in str(e.value) and "timm/test_vit.r160_in1k" in str(e.value) and "offline" in str(e.value)


def test_transformers_image_classifier_from_the_hub(hub, tmp_path):
    transformers = pytest.importorskip("transformers", reason="hf: models need transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                 image_size=32, patch_size=16, num_labels=1000)
    torch.manual_seed(4)
    model = transformers.ViTForImageClassification(cfg)
    d = tmp_path / "hf-repo"
    model.save_pretrained(d, safe_serialization=True)  # config.json + model.safetensors
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    hub.add("test-org/tiny-vit-hf", {p.name: p.read_bytes() for p in d.iterdir()})
    got = create_model("hf:test-org/tiny-vit-hf")
    state = model.state_dict()
    loaded = got.module.model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert got.preprocessing.input_size == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = got.forward(x)
        ref = model.eval()(pixel_values=x).logits
    assert logits.shape == (2, 1000) and torch.allclose(logits, ref) and feats.shape == (2, 32)
