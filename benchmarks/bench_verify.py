"""What verifying the store costs: loading an entry with vs without the shard checks (xxh3_64 + positions).

Builds one synthetic store entry of full-size shards (512 samples, 1000 logits + D features each) and
times, side by side and interleaved (best of --repeats):

  no verification     `Entry.load(verify=False)`: headers, then each shard read into the final arrays;
  verified load       `Entry.load()`: the same, every byte hashed as it is read (a fresh `report` pays this);
  CRC-32 shards       the verified load of the same data written with the older hash;
  `verify` command    `Entry.verify()`: every byte hashed, nothing kept;
  previous reader     the reader this replaces: whole file into memory, hash it, then concatenate;
  previous run path   what a run paid with it: every shard hashed at planning, then loaded;
  safe_open reader    the reader before checksums (safetensors `safe_open`, per tensor).

Each case runs with the files in the page cache (`warm`: just read; the worst case for the relative cost
of hashing, since a load is then little more than a memory copy) and, with --cold, after dropping them
from the page cache (posix_fadvise DONTNEED: the first read of a run that starts on another day).

    python benchmarks/bench_verify.py --shards 20 --dim 768 --repeats 15 --cold
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import machine, print_table


def _previous_load(entry, hash_: bool = True) -> int:
    """The previous verified reader, reconstructed: each file read whole into memory, hashed in a second
    pass over it, then the tensors concatenated (a second copy)."""
    import numpy as np
    import xxhash

    parts = []
    for s in range(entry.n_shards):
        buf = entry.shard_path(s).read_bytes()
        if hash_:
            xxhash.xxh3_64(buf).intdigest()
        n = int.from_bytes(buf[:8], "little")
        header = json.loads(buf[8:8 + n])
        json.loads(header["__metadata__"]["samples"])
        t = {}
        for k in ("labels", "logits", "features"):
            a, b = header[k]["data_offsets"]
            t[k] = np.frombuffer(buf, np.dtype({"I64": np.int64, "F32": np.float32}[header[k]["dtype"]]),
                                 (b - a) // 8 if k == "labels" else (b - a) // 4, 8 + n + a).reshape(header[k]["shape"])
        parts.append(t)
    return sum(len(np.concatenate([p[k] for p in parts])) for k in ("labels", "logits", "features"))


def _previous_run_path(entry) -> int:
    """The previous run path: every shard memory-mapped and hashed at planning, then the load above
    (which skipped the hash of a file version already checked)."""
    import mmap

    import xxhash

    for s in range(entry.n_shards):
        with open(entry.shard_path(s), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            xxhash.xxh3_64(m).intdigest()
    return _previous_load(entry, hash_=False)


def _safe_open_load(entry) -> int:
    """The pre-checksum reader: safe_open and get_tensor per shard, then concatenate."""
    import numpy as np
    from safetensors import safe_open

    parts = []
    for s in range(entry.n_shards):
        with safe_open(str(entry.shard_path(s)), framework="numpy") as f:
            json.loads(f.metadata()["samples"])
            parts.append([f.get_tensor(k) for k in ("labels", "logits", "features")])
    return sum(len(np.concatenate([p[i] for p in parts])) for i in range(3))


def drop_from_page_cache(paths) -> None:
    """Evict files from the page cache (clean pages; the shards were fsynced when written)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=20, help="shards of 512 samples in the entry")
    p.add_argument("--dim", type=int, default=768, help="feature width (ViT-B: 768, ConvNeXt-B: 1024)")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--cold", action="store_true", help="also time each case with the files out of the page cache")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import numpy as np

    from beyond_inet.engine import store as st

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        def build(name: str, checksum: str) -> st.Entry:
            """The same synthetic outputs (seed 0), written with hash `checksum`."""
            rng = np.random.default_rng(0)
            e = st.Entry(Path(tmp) / name, args.shards * st.SHARD_SIZE, st.SHARD_SIZE)
            e.root.mkdir()
            (e.root / "meta.json").write_text(json.dumps({"n_samples": e.n_samples, "shard_size": e.shard_size}))
            saved, st.CHECKSUM = st.CHECKSUM, checksum
            try:
                for s in range(e.n_shards):
                    r = e.shard_range(s)
                    e.write_shard(s, np.arange(r.start, r.stop), [f"ILSVRC2012_val_{j:08d}.JPEG" for j in r],
                                  rng.integers(0, 1000, len(r)), rng.normal(size=(len(r), 1000)).astype(np.float32),
                                  rng.normal(size=(len(r), args.dim)).astype(np.float32), None, [])
            finally:
                st.CHECKSUM = saved
            return e

        e, old = build("entry", "xxh3_64"), build("entry-crc32", "crc32")
        files = {id(x): [x.shard_path(s) for s in range(x.n_shards)] for x in (e, old)}
        size = sum(f.stat().st_size for f in files[id(e)])
        ref = e.load(verify=False)
        got = e.load()
        assert np.array_equal(ref.logits, got.logits) and np.array_equal(ref.features, got.features)

        cases = {  # name -> (function, the entry it reads)
            "no verification": (lambda: e.load(verify=False), e),
            "verified load (xxh3_64)": (lambda: e.load(), e),
            "verified load (CRC-32 shards)": (lambda: old.load(), old),
            "`verify` command (every byte, nothing kept)": (lambda: e.verify(move=False), e),
            "previous reader (read whole, hash, concatenate)": (lambda: _previous_load(e), e),
            "previous run path (hash at planning, then load)": (lambda: _previous_run_path(e), e),
            "safe_open reader (no checks)": (lambda: _safe_open_load(e), e),
        }
        modes = ["warm"] + (["cold"] if args.cold else [])
        best = {(m, k): float("inf") for m in modes for k in cases}
        cpu = dict(best)
        for _ in range(args.repeats):
            for m in modes:
                for k, (fn, entry) in cases.items():
                    if m == "cold":
                        drop_from_page_cache(files[id(entry)])
                    else:
                        fn()  # warm: the files (and the allocator) just used
                    t, c = time.perf_counter(), time.process_time()
                    fn()
                    best[(m, k)] = min(best[(m, k)], time.perf_counter() - t)
                    cpu[(m, k)] = min(cpu[(m, k)], time.process_time() - c)
    print(f"machine: {machine()}")
    for m in modes:
        base = best[(m, "no verification")]
        rows = [[k, 1000 * best[(m, k)], size / 2**20 / best[(m, k)], f"{100 * (best[(m, k)] / base - 1):+.1f}%",
                 1000 * cpu[(m, k)]] for k in cases]
        print_table(f"{m}: loading one entry, {args.shards} shards x 512 samples x (1000 + {args.dim}) floats, "
                    f"{size / 2**20:.0f} MB, best of {args.repeats}",
                    ["reader", "wall ms", "MB/s", "vs no verification", "CPU ms"], rows)
    result = {"machine": machine(), "shards": args.shards, "dim": args.dim, "bytes": size,
              "seconds": {f"{m}/{k}": v for (m, k), v in best.items()},
              "cpu_seconds": {f"{m}/{k}": v for (m, k), v in cpu.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
