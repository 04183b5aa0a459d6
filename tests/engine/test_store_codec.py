"""Stored tensors are compressed where that pays and read back bit for bit; a store written raw (by an older
run), compressed, or both reads the same; damaged compressed bytes are damage, never a crash."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zstandard

from beyond_inet.contracts import FEATURES, LOGITS, SUMMARY
from beyond_inet.engine import codec, store
from beyond_inet.engine.store import (Entry, ShardDamage, Store, StoreDamaged, check_shard_bytes, read_header,
                                      shard_bytes)


def test_shuffle_groups_bytes_by_position_hand_worked():
    """Two little-endian int32 (1 and 0x0302): byte 0 of each, then byte 1 of each, ..."""
    a = np.array([1, 0x0302], "<i4")
    assert codec.shuffle(a).tolist() == [1, 2, 0, 3, 0, 0, 0, 0]
    out = np.empty(2, "<i4")
    codec.unshuffle_into(bytes([1, 2, 0, 3, 0, 0, 0, 0]), out)
    assert out.tolist() == [1, 0x0302]


def _special(dtype, shape, rng):
    a = (rng.standard_normal(shape) * 100).astype(dtype) if np.dtype(dtype).kind in "fc" else \
        rng.integers(0, 2 if dtype == np.bool_ else 100, shape).astype(dtype)
    if np.dtype(dtype).kind == "f" and a.size >= 6:  # values whose bits a float comparison would not check
        flat = a.reshape(-1)
        flat[:6] = [np.nan, -np.nan, np.inf, -np.inf, -0.0, np.finfo(dtype).tiny / 2]
    return np.ascontiguousarray(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8,
                                   np.uint8, np.bool_])
@pytest.mark.parametrize("shape", [(1,), (7, 3), (512, 40)])
def test_round_trip_is_bit_exact(dtype, shape):
    rng = np.random.default_rng(1)
    a = _special(dtype, shape, rng)
    blob = codec.compress(a)
    # decoded by zstandard itself and un-shuffled by hand: the format is what the module says it is
    raw = zstandard.ZstdDecompressor().decompress(blob)
    ref = np.frombuffer(bytes(raw[j] for i in range(a.size) for j in range(i, len(raw), a.size)) if a.size < 200
                        else np.frombuffer(raw, np.uint8).reshape(a.itemsize, -1).T.tobytes(), dtype).reshape(a.shape)
    out = np.empty_like(a)
    codec.decode_into(codec.CODEC, blob, out)
    assert out.tobytes() == a.tobytes() == ref.tobytes()


def test_incompressible_or_empty_tensors_stay_raw():
    rng = np.random.default_rng(0)
    assert codec.encode(rng.integers(0, 256, 4096).astype(np.uint8)) is None  # would not shrink by 10%
    assert codec.encode(np.zeros((0, 1000), np.float32)) is None
    assert codec.encode(np.zeros((64, 1000), np.float32)) is not None


def _outputs(n=40, c=1000, d=64, seed=0):
    """Outputs shaped like real ones: logits on a coarse grid (few mantissa bits, as real logits compress),
    post-ReLU features (half zeros), class-sorted labels."""
    rng = np.random.default_rng(seed)
    z = (np.round(rng.standard_normal((n, c)) * 3 * 64) / 64).astype(np.float32)
    f = np.maximum(rng.standard_normal((n, d)), 0).astype(np.float32)
    y = np.repeat(np.arange(n // 4), 4)
    return z, f, y


def _write(root, kinds, z, f, y, compress_each, shard_size=16):
    s = Store(root)
    e = s.entry("k", len(y), {"dataset": "d", "samples": "s", "kinds": sorted(kinds)})
    e = Entry(e.root, e.n_samples, shard_size, kinds=e.kinds)
    for i in range(e.n_shards):
        r = e.shard_range(i)
        e.compress = compress_each(i)
        e.write_shard(i, np.arange(r.start, r.stop), [f"im{j}" for j in r], y[r.start:r.stop], z[r.start:r.stop],
                      f[r.start:r.stop], None, [])
    return e


@pytest.mark.parametrize("kinds", [{SUMMARY}, {LOGITS}, {FEATURES}, {LOGITS, FEATURES}, {SUMMARY, FEATURES}])
def test_compressed_raw_and_mixed_stores_load_identically(tmp_path, kinds):
    """The same outputs stored raw (as older runs did), compressed, and shard by shard either way."""
    z, f, y = _outputs()
    loads = {}
    for name, each in {"raw": lambda i: False, "compressed": lambda i: True, "mixed": lambda i: i % 2 == 0}.items():
        e = _write(tmp_path / name, kinds, z, f, y, each)
        coded = [set(read_header(e.shard_path(i)).get("codecs", {})) for i in range(e.n_shards)]
        assert (not any(coded)) if name == "raw" else all(coded[::2]) and (name == "mixed") != all(coded)
        out = Entry(e.root, e.n_samples, e.shard_size, kinds=e.kinds).load()
        loads[name] = out
    ref = loads["raw"]
    for name, out in loads.items():
        for k in ("labels", "logits", "features"):
            a, b = getattr(out, k), getattr(ref, k)
            assert (a is None) == (b is None) and (a is None or a.tobytes() == b.tobytes()), (name, k)
        if kinds & {SUMMARY, LOGITS}:
            for k, v in out.record().items():
                assert v.tobytes() == ref.record()[k].tobytes(), (name, k)
        assert out.ids == ref.ids
    if FEATURES in kinds:
        assert sum(p.stat().st_size for p in (tmp_path / "compressed" / "k").glob("shard-*")) < \
            0.8 * sum(p.stat().st_size for p in (tmp_path / "raw" / "k").glob("shard-*"))


def _tamper(buf: bytes, fn) -> bytes:
    """`buf` with its samples metadata changed by `fn` and the hash made right again (xxh3 of the new file)."""
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8:8 + n])
    meta = json.loads(header["__metadata__"]["samples"])
    fn(meta)
    meta.pop(store.CHECKSUM)
    tensors, data = {}, buf[8 + n:]
    for k, v in header.items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            tensors[k] = np.frombuffer(data[a:b], store._DTYPES[v["dtype"]]).reshape(v["shape"])
    return shard_bytes(tensors, meta)


def _flip_in_tensor(buf: bytes, name: str) -> bytes:
    n = int.from_bytes(buf[:8], "little")
    a, _ = json.loads(buf[8:8 + n])[name]["data_offsets"]
    b = bytearray(buf)
    b[8 + n + a + 20] ^= 0x10
    return bytes(b)


def test_damaged_compressed_tensors_are_damage(tmp_path):
    z, f, y = _outputs(n=16)
    e = _write(tmp_path, {LOGITS, FEATURES}, z, f, y, lambda i: True)
    buf, r = e.shard_path(0).read_bytes(), e.shard_range(0)
    t, _ = check_shard_bytes(buf, r)
    assert t["features"].tobytes() == f.tobytes()
    with pytest.raises(ShardDamage, match="checksum mismatch"):  # a flipped byte of compressed data
        check_shard_bytes(_flip_in_tensor(buf, "features"), r)

    def shape(m):
        m["codecs"]["features"][2] = [16, 65]

    def unknown(m):
        m["codecs"]["logits"][0] = "brotli"

    def garbled(m):
        m["codecs"]["features"] = "zstd"

    cases = {"decodes to": shape, "codec 'brotli', unknown to this version": unknown,
             "bad header \\(codec of tensor 'features'\\)": garbled}
    for why, fn in cases.items():
        with pytest.raises(ShardDamage, match=why):
            check_shard_bytes(_tamper(buf, fn), r)
    # corrupt compressed bytes under a valid hash (written so): a load names the damage, moves it aside
    nn = int.from_bytes(buf[:8], "little")
    a, b = json.loads(buf[8:8 + nn])["features"]["data_offsets"]
    blob = bytearray(buf[8 + nn + a:8 + nn + b])
    blob[len(blob) // 2:] = bytes(len(blob) - len(blob) // 2)

    def nothing(m):
        pass

    bad = _tamper(buf[:8 + nn + a] + bytes(blob) + buf[8 + nn + b:], nothing)
    with pytest.raises(ShardDamage, match="tensor 'features': compressed data"):
        check_shard_bytes(bad, r)
    e.shard_path(0).write_bytes(bad)
    with pytest.raises(StoreDamaged, match="compressed data"):
        Entry(e.root, e.n_samples, e.shard_size, kinds=e.kinds).load()
    assert not e.shard_path(0).exists()  # moved aside: the next run recomputes it
