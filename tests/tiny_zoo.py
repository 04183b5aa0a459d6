"""Test-only: the paper's four aliases pointed at tiny architectures whose weights a local Hub serves.

The real four weigh ~350 MB each in float32 and the two CLIP models need 80,000 text-tower passes for their
zero-shot heads: too much for a test on a CPU. So, inside tests only, `install()` re-points the aliases
(the documented override; nothing in the package reads it):

  vit-sup        -> timm:test_vit.r160_in1k          (timm's own tiny test ViT; repo timm/test_vit.r160_in1k)
  convnext-sup   -> timm:test_convnext.r160_in1k     (repo timm/test_convnext.r160_in1k)
  vit-clip       -> open_clip:tiny-clip-vit@tinytest (a native open_clip ViT, width 32; repo test-org/tiny-clip-vit)
  convnext-clip  -> open_clip:tiny-clip-convnext@tinytest (open_clip around timm's test_convnext trunk, as the
                    real convnext_base CLIP is; repo test-org/tiny-clip-convnext)

sets the supervised pair's paper preprocessing to the same 0.875 crop at the tiny models' 160 px, and builds
the CLIP zero-shot heads from 2 of the 80 templates (80,000 text passes take minutes on a test CPU). The
code path is the real one: alias -> spec -> timm's / open_clip's hub loader -> `hf_hub_download` against
HF_ENDPOINT -> the cache -> strict state-dict load. The repos hold the exact published layouts, written with
the libraries' own savers (timm's `save_for_hf`: config.json + model.safetensors; open_clip's
`save_config_for_hf`: open_clip_config.json, + open_clip_model.safetensors), with seeded random weights.

Run as ``python -m tests.tiny_zoo <beyond-inet args>`` to get the CLI with the override installed (the
tests start it as a child process with the Hub environment set before huggingface_hub is imported).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

TAG = "tinytest"
TIMM = {"vit-sup": "test_vit.r160_in1k", "convnext-sup": "test_convnext.r160_in1k"}
CLIP = {"vit-clip": "tiny-clip-vit", "convnext-clip": "tiny-clip-convnext"}
_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
CLIP_CONFIGS = {
    "tiny-clip-vit": {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "head_width": 16,
                                                      "patch_size": 16}, "text_cfg": _TEXT},
    "tiny-clip-convnext": {"embed_dim": 32, "vision_cfg": {"timm_model_name": "test_convnext",
                                                           "timm_model_pretrained": False, "timm_pool": "",
                                                           "timm_proj": "linear", "image_size": 64},
                           "text_cfg": _TEXT},
}


def clip_repo(arch: str) -> str:
    return f"test-org/{arch}"


def install() -> None:
    """Register the tiny open_clip architectures and tags and re-point the aliases (this process only)."""
    import open_clip
    from open_clip import pretrained, zero_shot_metadata

    from beyond_inet.models import aliases
    from beyond_inet.models.base import Preprocessing

    d = Path(tempfile.mkdtemp(prefix="tiny-clip-configs-"))
    for arch, cfg in CLIP_CONFIGS.items():
        (d / f"{arch}.json").write_text(json.dumps(cfg))
        pretrained._PRETRAINED[arch] = {TAG: pretrained._pcfg(hf_hub=f"{clip_repo(arch)}/")}
    open_clip.add_model_config(d)
    # 2 of the 80 templates: the zero-shot head is built by the same code, 40x faster (its full-size
    # construction is tested in tests/models/test_clip.py).
    zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES = zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES[:2]
    for alias, name in TIMM.items():
        aliases.ALIASES[alias] = (f"timm:{name}", aliases.ALIASES[alias][1] + " [tiny test stand-in]")
    for alias, arch in CLIP.items():
        aliases.ALIASES[alias] = (f"open_clip:{arch}@{TAG}", aliases.ALIASES[alias][1] + " [tiny test stand-in]")
    aliases.PAPER_SUPERVISED = Preprocessing(input_size=160, resize=182, interpolation="bilinear",
                                             mean=aliases.IMAGENET_MEAN, std=aliases.IMAGENET_STD)


def repos() -> dict[str, dict[str, bytes]]:
    """{repo id: {path: bytes}} for the four tiny models, in the libraries' published layouts."""
    import open_clip
    import timm
    import torch
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file
    from timm.models import save_for_hf as timm_save_for_hf

    install()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in TIMM.values():
            torch.manual_seed(1)
            m = timm.create_model(name, pretrained=False)
            d = Path(tmp) / name
            timm_save_for_hf(m, str(d), safe_serialization=True)
            out[m.pretrained_cfg["hf_hub_id"]] = {p.name: p.read_bytes() for p in d.iterdir()}
        for arch in CLIP.values():
            torch.manual_seed(2)
            m = open_clip.create_model(arch, pretrained=None)
            d = Path(tmp) / arch
            d.mkdir()  # open_clip's save_for_hf, less the tokenizer files its built-in tokenizer cannot write
            save_file(m.state_dict(), d / HF_SAFE_WEIGHTS_NAME)
            save_config_for_hf(m, d / HF_CONFIG_NAME, CLIP_CONFIGS[arch])
            out[clip_repo(arch)] = {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    return out


if __name__ == "__main__":
    install()
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = 4096  # small chunks: a resumed download asks for the rest with a Range
    from beyond_inet.cli import main

    sys.exit(main(sys.argv[1:]))
