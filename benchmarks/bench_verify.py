"""What verifying the store costs: loading an entry with vs without the shard checks (xxh3_64 + positions).

Builds one synthetic store entry of full-size shards (512 samples, 1000 logits + D features each) and
times, side by side and interleaved (best of --repeats):

  no verification   `Entry.load(verify=False)`: read, parse, concatenate;
  verified load     `Entry.load()` on files this process has not verified yet (what a fresh `report` pays);
  run path          `Entry.verify()` at planning + `Entry.load()` later (the load reuses the verification);
  CRC-32 verified   the same verified load of the same data written with the previous hash (CRC-32);
  CRC-32 run path   the run path with the previous hash;
  safe_open reader  the reader before checksums (safetensors `safe_open`, per tensor), for reference.

The files are in the page cache (just written), the worst case for the relative cost: reading from a
disk makes loading slower and the hash no slower.

    python benchmarks/bench_verify.py --shards 20 --dim 768
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import machine, print_table


def _previous_load(entry) -> int:
    """The pre-checksum reader: safe_open and get_tensor per shard, then concatenate."""
    import numpy as np
    from safetensors import safe_open

    parts = []
    for s in range(entry.n_shards):
        with safe_open(str(entry.shard_path(s)), framework="numpy") as f:
            json.loads(f.metadata()["samples"])
            parts.append([f.get_tensor(k) for k in ("labels", "logits", "features")])
    return sum(len(np.concatenate([p[i] for p in parts])) for i in range(3))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=20, help="shards of 512 samples in the entry")
    p.add_argument("--dim", type=int, default=768, help="feature width (ViT-B: 768, ConvNeXt-B: 1024)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import numpy as np

    from beyond_inet.engine import store as st

    with tempfile.TemporaryDirectory() as tmp:
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
        size = sum(e.shard_path(s).stat().st_size for s in range(e.n_shards))

        def plain():
            e.load(verify=False)

        def verified():
            st._VERIFIED.clear()
            e.load()

        def run_path():
            st._VERIFIED.clear()
            assert e.verify(move=False) == []
            e.load()

        def crc_verified():
            st._VERIFIED.clear()
            old.load()

        def crc_run_path():
            st._VERIFIED.clear()
            assert old.verify(move=False) == []
            old.load()

        def previous():
            _previous_load(e)

        def planning_only():
            st._VERIFIED.clear()
            assert e.verify(move=False) == []

        cases = {"no verification": plain, "verified load (xxh3_64)": verified,
                 "planning check alone (xxh3_64)": planning_only,
                 "run path (verify, then load; xxh3_64)": run_path, "verified load (CRC-32 shards)": crc_verified,
                 "run path (CRC-32 shards, new planning check)": crc_run_path, "safe_open reader (no checks)": previous}
        best = {k: float("inf") for k in cases}
        cpu = {k: float("inf") for k in cases}  # CPU time of all threads: less moved by other jobs' load
        for _ in range(args.repeats):
            for k, fn in cases.items():
                t, c = time.perf_counter(), time.process_time()
                fn()
                best[k] = min(best[k], time.perf_counter() - t)
                cpu[k] = min(cpu[k], time.process_time() - c)
    base, cbase = best["no verification"], cpu["no verification"]
    rows = [[k, 1000 * v, size / 2**20 / v, f"{100 * (v / base - 1):+.1f}%", 1000 * cpu[k],
             f"{100 * (cpu[k] / cbase - 1):+.1f}%"] for k, v in best.items()]
    print(f"machine: {machine()}")
    print_table(f"Loading one entry: {args.shards} shards x 512 samples x (1000 + {args.dim}) floats, "
                f"{size / 2**20:.0f} MB, best of {args.repeats}",
                ["reader", "wall ms", "MB/s", "vs no verification", "CPU ms", "CPU vs no verification"], rows)
    result = {"machine": machine(), "shards": args.shards, "dim": args.dim, "bytes": size, "seconds": best,
              "cpu_seconds": cpu}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
