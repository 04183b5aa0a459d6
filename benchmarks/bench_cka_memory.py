"""Peak memory of the CKA work is flat in the number of images (it grows with batch size and layers only).

For N and 2N images (same batch size), each step runs in a fresh process and reports its peak memory:

  pass A / pass B   `engine.layer_stats.compute_layer_stats` of two models (peak resident set size);
  compare           `analyses.cka.compare_pair` of the two stored statistics (peak RSS, and the peak of
                    Python/numpy allocations traced by tracemalloc, which excludes the interpreter and
                    torch's import footprint).

The images are the ImageNet sample images (../shared/data/imagenet-sample-images, or
$BEYOND_INET_SHARED_DATA/imagenet-sample-images).

    python benchmarks/bench_cka_memory.py --images 256 --batch-size 32
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401
from _common import SAMPLE_IMAGES, machine, print_table


def _dataset(n: int):
    from beyond_inet.data.readers import FileListDataset

    env = os.environ.get("BEYOND_INET_SHARED_DATA")
    folder = Path(env) / "imagenet-sample-images" if env else SAMPLE_IMAGES
    files = sorted(folder.glob("*.JPEG"))
    if len(files) < n:
        raise SystemExit(f"{folder} holds {len(files)} images; the benchmark needs {n}")
    files = files[:n]
    return FileListDataset("imagenet-sample", [str(f) for f in files], [f.name for f in files], [0] * n)


def child(args) -> dict:
    import tracemalloc

    import numpy as np

    from beyond_inet.analyses.cka import compare_pair
    from beyond_inet.engine.layer_stats import LayerStats, StatsConfig, compute_layer_stats

    cfg = StatsConfig(n_images=args.n, batch_size=args.batch_size, reduce=args.reduce)
    root = Path(args.root)
    if args.child == "pass":
        from beyond_inet.models import create_model

        import torch

        torch.set_num_threads(args.threads)
        model = create_model(args.model)
        ds = _dataset(args.n)
        st = compute_layer_stats(model, ds, np.arange(args.n), "imagenet-sample", f"first-{args.n}", root, cfg)
        (root / f"{args.tag}.path").write_text(str(st.root))
        return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "layers": len(st.layers)}
    a = LayerStats.open((root / "A.path").read_text())
    b = LayerStats.open((root / "B.path").read_text())
    tracemalloc.start()
    out = compare_pair(a, b, n_boot=200)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "traced_peak_mb": traced,
            "n_images": out["n_images"], "diag_all": out["summary"]["all"]["value"]}


def run_child(kind: str, n: int, root: Path, args, model: str = "", tag: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--n", str(n), "--root", str(root), "--batch-size",
           str(args.batch_size), "--reduce", args.reduce, "--threads", str(args.threads)]
    if model:
        cmd += ["--model", model, "--tag", tag]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256, help="N; the second run uses 2N")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--models", nargs=2, default=["timm:test_vit@random", "timm:test_convnext@random"])
    p.add_argument("--reduce", default="flatten", choices=["flatten", "mean"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=["pass", "compare"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--tag", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return {}
    results = {}
    for n in (args.images, 2 * args.images):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            pa = run_child("pass", n, root, args, args.models[0], "A")
            pb = run_child("pass", n, root, args, args.models[1], "B")
            cmp = run_child("compare", n, root, args)
        results[n] = {"pass_a": pa, "pass_b": pb, "compare": cmp}
    rows = [[n, r["pass_a"]["peak_rss_mb"], r["pass_b"]["peak_rss_mb"], r["compare"]["peak_rss_mb"],
             r["compare"]["traced_peak_mb"], r["compare"]["diag_all"]] for n, r in results.items()]
    print_table(f"CKA peak memory, batch {args.batch_size}, {args.reduce}, {args.models[0]} "
                f"({results[args.images]['pass_a']['layers']} layers) vs {args.models[1]} "
                f"({results[args.images]['pass_b']['layers']} layers); {machine()}",
                ["images", "pass A MB", "pass B MB", "compare MB", "compare traced MB", "diag CKA (all)"], rows)
    n1, n2 = args.images, 2 * args.images
    ratio = {k: results[n2][s][f] / results[n1][s][f] for k, s, f in
             (("pass_a", "pass_a", "peak_rss_mb"), ("pass_b", "pass_b", "peak_rss_mb"),
              ("compare", "compare", "peak_rss_mb"), ("compare_traced", "compare", "traced_peak_mb"))}
    print("\npeak(2N) / peak(N): " + ", ".join(f"{k} {v:.3f}" for k, v in ratio.items()))
    return {"results": results, "ratio": ratio}


if __name__ == "__main__":
    main()
