"""Store bytes per image by kind of entry, and the projected store of the paper's full suite, before/after.

Runs real EfficientNet-Lite0 weights over ImageNet sample images (laid out as ImageNet val and as one
ImageNet-C part) twice: with the store keeping what the analyses read (now) and with every entry forced to
the full logits + features (``BEYOND_INET_FULL_OUTPUTS=1``: what the store kept before). From the real
outputs it then writes one entry of each kind (full, logits, features, summary) through the store's own
writer, stored raw and compressed where that pays (``engine.codec``), and measures bytes per image (header
included: sample ids and image identities) and the time of a verified load of each (warm page cache). The
projection asks the registered analyses what they request on the paper's suite (ImageNet val, C, A, R,
Sketch, V2, Hard, cue-conflict, PUG, 19 VTAB tasks, at VTAB-1k training sets and at the full training sets
CLIP_benchmark's linear probe uses by default) and prices each dataset at the bytes per image of the kinds
kept for it.

    python benchmarks/bench_store_size.py --limit 512
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import machine, print_table, sample_val_tree

MODEL = "packaged:efficientnet_lite0"
ANALYSES = ["accuracy", "calibration", "robustness", "shape-bias", "error-consistency", "imagenet-x", "synthetic",
            "transfer"]
C_PARTS = [f"{c}/{s}" for c in ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                                "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                                "elastic_transform", "pixelate", "jpeg_compression") for s in range(1, 6)]
PUG_FACTORS = ("Worlds", "Camera_Pitch", "Camera_Yaw", "Camera_Roll", "Object_Pitch", "Object_Yaw", "Object_Roll",
               "Object_Scale", "Object_Texture", "Scene_Light")
# VTAB test split sizes (Zhai et al. 2019, table of tasks); train = VTAB-1k's 800 + 200 val per task.
VTAB_TEST = {"caltech101": 6084, "cifar100": 10000, "dtd": 1880, "flowers": 6149, "pets": 3669, "sun397": 21750,
             "svhn": 26032, "pcam": 32768, "eurosat": 5400, "resisc45": 6300, "diabetic_retinopathy": 42670,
             "clevr_count_all": 15000, "clevr_closest_object_distance": 15000, "dmlab": 22735,
             "dsprites_label_x_position": 73728, "dsprites_label_orientation": 73728,
             "kitti_closest_vehicle_distance": 711, "smallnorb_label_azimuth": 12150,
             "smallnorb_label_elevation": 12150}
# Full train + val splits (Zhai et al. 2019, table of tasks): what a probe on the whole training set reads.
VTAB_TRAIN_FULL = {"caltech101": 3060, "cifar100": 50000, "dtd": 3760, "flowers": 2040, "pets": 3680,
                   "sun397": 76128, "svhn": 73257, "pcam": 294912, "eurosat": 21600, "resisc45": 25200,
                   "diabetic_retinopathy": 46032, "clevr_count_all": 70000, "clevr_closest_object_distance": 70000,
                   "dmlab": 88178, "dsprites_label_x_position": 663552, "dsprites_label_orientation": 663552,
                   "kitti_closest_vehicle_distance": 6770, "smallnorb_label_azimuth": 36450,
                   "smallnorb_label_elevation": 36450}


def suite(full_train: bool = False) -> dict[str, int]:
    """Dataset (as the analyses name it) -> images, for the paper's suite."""
    sizes = {"imagenet-val": 50000, "imagenet-a": 7500, "imagenet-r": 30000, "imagenet-sketch": 50889,
             "imagenet-v2": 10000, "imagenet-hard": 10980, "cue-conflict": 1280, "edge": 160, "silhouette": 160}
    sizes.update({f"imagenet-c/{p}": 50000 for p in C_PARTS})
    sizes.update({f"pug-imagenet/{f}": 88328 // len(PUG_FACTORS) for f in PUG_FACTORS})
    for task, n in VTAB_TEST.items():
        sizes[f"vtab/{task}/train"] = VTAB_TRAIN_FULL[task] if full_train else 1000
        sizes[f"vtab/{task}/test"] = n
    return sizes


def suite_kinds() -> dict[str, frozenset]:
    """Dataset -> the output kinds the store keeps for it: the union of what the analyses request."""
    from beyond_inet.analyses import get_analysis, load_builtin
    from beyond_inet.contracts import Context
    from beyond_inet.engine.plan import needed_kinds

    load_builtin()
    parts = {"imagenet-c": C_PARTS, "pug-imagenet": list(PUG_FACTORS),
             "vtab": [f"{t}/{s}" for t in VTAB_TEST for s in ("train", "test")]}
    ctx = Context(data_root=None, available=lambda n: True, parts=lambda n: parts.get(n, []))
    reqs = [r for a in ANALYSES for r in get_analysis(a).requests(ctx)]
    sizes = suite()
    return {d: k for (d, v), k in needed_kinds(reqs).items() if v in ("standard", "native") and d in sizes}


def run_once(data: Path, out: Path, full: bool, limit: int) -> None:
    """One run; `full`: every entry logits + features, stored raw (the store before); else what the
    analyses read, compressed where that pays (now)."""
    from beyond_inet.engine import store
    from beyond_inet.engine.plan import FULL_OUTPUTS_ENV
    from beyond_inet.pipeline import RunConfig, run

    os.environ.pop(FULL_OUTPUTS_ENV, None)
    if full:
        os.environ[FULL_OUTPUTS_ENV] = "1"
    store.COMPRESS = not full
    try:
        run(RunConfig(models=[MODEL], analyses=["accuracy", "calibration", "robustness"], out=str(out),
                      data_root=str(data), limit=limit, num_workers=0, batch_size=32, n_boot=100, progress=False,
                      report=False))
    finally:
        os.environ.pop(FULL_OUTPUTS_ENV, None)
        store.COMPRESS = True


def entry_bytes(out: Path) -> dict[str, tuple[int, int, list]]:
    """dataset -> (shard bytes, images, kinds) of each entry of a run's store."""
    got = {}
    for d in (out / "store").iterdir():
        m = json.loads((d / "meta.json").read_text())
        got[m["dataset"]] = (sum(p.stat().st_size for p in d.glob("shard-*.safetensors")), m["n_samples"],
                             m.get("kinds"))
    return got


def per_kind(full_out: Path, scratch: Path, repeats: int = 15) -> dict[frozenset, dict[bool, tuple[float, float]]]:
    """Kinds -> {compressed?: (bytes per image, best verified-load seconds)} of entries written from real
    outputs, raw and compressed where that pays; the two loads must give the same arrays, bit for bit."""
    import numpy as np

    from beyond_inet.contracts import FEATURES, FULL, LOGITS, SUMMARY
    from beyond_inet.engine.store import Entry, Store

    src = next(d for d in (full_out / "store").iterdir()
               if json.loads((d / "meta.json").read_text())["dataset"] == "imagenet-val")
    e = Store(full_out / "store").existing(src.name)
    shards = [e.read_shard(s) for s in range(e.n_shards)]
    result = {}
    for kinds in (FULL, frozenset({LOGITS}), frozenset({FEATURES}), frozenset({SUMMARY}),
                  frozenset({SUMMARY, FEATURES})):
        entries = {}
        for compress in (False, True):
            root = scratch / ("-".join(sorted(kinds)) + ("-z" if compress else ""))
            root.mkdir(parents=True)
            dest = entries[compress] = Entry(root, e.n_samples, kinds=kinds, compress=compress)
            for s, (t, meta) in enumerate(shards):
                dest.write_shard(s, t["positions"], meta["ids"], t["labels"], t["logits"], t["features"], None,
                                 [tuple(x) for x in meta["skipped"]], meta["skipped_positions"], meta.get("images"))
        best = {False: float("inf"), True: float("inf")}
        for _ in range(repeats):  # interleaved, best of: the two readers see the same machine
            for compress, dest in entries.items():
                t0 = time.perf_counter()
                dest.load()
                best[compress] = min(best[compress], time.perf_counter() - t0)
        a, b = entries[False].load(), entries[True].load()
        for k in ("labels", "logits", "features"):
            x, y = getattr(a, k), getattr(b, k)
            assert (x is None) == (y is None) and (x is None or x.tobytes() == y.tobytes()), (kinds, k)
        if a.summary is not None:
            assert all(np.array_equal(a.summary[k], b.summary[k], equal_nan=True) for k in a.summary)
        n = e.n_samples
        result[kinds] = {c: (sum(p.stat().st_size for p in d.root.glob("shard-*")) / n, best[c])
                         for c, d in entries.items()}
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=512, help="ImageNet sample images to run (one per class)")
    ap.add_argument("--repeats", type=int, default=15, help="verified loads timed per entry (best of)")
    args = ap.parse_args(argv)
    from beyond_inet.contracts import FULL, LOGITS, SUMMARY

    print(f"machine: {machine()}\nmodel: {MODEL}, {args.limit} ImageNet sample images")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = sample_val_tree(tmp / "data", args.limit)
        (data / "imagenet-c" / "fog").mkdir(parents=True)
        shutil.copytree(data / "imagenet-val", data / "imagenet-c" / "fog" / "1", symlinks=True)
        run_once(data, tmp / "compact", False, args.limit)
        run_once(data, tmp / "full", True, args.limit)
        now, before = entry_bytes(tmp / "compact"), entry_bytes(tmp / "full")
        print_table("Real run (accuracy, calibration, robustness): bytes per image of each entry "
                    "(before: logits + features, raw; now: what the analyses read, compressed where that pays)",
                    ["dataset", "kinds kept (before)", "before B/img", "kinds kept (now)", "now B/img", "ratio"],
                    [[d, ",".join(before[d][2]), before[d][0] / before[d][1], ",".join(now[d][2]),
                      now[d][0] / now[d][1], now[d][0] / before[d][0]] for d in sorted(now)])
        kinds_cost = per_kind(tmp / "full", tmp / "kinds", args.repeats)
    print_table("Bytes per image by kind of entry (real Lite0 outputs; header of ids and image identities "
                "included) and a verified load of the entry (warm page cache, best of "
                f"{args.repeats}; arrays equal bit for bit)",
                ["kinds", "raw B/img", "compressed B/img", "saves", "raw load ms", "compressed load ms"],
                [[",".join(sorted(k)), c[False][0], c[True][0], f"{1 - c[True][0] / c[False][0]:.0%}",
                  c[False][1] * 1e3, c[True][1] * 1e3] for k, c in kinds_cost.items()])

    def cost(kinds: frozenset, compressed: bool) -> float:
        """Bytes per image of an entry of `kinds`: logits give the summary, so it is not written with them."""
        return kinds_cost[frozenset(kinds) - ({SUMMARY} if LOGITS in kinds else set())][compressed][0]

    keep = suite_kinds()
    figs = {"saves": {",".join(sorted(k)): 1 - c[True][0] / c[False][0] for k, c in kinds_cost.items()}}
    for full_train in (False, True):
        sizes = suite(full_train)
        groups: dict[str, list] = {}
        for d, n in sizes.items():
            g = d.split("/")[0] if d.startswith(("imagenet-c/", "pug-imagenet/")) else \
                ("vtab" if d.startswith("vtab/") else d)
            k = keep.get(d, FULL)
            row = groups.setdefault(g, [g, 0, set(), 0.0, 0.0, 0.0])
            row[1] += n
            row[2].add(",".join(sorted(k)))
            row[3] += n * kinds_cost[FULL][False][0]
            row[4] += n * cost(k, False)
            row[5] += n * cost(k, True)
        rows = [[g, n, " | ".join(sorted(k)), b / 1e9, a / 1e9, z / 1e9, z / b] for g, n, k, b, a, z in groups.values()]
        tb, ta, tz = (sum(r[i] for r in rows) for i in (3, 4, 5))
        rows.append(["total", sum(r[1] for r in rows), "", tb, ta, tz, tz / tb])
        vtab = "full VTAB training sets (train + val)" if full_train else "VTAB-1k training sets"
        print_table(f"Projected store per model for the paper's suite, {vtab} (GB; Lite0 outputs)",
                    ["dataset", "images", "kinds kept now", "before GB", "now raw GB", "now compressed GB",
                     "now/before"], rows)
        figs["full_train" if full_train else "vtab1k"] = {"before_gb": tb / 1e9, "now_gb": tz / 1e9, "ratio": tz / tb}
    return figs


if __name__ == "__main__":
    main()
