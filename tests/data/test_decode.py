"""Image decoding: every Pillow mode to the right 8-bit RGB, the same in every reader; EXIF orientation
ignored unless asked (own store key); decompression bombs skipped and recorded without a warning."""
from __future__ import annotations

import io
import struct
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from beyond_inet.data import readers
from beyond_inet.data.decode import decode_rgb
from beyond_inet.data.pug import PugFolder, PugParquet
from beyond_inet.errors import UserError

RNG = np.random.default_rng(7)
H, W = 6, 9


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG written byte by byte (grey: [H, W]; RGB: [H, W, 3]), independent of Pillow's writer."""
    colour_type = 0 if arr.ndim == 2 else 2
    rows = b"".join(b"\x00" + np.ascontiguousarray(r).astype(">u2").tobytes() for r in arr)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _saved(img: Image.Image, fmt: str) -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt)
    return b.getvalue()


def _grey3(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(a, np.float64)[..., None], 3, axis=2)


def _cases():
    """(name, encoded file, expected RGB as float [H, W, 3], tolerance, mode Pillow opens it as)."""
    u8 = RNG.integers(0, 256, (H, W, 4)).astype(np.uint8)
    u16 = RNG.integers(0, 65536, (H, W, 3)).astype(np.uint16)
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    palette = RNG.integers(0, 256, (256, 3)).astype(np.uint8)
    idx = RNG.integers(0, 256, (H, W)).astype(np.uint8)
    pimg = Image.fromarray(idx, "P")
    pimg.putpalette(palette.tobytes())
    pa = Image.merge("PA", (Image.fromarray(idx, "L"), Image.fromarray(u8[..., 3], "L")))
    pa.putpalette(palette.tobytes())
    i_wide = RNG.integers(256, 65536, (H, W)).astype(np.int32)
    i_small = RNG.integers(0, 256, (H, W)).astype(np.int32)
    i_neg = RNG.integers(-5000, 5000, (H, W)).astype(np.int32)
    f_unit = RNG.random((H, W)).astype(np.float32)
    f_wide = RNG.uniform(-20, 300, (H, W)).astype(np.float32)
    c = u8.astype(np.float64)
    ycc = u8[..., :3].astype(np.float64)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128  # JFIF YCbCr -> RGB
    ycc_rgb = np.clip(np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1), 0, 255)
    return [
        ("1", _saved(Image.fromarray(bits), "PNG"), _grey3(bits * 255.0), 0, "1"),
        ("L", _saved(Image.fromarray(u8[..., 0], "L"), "PNG"), _grey3(u8[..., 0]), 0, "L"),
        ("LA", _saved(Image.fromarray(u8[..., :2], "LA"), "PNG"), _grey3(u8[..., 0]), 0, "LA"),
        ("P", _saved(pimg, "PNG"), palette[idx].astype(np.float64), 0, "P"),
        ("PA", _saved(pa, "TIFF"), palette[idx].astype(np.float64), 0, "PA"),
        ("I;16", png16(u16[..., 0]), _grey3(u16[..., 0] >> 8), 0, "I;16"),
        ("I 16-bit range", _saved(Image.fromarray(i_wide, "I"), "TIFF"), _grey3(i_wide >> 8), 0, "I"),
        ("I 8-bit range", _saved(Image.fromarray(i_small, "I"), "TIFF"), _grey3(i_small), 0, "I"),
        ("I signed", _saved(Image.fromarray(i_neg, "I"), "TIFF"),
         _grey3(np.rint((i_neg - i_neg.min()) * 255.0 / (i_neg.max() - i_neg.min()))), 0, "I"),
        ("F unit", _saved(Image.fromarray(f_unit, "F"), "TIFF"), _grey3(np.rint(f_unit.astype(np.float64) * 255)), 0, "F"),
        ("F wide", _saved(Image.fromarray(f_wide, "F"), "TIFF"), _grey3(np.clip(np.rint(f_wide), 0, 255)), 0, "F"),
        ("RGB", _saved(Image.fromarray(u8[..., :3], "RGB"), "PNG"), c[..., :3], 0, "RGB"),
        ("RGBA", _saved(Image.fromarray(u8, "RGBA"), "PNG"), c[..., :3], 0, "RGBA"),
        ("CMYK", _saved(Image.fromarray(u8, "CMYK"), "TIFF"),
         (255 - c[..., :3]) * (255 - c[..., 3:]) / 255.0, 1, "CMYK"),
        ("YCbCr", _saved(Image.fromarray(u8[..., :3], "YCbCr"), "TIFF"), ycc_rgb, 2, "YCbCr"),
        ("RGB 16-bit", png16(u16), (u16 >> 8).astype(np.float64), 0, "RGB"),
    ]


CASES = _cases()


@pytest.mark.parametrize("name, data, want, tol, mode", CASES, ids=[c[0] for c in CASES])
def test_every_mode_decodes_to_the_right_8bit_rgb(name, data, want, tol, mode):
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == mode  # the case really exercises that mode
    img = decode_rgb(io.BytesIO(data))
    assert img.mode == "RGB" and img.size == (W, H)
    got = np.asarray(img).astype(np.float64)
    assert np.abs(got - want).max() <= tol + 0.5, name


# ------------------------------------------------------------------ the same decode in every reader
GREY16 = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
WANT16 = _grey3(GREY16 >> 8).astype(np.uint8)


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


def _readers_of(tmp_path: Path, data: bytes) -> dict:
    """Every reader kind, each holding the one image file `data`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "folder" / "n01440764").mkdir(parents=True)
    (tmp_path / "folder" / "n01440764" / "x.png").write_bytes(data)
    (tmp_path / "wds" / "test").mkdir(parents=True)
    _tar(tmp_path / "wds" / "test" / "0.tar", {"x.png": data, "x.cls": b"0"})
    (tmp_path / "wds" / "classnames.txt").write_text("a\n")
    pq.write_table(pa.table({"image": [{"bytes": data, "path": None}], "label": [[0]]}), tmp_path / "h.parquet")
    mapping = {"Goldfish": [1]}
    (tmp_path / "pug" / "Worlds" / "Goldfish").mkdir(parents=True)
    (tmp_path / "pug" / "Worlds" / "Goldfish" / "x.png").write_bytes(data)
    pq.write_table(pa.table({"image": [{"bytes": data, "path": None}], "character_label": ["Goldfish"]}),
                   tmp_path / "pug.parquet")
    return {
        "folder": readers.class_folder_dataset("f", tmp_path / "folder"),
        "wds": readers.WdsDataset("w", tmp_path / "wds", "test"),
        "parquet": readers.ParquetDataset("p", [tmp_path / "h.parquet"]),
        "pug-folder": PugFolder(tmp_path / "pug", "Worlds", mapping),
        "pug-parquet": PugParquet(tmp_path / "pug.parquet", mapping),
        "pug-adapter": readers.ReaderAdapter("a", PugParquet(tmp_path / "pug.parquet", mapping)),
    }


def test_every_reader_scales_16bit_images(tmp_path):
    for kind, ds in _readers_of(tmp_path, png16(GREY16)).items():
        assert np.array_equal(np.asarray(ds.load(0)), WANT16), kind


def test_gpu_decode_fallback_decodes_like_the_readers(tmp_path):
    from beyond_inet.engine.gpu_decode import gpu_decodable, raw_bytes

    ds = _readers_of(tmp_path, png16(GREY16))["wds"]
    assert not gpu_decodable(raw_bytes(ds, 0))  # a PNG: the engine decodes it with ds.load on the CPU
    assert np.array_equal(np.asarray(ds.load(0)), WANT16)


# ------------------------------------------------------------------ EXIF orientation
def _oriented_png(orientation: int = 6) -> tuple[bytes, np.ndarray]:
    arr = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="PNG", exif=exif)
    return b.getvalue(), arr


def test_exif_orientation_ignored_by_default_applied_on_request(tmp_path):
    data, arr = _oriented_png(6)  # 6: the stored picture must be turned 90 degrees clockwise for display
    assert np.array_equal(np.asarray(decode_rgb(io.BytesIO(data))), arr)
    assert np.array_equal(np.asarray(decode_rgb(io.BytesIO(data), exif_transpose=True)), np.rot90(arr, k=-1))
    for kind, ds in _readers_of(tmp_path, data).items():
        assert np.array_equal(np.asarray(ds.load(0)), arr), kind
        if isinstance(ds, readers.ImageDataset):
            ds.set_decoding(exif_transpose=True)
        else:  # the PUG readers, used through ReaderAdapter
            ds.exif_transpose = True
        assert np.array_equal(np.asarray(ds.load(0)), np.rot90(arr, k=-1)), kind


def test_exif_option_reaches_the_readers_and_changes_only_its_store_key(tmp_path):
    from beyond_inet import ENGINE_VERSION
    from beyond_inet.engine.gpu_decode import raw_bytes
    from beyond_inet.engine.plan import DatasetCache, exif_transpose_option, store_key
    from beyond_inet.engine.store import STORE_FORMAT, make_key

    data, arr = _oriented_png(8)
    (tmp_path / "imagenet-val" / "n01440764").mkdir(parents=True)
    (tmp_path / "imagenet-val" / "n01440764" / "ILSVRC2012_val_00000001.png").write_bytes(data)
    plain = DatasetCache(str(tmp_path), None)
    turned = DatasetCache(str(tmp_path), None, exif_transpose=exif_transpose_option({"exif_transpose": 1}))
    ds0, ds1 = plain.get("imagenet-val")[0], turned.get("imagenet-val")[0]
    assert np.array_equal(np.asarray(ds0.load(0)), arr)
    assert np.array_equal(np.asarray(ds1.load(0)), np.rot90(arr, k=1))  # 8: turned 90 degrees anticlockwise
    assert raw_bytes(ds0, 0) == data and raw_bytes(ds1, 0) is None  # nvJPEG would ignore the tag: CPU decode
    args = ("w", "pre", "standard", "imagenet-val", "fp", None, {})
    old = make_key({"weights": "w", "pre": "pre", "view": "standard", "dataset": "imagenet-val", "samples": "fp",
                    "limit": None, "logit_scale": None, "engine": ENGINE_VERSION, "store_format": STORE_FORMAT})
    assert store_key(*args, decoding=plain.decoding) == old  # default keys unchanged: stored outputs stay valid
    assert store_key(*args, decoding=turned.decoding) != old
    from beyond_inet.analyses import Request
    from beyond_inet.engine.plan import plan_model_jobs
    from beyond_inet.engine.store import Store
    from tests.data.test_label_layouts import _oracle

    keys = [plan_model_jobs(_oracle(), [Request("imagenet-val")], c, Store(tmp_path / "store"))[0].keys["standard"]
            for c in (plain, turned, DatasetCache(str(tmp_path), None))]
    assert keys[0] != keys[1] and keys[0] == keys[2]  # the planner keys the option; the default is stable
    assert [exif_transpose_option(o) for o in ({}, {"exif_transpose": 0}, {"exif_transpose": "true"})] == [
        False, False, True]
    with pytest.raises(UserError, match="exif_transpose"):
        exif_transpose_option({"exif_transpose": "sideways"})


def test_bad_exif_option_fails_before_any_work(tmp_path):
    from beyond_inet.engine.runner import RunConfig, run

    cfg = RunConfig(models=["timm:convnext_atto@random"], analyses=["accuracy"], out=str(tmp_path / "out"),
                    data_root=None, progress=False, report=False, options={"exif_transpose": "sideways"})
    with pytest.raises(UserError, match="exif_transpose"):
        run(cfg)
    assert not (tmp_path / "out" / "results.sqlite").exists()


# ------------------------------------------------------------------ decompression bombs
def test_decompression_bombs_are_skipped_and_recorded_without_a_warning(tmp_path, monkeypatch, capfd):
    from beyond_inet.analyses import Request
    from beyond_inet.engine.executors import ExecConfig, execute_job
    from beyond_inet.engine.plan import DatasetCache, plan_model_jobs
    from beyond_inet.engine.store import Store
    from tests.data.test_label_layouts import _oracle

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    folder = tmp_path / "imagenet-val" / "n01440764"
    folder.mkdir(parents=True)
    for k, side in enumerate((8, 12, 20)):  # 64 px: fine; 144: Pillow would only warn; 400: Pillow refuses
        Image.new("RGB", (side, side), (0, 0, 77)).save(folder / f"ILSVRC2012_val_{k + 1:08d}.png")
    model, datasets, store = _oracle(), DatasetCache(str(tmp_path), None), Store(tmp_path / "store")
    (job,) = plan_model_jobs(model, [Request("imagenet-val")], datasets, store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = execute_job(job, ExecConfig(str(tmp_path / "store"), str(tmp_path), None, num_workers=0, amp=False),
                            model, datasets)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert [sid for sid, _ in stats.skipped] == ["ILSVRC2012_val_00000002.png", "ILSVRC2012_val_00000003.png"]
    assert all("DecompressionBomb" in err for _, err in stats.skipped)
    out = store.existing(job.keys["standard"]).load()
    assert out.ids == ["ILSVRC2012_val_00000001.png"] and len(out.skipped) == 2
    assert "DecompressionBomb" not in capfd.readouterr().err
