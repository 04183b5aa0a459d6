"""The GPU fast path, exercised on the CPU: torchvision decoding + tensor views (what `--gpu-decode` runs on
CUDA) against the PIL path, the fallbacks for files the GPU decoder does not take, `--compile`'s
fallback to eager, and the CLI flags."""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from scale_helpers import WNIDS, make_imagenet_val, photos, tiny_model

from beyond_inet.data import catalog
from beyond_inet.data.views import build_view
from beyond_inet.engine import infer
from beyond_inet.engine.gpu_decode import gpu_decodable, raw_bytes, tensor_view
from beyond_inet.engine.store import Store
from beyond_inet.models.base import Preprocessing

VIEWS = ["standard", "native", "scale-1", "scale-1.5", "scale-3", "shift-0", "shift-30", "shift-100"]


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _as_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()


def test_gpu_decodable_takes_plain_jpegs_only():
    img = Image.fromarray(photos()[1]).resize((120, 90))
    assert gpu_decodable(_jpeg(img))
    assert gpu_decodable(_jpeg(img, progressive=True))
    assert gpu_decodable(_jpeg(img.convert("L")))  # greyscale -> RGB, as PIL's convert("RGB")
    assert not gpu_decodable(_jpeg(img.convert("CMYK")))  # 4 components: CPU
    png = io.BytesIO()
    img.save(png, "PNG")
    assert not gpu_decodable(png.getvalue())
    assert not gpu_decodable(b"")
    assert not gpu_decodable(b"\xff\xd8\xff\xe0\x00")  # header cut before any frame


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_tensor_views_follow_the_pil_views(interp):
    """Same shapes and geometry; pixels within 2 grey levels (resampling kernels), 0.3 on average."""
    img = Image.fromarray(photos()[0]).resize((301, 221))
    pre = Preprocessing(224, 256, interp, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    t = _as_tensor(img)
    std = torch.tensor(pre.std).view(3, 1, 1)
    for view in VIEWS + ["res-112"]:
        p = pre.at_resolution(112) if view.startswith("res-") else pre
        a, b = build_view(view, p)(img), tensor_view(view, p)(t)
        assert a.shape == b.shape, view
        grey = (a - b).abs() * std * 255
        assert grey.max() <= 2.01 and grey.mean() < 0.3, (view, float(grey.max()), float(grey.mean()))


def test_tensor_view_shift_pads_with_zeros_like_pil():
    img = Image.fromarray(photos()[2]).resize((200, 120))  # landscape: the crop moves right, past the border
    pre = Preprocessing(64, 73, "bilinear", (0.0,) * 3, (1.0,) * 3)
    a, b = build_view("shift-100", pre)(img), tensor_view("shift-100", pre)(_as_tensor(img))
    assert float(a[:, :, -3:].abs().max()) == 0.0 and float(b[:, :, -3:].abs().max()) == 0.0
    assert float((a - b).abs().max()) <= 2 / 255 + 1e-6


def test_native_view_is_exact_at_the_input_size():
    img = Image.fromarray(photos()[3]).resize((32, 32))
    pre = Preprocessing(32, 36, "bicubic", (0.5,) * 3, (0.25,) * 3)
    torch.testing.assert_close(tensor_view("native", pre)(_as_tensor(img)), build_view("native", pre)(img))


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_tensor_native_views_follow_the_pil_ones(interp):
    """The resolved native views on the GPU-decoding path: unchanged at the input size, else the whole image
    resized (never cropped); open_clip's transform for CLIP. Within 2 grey levels, as the other views."""
    img = Image.fromarray(photos()[0]).resize((256, 256))
    t = _as_tensor(img)
    for size in (224, 256):
        pre = Preprocessing(size, 256, interp, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        std = torch.tensor(pre.std).view(3, 1, 1)
        for view in ("native:as-is", "native:resized", "native:open_clip"):
            a, b = build_view(view, pre)(img), tensor_view(view, pre)(t)
            assert a.shape == b.shape == (3, size, size), view
            grey = (a - b).abs() * std * 255
            assert grey.max() <= 2.01 and grey.mean() < 0.3, (view, size, float(grey.max()), float(grey.mean()))
            if size == 256 and view != "native:open_clip":
                assert float(grey.max()) < 1e-3  # the image as it is on both paths


def _dataset_with_odd_files(root):
    make_imagenet_val(root, n=12)
    d = root / "imagenet-val" / WNIDS[0]
    img = Image.fromarray(photos()[1]).resize((90, 70))
    img.save(d / "ILSVRC2012_val_00000101.JPEG", "PNG")  # a PNG named .JPEG (ImageNet has one)
    (d / "ILSVRC2012_val_00000102.JPEG").write_bytes(_jpeg(img)[:400])  # truncated: unreadable either way
    (d / "ILSVRC2012_val_00000103.JPEG").write_bytes(_jpeg(img.convert("L")))  # greyscale
    (d / "ILSVRC2012_val_00000104.JPEG").write_bytes(_jpeg(img.convert("CMYK")))  # CMYK: CPU decoding
    return root


def test_run_pass_with_tensor_decoding_matches_cpu_path(tmp_path):
    _dataset_with_odd_files(tmp_path / "data")
    ds = catalog.open_dataset("imagenet-val", str(tmp_path / "data"))
    assert raw_bytes(ds, 0)[:3] == b"\xff\xd8\xff"
    pos = np.arange(len(ds))
    model = tiny_model(per_sample=False)
    outs = {}
    for name, flag in (("cpu", False), ("tensor", True)):
        store = Store(tmp_path / name)
        entries = {v: store.entry(f"k-{v}", len(pos), {"view": v}) for v in ("standard", "shift-30", "scale-2")}
        st = infer.run_pass(model, ds, pos, entries, batch_size=5, num_workers=1, gpu_decode=flag)
        assert st.images == len(ds) and len(st.skipped) == 1 and st.skipped[0][0] == "ILSVRC2012_val_00000102.JPEG"
        outs[name] = {v: e.load() for v, e in entries.items()}
    for v in outs["cpu"]:
        a, b = outs["cpu"][v], outs["tensor"][v]
        assert a.ids == b.ids and a.skipped == b.skipped and np.array_equal(a.labels, b.labels)
        assert len(a.ids) == len(ds) - 1
        np.testing.assert_allclose(a.features, b.features, atol=0.02)
        np.testing.assert_allclose(a.logits, b.logits, atol=0.02)


def test_compile_falls_back_to_eager(tmp_path, monkeypatch, caplog):
    make_imagenet_val(tmp_path / "data", n=6)
    ds = catalog.open_dataset("imagenet-val", str(tmp_path / "data"))
    pos = np.arange(len(ds))

    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no compiler here")

        return run

    compiled_calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled_calls.append(fn) or broken_compile(fn))
    loaded = {}
    for name, flag in (("eager", False), ("compiled", True)):
        store = Store(tmp_path / name)
        e = store.entry("k", len(pos), {})
        with caplog.at_level(logging.WARNING, logger="beyond_inet"):
            infer.run_pass(tiny_model(), ds, pos, {"standard": e}, batch_size=4, num_workers=0, compile=flag)
        loaded[name] = e.load()
    assert len(compiled_calls) == 1
    assert "torch.compile failed" in caplog.text
    np.testing.assert_array_equal(loaded["eager"].logits, loaded["compiled"].logits)


def test_compile_uses_the_compiled_forward(tmp_path, monkeypatch):
    make_imagenet_val(tmp_path / "data", n=5)
    ds = catalog.open_dataset("imagenet-val", str(tmp_path / "data"))
    calls = []

    def fake_compile(fn, **kw):
        def run(x):
            calls.append(x.shape[0])
            return fn(x)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    e = Store(tmp_path / "s").entry("k", len(ds), {})
    infer.run_pass(tiny_model(), ds, np.arange(len(ds)), {"standard": e}, batch_size=4, num_workers=0, compile=True)
    assert calls == [4, 1]


def test_cli_flags(tmp_path, capsys, monkeypatch):
    from beyond_inet import api, cli

    rc = cli.main(["run", "--models", "timm:resnet18@random", "--out", str(tmp_path / "o"), "--device", "cpu",
                   "--gpu-decode"])
    assert rc == 2 and "--gpu-decode needs --device cuda" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["run", "--models", "timm:resnet18@random", "--out", str(tmp_path), "--device", "cpu",
                                          "--compile"])
    monkeypatch.setattr(api, "evaluate", lambda *a, **kw: api.run_config(*a, **kw))  # the config, not a run
    cfg = cli._evaluate(args, args.models, args.analyses)
    assert cfg.compile is True and cfg.gpu_decode is False


def test_views_sharing_a_store_entry_run_once(tmp_path):
    """res-<native> is planned under the standard view's key: one forward per batch, not two."""
    make_imagenet_val(tmp_path / "data", n=6)
    ds = catalog.open_dataset("imagenet-val", str(tmp_path / "data"))
    store = Store(tmp_path / "s")
    e = store.entry("k", len(ds), {})
    before = infer.FORWARD_CALLS["n"]
    st = infer.run_pass(tiny_model(), ds, np.arange(len(ds)), {"standard": e, "res-32": store.entry("k", len(ds))},
                        batch_size=8, num_workers=0)
    assert infer.FORWARD_CALLS["n"] - before == 1 and st.shards_written == 1
    assert len(e.load()) == 6
