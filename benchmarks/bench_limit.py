"""How close a standard inference pass comes to the model's own speed limit.

  end-to-end    `infer.run_pass` over the images: read + decode + resize/crop in loader workers, the
                forward, and writing the output shards;
  forward-only  the same model over the same images already decoded and cropped in memory (same batch
                size, same torch threads): the most any input pipeline could reach.

Prints images/s of both and their ratio (1.0 = the pipeline never starves the model). Each measurement is
the best of --repeats, interleaved, so background load on a shared machine hurts both alike.

    python benchmarks/bench_limit.py --limit 128
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import machine, print_table, sample_val_tree


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="packaged:efficientnet_lite0")
    p.add_argument("--limit", type=int, default=256, help="number of sample images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the CLI's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from beyond_inet.data import catalog
    from beyond_inet.data.views import build_view
    from beyond_inet.engine import infer
    from beyond_inet.engine.runner import default_workers
    from beyond_inet.engine.store import Store
    from beyond_inet.models import create_model

    workers = default_workers() if args.workers is None else args.workers
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-limit-") as tmp:
        root = sample_val_tree(Path(tmp) / "data", args.limit)
        ds = catalog.open_dataset("imagenet-val", str(root))
        pos = np.arange(len(ds))
        model = create_model(args.model)
        dev = torch.device(args.device)
        model.module.eval().to(dev)
        view = build_view("standard", model.preprocessing)
        decoded = torch.stack([view(ds.load(i)) for i in range(len(ds))])
        batches = [decoded[i:i + args.batch_size] for i in range(0, len(ds), args.batch_size)]
        fwd = infer._Forward(model, dev, args.batch_size, amp=True)  # the engine's forward (AMP/channels_last on GPU)
        fwd(batches[0])  # warm-up

        def forward_only() -> float:
            t = time.perf_counter()
            for b in batches:
                fwd(b)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t

        def end_to_end(k: int) -> float:
            e = Store(Path(tmp) / f"store{k}").entry("k", len(pos), {"view": "standard"})
            t = time.perf_counter()
            infer.run_pass(model, ds, pos, {"standard": e}, args.device, args.batch_size, workers)
            return time.perf_counter() - t

        t_f, t_e = [], []
        for k in range(args.repeats):
            t_e.append(end_to_end(k))
            t_f.append(forward_only())
    n = len(pos)
    fig = {"model": args.model, "images": n, "batch_size": args.batch_size, "workers": workers,
           "threads": torch.get_num_threads(), "device": args.device,
           "end_to_end_img_s": n / min(t_e), "forward_only_img_s": n / min(t_f)}
    fig["ratio"] = fig["end_to_end_img_s"] / fig["forward_only_img_s"]
    print_table(f"{args.model}, {n} images, batch {args.batch_size}, {workers} loader workers, "
                f"{fig['threads']} torch threads", ["", "images/s"],
                [["end-to-end standard pass", fig["end_to_end_img_s"]],
                 ["forward only (pre-decoded)", fig["forward_only_img_s"]],
                 ["ratio end-to-end / forward-only", fig["ratio"]]])
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    return fig


if __name__ == "__main__":
    main()
