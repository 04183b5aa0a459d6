"""The output store: per-sample outputs of one (model, dataset, view) in fixed-size shards.

Layout: ``<out>/store/<key>/meta.json`` and ``shard-00000.safetensors`` ... Each shard covers a fixed
range of sample positions and is written to a temp file then renamed, so a killed run loses at most the
shard in flight and a rerun skips every shard already there. Shards are safetensors (deterministic
bytes: a resumed run produces byte-identical files). The key hashes everything that changes outputs:
weights, preprocessing, view, the dataset's sample list, logit scale and the engine version.

Integrity (see docs/store.md): every shard records, in its own safetensors metadata, the range of
sample positions it covers, the positions of its unreadable samples, and a content hash of the whole
file (xxh3_64, computed with the hash field itself set to zeros; shards written before it carry a CRC-32,
which is still checked). A load checks both in its one pass over the bytes (each piece is hashed right
after it is read, straight into the final arrays), so flipped bytes, a truncated or empty file, a bad
header and a shard copied over another are all caught at no second pass. Each shard also records the key
of its entry and the identity (sample id, file size, mtime_ns) of every image of its range; a load given
the dataset (``Expected``) compares them while reading the headers, so a shard from another store and an
image replaced in place are damage too, as is a meta.json that fails its schema (``meta_problem``).
`beyond-inet verify` runs the same check (``Entry.check``). A damaged file is moved aside to
``<name>.corrupt-1`` (one copy per file) and the load raises StoreDamaged naming it; the pipeline then
recomputes it in the same run. Two processes never compute the same shard: a writer first claims it with an
``O_CREAT|O_EXCL`` lock file holding its host and pid (stale claims of dead processes are taken over).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import xxhash

from beyond_inet import ENGINE_VERSION
from beyond_inet.contracts import FEATURES, FULL, KINDS, LOGITS, SUMMARY, summarize_logits
from beyond_inet.engine import codec
from beyond_inet.engine.outputs import Outputs
from beyond_inet.errors import UserError

SHARD_SIZE = 512
# Store format, part of every store key (plan.store_key) and of meta.json. 2: each shard records its entry's
# key and the identity ([id, size, mtime_ns]) of every image of its range, checked on every load; entries of
# format 1 have other keys, so they are never read again (a run after the upgrade recomputes them once).
STORE_FORMAT = 2
LOCK_STALE_S = float(os.environ.get("BEYOND_INET_LOCK_STALE_S", 600))  # a claim not refreshed this long is dead
LOCK_REFRESH_S = 30.0
VERIFY_THREADS = min(8, os.cpu_count() or 1)  # shards read and checked at once
# Content hashes a shard may carry, by metadata field: hex width, and the hash of three byte pieces (the
# file before the field, the zeroed field, the rest). New shards get xxh3_64 (about 6x faster than zlib's
# CRC-32 here, so checking costs little next to reading); CRC-32 shards from older runs are still verified.
CHECKSUM = "xxh3_64"
# New shards store each tensor compressed where that pays (engine.codec: lossless, decoded at ~1-3 GB/s);
# shards stored raw, by older runs or with this off, are read as before.
COMPRESS = True


_HASH_WIDTH = {"xxh3_64": 16, "crc32": 8}  # hash field -> hex digits
_HOST = socket.gethostname().replace(".", "_") or "localhost"


class StoreWriteError(UserError):
    """The store (or the output folder) could not be written: full disk, read-only, no permission."""


class StoreDamaged(UserError):
    """Stored files turned out damaged while being read; they have been moved aside (`damages`)."""

    def __init__(self, message: str, damages: list | None = None):
        super().__init__(message)
        self.damages = list(damages or [])


def make_key(fields: dict) -> str:
    blob = json.dumps({**fields, "engine": ENGINE_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def write_error(path: Path, exc: OSError, needed: int | None = None) -> StoreWriteError:
    """One line that says which path could not be written and why (and, on a full disk, how much was needed)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(path.parent if not path.is_dir() else path).free
            free_s = f"{_human(free)} free"
        except OSError:
            free_s = "free space unknown"
        need = f"needed {_human(needed)} for this file, " if needed is not None else ""
        return StoreWriteError(f"no space left on the device writing {path} ({need}{free_s}); free some space and "
                               f"rerun the same command: everything already stored is kept")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreWriteError(f"cannot write {path}: {exc.strerror or exc} (read-only or not permitted); "
                               f"give --out a writable folder")
    return StoreWriteError(f"cannot write {path}: {exc.strerror or exc}")


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file named after this host and pid (so a later run knows when it is stray)."""
    tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise write_error(path, e, len(data)) from None


# --------------------------------------------------------------------------------------------------
# Shard bytes: written with a content hash and the positions; read back verified in one pass
# --------------------------------------------------------------------------------------------------
class ShardDamage(Exception):
    """Why a shard file cannot be trusted (the message is the reason)."""


@dataclass
class Damage:
    """A damaged file found in the store, and where it was moved."""

    path: str
    reason: str
    moved_to: str | None = None


class _Hasher:
    """The streaming form of a shard hash (a field name of ``_HASH_WIDTH``), as fixed-width hex."""

    def __init__(self, name: str):
        self.name, self.width = name, _HASH_WIDTH[name]
        self._xxh = xxhash.xxh3_64() if name == "xxh3_64" else None
        self._crc = 0

    def update(self, piece) -> None:
        if self._xxh is not None:
            self._xxh.update(piece)
        else:
            self._crc = zlib.crc32(piece, self._crc)

    def hexdigest(self) -> str:
        return f"{self._xxh.intdigest() if self._xxh is not None else self._crc:0{self.width}x}"


def _hash_at(buf: bytes | memoryview, name: str) -> int:
    """Where the hex digits of hash field `name` are in a shard's bytes (-1 when it has none).

    The field is found as it appears in the (JSON-in-JSON) safetensors header, ``\\"name\\": \\"``; a
    sample id holding the same text is escaped once more there, so it cannot match."""
    n = int.from_bytes(bytes(buf[:8]), "little")
    token = b'\\"' + name.encode() + b'\\": \\"'
    i = bytes(buf[8:8 + n]).rfind(token)
    return -1 if i < 0 else 8 + i + len(token)


def _start_hash(name: str, head: bytes | memoryview, at: int) -> _Hasher:
    """A hasher fed the first `len(head)` bytes of a file, with hash field `name` (at `at`) read as zeros."""
    h, mv = _Hasher(name), memoryview(head)
    h.update(mv[:at])
    h.update(b"0" * h.width)
    h.update(mv[at + h.width:])
    return h


def hashed_safetensors(tensors: dict[str, np.ndarray], key: str, meta: dict, checksum: str = CHECKSUM,
                       compress: bool = False) -> bytes:
    """A safetensors file whose one metadata entry `key` holds `meta` (as JSON) plus a hash of the whole
    file (field `checksum`: "xxh3_64", or "crc32" as older runs wrote, kept to test that those still verify).
    With `compress`, each tensor that shrinks enough is stored compressed (``engine.codec``; recorded in the
    metadata's ``codecs``); the hash covers the bytes as written. Read back, verified and decoded, with
    ``read_safetensors_head`` + ``read_tensors``."""
    from safetensors.numpy import save

    if compress:
        tensors, codecs = dict(tensors), {}
        for name, arr in sorted(tensors.items()):
            blob = codec.encode(arr)
            if blob is not None:
                codecs[name] = [codec.CODEC, _DTYPE_NAMES[np.dtype(arr.dtype)], list(arr.shape)]
                tensors[name] = blob
        if codecs:
            meta = {**meta, "codecs": codecs}
    # One metadata key: safetensors keeps metadata in a hash map, so several keys come out in varying
    # order and the bytes would differ between otherwise identical files.
    width = _HASH_WIDTH[checksum]
    body = json.dumps({**meta, checksum: "0" * width}, sort_keys=True)
    data = save(tensors, metadata={key: body})
    at = _hash_at(data, checksum)
    return data[:at] + _start_hash(checksum, data, at).hexdigest().encode() + data[at + width:]


def shard_bytes(tensors: dict[str, np.ndarray], samples: dict, checksum: str = CHECKSUM,
                compress: bool = False) -> bytes:
    """A shard: a hashed safetensors file whose metadata ``samples`` holds `samples`."""
    return hashed_safetensors(tensors, "samples", samples, checksum, compress)


_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_TENSORS = ("positions", "labels")  # every shard has these (multilabels: some); the rest by its kinds
# The tensors of each output kind. A shard records its kinds in its metadata; one that records none was
# written before kinds existed and holds logits and features (``FULL``).
_KIND_TENSORS = {LOGITS: ("logits",), FEATURES: ("features",),
                 SUMMARY: ("top_idx", "top_logit", "lse", "sum_p2", "label_logit")}


def covers(kinds, need) -> bool:
    """Do outputs of `kinds` give everything `need` asks for? (full logits give the summary too)."""
    have = set(kinds) | ({SUMMARY} if LOGITS in kinds else set())
    return set(need) <= have


def shard_kinds(meta: dict) -> frozenset:
    """The output kinds a shard's metadata records (``FULL`` for shards written before kinds existed)."""
    k = meta.get("kinds")
    return FULL if k is None else frozenset(k)


@dataclass
class ShardHead:
    """What a (hashed safetensors) file's header says, checked against the file's size: all but its data.

    The safetensors layout (8-byte header length, JSON header, packed data) is parsed here rather than by
    `safetensors`, whose readers copy each tensor once more (on a cached rerun that copy cost as much as
    the hash; benchmarks/bench_verify.py)."""

    raw: bytes  # the file's first 8 + n bytes
    meta: dict  # its one metadata entry (a shard's `samples`: ids, skipped, shard range, hash)
    layout: list[tuple[str, np.dtype, tuple[int, ...], int]]  # (name, dtype, shape, nbytes) in file order
    size: int  # the file's size in bytes
    hashes: list[tuple[str, int]]  # (hash field, where its digits are in `raw`)
    # compressed tensors: name -> (codec, dtype, shape) they decode to (``engine.codec``)
    codecs: dict[str, tuple[str, np.dtype, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.shape("positions")[0]

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The shape tensor `name` has when read (decoded, if stored compressed); None when absent."""
        if name in self.codecs:
            return self.codecs[name][2]
        return next((shape for n, _, shape, _ in self.layout if n == name), None)


def _read_exact(f, k: int) -> bytes:
    out = bytearray()
    while len(out) < k:
        piece = f.read(k - len(out))
        if not piece:
            break
        out += piece
    return bytes(out)


def read_safetensors_head(f, size: int, key: str) -> ShardHead:
    """Read and check the header of a safetensors file from open file `f` (at offset 0; `size` bytes long):
    it parses, metadata entry `key` is a JSON object, its tensors tile the data exactly, and the position
    of each hash field it names is found. Leaves `f` at the first data byte. Raises ShardDamage."""
    head = _read_exact(f, 8)
    if len(head) < 8 or size < 8:
        raise ShardDamage(f"truncated ({size} bytes)" if size else "empty file")
    n = int.from_bytes(head, "little")
    if n <= 0 or 8 + n > size:
        raise ShardDamage("truncated or bad header length")
    raw = head + _read_exact(f, n)
    if len(raw) < 8 + n:
        raise ShardDamage("truncated (the file shrank while being read)")
    try:
        header = json.loads(raw[8:])
        meta = json.loads(header["__metadata__"][key])
        if not isinstance(meta, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError) as e:
        raise ShardDamage(f"bad header ({type(e).__name__})") from None
    data_len, layout, end = size - 8 - n, [], 0
    for name, d in sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                          key=lambda kv: kv[1]["data_offsets"][0] if isinstance(kv[1], dict) else -1):
        try:
            dtype, shape = np.dtype(_DTYPES[d["dtype"]]), tuple(int(x) for x in d["shape"])
            begin, stop = (int(x) for x in d["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ShardDamage(f"bad header (tensor {name!r})") from None
        nbytes = dtype.itemsize * int(np.prod(shape))
        if begin != end or stop < begin or stop - begin != nbytes:
            raise ShardDamage(f"bad header (tensor {name!r} does not fit the file)")
        if stop > data_len:
            raise ShardDamage(f"truncated ({size} bytes; tensor {name!r} ends at byte {8 + n + stop})")
        layout.append((name, dtype, shape, nbytes))
        end = stop
    if end != data_len:
        raise ShardDamage("truncated or padded data")
    hashes = [(name, _hash_at(raw, name)) for name in _HASH_WIDTH if name in meta]  # the field names the hash
    if any(at < 0 for _, at in hashes):
        raise ShardDamage("checksum mismatch (flipped or overwritten bytes)")
    return ShardHead(raw, meta, layout, size, hashes, _codecs(meta, layout))


def _codecs(meta: dict, layout: list) -> dict[str, tuple[str, np.dtype, tuple[int, ...]]]:
    """The compressed tensors a header records (metadata ``codecs``), each a 1-D uint8 tensor of the file,
    with what it decodes to. Raises ShardDamage on a malformed record or a codec this version cannot read."""
    got = meta.get("codecs", {})
    stored = {name: (dtype, shape) for name, dtype, shape, _ in layout}
    if not isinstance(got, dict):
        raise ShardDamage("bad header (codecs)")
    out = {}
    for name, rec in got.items():
        try:
            kind, dtype, shape = rec
            dtype, shape = np.dtype(_DTYPES[dtype]), tuple(int(x) for x in shape)
        except (KeyError, TypeError, ValueError):
            raise ShardDamage(f"bad header (codec of tensor {name!r})") from None
        if kind != codec.CODEC:
            raise ShardDamage(f"tensor {name!r} is stored with codec {kind!r}, unknown to this version (written by "
                              f"a newer one?)")
        if stored.get(name, (None, ()))[0] != np.uint8 or len(stored[name][1]) != 1 or min(shape, default=0) < 0:
            raise ShardDamage(f"bad header (compressed tensor {name!r})")
        out[name] = (kind, dtype, shape)
    return out


def read_head(f, size: int, expected: range | None = None, key: str | None = None,
              images: list | None = None) -> ShardHead:
    """Read and check a shard's header (``read_safetensors_head``), and that it carries a hash, its tensors
    and counts agree and (given `expected`) it records this shard's range; given `key` and `images`, that it
    belongs to that store entry and was computed from exactly these images (``check_images``). Catches a
    truncated, empty or garbled file, a shard copied over another or from another store, and an image
    changed since, without reading the data. Raises ShardDamage."""
    h = read_safetensors_head(f, size, "samples")
    samples = h.meta
    if not h.hashes and "shard" in samples:  # shards recording their range always carried a hash
        raise ShardDamage("checksum missing (flipped bytes in its header?)")
    kinds = samples.get("kinds")
    if kinds is not None and (not isinstance(kinds, list) or any(k not in KINDS for k in kinds)):
        raise ShardDamage(f"bad header (kinds {kinds!r})")
    names = _TENSORS + tuple(t for k in sorted(shard_kinds(samples)) if k in _KIND_TENSORS
                             for t in _KIND_TENSORS[k] if not (k == SUMMARY and LOGITS in shard_kinds(samples)))
    shapes = {name: h.shape(name) for name in names}
    if any(s is None for s in shapes.values()) or len(shapes["positions"]) != 1:
        raise ShardDamage("tensors missing")
    rows = h.rows
    if len(samples.get("ids", [])) != rows or shapes["labels"][:1] != (rows,):
        raise ShardDamage("sample count does not match the tensors")
    if expected is not None and "shard" in samples and list(samples["shard"]) != [expected.start, expected.stop]:
        a, b = samples["shard"][0], samples["shard"][1]
        raise ShardDamage(f"holds positions {a}..{b - 1}, expected {expected.start}..{expected.stop - 1} "
                          f"(a shard copied over another?)")
    if key is not None and samples.get("entry") != key:
        got = samples.get("entry")
        raise ShardDamage(f"belongs to store entry {got} (a shard copied from another entry?)" if got else
                          "records no store entry (written by an older version, or copied from its store)")
    if images is not None:
        check_images(samples.get("images"), images)
    return h


def check_images(got, want: list) -> None:
    """A shard's recorded images (`got`: [id, size, mtime_ns] per position of its range) are the dataset's
    (`want`, the same from the files now). Raises ShardDamage naming the first image that differs."""
    if not isinstance(got, list) or len(got) != len(want):
        raise ShardDamage("records no image identities (written by an older version, or copied from its store)"
                          if got is None else f"records {len(got) if isinstance(got, list) else 'no'} images, "
                          f"its range has {len(want)}")
    for g, w in zip(got, want):
        if g != w:
            gid = g[0] if isinstance(g, list) and g else g
            if gid != w[0]:
                raise ShardDamage(f"computed from image {gid!r} where the dataset has {w[0]!r} (a shard copied "
                                  f"from a store over other images?)")
            raise ShardDamage(f"image {w[0]!r} changed since the shard was computed (size or modification time "
                              f"differ: replaced in place, or copied from a store over other images?)")


def image_identities(ds, pos, r: range) -> list[list]:
    """[sample id, size, mtime_ns] of the image at each position `r` of `pos` in dataset `ds` (duck-typed:
    ``sample_id(i)`` and ``source(i)``, the file holding it). What a shard records and a load compares: an
    image replaced in place or a shard computed from other images is noticed. One stat per file (per tar
    or parquet file for packed datasets); -1, -1 when there is no file or it cannot be stat'ed."""
    out, seen = [], {}
    src_of = getattr(ds, "source", None)
    for j in r:
        i = int(pos[j])
        src = src_of(i) if src_of is not None else None
        if src not in seen:
            try:
                st = os.stat(src) if src is not None else None
                seen[src] = (st.st_size, st.st_mtime_ns) if st is not None else (-1, -1)
            except OSError:
                seen[src] = (-1, -1)
        out.append([ds.sample_id(i), *seen[src]])
    return out


def _check_positions(pos: np.ndarray, samples: dict, expected: range) -> None:
    """The stored positions plus the unreadable ones are exactly this shard's range."""
    skipped = samples.get("skipped", [])
    if "shard" in samples:  # positions are recorded: they must be exactly this shard's range
        got = sorted(pos.tolist() + list(samples.get("skipped_positions", [])))
        if got != list(expected):
            raise ShardDamage("its positions do not cover its range exactly")
    elif len(pos) + len(skipped) != len(expected) or (len(pos) and (pos.min() < expected.start
                                                                    or pos.max() >= expected.stop)):
        # shards written before positions were recorded: the positions tensor must still fit
        raise ShardDamage(f"positions outside {expected.start}..{expected.stop - 1} (a shard copied over another?)")


READ_CHUNK = 4 << 20  # bytes read at once (a shard's tensors are 0.5-2 MB), hashed while still in the CPU cache


def _destination(into: dict[str, np.ndarray] | None, name: str, dtype: np.dtype, shape: tuple[int, ...]
                 ) -> np.ndarray:
    """The caller's array for tensor `name` when it has exactly this dtype and shape (and is contiguous), else
    a new one."""
    arr = (into or {}).get(name)
    if arr is None or arr.dtype != dtype or arr.shape != shape or not arr.flags.c_contiguous:
        arr = np.empty(shape, dtype)
    return arr


def read_tensors(f, head: ShardHead, into: dict[str, np.ndarray] | None = None,
                 verify: bool = True) -> dict[str, np.ndarray]:
    """Read a file's tensors from `f` (positioned after the header) and, with `verify`, check its hash.

    The hash is fed each piece of up to `READ_CHUNK` bytes right after the piece is read, while it is
    still in the CPU cache: verifying costs no second pass over memory. A tensor with an array in `into`
    of its exact dtype and shape is read straight into it (the loader passes its slice of the final
    output, so the file is copied once); others get a new array. Raises ShardDamage."""
    hashers = [_start_hash(name, head.raw, at) for name, at in head.hashes] if verify else []
    out, blobs = {}, {}
    for name, dtype, shape, nbytes in head.layout:
        if name in head.codecs:  # compressed: read (and hashed) here, decoded once the hash is checked
            arr = blobs[name] = np.empty(shape, dtype)
        else:
            arr = out[name] = _destination(into, name, dtype, shape)
        mv, done = memoryview(arr.reshape(-1)).cast("B"), 0
        while done < nbytes:
            got = f.readinto(mv[done:done + READ_CHUNK])
            if not got:
                raise ShardDamage("truncated (the file shrank while being read)")
            for h in hashers:
                h.update(mv[done:done + got])
            done += got
    for h in hashers:
        if h.hexdigest() != head.meta[h.name]:
            raise ShardDamage("checksum mismatch (flipped or overwritten bytes)")
    for name, blob in blobs.items():
        kind, dtype, shape = head.codecs[name]
        want, got = dtype.itemsize * int(np.prod(shape)), codec.decoded_size(blob.data)
        if got != want:  # before allocating what the header claims
            raise ShardDamage(f"tensor {name!r}: compressed data decodes to {got} bytes, expected {want}")
        arr = _destination(into, name, dtype, shape)
        try:
            codec.decode_into(kind, blob.data, arr)
        except codec.CodecError as e:
            raise ShardDamage(f"tensor {name!r}: {e}") from None
        out[name] = arr
    return out


def read_data(f, head: ShardHead, expected: range, into: dict[str, np.ndarray] | None = None,
              verify: bool = True) -> dict[str, np.ndarray]:
    """A shard's tensors (``read_tensors``), after checking that its positions cover `expected` exactly."""
    out = read_tensors(f, head, into, verify)
    _check_positions(out["positions"], head.meta, expected)
    return out


def open_file(path: Path):
    """(unbuffered file, its size) of a stored file; ShardDamage when it cannot be opened."""
    try:
        f = open(path, "rb", buffering=0)
        return f, os.fstat(f.fileno()).st_size
    except OSError as e:
        raise ShardDamage(f"unreadable ({e.strerror})") from None


def check_shard_bytes(buf: bytes, expected: range) -> tuple[dict[str, np.ndarray], dict]:
    """Tensors and sample metadata of a shard held in memory, after every check a load makes."""
    import io

    f = io.BytesIO(buf)
    head = read_head(f, len(buf), expected)
    return read_data(f, head, expected), head.meta


def read_shard_file(path: Path, expected: range, verify: bool = True) -> tuple[dict[str, np.ndarray], ShardHead]:
    """The shard file at `path`, read with every check a load makes (with `verify`: every byte hashed as it
    is read; never memory-mapped, so a file truncated meanwhile is damage, not a crash): its tensors and
    header. Raises ShardDamage."""
    f, size = open_file(path)
    try:
        with f:
            head = read_head(f, size, expected)
            return read_data(f, head, expected, verify=verify), head
    except OSError as e:
        raise ShardDamage(f"unreadable ({e.strerror})") from None


def read_stats_chunk(path: Path, index: int, layers: list[str] | None = None,
                     n_batches: int | None = None) -> tuple[dict[str, np.ndarray], ShardHead]:
    """A layer-statistics chunk (``engine.layer_stats``; metadata entry ``batches``), its hash checked as
    it is read, holding chunk `index` (and, when given, these `layers` and `n_batches` batches): its
    tensors and header. Torch-free, so that `beyond-inet verify` can use it. Raises ShardDamage."""
    f, size = open_file(path)
    try:
        with f:
            head = read_safetensors_head(f, size, "batches")
            if not head.hashes:
                raise ShardDamage("checksum missing (flipped bytes in its header?)")
            tensors = read_tensors(f, head)
    except OSError as e:
        raise ShardDamage(f"unreadable ({e.strerror})") from None
    md = head.meta
    if md.get("chunk") != index:
        raise ShardDamage(f"holds chunk {md.get('chunk')}, expected {index} (a chunk copied over another?)")
    if layers is not None and md.get("layers") != layers:
        raise ShardDamage(f"holds other layers than {path.parent / 'meta.json'}")
    if n_batches is not None:
        ids = md.get("ids")
        if not isinstance(ids, list) or len(ids) != n_batches or any(f"gram.{t}" not in tensors
                                                                     for t in range(n_batches)):
            raise ShardDamage(f"holds {len(ids) if isinstance(ids, list) else 'no'} batches, expected {n_batches}")
    return tensors, head


def read_header(path: Path) -> dict:
    """A shard's `samples` metadata from its header only (cheap; the data is not verified)."""
    f, size = open_file(path)
    with f:
        return read_head(f, size).meta


def move_aside(path: Path, single: bool = False) -> Path:
    """Rename a damaged file to ``<name>.corrupt-<n>`` (first free n); nothing is deleted. With `single`,
    a file keeps one such copy, ``.corrupt-1``, the latest (the store's entries: a file damaged again does
    not pile up copies)."""
    k = 1
    while not single and path.with_name(f"{path.name}.corrupt-{k}").exists():
        k += 1
    dest = path.with_name(f"{path.name}.corrupt-{k}")
    os.replace(path, dest)
    return dest


# --------------------------------------------------------------------------------------------------
# Claims: one writer per shard across processes and hosts
# --------------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_dead(host: str, pid: int, age_s: float) -> bool:
    """A claim whose process is gone: on this host its pid is dead (or it is ours, left by an aborted pass);
    anywhere, it has not been refreshed for LOCK_STALE_S (holders refresh every LOCK_REFRESH_S)."""
    if age_s > LOCK_STALE_S:
        return True
    if host == _HOST and pid != os.getpid():
        return not _pid_alive(pid)
    return host == _HOST  # ours but not in our registry: left by an aborted pass of this process


_HELD: dict[str, float] = {}  # lock path -> last refresh (this process)


def claim(shard: Path) -> bool:
    """Claim the right to write `shard`; False when another live process holds it or it already exists."""
    lock = shard.with_name(shard.name + ".lock")
    for _ in range(5):
        if shard.exists():
            return False
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                age = time.time() - lock.stat().st_mtime
                info = json.loads(lock.read_text())
            except FileNotFoundError:
                continue  # released meanwhile: try again
            except (OSError, ValueError):
                info = None  # being written right now, or left half-written by a killed process
            if info is None and age < 5:
                time.sleep(0.05)
                continue
            if info is not None and not _owner_dead(str(info.get("host", "")), int(info.get("pid", -1)), age):
                return False
            try:  # take over a dead claim: rename first, so only one of several takers wins
                grave = lock.with_name(f"{lock.name}.stale-{_HOST}-{os.getpid()}")
                os.replace(lock, grave)
                grave.unlink()
            except OSError:
                pass
            continue
        except OSError as e:
            raise write_error(lock, e) from None
        with os.fdopen(fd, "w") as f:
            json.dump({"host": _HOST, "pid": os.getpid(), "time": time.time()}, f)
        _HELD[str(lock)] = time.monotonic()
        if shard.exists():  # finished by someone else between our look and our claim
            release(shard)
            return False
        return True
    return False


def release(shard: Path) -> None:
    lock = shard.with_name(shard.name + ".lock")
    if _HELD.pop(str(lock), None) is not None:
        try:
            lock.unlink()
        except OSError:
            pass


def refresh_claims() -> None:
    """Touch the claims this process holds (every LOCK_REFRESH_S), so other hosts see them alive."""
    now = time.monotonic()
    for lock, last in list(_HELD.items()):
        if now - last > LOCK_REFRESH_S:
            try:
                os.utime(lock)
            except OSError:
                pass
            _HELD[lock] = now


def _stray(path: Path) -> bool:
    """A temp file left by a killed or failed write: its writer (host, pid in the name) is gone."""
    parts = path.name[:-len(".tmp")].rsplit(".", 2)
    try:
        pid = int(parts[-1])
    except ValueError:
        return False
    host = parts[-2] if len(parts) == 3 and not parts[-2].startswith("safetensors") and parts[-2] != "json" else _HOST
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    if host == _HOST:
        return pid != os.getpid() and not _pid_alive(pid)
    return age > LOCK_STALE_S


# --------------------------------------------------------------------------------------------------
# Entries and the store
# --------------------------------------------------------------------------------------------------
@dataclass
class Expected:
    """What an entry must hold for the dataset a run uses: its sample count, the fingerprint of its sample
    list, and each shard's images (`images(range)`: ``image_identities`` of those positions, stat'ed when
    asked). Given one, the store checks meta.json against it and each shard's entry key and images.
    `strict`: meta.json must have every field of this format (a run's and `verify`'s reads)."""

    n_samples: int | None
    fingerprint: str | None = None
    images: Callable[[range], list] | None = None
    strict: bool = True


def meta_problem(m, expect: Expected | None = None) -> str | None:
    """Why a parsed meta.json (`m`) cannot be trusted, or None: its schema (types, ranges) and, given
    `expect`, its consistency with the dataset. The one rule for a run and for `beyond-inet verify`."""
    if not isinstance(m, dict):
        return "not a JSON object"
    for k in ("n_samples", "shard_size"):
        if k not in m:
            return f"{k} missing"
        if not isinstance(m[k], int) or isinstance(m[k], bool):
            return f"{k} is {m[k]!r}, not an integer"
    if m["n_samples"] < 0:
        return f"n_samples is {m['n_samples']}"
    if m["shard_size"] != SHARD_SIZE:
        return f"shard_size is {m['shard_size']}, this version writes {SHARD_SIZE}"
    if "kinds" in m and (not isinstance(m["kinds"], list) or not m["kinds"] or any(k not in KINDS for k in m["kinds"])):
        return f"kinds is {m['kinds']!r}, not a list of {', '.join(KINDS)}"
    if expect is None:
        return None
    if expect.n_samples is not None and m["n_samples"] != expect.n_samples:
        return f"n_samples is {m['n_samples']}, the dataset has {expect.n_samples}"
    if expect.strict:  # an entry of this format, read by a run or verify: its own fields too
        if m.get("format") != STORE_FORMAT:
            return f"format is {m.get('format')!r}, expected {STORE_FORMAT}" if "format" in m else "format missing"
        for k in ("dataset", "samples"):
            if not isinstance(m.get(k), str):
                return f"{k} missing" if k not in m else f"{k} is {m[k]!r}, not a string"
        if expect.fingerprint is not None and m["samples"] != expect.fingerprint:
            return f"samples is {m['samples']!r}, the dataset's sample list is {expect.fingerprint!r}"
    return None


def entry_kinds(m: dict) -> frozenset:
    """The output kinds an entry's meta.json says its shards hold (``FULL`` for entries written before)."""
    return frozenset(m["kinds"]) if "kinds" in m else FULL


def read_meta_checked(path: Path, expect: Expected | None = None) -> tuple[dict | None, str | None]:
    """(meta.json, None) when it passes ``meta_problem``, else (what parsed or None, the damage reason)."""
    try:
        m = json.loads(path.read_text())
    except OSError as e:
        return None, f"corrupt meta.json: unreadable ({e.strerror})"
    except ValueError:
        return None, "corrupt meta.json: not JSON"
    why = meta_problem(m, expect)
    return (m, None) if why is None else (m if isinstance(m, dict) else None, f"corrupt meta.json: {why}")


@dataclass
class Entry:
    """One stored (model, dataset, view) output set. With `expect` (a run's or `verify`'s view of the
    dataset), every shard must also record this entry's key and the dataset's images for its range."""

    root: Path
    n_samples: int
    shard_size: int = SHARD_SIZE
    has_meta: bool = True
    expect: Expected | None = None
    kinds: frozenset = FULL  # the output kinds its shards are written with (meta.json "kinds")
    compress: bool | None = None  # store tensors compressed where that pays (engine.codec); None: COMPRESS

    @property
    def n_shards(self) -> int:
        return max(1, -(-self.n_samples // self.shard_size))

    def shard_path(self, s: int) -> Path:
        return self.root / f"shard-{s:05d}.safetensors"

    def shard_range(self, s: int) -> range:
        return range(s * self.shard_size, min((s + 1) * self.shard_size, self.n_samples))

    def missing_shards(self) -> list[int]:
        """Shards not on disk. Without a readable meta.json every shard counts as missing, so the entry gets
        a job (which rewrites meta.json first and then computes only the shards really absent)."""
        if not (self.root / "meta.json").exists():
            return list(range(self.n_shards))
        return [s for s in range(self.n_shards) if not self.shard_path(s).exists()]

    def complete(self) -> bool:
        return not self.missing_shards()

    def extra_files(self) -> list[Path]:
        """Shard files that are no shard of this entry (an index beyond its sample count, or a bad name)."""
        expected = {self.shard_path(s).name for s in range(self.n_shards)}
        return sorted(p for p in self.root.glob("shard-*.safetensors") if p.name not in expected)

    def write_shard(self, s: int, positions: np.ndarray, ids: list[str], labels: np.ndarray, logits: np.ndarray,
                    features: np.ndarray, multilabels: np.ndarray | None, skipped: list[tuple[str, str]],
                    skipped_positions: list[int] | None = None, images: list | None = None) -> None:
        """`images`: ``image_identities`` of the shard's range, recorded for the load to compare. Only the
        entry's `kinds` are written: the logits, the features, and the compact summary (derived here from the
        logits, and written only where the logits are not: they give it back on load)."""
        tensors = {"positions": np.ascontiguousarray(positions, np.int64),
                   "labels": np.ascontiguousarray(labels, np.int64)}
        if LOGITS in self.kinds:
            tensors["logits"] = np.ascontiguousarray(logits, np.float32)
        elif SUMMARY in self.kinds:
            tensors.update(summarize_logits(np.asarray(logits, np.float32), labels))
        if FEATURES in self.kinds:
            tensors["features"] = np.ascontiguousarray(features, np.float32)
        if multilabels is not None:
            tensors["multilabels"] = np.ascontiguousarray(multilabels, np.int64)
        r = self.shard_range(s)
        if skipped_positions is None:
            skipped_positions = sorted(set(r) - set(np.asarray(positions).tolist()))
        samples = {"ids": ids, "skipped": [list(x) for x in skipped], "shard": [r.start, r.stop],
                   "skipped_positions": [int(p) for p in skipped_positions], "entry": self.root.name,
                   "kinds": sorted(self.kinds)}
        if images is not None:
            samples["images"] = images
        atomic_write_bytes(self.shard_path(s), shard_bytes(tensors, samples, CHECKSUM,
                                                                   COMPRESS if self.compress is None else self.compress))

    def _expect_args(self, s: int) -> dict:
        """What read_head checks beyond the range: this entry's key and shard `s`'s images (with `expect`)."""
        if self.expect is None or self.expect.images is None:
            return {}
        return {"key": self.root.name, "images": self.expect.images(self.shard_range(s))}

    def head(self, s: int) -> ShardHead:
        """Shard `s`'s checked header (a few KB read, and a stat per image with `expect`). Raises ShardDamage."""
        f, size = open_file(self.shard_path(s))
        with f:
            return read_head(f, size, self.shard_range(s), **self._expect_args(s))

    def read_shard(self, s: int, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
        """One shard's tensors and metadata; with `verify`, its hash and positions are checked as it is read.
        Raises ShardDamage."""
        tensors, head = read_shard_file(self.shard_path(s), self.shard_range(s), verify)
        return tensors, head.meta

    def _each_shard(self, shards: list[int], fn):
        """fn(s) for each shard, in order, on a few threads (reading and hashing release the GIL); a
        ShardDamage is returned in place of the result."""
        def safe(s: int):
            try:
                return fn(s)
            except ShardDamage as e:
                return e

        if len(shards) < 2 or VERIFY_THREADS < 2:
            return [safe(s) for s in shards]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(VERIFY_THREADS, len(shards))) as pool:
            return list(pool.map(safe, shards))

    def check(self, shards: list[int] | None = None, keep: bool = True, verify: bool = True,
              need=None) -> tuple[dict[Path, ShardDamage], Outputs | None]:
        """The one check of an entry's shard files, made by a load (`keep`: the outputs are assembled) and by
        `beyond-inet verify` (each shard read into scratch arrays): files that are no shard of this entry;
        each shard's header (``read_head``: range, entry key, images); one logits and one features width
        across shards (the most common; ties go to the earliest shard); each shard's data, hashed as it is
        read, straight into its rows of the final arrays. Every shard is checked, so one pass finds all
        damage. With `need` (output kinds), a shard holding less is damage too (recomputed with them).
        The outputs hold the kinds every shard holds (``Outputs.logits`` / ``features`` None otherwise).
        Returns ({damaged file: why}, outputs or None); moves nothing."""
        shards = list(range(self.n_shards)) if shards is None else shards
        found: dict[Path, ShardDamage] = {p: ShardDamage("not a shard of this entry (beyond its sample count)")
                                          for p in self.extra_files()}
        heads = dict(zip(shards, self._each_shard(shards, self.head)))
        bad = {s for s, h in heads.items() if isinstance(h, ShardDamage)}
        if need is not None:
            for s, h in heads.items():
                if s not in bad and not covers(shard_kinds(h.meta), need):
                    heads[s] = ShardDamage(f"holds only {', '.join(sorted(shard_kinds(h.meta)))}; this run needs "
                                           f"{', '.join(sorted(need))}")
                    bad.add(s)
        widths: dict[str, int] = {}
        for k in ("logits", "features"):
            shapes = {s: h.shape(k) for s, h in heads.items() if s not in bad and h.rows and h.shape(k) is not None}
            counts: dict[int, int] = {}
            for shape in shapes.values():
                if len(shape) == 2:
                    counts[shape[1]] = counts.get(shape[1], 0) + 1
            if counts:
                widths[k] = max(counts, key=lambda w: counts[w])  # first of the most common
            for s, shape in shapes.items():
                if len(shape) != 2 or shape[1] != widths.get(k):
                    heads[s] = ShardDamage(f"bad header ({k} of shape {list(shape)} unlike the other shards' "
                                           f"width {widths.get(k)})")
                    bad.add(s)
        good = [s for s in shards if s not in bad]
        starts = dict(zip(good, np.cumsum([0] + [heads[s].rows for s in good]).tolist()))
        n = sum(heads[s].rows for s in good)
        held = [shard_kinds(heads[s].meta) for s in good]  # the outputs hold what every shard holds
        has_logits = all(LOGITS in k for k in held)
        has_features = all(FEATURES in k for k in held)
        has_summary = not has_logits and all(covers(k, {SUMMARY}) for k in held)
        logits = features = summary = None
        if keep:
            labels = np.empty(n, np.int64)
            if has_logits:
                logits = np.empty((n, widths.get("logits", 1000)), np.float32)
            if has_features:
                features = np.empty((n, widths.get("features", 0)), np.float32)
        extra: dict[int, np.ndarray | None] = {}  # shard -> its multilabels
        parts: dict[int, dict] = {}  # shard -> its summary (has_summary)

        def read(s: int) -> None:
            head = heads[s]
            rows = slice(starts[s], starts[s] + head.rows)
            f, size = open_file(self.shard_path(s))
            with f:
                if size != head.size or _read_exact(f, len(head.raw)) != head.raw:  # changed since its header
                    f.seek(0)
                    head = read_head(f, size, self.shard_range(s), **self._expect_args(s))
                    if head.rows != rows.stop - rows.start:
                        raise ShardDamage("changed while being read")
                into = {"labels": labels[rows]} if keep else {}
                if keep and logits is not None:
                    into["logits"] = logits[rows]
                if keep and features is not None:
                    into["features"] = features[rows]
                t = read_data(f, head, self.shard_range(s), into, verify)
            if keep and has_summary:
                parts[s] = ({k: t[k] for k in _KIND_TENSORS[SUMMARY]} if "logits" not in t
                            else summarize_logits(t["logits"], t["labels"]))
            for k, dest in into.items():
                if t[k] is not dest and dest.size:  # stored with another dtype or shape: converted
                    try:
                        dest[...] = t[k].reshape(dest.shape)
                    except ValueError:
                        raise ShardDamage(f"bad header ({k} does not fit {list(dest.shape)})") from None
            extra[s] = t.get("multilabels") if keep else None

        for s, r in zip(good, self._each_shard(good, read)):
            if isinstance(r, ShardDamage):
                heads[s] = r
        for s in shards:
            if isinstance(heads[s], ShardDamage):
                found[self.shard_path(s)] = heads[s]
        if found or not keep:
            return found, None
        width = max((m.shape[1] for m in extra.values() if m is not None and m.ndim == 2), default=0)
        multi = None
        if width:
            multi = np.full((n, width), -1, np.int64)
            for s, m in extra.items():
                if m is not None and m.ndim == 2:
                    multi[starts[s]:starts[s] + m.shape[0], : m.shape[1]] = m
        ids = [i for s in shards for i in heads[s].meta["ids"]]
        skipped = [sid for s in shards for sid, _ in heads[s].meta.get("skipped", [])]
        meta = _read_meta(self.root / "meta.json") or {}
        if has_summary:
            empty = summarize_logits(np.zeros((0, 1000), np.float32), np.zeros(0, np.int64))
            width = min((p["top_idx"].shape[1] for p in parts.values()), default=empty["top_idx"].shape[1])
            summary = {k: np.concatenate([empty[k][:, :width] if empty[k].ndim == 2 else empty[k]]
                                         + [parts[s][k][:, :width] if parts[s][k].ndim == 2 else parts[s][k]
                                            for s in good]) for k in _KIND_TENSORS[SUMMARY]}
        return {}, Outputs(ids=ids, labels=labels, logits=logits, features=features, multilabels=multi,
                           skipped=skipped, meta=meta, summary=summary)

    def verify(self, move: bool = True) -> list[Damage]:
        """Check every shard on disk as a load would (``check``); damaged ones are moved aside (when `move`)
        so they count as missing."""
        present = [s for s in range(self.n_shards) if self.shard_path(s).exists()]
        found, _ = self.check(present, keep=False)
        return self._damages(found, move)

    def _damages(self, found: dict[Path, ShardDamage], move: bool) -> list[Damage]:
        return [Damage(str(p), str(e), str(move_aside(p, single=True)) if move and p.exists() else None)
                for p, e in sorted(found.items())]

    def _damaged(self, found: dict[Path, ShardDamage]) -> StoreDamaged:
        """Move the damaged files aside; the error a load raises (the pipeline recomputes them)."""
        return damaged_error(self._damages(found, True), "shard")

    def load(self, verify: bool = True, need=None) -> Outputs:
        """Every shard's outputs, in order, each shard hashed as it is read (one pass over the bytes; see
        ``check``); a shard holding fewer output kinds than `need` counts as damaged. Raises StoreDamaged,
        after moving every damaged file aside."""
        found, out = self.check(verify=verify, need=need)
        if found:
            raise self._damaged(found)
        return out

    def skipped(self) -> list[tuple[str, str]]:
        """(sample id, reason) of every unreadable sample recorded in the shards on disk (headers only)."""
        out = []
        for s in range(self.n_shards):
            p = self.shard_path(s)
            if p.exists():
                try:
                    out += [tuple(x) for x in read_header(p)["skipped"]]
                except (ShardDamage, OSError, KeyError):
                    continue  # damaged: found and reported by verification
        return out


def damaged_error(damages: list[Damage], what: str = "file") -> StoreDamaged:
    """The one-line error for damaged stored files (already moved aside); the pipeline recomputes them."""
    first = damages[0]
    where = f"; moved to {Path(first.moved_to).name}" if first.moved_to else ""
    more = f" (and {len(damages) - 1} more file(s))" if len(damages) > 1 else ""
    return StoreDamaged(f"stored {what} {first.path} is damaged ({first.reason}){where}{more}; rerun the same "
                        f"command to recompute it", damages)


def _read_meta(path: Path) -> dict | None:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and isinstance(m.get("n_samples", 0), int) else None


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.damaged: list[Damage] = []  # found by this Store object, in order; the runner reports them

    def _meta(self, d: Path, expect: Expected) -> tuple[dict | None, Damage | None]:
        """meta.json of entry folder `d` checked against its schema and `expect` (``meta_problem``); a bad
        one is moved aside (one copy kept) and reads as absent."""
        mp = d / "meta.json"
        if not mp.exists():
            return None, None
        m, why = read_meta_checked(mp, expect)
        if why is None:
            return m, None
        return None, Damage(str(mp), why, str(move_aside(mp, single=True)))

    def entry(self, key: str, n_samples: int, meta: dict | None = None, expect: Expected | None = None) -> Entry:
        """The entry for `key`, creating its folder and meta.json on first use (or after a bad one, which is
        moved aside and recorded in `damaged`: the entry then counts every shard as missing, so it gets a
        job, which rewrites meta.json and computes only the shards really absent)."""
        d = self.root / key
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(d, e) from None
        expect = expect or Expected(n_samples, strict=False)
        m, dmg = self._meta(d, expect)
        if dmg is not None:
            self.damaged.append(dmg)
        if meta is not None and m is None:
            m = {**meta, "n_samples": n_samples, "shard_size": SHARD_SIZE, "format": STORE_FORMAT}
            atomic_write_bytes(d / "meta.json", json.dumps(m, indent=1, sort_keys=True).encode())
        if m is not None:
            return Entry(d, n_samples, m["shard_size"], expect=expect, kinds=entry_kinds(m))
        return Entry(d, n_samples, SHARD_SIZE, has_meta=False, expect=expect)

    def existing(self, key: str, expect: Expected | None = None) -> Entry | None:
        """The stored entry for `key` (None when it has no meta.json). A meta.json that fails its checks is
        moved aside and raises StoreDamaged (the pipeline recomputes the entry)."""
        m, dmg = self._meta(self.root / key, expect)
        if dmg is not None:
            raise damaged_error([dmg])
        if m is None:
            return None
        return Entry(self.root / key, m["n_samples"], m["shard_size"], expect=expect, kinds=entry_kinds(m))

    def remove_strays(self) -> list[Path]:
        """Delete temp files of writes whose process is gone (killed or failed runs)."""
        removed = []
        if not self.root.is_dir():
            return removed
        for p in self.root.glob("*/.*.tmp"):
            if _stray(p):
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
        return removed


# --------------------------------------------------------------------------------------------------
# `beyond-inet verify`: a whole store, read-only, without building any model
# --------------------------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    entries: int = 0
    shards: int = 0
    bytes: int = 0
    damaged: list[Damage] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # entries with shards still to compute (not damage)
    strays: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # entries whose dataset was not found: images unchecked
    old: list[str] = field(default_factory=list)  # entries of store format 1 (other keys: never read again)
    seconds: float = 0.0


def entry_folders(root: str | Path, rep: VerifyReport):
    """Each entry folder under `root` (a store or a layer-statistics folder), in order, counted in `rep` with
    its stray temporary files."""
    root = Path(root)
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        rep.entries += 1
        rep.strays += [str(p) for p in d.glob(".*.tmp") if _stray(p)]
        yield d


def _format_1(d: Path) -> bool:
    """Entry folder `d` was written before store format 2: its first shard records no entry key (a format-2
    entry whose meta.json lost its `format` field is damage, not an old entry)."""
    try:
        return "entry" not in read_header(d / "shard-00000.safetensors")
    except (ShardDamage, OSError):
        return False


def verify_store(store_root: str | Path, expect_for: Callable[[dict], Expected | None] | None = None) -> VerifyReport:
    """Check every entry as a run does, moving nothing: its meta.json (``read_meta_checked``) and its shard
    files (``Entry.check``). `expect_for(meta)` gives the dataset's view of an entry (from the dataset named
    in its meta.json), so images and sample counts are checked as by a run; None: the dataset is absent,
    and the entry's images are not checked (counted in `unchecked`)."""
    t0 = time.perf_counter()
    rep = VerifyReport()
    for d in entry_folders(store_root, rep):
        mp = d / "meta.json"
        if not mp.exists():  # a run gives it a job, which writes meta.json: not damage
            rep.incomplete.append(str(d))
            continue
        parsed = _read_meta(mp)
        if parsed is not None and "format" not in parsed and _format_1(d):
            rep.old.append(str(d))  # written before format 2: its key is no run's any more
            continue
        expect = expect_for(parsed) if expect_for is not None and parsed is not None else None
        if expect is None:  # the dataset is not available: the schema alone, as strictly as a run reads it
            rep.unchecked.append(str(d))
            expect = Expected(None)
        m, why = read_meta_checked(mp, expect)
        if why is not None:
            rep.damaged.append(Damage(str(mp), why))
            continue
        e = Entry(d, m["n_samples"], m["shard_size"], expect=expect)
        present = [s for s in range(e.n_shards) if e.shard_path(s).exists()]
        if len(present) < e.n_shards:
            rep.incomplete.append(str(d))
        found, _ = e.check(present, keep=False)
        rep.damaged += e._damages(found, move=False)
        for s in present:
            if e.shard_path(s) not in found:
                rep.shards += 1
                rep.bytes += e.shard_path(s).stat().st_size
    rep.seconds = time.perf_counter() - t0
    return rep
