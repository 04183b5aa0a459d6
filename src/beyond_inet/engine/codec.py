"""Lossless compression of stored tensors, used where it pays.

A tensor is stored compressed when zstd (level 1) over its byte-shuffled bytes (byte 0 of every element,
then byte 1, ...: the exponent and high mantissa bytes of floats line up and compress, the noisy low bytes
do not spoil them) is at most ``PAYS`` of its raw size; otherwise it is stored as it is. Measured on real
EfficientNet-Lite0 outputs of 512 ImageNet images (``benchmarks/bench_store_size.py``): features 0.59 of
raw, logits 0.85, decoding at 0.9-2.8 GB/s on one core; zlib was 3-15x slower at no better ratio, and
zstd without the shuffle kept logits at 0.93. The decoded bytes are bit-identical to the input, so every
number computed from a compressed store equals the number from a raw one.

In a file the compressed tensor is a 1-D ``U8`` tensor of the same name; the file's metadata ``codecs``
maps its name to ``[codec, dtype, shape]`` (``CODEC``, a safetensors dtype name, the decoded shape).
"""
from __future__ import annotations

import numpy as np

CODEC = "zstd1-shuffle"
PAYS = 0.9  # compress a tensor only when it shrinks to at most this fraction of its raw bytes
_LEVEL = 1


class CodecError(ValueError):
    """Compressed bytes that do not decode to the recorded dtype and shape."""


def _zstd():
    import zstandard

    return zstandard


def shuffle(arr: np.ndarray) -> np.ndarray:
    """The bytes of `arr` (C order) regrouped by byte position within each element, as uint8."""
    a = np.ascontiguousarray(arr)
    src = a.reshape(-1).view(np.uint8).reshape(-1, a.itemsize)
    out = np.empty((a.itemsize, src.shape[0]), np.uint8)
    for k in range(a.itemsize):  # one byte column at a time: ~4x faster than numpy's strided transpose
        out[k] = src[:, k]
    return out.reshape(-1)


def unshuffle_into(data: bytes | memoryview, out: np.ndarray) -> None:
    """Undo ``shuffle``: write the elements whose shuffled bytes are `data` into C-contiguous `out`."""
    dest = out.reshape(-1).view(np.uint8).reshape(-1, out.itemsize)
    src = np.frombuffer(data, np.uint8).reshape(out.itemsize, -1)
    for k in range(out.itemsize):
        dest[:, k] = src[k]


def compress(arr: np.ndarray) -> bytes:
    """`arr` in ``CODEC``: its shuffled bytes as one zstd frame."""
    return _zstd().ZstdCompressor(level=_LEVEL).compress(shuffle(arr).data)


def encode(arr: np.ndarray) -> np.ndarray | None:
    """`arr` compressed (uint8), or None when that does not pay (``PAYS``) or `arr` is empty."""
    if arr.nbytes == 0:
        return None
    blob = compress(arr)
    if len(blob) > PAYS * arr.nbytes:
        return None
    return np.frombuffer(blob, np.uint8)


def decoded_size(blob: bytes | memoryview) -> int:
    """The byte count a blob's zstd frame header says it decodes to (-1 when not recorded or not a frame):
    checked against the recorded shape before the output is allocated."""
    zstd = _zstd()
    try:
        return int(zstd.frame_content_size(blob))
    except zstd.ZstdError:
        return -1


def decode_into(codec: str, blob: bytes | memoryview, out: np.ndarray) -> None:
    """Decode `blob` (written by ``encode``) into `out`, whose dtype and shape are the recorded ones.
    Raises CodecError when the bytes do not decode to exactly `out.nbytes` bytes."""
    if codec != CODEC:
        raise CodecError(f"codec {codec!r} unknown to this version")
    zstd = _zstd()
    try:
        data = zstd.ZstdDecompressor().decompress(blob, max_output_size=out.nbytes)
    except zstd.ZstdError as e:
        raise CodecError(f"compressed data does not decode ({e})") from None
    if len(data) != out.nbytes:
        raise CodecError(f"compressed data decodes to {len(data)} bytes, expected {out.nbytes}")
    unshuffle_into(data, out)
