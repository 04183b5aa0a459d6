"""The paper suite (accuracy, calibration, ImageNet-X scoring, invariance sweep) on one fixed workload, run
twice side by side:

  ours   `beyond_inet.engine.runner.run`: planner + output store; each image decoded once per model for
         every crop view and resolution, inputs equal to the standard crop not run again, the standard-view
         outputs shared by all analyses;
  naive  the way the paper's code works (paper-spec §2.7, §5): every experiment loads its model and builds
         its own torchvision ImageFolder DataLoader per dataset and per sweep setting, decodes every image
         again, runs the model in fp32; nothing is cached.

Both use the same models, transforms, batch size, loader workers and torch threads, and compute the metrics
with the same analysis code (so the metric values must agree; the script checks). Then a second `run` that
adds one analysis (robustness; its only present dataset, imagenet-val, is already in the store) shows what a
new analysis costs once outputs are stored, against what the naive way pays for it.

Workload: packaged EfficientNet-Lite0 (real weights) and a random-weight ViT-Ti/16 on the ImageNet sample
images (../shared/data/imagenet-sample-images, one per class), laid out as an ImageNet-val folder.

    python benchmarks/bench_suite_vs_naive.py --limit 200      # quick
    python benchmarks/bench_suite_vs_naive.py                  # all 1000 images
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _common  # noqa: F401  (sys.path, offline env)
from _common import machine, print_table, sample_val_tree, timed

SUITE = ["accuracy", "calibration", "imagenet-x", "invariance"]
MODELS = ["packaged:efficientnet_lite0", "timm:vit_tiny_patch16_224@random"]
# The invariance sweep: the paper's 15 views, or 6 cheap ones for a quick run on a small CPU.
SWEEPS = {"paper": {},
          "small": {"invariance_scales": [1, 1.5], "invariance_shifts": [0, 30], "invariance_resolutions": [160, 224]}}


def naive_suite(models: list[str], analyses: list[str], data_root: str, device: str, batch_size: int,
                workers: int, n_boot: int, options: dict, seed: int = 0) -> tuple[list, dict]:
    """Every analysis for every model with its own model, loaders and passes (no cache, no shared decode)."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from beyond_inet.analyses import Context, get_analysis, load_builtin
    from beyond_inet.data import catalog
    from beyond_inet.data.labelspaces import wnid_to_index
    from beyond_inet.data.views import build_view, resolution_of
    from beyond_inet.engine.outputs import Outputs
    from beyond_inet.models import create_model

    load_builtin()
    ctx = Context(data_root=data_root, options={**options, "device": device},
                  available=lambda n: catalog.available(n, data_root), parts=lambda n: catalog.parts(n, data_root),
                  seed=seed, n_boot=n_boot)
    counts = {"passes": 0, "images_decoded": 0, "forward_rows": 0}
    dev = torch.device(device)
    rows = []

    def one_pass(model, dataset: str, view: str) -> Outputs | None:
        if dataset != "imagenet-val":  # the only dataset of this workload; others are absent
            return None
        res = resolution_of(view)
        m = model if res is None else model.rebuild(res)
        folder = ImageFolder(str(Path(data_root) / "imagenet-val"), transform=build_view(view, m.preprocessing))
        to_idx = wnid_to_index()
        labels = np.array([to_idx[folder.classes[t]] for _, t in folder.samples], np.int64)
        loader = DataLoader(folder, batch_size=batch_size, shuffle=False, num_workers=workers)
        m.module.eval().to(dev)
        lg, ft = [], []
        with torch.inference_mode():  # fp32, the paper's numerics for these experiments
            for x, _ in loader:
                a, b = m.forward(x.to(dev))
                lg.append(a.float().cpu().numpy())
                ft.append(b.float().reshape(b.shape[0], -1).cpu().numpy())
                counts["forward_rows"] += x.shape[0]
        counts["passes"] += 1
        counts["images_decoded"] += len(folder)
        return Outputs([Path(p).name for p, _ in folder.samples], labels, np.concatenate(lg), np.concatenate(ft),
                       meta={"view": view})

    for name in analyses:
        a = get_analysis(name)
        for spec in models:
            model = create_model(spec)  # each experiment loads its model, as the paper's scripts do
            rows += a.compute(ctx, spec, lambda req, _m=model: one_pass(_m, req.dataset, req.view)).rows
    return rows, counts


def ours(models: list[str], analyses: list[str], data_root: str, out: str, device: str, batch_size: int,
         workers: int, n_boot: int, options: dict) -> tuple[list, dict]:
    from beyond_inet.engine import infer
    from beyond_inet.engine.runner import RunConfig, run
    from beyond_inet.report.results import ResultsDB

    before = infer.FORWARD_ROWS["n"]
    summary = run(RunConfig(models=models, analyses=analyses, out=out, data_root=data_root, device=device,
                            batch_size=batch_size, num_workers=workers, n_boot=n_boot, options=dict(options),
                            report=False, progress=False))
    db = ResultsDB(out)
    rows = db.rows()
    db.close()
    return rows, {"jobs": summary["jobs"], "images_decoded": summary["images"],
                  "forward_rows": infer.FORWARD_ROWS["n"] - before}


def compare(a: list, b: list) -> tuple[int, float]:
    """(rows in common, max |value difference|) keyed by model, dataset, analysis, metric."""
    import math

    va = {(r.model, r.dataset, r.analysis, r.metric): r.value for r in a}
    vb = {(r.model, r.dataset, r.analysis, r.metric): r.value for r in b}
    common = [k for k in va if k in vb and not (math.isnan(va[k]) and math.isnan(vb[k]))]
    return len(common), max((abs(va[k] - vb[k]) for k in common), default=0.0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=None, help="number of sample images (default: all 1000)")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="loader workers, both sides")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates, both sides")
    p.add_argument("--sweep", choices=sorted(SWEEPS), default="paper",
                   help="invariance sweep: the paper's 15 views or a small 6-view one (quick runs)")
    p.add_argument("--add", default="robustness", help="the analysis the second run adds")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)

    import torch

    from beyond_inet.analyses import load_builtin
    from beyond_inet.models import create_model

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        root = sample_val_tree(Path(tmp) / "data", args.limit)
        n = sum(1 for _ in (root / "imagenet-val").rglob("*.JPEG"))
        load_builtin()
        for spec in args.models:  # warm imports and caches so neither side pays them
            create_model(spec)
        t: dict[str, float] = {}
        with timed(t, "ours"):
            rows_o, c_o = ours(args.models, SUITE, str(root), f"{tmp}/out", args.device, args.batch_size,
                               args.workers, args.bootstrap, SWEEPS[args.sweep])
        with timed(t, "naive"):
            rows_n, c_n = naive_suite(args.models, SUITE, str(root), args.device, args.batch_size, args.workers,
                                      args.bootstrap, SWEEPS[args.sweep])
        with timed(t, "ours_add"):
            ours(args.models, SUITE + [args.add], str(root), f"{tmp}/out", args.device, args.batch_size,
                 args.workers, args.bootstrap, SWEEPS[args.sweep])
        with timed(t, "naive_add"):
            naive_suite(args.models, [args.add], str(root), args.device, args.batch_size, args.workers,
                        args.bootstrap, SWEEPS[args.sweep])
        n_rows, diff = compare(rows_o, rows_n)
    fig = {"images": n, "models": args.models, "analyses": SUITE, "sweep": args.sweep, "threads": torch.get_num_threads(),
           "batch_size": args.batch_size, "workers": args.workers, "seconds": t, "ours": c_o, "naive": c_n,
           "speedup_suite": t["naive"] / t["ours"], "speedup_add": t["naive_add"] / t["ours_add"],
           "rows_compared": n_rows, "max_metric_diff": diff}
    print_table(f"suite on {n} images x {len(args.models)} models ({', '.join(SUITE)}; {args.sweep} sweep)",
                ["", "wall s", "images decoded", "model rows"],
                [["ours (plan + store)", t["ours"], c_o["images_decoded"], c_o["forward_rows"]],
                 ["naive (per analysis)", t["naive"], c_n["images_decoded"], c_n["forward_rows"]],
                 ["ratio naive / ours", t["naive"] / t["ours"],
                  round(c_n["images_decoded"] / max(1, c_o["images_decoded"]), 2),
                  round(c_n["forward_rows"] / max(1, c_o["forward_rows"]), 2)]])
    print_table(f"second run adding `{args.add}`", ["", "wall s"],
                [["ours: rerun suite + 1 analysis (cached)", t["ours_add"]],
                 ["naive: the added analysis alone", t["naive_add"]]])
    print(f"\nmetrics agree: {n_rows} rows compared, max |difference| = {diff:.3g}")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    return fig


if __name__ == "__main__":
    main()
