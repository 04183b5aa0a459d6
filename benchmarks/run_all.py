"""Run the CPU benchmarks with quick settings, one after another, and print every ratio together.

    python benchmarks/run_all.py [--json figures.json]

bench_gpu.py is not included (it needs a GPU; run it on one: see docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common  # noqa: F401
import bench_cpu_load
import bench_limit
import bench_ray
import bench_store_size
import bench_suite_vs_naive

QUICK = {
    "suite_vs_naive": (bench_suite_vs_naive, ["--limit", "40", "--sweep", "small"]),
    "limit": (bench_limit, ["--limit", "64"]),
    "ray": (bench_ray, ["--limit", "600"]),
    "cpu_load": (bench_cpu_load, ["--limit", "8"]),
    "store_size": (bench_store_size, ["--limit", "128", "--repeats", "5"]),
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(QUICK), default=list(QUICK))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    figs, t0 = {}, time.time()
    for name in args.only:
        mod, argv_ = QUICK[name]
        print(f"\n===== {name}: {mod.__name__}.py {' '.join(argv_)}")
        figs[name] = mod.main(argv_)
    print("\n===== summary (ratios measured side by side in this run)")
    if "suite_vs_naive" in figs:
        f = figs["suite_vs_naive"]
        print(f"  paper suite, naive / ours wall time:          {f['speedup_suite']:.2f}x "
              f"({f['images']} images, {f['sweep']} sweep; metrics identical: {f['max_metric_diff'] == 0})")
        print(f"  adding one analysis: ours {f['seconds']['ours_add']:.1f} s vs naive {f['seconds']['naive_add']:.1f} s")
    if "limit" in figs:
        print(f"  end-to-end / forward-only images/s:           {figs['limit']['ratio']:.2f}")
    if "ray" in figs:
        f = figs["ray"]
        print(f"  in-process / local-Ray wall time:             {f['ratio_in_process_over_ray']:.2f} "
              f"(outputs identical: {f['identical_outputs']})")
    if "cpu_load" in figs:
        for cond, f in figs["cpu_load"]["summary"].items():
            print(f"  suite CPU s/image, naive / ours, {cond + ':':8s}       {f['cpu_ratio_naive_over_ours']:.2f}x "
                  f"(wall {f['wall_ratio_naive_over_ours']:.2f}x)")
    if "store_size" in figs:
        f = figs["store_size"]
        print(f"  store per model, now / before (paper suite):  {f['vtab1k']['ratio']:.3f} with VTAB-1k, "
              f"{f['full_train']['ratio']:.3f} with VTAB's full training sets")
    print(f"  total {time.time() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figs, indent=1))
    return figs


if __name__ == "__main__":
    main()
