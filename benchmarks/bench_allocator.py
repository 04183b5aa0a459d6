"""CPU forward throughput with and without the glibc allocator tuning of `engine.infer`.

Each setting runs in its own fresh process (mallopt is process-wide), interleaved, best of 2.
Prints images/s, user/system CPU seconds and the ratio. Usage:
    python benchmarks/bench_allocator.py [--model packaged:efficientnet_lite0] [--batch 64] [--res 224]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from beyond_inet.engine.infer import tune_cpu_allocator
from beyond_inet.models import create_model
tuned = tune_cpu_allocator()
m = create_model(sys.argv[1]); bs, res = int(sys.argv[2]), int(sys.argv[3])
x = torch.randn(bs, 3, res, res)
with torch.inference_mode():
    m.forward(x)
    r0 = resource.getrusage(resource.RUSAGE_SELF); t = time.perf_counter()
    for _ in range(3):
        m.forward(x)
    dt = time.perf_counter() - t; r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"tuned": tuned, "img_s": 3 * bs / dt, "user": r1.ru_utime - r0.ru_utime,
                  "sys": r1.ru_stime - r0.ru_stime}))
"""


def once(args, tuned: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    if not tuned:
        env["BEYOND_INET_NO_MALLOC_TUNING"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(args.batch), str(args.res)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="packaged:efficientnet_lite0")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    runs = {"default": [], "tuned": []}
    for _ in range(2):
        runs["default"].append(once(args, False))
        runs["tuned"].append(once(args, True))
    best = {k: max(v, key=lambda r: r["img_s"]) for k, v in runs.items()}
    for k, r in best.items():
        print(f"{k:8s} {r['img_s']:7.1f} img/s   user {r['user']:5.1f} s   sys {r['sys']:5.1f} s")
    ratio = best["tuned"]["img_s"] / best["default"]["img_s"]
    print(f"tuned / default throughput: {ratio:.2f}x  ({args.model}, batch {args.batch}, {args.res}px)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"best": best, "ratio": ratio, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
