"""The same small plan in-process and on a local Ray cluster (started here, loopback only).

The plan: accuracy + an invariance sweep for one model on the ImageNet sample images, i.e. one job for the
crop views and one per extra resolution, each cut into shard-range Ray tasks. Both runs use one torch thread
per process (CPU kernels' summation order depends on the thread count, so this is what makes the outputs
comparable bit for bit); the Ray run spreads tasks over the cluster's CPUs. Prints both times, Ray's
start-up separately, and checks that the two output stores hold identical outputs.

    python benchmarks/bench_ray.py --limit 600
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import machine, print_table, sample_val_tree, store_digest

OPTIONS = {"invariance_scales": [1, 1.5], "invariance_shifts": [0, 30], "invariance_resolutions": [128, 160]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="timm:test_resnet@random")
    p.add_argument("--limit", type=int, default=1000, help="sample images (> 512 gives several shards per job)")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    p.add_argument("--shards-per-task", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import ray
    import torch

    from beyond_inet.engine import executors
    from beyond_inet.engine.ray_executor import RayExecutor
    from beyond_inet.engine.runner import RunConfig, run
    from beyond_inet.models import create_model

    print(f"machine: {machine()}")
    t: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = sample_val_tree(Path(tmp) / "data", args.limit)
        create_model(args.model)  # warm imports

        def cfg(name: str, executor: str) -> RunConfig:
            return RunConfig(models=[args.model], analyses=["accuracy", "invariance"], out=f"{tmp}/{name}",
                             data_root=str(root), batch_size=args.batch_size, num_workers=1, n_boot=100,
                             executor=executor, options=OPTIONS, report=False, progress=False)

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            s = time.perf_counter()
            summary = run(cfg("local", "local"))
            t["in_process"] = time.perf_counter() - s
        finally:
            torch.set_num_threads(threads)
        s = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
                 log_to_driver=False)
        t["ray_start"] = time.perf_counter() - s
        original = executors.get_executor
        executors_used = []

        def get(name, address=None):  # the runner's executor, with this benchmark's task size
            if name == "ray":
                ex = RayExecutor(address, shards_per_task=args.shards_per_task, cpus_per_task=1)
                executors_used.append(ex)
                return ex
            return original(name, address)

        import beyond_inet.engine.runner as runner_mod

        runner_mod.get_executor = get
        try:
            s = time.perf_counter()
            run(cfg("ray", "ray"))
            t["ray"] = time.perf_counter() - s
        finally:
            runner_mod.get_executor = original
            ray.shutdown()
        same = store_digest(Path(tmp) / "local" / "store") == store_digest(Path(tmp) / "ray" / "store")
        n_shards = len(list((Path(tmp) / "ray" / "store").rglob("*.safetensors")))
    fig = {"model": args.model, "images": summary["images"] // max(1, summary["jobs"]), "jobs": summary["jobs"],
           "shard_files": n_shards, "cpus": args.cpus, "seconds": t, "identical_outputs": same,
           "ratio_in_process_over_ray": t["in_process"] / t["ray"]}
    print_table(f"{args.model}: {summary['jobs']} jobs, {n_shards} shard files, local Ray cluster of {args.cpus} CPUs",
                ["", "wall s"],
                [["in-process (1 thread)", t["in_process"]], ["Ray cluster start", t["ray_start"]],
                 ["Ray run (1 thread per task)", t["ray"]], ["ratio in-process / Ray run", t["in_process"] / t["ray"]]])
    print(f"\noutputs identical (every shard and meta file): {'yes' if same else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    if not same:
        raise SystemExit(1)
    return fig


if __name__ == "__main__":
    main()
