"""Minibatch CKA must not depend on the batch size: packaged:efficientnet_lite0 vs lite1 (real weights) on the
class-sorted ImageNet sample images, diagonal CKA per layer type at batch sizes 16 ... 256.

One statistics pass per model at the largest batch size; the smaller batch sizes are read off it: the
engine cuts one fixed image order into consecutive batches, so every batch of s images (s dividing the
largest) is a block of a stored batch, and its Gram matrix the block of the stored Gram (U-centring is
exact under the per-batch centring, so the block equals what a pass at batch size s stores). This is exact
for the code before and after the change to shuffled batches, so the script measures both.

    PYTHONPATH=src python benchmarks/bench_cka_batch_order.py --images 1000 --out /tmp/cka-order
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common  # noqa: F401
import numpy as np

SIZES = (16, 32, 64, 128, 256)


class SubBatches:
    """A `LayerStats` look-alike whose batches are the consecutive `size`-blocks of the stored batches."""

    def __init__(self, stats, size: int):
        self.stats, self.size, self.root = stats, size, Path(stats.root) / f"sub{size}"
        self.types, self.layers, self.meta = stats.types, stats.layers, stats.meta

    def batches(self):
        from beyond_inet.engine.layer_stats import batch_bounds

        for ids, K in self.stats.batches():
            for a, b in batch_bounds(len(ids), self.size):
                yield ids[a:b], K[:, a:b, a:b]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--out", default="/tmp/bench-cka-order")
    ap.add_argument("--models", nargs=2, default=["packaged:efficientnet_lite0", "packaged:efficientnet_lite1"])
    ap.add_argument("--data-root", default=str(_common.ROOT.parent / "shared" / "data"))
    ap.add_argument("--n-boot", type=int, default=200)
    args = ap.parse_args()

    import torch

    from beyond_inet.analyses.cka import compare_pair
    from beyond_inet.engine import layer_stats as ls
    from beyond_inet.engine.plan import DatasetCache
    from beyond_inet.models import create_model

    torch.set_num_threads(2)
    ds, pos, fp = DatasetCache(args.data_root, None).get("imagenet-sample")
    cfg = ls.StatsConfig(n_images=args.images, batch_size=max(SIZES), reduce="flatten")
    stats = []
    for spec in args.models:
        t = time.perf_counter()
        stats.append(ls.compute_layer_stats(create_model(spec), ds, pos, "imagenet-sample", fp,
                                            Path(args.out) / "layer-stats", cfg))
        print(f"{spec}: pass {time.perf_counter() - t:.0f} s, {len(stats[-1].layers)} layers", flush=True)
    shuffled = "shuffle_seed" in stats[0].meta
    res = {"images": args.images, "stats_version": ls.STATS_VERSION, "shuffled": shuffled, "by_size": {}}
    diag = {}
    for s in SIZES:
        out = compare_pair(SubBatches(stats[0], s), SubBatches(stats[1], s), n_boot=args.n_boot, seed=0)
        diag[s] = {p: np.array(v["diagonal"]) for p, v in out["summary"].items()}
        res["by_size"][s] = {p: {"value": round(v["value"], 4), "ci": [None if c is None else round(c, 4)
                                                                       for c in v["ci"]]}
                             for p, v in out["summary"].items()}
        res["by_size"][s]["n_batches"] = out["n_batches"]
        print(s, json.dumps(res["by_size"][s]), flush=True)
    panels = [p for p in res["by_size"][SIZES[0]] if p != "n_batches"]
    res["spread_16_256"] = {p: round(res["by_size"][16][p]["value"] - res["by_size"][256][p]["value"], 4)
                            for p in panels}
    print("diagonal summary, batch 16 minus batch 256:", json.dumps(res["spread_16_256"]))
    # Per depth: the largest move of one layer pair's CKA, and the mean over the last quarter of depths
    # (late layers cluster by class most).
    res["per_depth_16_256"] = {}
    for p in panels:
        d = diag[16][p] - diag[256][p]
        late = slice(int(0.75 * len(d)), None)
        res["per_depth_16_256"][p] = {"max_abs": round(float(np.nanmax(np.abs(d))), 4),
                                      "late_16": round(float(np.nanmean(diag[16][p][late])), 4),
                                      "late_256": round(float(np.nanmean(diag[256][p][late])), 4),
                                      "last_16": round(float(diag[16][p][-1]), 4),
                                      "last_256": round(float(diag[256][p][-1]), 4)}
    print("per depth:", json.dumps(res["per_depth_16_256"]))
    Path(args.out, "result.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
