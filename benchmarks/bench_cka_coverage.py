"""Coverage of the CKA interval by simulation: how often the 95% interval of the diagonal summary holds the
population CKA, for 10 to 100 random minibatches.

The population is a mixture of 64 class clusters in 6 dimensions (x = c + e; y = [c B, 1.5 f]), whose
linear CKA is ||Σ_xy||²_F / (||Σ_xx||_F ||Σ_yy||_F) (Kornblith et al. 2019). Each dataset is T minibatches of
i.i.d. draws (what the shuffled statistics pass gives); the analysis' own columns (`batch_hsic`,
`diagonal_columns`) feed the jackknife-t interval it reports (`jackknife_columns`) and, for comparison,
a percentile bootstrap over minibatches (what it reported before).

    PYTHONPATH=src python benchmarks/bench_cka_coverage.py --datasets 2000
"""
from __future__ import annotations

import argparse

import _common  # noqa: F401
import numpy as np

DIM, NOISE_Y = 6, 1.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=2000)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()

    from beyond_inet.analyses.cka import batch_hsic, diagonal_columns, diagonal_finish, jackknife_columns
    from beyond_inet.analyses.stats import percentile_interval, replicate_indices, resample_counts

    rng = np.random.default_rng(0)
    C, B = 2.0 * rng.normal(size=(64, DIM)), rng.normal(size=(DIM, DIM))
    Cc = C - C.mean(0)
    S, zero = Cc.T @ Cc / len(C), np.zeros((DIM, DIM))
    sxy = np.concatenate([S @ B, zero], 1)
    syy = np.block([[B.T @ S @ B, zero], [zero, NOISE_Y ** 2 * np.eye(DIM)]])
    true = float(np.sum(sxy ** 2) / np.sqrt(np.sum((S + np.eye(DIM)) ** 2) * np.sum(syy ** 2)))
    print(f"population CKA {true:.4f}; {args.datasets} datasets per row")
    print(f"{'batches':>8} {'batch':>6} {'mean est':>9} {'jackknife-t':>12} {'percentile boot':>16}")
    for T, b in ((10, 32), (20, 32), (40, 32), (100, 32), (20, 16)):
        rng = np.random.default_rng(1)
        jk = boot = 0
        est = []
        for r in range(args.datasets):
            rows = []
            for _ in range(T):
                cls = rng.integers(0, len(C), b)
                x = C[cls] + rng.normal(size=(b, DIM))
                y = np.concatenate([C[cls] @ B, NOISE_Y * rng.normal(size=(b, DIM))], 1)
                cross, sa, sb = batch_hsic((x @ x.T)[None], (y @ y.T)[None])
                rows.append(np.concatenate([cross[0], sa, sb]))
            V = diagonal_columns(np.array(rows), np.arange(1))
            est.append(float(diagonal_finish(V.sum(0))))
            lo, hi = jackknife_columns(V)
            jk += lo <= true <= hi
            reps = np.concatenate([diagonal_finish(resample_counts(i, T).astype(float) @ V)
                                   for i in replicate_indices(T, args.n_boot, r)])
            lo, hi = percentile_interval(reps)
            boot += lo <= true <= hi
        n = args.datasets
        print(f"{T:>8} {b:>6} {np.mean(est):>9.4f} {jk / n:>12.3f} {boot / n:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
