"""The output store: per-sample outputs of one (model, dataset, view) in fixed-size shards.

Layout: ``<out>/store/<key>/meta.json`` and ``shard-00000.safetensors`` ... Each shard covers a fixed
range of sample positions and is written to a temp file then renamed, so a killed run loses at most the
shard in flight and a rerun skips every shard already there. Shards are safetensors (deterministic
bytes: a resumed run produces byte-identical files). The key hashes everything that changes outputs:
weights, preprocessing, view, the dataset's sample list, logit scale and the engine version.

Integrity (see docs/store.md): every shard records, in its own safetensors metadata, the range of
sample positions it covers, the positions of its unreadable samples, and a content hash of the whole
file (xxh3_64, computed with the hash field itself set to zeros; shards written before it carry a CRC-32,
which is still checked). Reading checks both, so flipped bytes, a truncated or
empty file, a bad header and a shard copied over another are all caught; a damaged file is moved aside
to ``<name>.corrupt-<n>`` and, when found while planning, simply counts as missing, so the same run
recomputes it. Two processes never compute the same shard: a writer first claims it with an
``O_CREAT|O_EXCL`` lock file holding its host and pid (stale claims of dead processes are taken over).
"""
from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from beyond_inet import ENGINE_VERSION
from beyond_inet.engine.outputs import Outputs
from beyond_inet.errors import UserError

SHARD_SIZE = 512
LOCK_STALE_S = float(os.environ.get("BEYOND_INET_LOCK_STALE_S", 600))  # a claim not refreshed this long is dead
LOCK_REFRESH_S = 30.0
VERIFY_THREADS = min(8, os.cpu_count() or 1)  # shards read and checked at once
# Content hashes a shard may carry, by metadata field: hex width, and the hash of three byte pieces (the
# file before the field, the zeroed field, the rest). New shards get xxh3_64 (about 6x faster than zlib's
# CRC-32 here, so checking costs little next to reading); CRC-32 shards from older runs are still verified.
CHECKSUM = "xxh3_64"


def _xxh3_64(*pieces) -> int:
    h = xxhash.xxh3_64()
    for piece in pieces:
        h.update(piece)
    return h.intdigest()


def _crc32(*pieces) -> int:
    c = 0
    for piece in pieces:
        c = zlib.crc32(piece, c)
    return c


_HASHES = {"xxh3_64": (16, _xxh3_64), "crc32": (8, _crc32)}
_HOST = socket.gethostname().replace(".", "_") or "localhost"


class StoreWriteError(UserError):
    """The store (or the output folder) could not be written: full disk, read-only, no permission."""


class StoreDamaged(UserError):
    """A stored file turned out damaged while being read (it has been moved aside)."""


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
# Shard bytes: write with a content hash and the positions; read back verified
# --------------------------------------------------------------------------------------------------
class ShardDamage(Exception):
    """Why a shard file cannot be trusted (the message is the reason)."""


@dataclass
class Damage:
    """A damaged file found in the store, and where it was moved."""

    path: str
    reason: str
    moved_to: str | None = None


def _hash_at(buf: bytes | memoryview, name: str) -> int:
    """Where the hex digits of hash field `name` are in a shard's bytes (-1 when it has none).

    The field is found as it appears in the (JSON-in-JSON) safetensors header, ``\\"name\\": \\"``; a
    sample id holding the same text is escaped once more there, so it cannot match."""
    n = int.from_bytes(bytes(buf[:8]), "little")
    token = b'\\"' + name.encode() + b'\\": \\"'
    i = bytes(buf[8:8 + n]).rfind(token)
    return -1 if i < 0 else 8 + i + len(token)


def _file_hash(buf: bytes | memoryview, name: str, at: int) -> str:
    """Hash `name` of the whole file with its own field (at `at`) read as zeros, as fixed-width hex."""
    width, fn = _HASHES[name]
    mv = memoryview(buf)
    return f"{fn(mv[:at], b'0' * width, mv[at + width:]):0{width}x}"


def shard_bytes(tensors: dict[str, np.ndarray], samples: dict, checksum: str = CHECKSUM) -> bytes:
    """A safetensors file whose metadata ``samples`` holds `samples` plus a hash of the whole file (field
    `checksum`: "xxh3_64", or "crc32" as older runs wrote, kept to test that those still verify)."""
    from safetensors.numpy import save

    # One metadata key: safetensors keeps metadata in a hash map, so several keys come out in varying
    # order and the bytes would differ between otherwise identical shards.
    width = _HASHES[checksum][0]
    body = json.dumps({**samples, checksum: "0" * width}, sort_keys=True)
    data = save(tensors, metadata={"samples": body})
    at = _hash_at(data, checksum)
    return data[:at] + _file_hash(data, checksum, at).encode() + data[at + width:]


def _parse_header(buf: bytes) -> tuple[dict, dict]:
    if len(buf) < 8:
        raise ShardDamage(f"truncated ({len(buf)} bytes)" if buf else "empty file")
    n = int.from_bytes(buf[:8], "little")
    if n <= 0 or 8 + n > len(buf):
        raise ShardDamage("truncated or bad header length")
    try:
        header = json.loads(buf[8:8 + n])
        samples = json.loads(header["__metadata__"]["samples"])
    except (ValueError, KeyError, TypeError) as e:
        raise ShardDamage(f"bad header ({type(e).__name__})") from None
    return header, samples


def read_header(path: Path) -> dict:
    """A shard's `samples` metadata from its header only (cheap; not verified)."""
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        return _parse_header(head + f.read(n))[1]


_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _tensors(buf: bytes, header: dict) -> dict[str, np.ndarray]:
    """Read-only array views into `buf` (no copy), after checking every descriptor against the file size.

    The safetensors layout (8-byte header length, JSON header, packed data) is parsed here rather than by
    `safetensors.numpy.load`, which copies each tensor once more: on a cached rerun that copy cost as much
    as the checksum (benchmarks/bench_verify.py)."""
    n = int.from_bytes(buf[:8], "little")
    data_len = len(buf) - 8 - n
    out, end = {}, 0
    for name, d in sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                          key=lambda kv: kv[1]["data_offsets"][0] if isinstance(kv[1], dict) else -1):
        try:
            dtype, shape = np.dtype(_DTYPES[d["dtype"]]), [int(x) for x in d["shape"]]
            begin, stop = (int(x) for x in d["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ShardDamage(f"bad header (tensor {name!r})") from None
        if begin != end or stop < begin or stop > data_len or stop - begin != dtype.itemsize * int(np.prod(shape)):
            raise ShardDamage(f"bad header (tensor {name!r} does not fit the file)")
        out[name] = np.frombuffer(buf, dtype, int(np.prod(shape)), 8 + n + begin).reshape(shape)
        end = stop
    if end != data_len:
        raise ShardDamage("truncated or padded data")
    return out


def check_shard_bytes(buf: bytes, expected: range) -> tuple[dict[str, np.ndarray], dict]:
    """Tensors and sample metadata of a shard, after checking its hash and that it covers `expected`."""
    header, samples = _parse_header(buf)
    names = [name for name in _HASHES if name in samples]  # the field names the hash
    if not names and "shard" in samples:  # shards recording their range always carried a hash
        raise ShardDamage("checksum missing (flipped bytes in its header?)")
    for name in names:
        at = _hash_at(buf, name)
        if at < 0 or _file_hash(buf, name, at) != samples[name]:
            raise ShardDamage("checksum mismatch (flipped or overwritten bytes)")
    tensors = _tensors(buf, header)
    pos = tensors.get("positions")
    if pos is None or any(k not in tensors for k in ("labels", "logits", "features")):
        raise ShardDamage("tensors missing")
    ids, skipped = samples.get("ids", []), samples.get("skipped", [])
    if len(ids) != len(pos) or len(tensors["labels"]) != len(pos):
        raise ShardDamage("sample count does not match the tensors")
    if "shard" in samples:  # positions are recorded: they must be exactly this shard's range
        if list(samples["shard"]) != [expected.start, expected.stop]:
            raise ShardDamage(f"holds positions {samples['shard'][0]}..{samples['shard'][1] - 1}, expected "
                              f"{expected.start}..{expected.stop - 1} (a shard copied over another?)")
        got = sorted(pos.tolist() + list(samples.get("skipped_positions", [])))
        if got != list(expected):
            raise ShardDamage("its positions do not cover its range exactly")
    else:  # shards written before positions were recorded: the positions tensor must still fit
        if len(pos) + len(skipped) != len(expected) or (len(pos) and (pos.min() < expected.start
                                                                        or pos.max() >= expected.stop)):
            raise ShardDamage(f"positions outside {expected.start}..{expected.stop - 1} (a shard copied over another?)")
    return tensors, samples


_VERIFIED: dict[str, tuple[int, int, int]] = {}  # path -> (inode, size, mtime_ns) verified by this process


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def check_shard_file(path: Path, expected: range, remember: bool = False) -> int:
    """Verify the shard file at `path` without reading it into memory (it is memory-mapped, so checking
    costs one pass of the hash over the page cache, no copy); returns its size. With `remember`, a file
    version (inode, size, mtime) this process already verified is not hashed again, and one that passes
    is recorded. Raises ShardDamage."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if remember and _VERIFIED.get(str(path)) == _stat_key(st):
                return st.st_size
            if st.st_size == 0:
                raise ShardDamage("empty file")
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise ShardDamage(f"unreadable ({e.strerror})") from None
    try:
        check_shard_bytes(m, expected)  # the array views it returns are dropped at once
    finally:
        try:
            m.close()
        except BufferError:  # a view still held by a traceback: unmapped once that is freed
            pass
    if remember:
        _VERIFIED[str(path)] = _stat_key(st)
    return st.st_size


def move_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.corrupt-<n>`` (first free n); nothing is deleted."""
    k = 1
    while path.with_name(f"{path.name}.corrupt-{k}").exists():
        k += 1
    dest = path.with_name(f"{path.name}.corrupt-{k}")
    os.replace(path, dest)
    _VERIFIED.pop(str(path), None)
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
class Entry:
    """One stored (model, dataset, view) output set."""

    root: Path
    n_samples: int
    shard_size: int = SHARD_SIZE
    has_meta: bool = True

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

    def write_shard(self, s: int, positions: np.ndarray, ids: list[str], labels: np.ndarray, logits: np.ndarray,
                    features: np.ndarray, multilabels: np.ndarray | None, skipped: list[tuple[str, str]],
                    skipped_positions: list[int] | None = None) -> None:
        tensors = {"positions": np.ascontiguousarray(positions, np.int64),
                   "labels": np.ascontiguousarray(labels, np.int64),
                   "logits": np.ascontiguousarray(logits, np.float32),
                   "features": np.ascontiguousarray(features, np.float32)}
        if multilabels is not None:
            tensors["multilabels"] = np.ascontiguousarray(multilabels, np.int64)
        r = self.shard_range(s)
        if skipped_positions is None:
            skipped_positions = sorted(set(r) - set(np.asarray(positions).tolist()))
        samples = {"ids": ids, "skipped": [list(x) for x in skipped], "shard": [r.start, r.stop],
                   "skipped_positions": [int(p) for p in skipped_positions]}
        atomic_write_bytes(self.shard_path(s), shard_bytes(tensors, samples, CHECKSUM))

    def read_shard(self, s: int, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
        """One shard's tensors and metadata; with `verify`, hash and positions are checked (once per file
        version per process). Raises ShardDamage."""
        p = self.shard_path(s)
        try:
            buf = p.read_bytes()
            st = p.stat()
        except OSError as e:
            raise ShardDamage(f"unreadable ({e.strerror})") from None
        if not verify or _VERIFIED.get(str(p)) == _stat_key(st):
            header, samples = _parse_header(buf)
            return _tensors(buf, header), samples
        out = check_shard_bytes(buf, self.shard_range(s))
        _VERIFIED[str(p)] = _stat_key(st)
        return out

    def check_shard(self, s: int) -> None:
        """Verify one shard in place, once per file version per process, so the load that follows
        planning reuses the check. Raises ShardDamage."""
        check_shard_file(self.shard_path(s), self.shard_range(s), remember=True)

    def _each_shard(self, shards: list[int], fn):
        """fn(s) for each shard, in order, on a few threads (reading releases the GIL); a
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

    def verify(self, move: bool = True) -> list[Damage]:
        """Check every shard on disk; damaged ones are moved aside (when `move`) so they count as missing."""
        present = [s for s in range(self.n_shards) if self.shard_path(s).exists()]
        results = self._each_shard(present, self.check_shard)
        return [Damage(str(self.shard_path(s)), str(r), str(move_aside(self.shard_path(s))) if move else None)
                for s, r in zip(present, results) if isinstance(r, ShardDamage)]

    def load(self, verify: bool = True) -> Outputs:
        ids: list[str] = []
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("labels", "logits", "features", "multilabels")}
        skipped: list[str] = []
        width = 0
        shards = list(range(self.n_shards))
        for s, got in zip(shards, self._each_shard(shards, lambda s: self.read_shard(s, verify))):
            if isinstance(got, ShardDamage):
                e, p = got, self.shard_path(s)
                where = move_aside(p) if p.exists() else None
                raise StoreDamaged(f"stored shard {p} is damaged ({e})" + (f"; moved to {where.name}" if where else "")
                                   + "; rerun the same command to recompute it")
            t, md = got
            ids += md["ids"]
            skipped += [sid for sid, _ in md["skipped"]]
            for k in ("labels", "logits", "features"):
                parts[k].append(t[k])
            ml = t.get("multilabels")
            parts["multilabels"].append(ml)
            if ml is not None:
                width = max(width, ml.shape[1])
        multi = None
        if width:
            rows = []
            for ml, lab in zip(parts["multilabels"], parts["labels"]):
                block = np.full((len(lab), width), -1, np.int64)
                if ml is not None:
                    block[:, : ml.shape[1]] = ml
                rows.append(block)
            multi = np.concatenate(rows)
        meta = _read_meta(self.root / "meta.json") or {}
        feats = [f for f in parts["features"] if f.size]
        d = feats[0].shape[1] if feats else 0
        return Outputs(ids=ids, labels=np.concatenate(parts["labels"]),
                       logits=np.concatenate([x.reshape(-1, 1000) for x in parts["logits"]]),
                       features=np.concatenate([x.reshape(-1, d) for x in parts["features"]]),
                       multilabels=multi, skipped=skipped, meta=meta)

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

    def _meta(self, d: Path) -> dict | None:
        """meta.json of entry folder `d`; a corrupt one is moved aside (and recorded) and reads as absent."""
        mp = d / "meta.json"
        if not mp.exists():
            return None
        m = _read_meta(mp)
        if m is None:
            self.damaged.append(Damage(str(mp), "corrupt meta.json", str(move_aside(mp))))
        return m

    def entry(self, key: str, n_samples: int, meta: dict | None = None) -> Entry:
        """The entry for `key`, creating its folder and meta.json on first use (or after a corrupt one)."""
        d = self.root / key
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(d, e) from None
        m = self._meta(d)
        if meta is not None and m is None:
            m = {**meta, "n_samples": n_samples, "shard_size": SHARD_SIZE}
            atomic_write_bytes(d / "meta.json", json.dumps(m, indent=1, sort_keys=True).encode())
        if m is not None:
            return Entry(d, n_samples, m.get("shard_size", SHARD_SIZE))
        return Entry(d, n_samples, SHARD_SIZE, has_meta=False)

    def existing(self, key: str) -> Entry | None:
        m = self._meta(self.root / key)
        if m is None or "n_samples" not in m:
            return None
        return Entry(self.root / key, m["n_samples"], m.get("shard_size", SHARD_SIZE))

    def verify_entry(self, entry: Entry) -> list[Damage]:
        """Verify `entry`'s shards now (moving damaged ones aside, so planning sees them as missing)."""
        found = entry.verify(move=True)
        self.damaged += found
        return found

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
    seconds: float = 0.0


def verify_store(store_root: str | Path) -> VerifyReport:
    """Check every entry's meta.json and every shard's hash and positions; moves nothing."""
    t0 = time.perf_counter()
    rep = VerifyReport()
    root = Path(store_root)
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        rep.entries += 1
        rep.strays += [str(p) for p in d.glob(".*.tmp") if _stray(p)]
        shard_files = sorted(d.glob("shard-*.safetensors"))
        m = _read_meta(d / "meta.json") if (d / "meta.json").exists() else None
        if m is None or "n_samples" not in m:
            if (d / "meta.json").exists() or shard_files:
                rep.damaged.append(Damage(str(d / "meta.json"), "corrupt meta.json" if (d / "meta.json").exists()
                                          else "meta.json missing"))
            continue
        e = Entry(d, int(m["n_samples"]), int(m.get("shard_size", SHARD_SIZE)))
        expected = {e.shard_path(s) for s in range(e.n_shards)}
        rep.damaged += [Damage(str(p), "not a shard of this entry (beyond its sample count)")
                        for p in shard_files if p not in expected]
        if any(not p.exists() for p in expected):
            rep.incomplete.append(str(d))
        for s in range(e.n_shards):
            p = e.shard_path(s)
            if not p.exists():
                continue
            try:
                rep.bytes += check_shard_file(p, e.shard_range(s))
                rep.shards += 1
            except ShardDamage as err:
                rep.damaged.append(Damage(str(p), str(err)))
    rep.seconds = time.perf_counter() - t0
    return rep
