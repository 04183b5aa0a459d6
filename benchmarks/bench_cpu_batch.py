"""CPU forward throughput and memory against the micro-batch cap (`BEYOND_INET_CPU_BATCH_PIXELS`).

Each cap runs in its own fresh process (the allocator tuning is process-wide), interleaved over rounds so
that load from other jobs on a shared machine hits every cap alike; best round per cap. The forward is the
engine's own (`engine.infer._Forward` with the allocator tuning on), fed a loader batch of `--batch` images.
Prints images/s, its ratio to the uncapped batch, and the peak RSS the forward added. Usage:
    python benchmarks/bench_cpu_batch.py [--caps 4 8 16 32 64] [--batch 64] [--res 224] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
from beyond_inet.engine.infer import _Forward, tune_cpu_allocator
from beyond_inet.models import create_model

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

tune_cpu_allocator()
m = create_model(sys.argv[1]); bs, res = int(sys.argv[2]), int(sys.argv[3])
x = torch.randn(bs, 3, res, res)
fwd = _Forward(m, torch.device("cpu"), bs, amp=False)
before = rss("VmRSS")
with torch.inference_mode():
    fwd(x)
    t = time.perf_counter()
    for _ in range(3):
        fwd(x)
    dt = time.perf_counter() - t
print(json.dumps({"micro": fwd.micro, "img_s": 3 * bs / dt, "added_mb": rss("VmHWM") - before}))
"""


def once(model: str, batch: int, res: int, cap_images: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src"),
           "BEYOND_INET_CPU_BATCH_PIXELS": str(cap_images * 224 * 224)}
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(batch), str(res)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="packaged:efficientnet_lite0")
    p.add_argument("--caps", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="cap in images at 224 px")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    runs: dict[int, list[dict]] = {c: [] for c in args.caps}
    for _ in range(args.rounds):
        for c in args.caps:
            runs[c].append(once(args.model, args.batch, args.res, c))
    best = {c: max(r, key=lambda x: x["img_s"]) for c, r in runs.items()}
    ref = best[max(args.caps)]["img_s"]
    print(f"{args.model}, loader batch {args.batch}, {args.res} px; best of {args.rounds}")
    print(" cap (images at 224 px) | micro-batch | img/s | vs largest cap | peak RSS added MB")
    for c, r in best.items():
        print(f" {c:22d} | {r['micro']:11d} | {r['img_s']:5.1f} | {r['img_s'] / ref:14.2f} | {r['added_mb']:.0f}")
    figs = {"best": {str(c): r for c, r in best.items()}, "runs": {str(c): r for c, r in runs.items()},
            "args": vars(args)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figs, f, indent=1)
    return figs


if __name__ == "__main__":
    main()
