"""Peak memory, decodes and forward passes of a whole-suite run against the number of images, this checkout
side by side with another revision (default: the seed code before the lean engine, 1c42f56).

    python benchmarks/bench_memory.py [--images 16 32 64] [--baseline-rev 1c42f56] [--json out.json]

Each run is `beyond-inet run --models packaged:efficientnet_lite0 --analyses all --data-root <shared data>
--limit N` (the same call as the CLI's) in a fresh process, so its peak RSS (`wait4` rusage) is its own.
Decodes and model rows are counted in that process by wrapping the file reader's `load` and the model's
`forward`, which both revisions share. A revision is run from `git archive` of its `src/` into a temp folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

CHILD = r"""
import json, sys, time
from beyond_inet.data import readers
from beyond_inet.models import base
from beyond_inet.engine.runner import RunConfig, run

counts = {"decodes": 0, "rows": 0}
seen = set()
load, forward = readers.FileListDataset.load, base.VisionModel.forward

def counting_load(self, i):
    counts["decodes"] += 1
    seen.add((id(self), i))
    return load(self, i)

def counting_forward(self, x):
    counts["rows"] += int(x.shape[0])
    return forward(self, x)

readers.FileListDataset.load, base.VisionModel.forward = counting_load, counting_forward
out, data, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
s = run(RunConfig(models=["packaged:efficientnet_lite0"], analyses=["accuracy", "calibration", "imagenet-x",
        "robustness", "shape-bias", "invariance", "synthetic", "transfer"], out=out, data_root=data, limit=n,
        num_workers=0, progress=False))
print("RESULT " + json.dumps({**counts, "wall_s": time.perf_counter() - t, "unique_images": len(seen)}))
"""


def run_once(src: Path, data_root: str, n: int, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(work / f"out-{n}"), data_root, str(n)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"run with {src} at {n} images failed (status {status})")
    res = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    return {**res, "peak_rss_mb": usage.ru_maxrss * 1024 / 1e6}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--baseline-rev", default="1c42f56", help="git revision to compare with ('' to skip)")
    p.add_argument("--data-root", default=os.environ.get("BEYOND_INET_SHARED_DATA")
                   or str(_common.ROOT.parent / "shared" / "data"), help="the shared data (default: ../shared/data)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if not (Path(args.data_root) / "imagenet-sample-images").is_dir():
        raise SystemExit(f"{args.data_root}: no imagenet-sample-images here; pass --data-root")
    figs: dict = {"images": args.images, "ours": {}, "baseline": {}, "baseline_rev": args.baseline_rev}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sides = {"ours": _common.ROOT / "src"}
        if args.baseline_rev:
            base = tmp / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(_common.ROOT), "archive", args.baseline_rev, "src"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            sides["baseline"] = base / "src"
        for n in args.images:  # interleaved, so load changes on a shared machine hit both sides alike
            for side, src in sides.items():
                t = time.perf_counter()
                figs[side][n] = r = run_once(src, args.data_root, n, tmp / side)
                print(f"{side:8s} {n:4d} images: peak RSS {r['peak_rss_mb']:7.0f} MB, wall {r['wall_s']:6.1f} s, "
                      f"decodes {r['decodes']}, model rows {r['rows']} ({time.perf_counter() - t:.0f} s)", flush=True)
    print("\n images | peak RSS MB (ours / baseline) | decodes per image | model rows per image | wall s")
    for n in args.images:
        rows = [figs[side][n] for side in ("ours", "baseline") if n in figs[side]]

        def cell(fmt, key, per_image=False):
            return " / ".join(format(r[key] / (max(1, r["unique_images"]) if per_image else 1), fmt) for r in rows)

        print(f"{n:7d} | {cell('.0f', 'peak_rss_mb'):28s} | {cell('.2f', 'decodes', True):17s} | "
              f"{cell('.2f', 'rows', True):20s} | {cell('.0f', 'wall_s')}")
    if args.json:
        Path(args.json).write_text(json.dumps(figs, indent=1))
    return figs


if __name__ == "__main__":
    main()
