"""Executors run planned jobs. `local` runs them in this process; `ray` (see ray_executor.py) sends
them to a Ray cluster. Both call `execute_job`, so outputs are identical wherever a job runs."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from beyond_inet.engine.infer import PassStats, run_pass
from beyond_inet.engine.plan import NATIVE_RULES, DatasetCache, Job, numerics_of
from beyond_inet.engine.store import SHARD_SIZE, Store

log = logging.getLogger("beyond_inet")


@dataclass
class ExecConfig:
    store_dir: str
    data_root: str | None
    limit: int | None
    device: str = "cpu"
    batch_size: int = 64
    num_workers: int = 2
    amp: bool = False  # bf16 autocast on a GPU; fp32 (the paper's numerics) by default
    logit_scale: float | None = None
    gpu_decode: bool = False  # decode JPEGs on the device (nvJPEG), see engine.gpu_decode
    compile: bool = False  # torch.compile the forward
    exif_transpose: bool = False  # apply EXIF orientation when decoding (see data.decode)


def execute_job(job: Job, cfg: ExecConfig, model=None, datasets: DatasetCache | None = None,
                progress=None, task=None, shards: list[int] | None = None,
                variants: dict | None = None) -> PassStats:
    """Run one job's missing shards (builds the model and opens the dataset if not given).

    `shards` restricts the run to those shards (a Ray sub-job); `[]` only creates the store entries.
    `variants` (resolution -> model rebuilt at it) is filled and reused: a Ray worker passes the same dict
    to every sub-job of a model, so each resolution is rebuilt once per worker, not once per sub-job."""
    from beyond_inet.models import create_model

    if model is None:
        model = create_model(job.model, logit_scale=cfg.logit_scale)
    if job.resolution:
        model = model.rebuild(job.resolution)
    if variants is None:
        variants = {}
    if variants.get(None) is not model:  # a cache filled for another model: start afresh
        variants.clear()
        variants[None] = model
    for v in job.views:
        r = job.view_res.get(v)
        if r not in variants:
            variants[r] = model.rebuild(r)
    models = {v: variants[job.view_res.get(v)] for v in job.views}
    name = {v: job.run_as.get(v, v) for v in job.views}  # the view each request is computed as
    datasets = datasets or DatasetCache(cfg.data_root, cfg.limit, cfg.exif_transpose)
    got = datasets.get(job.dataset)
    if got is None:
        raise RuntimeError(f"dataset {job.dataset} vanished: {datasets.missing.get(job.dataset)}")
    ds, pos, fp = got
    store = Store(cfg.store_dir)

    def meta(v: str) -> dict:
        m = models[v]
        return {"model": job.model, "weights": m.weights_id, "dataset": job.dataset, "samples": fp,
                "preprocessing": m.preprocessing.describe(), "info": json.loads(json.dumps(m.info, default=str)),
                "numerics": numerics_of(cfg.device, cfg.amp, cfg.gpu_decode), "view": name[v], "limit": cfg.limit,
                "kinds": sorted(job.kinds_of(v)),
                **({"native_rule": NATIVE_RULES.get(name[v], name[v]), "input_size": m.preprocessing.input_size}
                   if v == "native" else {})}

    # Views sharing a key (res-<native> and standard) share one entry; run_pass computes each entry once.
    expect = datasets.expected(job.dataset)
    entries = {name[v]: store.entry(k, len(pos), meta(v), expect) for v, k in job.keys.items()}
    return run_pass(model, ds, pos, entries, cfg.device, cfg.batch_size, cfg.num_workers, cfg.amp, progress, task,
                    shards=shards, gpu_decode=cfg.gpu_decode, compile=cfg.compile,
                    models={name[v]: m for v, m in models.items()})


class LocalExecutor:
    name = "local"

    def run(self, jobs: list[Job], cfg: ExecConfig, model, datasets: DatasetCache, progress=None) -> list[PassStats]:
        out = []
        for job in jobs:
            task = None
            if progress is not None:
                n_todo = sum(len(range(s * SHARD_SIZE, min((s + 1) * SHARD_SIZE, job.n_samples))) for s in job.shards)
                task = progress.add_task(job.label, total=n_todo)
            out.append(execute_job(job, cfg, model, datasets, progress, task))
        return out


# Executors by name: a class, or "module:Class" imported on first use (the Ray executor imports this
# module, so a static import back would be a cycle; optional dependencies stay optional).
EXECUTORS: dict[str, object] = {"local": "beyond_inet.engine.executors:LocalExecutor",
                                "ray": "beyond_inet.engine.ray_executor:RayExecutor"}


def register_executor(name: str, target: object) -> None:
    """Make an executor available to ``--executor NAME``: a class taking (address) or a "module:Class"."""
    EXECUTORS[name] = target


def get_executor(name: str, address: str | None = None):
    import importlib

    from beyond_inet.errors import UserError

    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}; use {' or '.join(sorted(EXECUTORS))}")
    target = EXECUTORS[name]
    if isinstance(target, str):
        mod, _, cls = target.partition(":")
        try:
            target = getattr(importlib.import_module(mod), cls)
        except ModuleNotFoundError as e:
            raise UserError(f"--executor {name} needs {e.name}: pip install 'ray[default]'" if name == "ray"
                            else f"--executor {name}: {e}") from None
    return target() if target is LocalExecutor else target(address)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, default=str))
