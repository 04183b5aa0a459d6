"""Linear-probe benchmark: the default L-BFGS probe vs the CLIP_benchmark (paper) protocol on the same features.

    python benchmarks/bench_probe.py                       # planted linear signal, CPU
    python benchmarks/bench_probe.py --data digits         # sklearn digits pixels (real, tiny)
    python benchmarks/bench_probe.py --device cuda --n-train 50000 --dim 768 --classes 100

Prints accuracy, chosen hyper-parameter and wall time of each mode and the speed ratio, side by side.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def planted(n_train: int, n_test: int, dim: int, classes: int, noise: float, seed: int):
    """Features with a planted linear signal: class prototypes plus isotropic noise (VTAB-like difficulty)."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(classes, dim)) / np.sqrt(dim)
    y = rng.integers(0, classes, size=n_train + n_test)
    x = protos[y] + noise * rng.normal(size=(y.size, dim)) / np.sqrt(dim)
    x += 0.5 * rng.normal(size=dim) / np.sqrt(dim)        # a shared offset, as real embeddings have
    return x[:n_train].astype(np.float32), y[:n_train], x[n_train:].astype(np.float32), y[n_train:]


def digits(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["planted", "digits"], default="planted")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--noise", type=float, default=6.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="lbfgs,paper")
    args = ap.parse_args()

    import torch

    from beyond_inet.analyses.transfer import resolve_device, run_probe

    if args.data == "digits":
        x_tr, y_tr, x_te, y_te = digits(args.seed)
    else:
        x_tr, y_tr, x_te, y_te = planted(args.n_train, args.n_test, args.dim, args.classes, args.noise, args.seed)
    dev = resolve_device(args.device)
    # warm up the device and torch's kernels so the first mode is not charged for them
    run_probe("lbfgs", x_tr[:64], y_tr[:64], x_te[:8], device=dev)
    print(f"data={args.data} train={len(y_tr)} test={len(y_te)} dim={x_tr.shape[1]} classes={int(y_tr.max()) + 1} "
          f"device={dev} torch_threads={torch.get_num_threads()}")
    results = {}
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        r = run_probe(mode, x_tr, y_tr, x_te, device=dev, seed=args.seed)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        results[mode] = (float((r.test_pred == y_te).mean()), secs, r.hyper_name, r.hyper, len(r.search))
    print(f"{'mode':<7}{'top1':>8}{'seconds':>10}  {'chosen':<28}{'fits':>5}")
    for mode, (acc, secs, hn, h, fits) in results.items():
        print(f"{mode:<7}{acc:>8.4f}{secs:>10.2f}  {hn + '=' + format(h, '.3g'):<28}{fits:>5}")
    if {"lbfgs", "paper"} <= set(results):
        ratio = results["paper"][1] / results["lbfgs"][1]
        delta = 100 * (results["lbfgs"][0] - results["paper"][0])
        print(f"speed-up of lbfgs over paper: {ratio:.1f}x; accuracy difference (lbfgs - paper): {delta:+.2f} points")


if __name__ == "__main__":
    main()
