"""What checking a shard's images costs (store format 2): one stat per image file, plus a list compare.

Times, interleaved over --rounds (best and median), on the first --files images of a folder (default the
shared `imagenet-sample-images`): raw `os.stat` of every file; `store.image_identities` (stat + id, what a
load computes); and a page-cache load of a synthetic entry of those images (1000 logits + 768 features
per image, shards of 512) without (`expect=None`) and with the image check.

    python benchmarks/bench_image_check.py --files 1000 --rounds 40
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from beyond_inet.engine.store import Entry, Expected, image_identities


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", default=os.path.join(os.environ.get("BEYOND_INET_SHARED_DATA", "/work/shared/data"),
                                                     "imagenet-sample-images"))
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=40)
    a = ap.parse_args()
    files = sorted(str(p) for p in Path(a.folder).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    files = files[:a.files]

    class Files:
        def sample_id(self, i: int) -> str:
            return os.path.basename(files[i])

        def source(self, i: int) -> str:
            return files[i]

    ds, pos, n = Files(), np.arange(len(files)), len(files)
    root = Path(tempfile.mkdtemp()) / "entry"
    root.mkdir()
    e, rng = Entry(root, n, 512), np.random.default_rng(0)
    for s in range(e.n_shards):
        r = e.shard_range(s)
        e.write_shard(s, np.arange(r.start, r.stop), [ds.sample_id(j) for j in r], np.zeros(len(r), np.int64),
                      rng.normal(size=(len(r), 1000)).astype(np.float32),
                      rng.normal(size=(len(r), 768)).astype(np.float32), None, [], [], image_identities(ds, pos, r))
    plain = Entry(root, n, 512)
    checked = Entry(root, n, 512, expect=Expected(n, None, lambda r: image_identities(ds, pos, r)))
    cases = {"os.stat of every file": lambda: [os.stat(f) for f in files],
             "image_identities (what a load computes)": lambda: image_identities(ds, pos, range(n)),
             "load, images not checked": plain.load,
             "load, images checked": checked.load}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(a.rounds):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    print(f"{n} files under {a.folder}; load average {os.getloadavg()[0]:.1f}")
    for k, v in times.items():
        v.sort()
        print(f"{k:45s} best {v[0] * 1e3:7.2f} ms   median {v[len(v) // 2] * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
