"""CPU seconds per image of the paper suite, ours against the naive per-experiment pipeline, on idle cores and
with a competing CPU load of the same size (N busy processes, N = the cores this process may use).

Each side runs in its own fresh subprocess (`--child`), so its CPU time is that of its whole process tree
(user + sys from `resource.getrusage(RUSAGE_CHILDREN)`, loader workers included, imports and model builds
included on both sides). The sides are interleaved within each condition and over `--rounds`, so that load
from other jobs on a shared machine hits both alike. The workload and the naive pipeline are those of
bench_suite_vs_naive.py (Lite0 + ViT-Ti/16 on the ImageNet sample images; accuracy, calibration,
ImageNet-X, invariance). The naive side runs with OpenMP's default wait policy, as the paper's code does;
`--ablation` adds ours with that default too (BEYOND_INET_OMP_SPIN=1), to show what the passive policy buys.

    python benchmarks/bench_cpu_load.py                      # 8 images, small sweep: a few minutes on 2 cores
    python benchmarks/bench_cpu_load.py --limit 40 --rounds 2 --ablation
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (sys.path, offline env)
from _common import print_table, sample_val_tree

HERE = Path(__file__).resolve().parent
ARMS = {"ours": {}, "naive": {"BEYOND_INET_OMP_SPIN": "1"}, "ours-spin": {"BEYOND_INET_OMP_SPIN": "1"}}


def child(args: argparse.Namespace) -> None:
    """One side of the comparison, in this (fresh) process: write its metric rows and counts as JSON."""
    import bench_suite_vs_naive as b

    opts = b.SWEEPS[args.sweep]
    if args.child == "naive":
        rows, counts = b.naive_suite(args.models, b.SUITE, args.root, "cpu", args.batch_size, args.workers,
                                     args.bootstrap, opts)
    else:
        rows, counts = b.ours(args.models, b.SUITE, args.root, args.out_store, "cpu", args.batch_size, args.workers,
                              args.bootstrap, opts)
    import torch

    Path(args.result).write_text(json.dumps({
        "rows": [[r.model, r.dataset, r.analysis, r.metric, r.value] for r in rows], "counts": counts,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch_threads": torch.get_num_threads()}))


def busy(n: int) -> list[subprocess.Popen]:
    """n processes that keep one core each busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_arm(arm: str, args: argparse.Namespace, root: Path, tmp: Path, tag: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                        "BEYOND_INET_OMP_SPIN")}
    env.update(ARMS[arm])
    env["PYTHONPATH"] = str(HERE.parent / "src")
    result = tmp / f"{tag}.json"
    cmd = [sys.executable, str(HERE / "bench_cpu_load.py"), "--child", arm.split("-")[0], "--root", str(root),
           "--out-store", str(tmp / f"store-{tag}"), "--result", str(result), "--models", *args.models,
           "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--bootstrap", str(args.bootstrap),
           "--sweep", args.sweep]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = json.loads(result.read_text())
    out.update(wall_s=wall, user_s=r1.ru_utime - r0.ru_utime, sys_s=r1.ru_stime - r0.ru_stime)
    out["cpu_s"] = out["user_s"] + out["sys_s"]
    return out


def max_metric_diff(a: list, b: list) -> tuple[int, float]:
    import math

    va = {tuple(r[:4]): r[4] for r in a}
    vb = {tuple(r[:4]): r[4] for r in b}
    common = [k for k in va if k in vb and not (math.isnan(va[k]) and math.isnan(vb[k]))]
    return len(common), max((abs(va[k] - vb[k]) for k in common), default=0.0)


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> dict:
    import bench_suite_vs_naive as b

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=8, help="sample images (one per class)")
    p.add_argument("--models", nargs="+", default=b.MODELS)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="loader workers, both sides (the CLI's default on <= 4 "
                                                           "cores is 0)")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--sweep", choices=sorted(b.SWEEPS), default="small")
    p.add_argument("--rounds", type=int, default=1, help="interleaved repeats of every arm and condition")
    p.add_argument("--load", type=int, default=None, help="busy processes in the loaded condition "
                                                          "(default: the cores this process may use)")
    p.add_argument("--ablation", action="store_true", help="also run ours with OpenMP's spinning default")
    p.add_argument("--json", default=None)
    p.add_argument("--child", choices=["ours", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--out-store", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}

    from beyond_inet.cores import usable_cores

    n_load = usable_cores({}) if args.load is None else args.load
    arms = ["ours", "naive"] + (["ours-spin"] if args.ablation else [])
    conditions = {"idle": 0, f"load {n_load}": n_load}
    print(f"machine: {os.cpu_count()} logical CPUs, {usable_cores({})} usable; load average at start "
          f"{load_average()} (others' jobs share this machine)")
    runs: dict[str, dict[str, list[dict]]] = {c: {a: [] for a in arms} for c in conditions}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-load-") as tmp_s:
        tmp = Path(tmp_s)
        root = sample_val_tree(tmp / "data", args.limit)
        n = sum(1 for _ in (root / "imagenet-val").rglob("*.JPEG"))
        k = 0
        for rnd in range(args.rounds):
            for cond, n_busy in conditions.items():
                procs = busy(n_busy)
                try:
                    order = arms if rnd % 2 == 0 else arms[::-1]
                    for arm in order:
                        la = load_average()
                        r = run_arm(arm, args, root, tmp, f"{k}-{arm}")
                        k += 1
                        r["load_average_before"] = la
                        runs[cond][arm].append(r)
                        print(f"  round {rnd} {cond:7s} {arm:9s} cpu {r['cpu_s']:7.1f} s (user {r['user_s']:.1f}, "
                              f"sys {r['sys_s']:.1f})  wall {r['wall_s']:6.1f} s  load avg before {la}", flush=True)
                finally:
                    for q in procs:
                        q.kill()
                        q.wait()
    summary: dict = {}
    table = []
    for cond in conditions:
        s = {}
        for arm in arms:
            rs = runs[cond][arm]
            s[arm] = {"cpu_s_per_image": sum(r["cpu_s"] for r in rs) / len(rs) / n,
                      "wall_s": sum(r["wall_s"] for r in rs) / len(rs)}
        s["cpu_ratio_naive_over_ours"] = s["naive"]["cpu_s_per_image"] / s["ours"]["cpu_s_per_image"]
        s["wall_ratio_naive_over_ours"] = s["naive"]["wall_s"] / s["ours"]["wall_s"]
        summary[cond] = s
        for arm in arms:
            table.append([cond, arm, s[arm]["cpu_s_per_image"], s[arm]["wall_s"]])
        table.append([cond, "naive / ours", s["cpu_ratio_naive_over_ours"], s["wall_ratio_naive_over_ours"]])
    rows_o = runs["idle"]["ours"][0]["rows"]
    rows_n = runs["idle"]["naive"][0]["rows"]
    n_rows, diff = max_metric_diff(rows_o, rows_n)
    print_table(f"suite on {n} images x {len(args.models)} models, {args.sweep} sweep, workers {args.workers}, "
                f"mean of {args.rounds} round(s)", ["condition", "arm", "CPU s / image", "wall s"], table)
    print(f"\nmetrics agree: {n_rows} rows compared, max |difference| = {diff:.3g}")
    fig = {"images": n, "models": args.models, "sweep": args.sweep, "workers": args.workers, "rounds": args.rounds,
           "load_processes": n_load, "summary": summary, "rows_compared": n_rows, "max_metric_diff": diff,
           "runs": {c: {a: [{k: v for k, v in r.items() if k != "rows"} for r in rs] for a, rs in d.items()}
                    for c, d in runs.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    return fig


if __name__ == "__main__":
    main()
