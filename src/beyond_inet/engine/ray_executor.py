"""`--executor ray`: run planned jobs on a Ray cluster.

Each job (one model over one dataset for its views) is cut into sub-jobs of a few consecutive shards, so
many workers share one dataset. Sub-jobs go to a pool of Ray actors, one per GPU with `--device cuda`
(`num_gpus=1`), else one per `cpus_per_task` CPUs. An actor builds the model from its spec once and keeps
it (and its CUDA context) for every sub-job it gets; it opens the dataset and calls `executors.execute_job`
restricted to its shards: the very code the local executor runs, with the same batches, so the shard files
are the same bytes as a local run on the same kind of device (on CPU: with the same number of torch
threads, `cpus_per_task`). Actors rather than plain tasks because Ray runs each GPU task in a fresh
process by default (`max_calls=1`), which would reload the model for every sub-job.

- Failures: an actor whose process dies is restarted and its sub-job retried (`max_retries` times each);
  shards already written are never redone, so a dead worker costs only the shard it was writing. A
  sub-job that keeps failing leaves its shards missing; the run stops with an error once the others are
  done, and rerunning resumes.
- Store: workers write shard files straight into `cfg.store_dir` (one atomic rename per shard; the driver
  writes each entry's meta.json before dispatch). On a multi-node cluster that path must be on a
  filesystem every node mounts at the same path (NFS, Lustre, ...), and so must `--data-root`.
  beyond-inet must be installed at the same version on every node; a worker whose model weights or
  dataset sample list differ from the driver's refuses to write.
- Cluster: `ray.init(address=...)` when an address is given (e.g. ``auto`` on a cluster node or
  ``ray://head:10001``), else a local single-machine cluster (no dashboard). Loader workers (`--workers`)
  run inside each actor and are not counted by Ray.
"""
from __future__ import annotations

import logging
import math
from collections import deque

from beyond_inet.engine.executors import ExecConfig, execute_job
from beyond_inet.engine.infer import PassStats
from beyond_inet.engine.plan import DatasetCache, Job
from beyond_inet.engine.store import SHARD_SIZE
from beyond_inet.errors import RunFailed

log = logging.getLogger("beyond_inet")

# Per worker process: the last model built (one at a time keeps memory bounded), its resolution variants
# (the views' models rebuilt at 112/336/... px, reused by every sub-job) and opened datasets.
_WORKER_MODEL: dict[tuple, object] = {}
_WORKER_VARIANTS: dict = {}
_WORKER_DATASETS: dict[tuple, DatasetCache] = {}


class WorkerMismatch(RuntimeError):
    """A worker sees other weights or another sample list than the driver planned with."""


def split_job(job: Job, shards_per_task: int) -> list[list[int]]:
    """The job's missing shards in consecutive groups of at most `shards_per_task`."""
    k = max(1, int(shards_per_task))
    return [job.shards[i:i + k] for i in range(0, len(job.shards), k)]


def auto_shards_per_task(total_shards: int, slots: int) -> int:
    """About four tasks per worker slot (load balance, bounded loss on failure), 1..8 shards each."""
    return max(1, min(8, math.ceil(total_shards / (4 * max(1, slots)))))


def aggregate(parts: list[PassStats]) -> PassStats:
    """One job's stats from its sub-jobs' (given in shard order)."""
    out = PassStats(batch_size=min((p.batch_size for p in parts if p.batch_size), default=0))
    for p in parts:
        out.images += p.images
        out.shards_written += p.shards_written
        out.skipped.extend(p.skipped)
    return out


def _worker_model(spec: str, logit_scale: float | None, resolution: int | None = None):
    """The model for `spec` (at `resolution`), built once per worker process; one spec kept at a time."""
    base_key = (spec, logit_scale, None)
    if base_key not in _WORKER_MODEL:
        from beyond_inet.models import create_model

        _WORKER_MODEL.clear()
        _WORKER_VARIANTS.clear()
        _WORKER_MODEL[base_key] = create_model(spec, logit_scale=logit_scale)
    key = (spec, logit_scale, resolution)
    if key not in _WORKER_MODEL:
        for k in [k for k in _WORKER_MODEL if k[2] is not None]:  # keep the base and one rebuilt copy
            del _WORKER_MODEL[k]
        _WORKER_MODEL[key] = _WORKER_MODEL[base_key].rebuild(resolution)
    return _WORKER_MODEL[key]


def _worker_datasets(data_root: str | None, limit: int | None, exif_transpose: bool = False) -> DatasetCache:
    key = (data_root, limit, exif_transpose)
    if key not in _WORKER_DATASETS:
        _WORKER_DATASETS[key] = DatasetCache(data_root, limit, exif_transpose)
    return _WORKER_DATASETS[key]


def run_subjob(job: Job, cfg: ExecConfig, shards: list[int], weights_id: str | None,
               fingerprint: str | None) -> PassStats:
    """One sub-job in a worker: `execute_job` on `shards` with a worker-cached model and dataset."""
    model = _worker_model(job.model, cfg.logit_scale, job.resolution)
    if weights_id is not None and model.weights_id != weights_id:
        raise WorkerMismatch(f"worker built {job.model} with weights {model.weights_id}, the driver planned with "
                             f"{weights_id}; install the same versions on every node")
    datasets = _worker_datasets(cfg.data_root, cfg.limit, cfg.exif_transpose)
    got = datasets.get(job.dataset)
    if got is None:
        raise WorkerMismatch(f"worker cannot open {job.dataset} under {cfg.data_root}: "
                             f"{datasets.missing.get(job.dataset)} (the data root must be on a shared filesystem)")
    if fingerprint is not None and got[2] != fingerprint:
        raise WorkerMismatch(f"worker sees another sample list for {job.dataset} under {cfg.data_root}")
    return execute_job(job, cfg, model, datasets, shards=shards, variants=_WORKER_VARIANTS)


class _Worker:
    """A Ray actor: one GPU (or some CPUs) and a cached model, running sub-jobs one after another."""

    def __init__(self, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)

    def run(self, job: Job, cfg: ExecConfig, shards: list[int], weights_id: str | None,
            fingerprint: str | None) -> PassStats:
        return run_subjob(job, cfg, shards, weights_id, fingerprint)


class RayExecutor:
    """Fans jobs out as shard-range sub-jobs over Ray actors; same `run` contract as `LocalExecutor`."""

    name = "ray"

    def __init__(self, address: str | None = None, shards_per_task: int | None = None, cpus_per_task: int = 1,
                 max_retries: int = 3, max_workers: int | None = None, init_kwargs: dict | None = None):
        self.address, self.shards_per_task, self.cpus_per_task = address, shards_per_task, cpus_per_task
        self.max_retries, self.max_workers, self.init_kwargs = max_retries, max_workers, dict(init_kwargs or {})
        self.started = False  # whether this executor started the Ray runtime (then `close` stops it)

    def _ray(self):
        import ray

        if not ray.is_initialized():
            kw = {"include_dashboard": False, **self.init_kwargs}
            try:
                if self.address:
                    ray.init(address=self.address, **kw)
                else:
                    ray.init(**kw)
            except (ConnectionError, TimeoutError, RuntimeError, OSError, ValueError) as e:
                # validate.check_ray_address probes the address first; this is a head lost in between, or a
                # local start that failed. Whatever ray.init left half-started is stopped, not left behind.
                try:
                    ray.shutdown()
                except Exception:  # noqa: BLE001 - best effort after a failed start
                    pass
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise RunFailed(f"could not connect to Ray{' at ' + self.address if self.address else ''}: "
                                f"{type(e).__name__}: {first}; stored work is kept, rerun to resume") from None
            self.started = True
        return ray

    def close(self) -> None:
        """Stop the Ray runtime if this executor started it (Ray also stops it at interpreter exit)."""
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def _slots(self, ray, gpu: bool) -> int:
        res = ray.cluster_resources()
        if gpu:
            n = int(res.get("GPU", 0))
            if n < 1:
                raise RunFailed("--device cuda with --executor ray: the Ray cluster has no GPUs")
            return n
        return max(1, int(res.get("CPU", 1) // max(1, self.cpus_per_task)))

    def run(self, jobs: list[Job], cfg: ExecConfig, model, datasets: DatasetCache, progress=None) -> list[PassStats]:
        ray = self._ray()
        gpu = cfg.device == "cuda"
        slots = self._slots(ray, gpu)
        if self.max_workers:
            slots = min(slots, self.max_workers)
        per_task = self.shards_per_task or auto_shards_per_task(sum(len(j.shards) for j in jobs), slots)
        weights_id = getattr(model, "weights_id", None)
        cfg_ref = ray.put(cfg)
        queue: deque = deque()  # (job index, shards, job ref, fingerprint)
        tasks = {}
        for ji, job in enumerate(jobs):
            execute_job(job, cfg, model, datasets, shards=[])  # meta.json written once, here: no worker races
            got = datasets.get(job.dataset)
            fingerprint = got[2] if got else None
            tasks[ji] = None
            if progress is not None:
                n_todo = sum(len(range(s * SHARD_SIZE, min((s + 1) * SHARD_SIZE, job.n_samples))) for s in job.shards)
                tasks[ji] = progress.add_task(job.label + " (ray)", total=n_todo)
            job_ref = ray.put(job)
            queue.extend((ji, group, job_ref, fingerprint) for group in split_job(job, per_task))
        n_sub = len(queue)
        actor_cls = ray.remote(_Worker).options(
            num_gpus=1 if gpu else 0, num_cpus=self.cpus_per_task, max_restarts=self.max_retries,
            max_task_retries=self.max_retries)
        workers = [actor_cls.remote(None if gpu else self.cpus_per_task) for _ in range(min(slots, n_sub))]
        log.info("ray: %d jobs as %d sub-jobs of <= %d shards on %d workers", len(jobs), n_sub, per_task, len(workers))
        parts: dict[int, dict[int, PassStats]] = {ji: {} for ji in range(len(jobs))}
        failures: list[str] = []
        inflight: dict = {}

        def submit(w) -> None:
            ji, group, job_ref, fp = queue.popleft()
            ref = w.run.options(retry_exceptions=[OSError]).remote(job_ref, cfg_ref, group, weights_id, fp)
            inflight[ref] = (w, ji, group)

        try:
            for w in workers:
                if queue:
                    submit(w)
            while inflight:
                done, _ = ray.wait(list(inflight), num_returns=1)
                w, ji, group = inflight.pop(done[0])
                try:
                    st = ray.get(done[0])
                except ray.exceptions.RayActorError as e:  # restarts used up: this worker is gone
                    failures.append(f"{jobs[ji].label} shards {group}: worker died ({type(e).__name__})")
                    log.error("ray worker lost: %s", failures[-1])
                    workers.remove(w)
                    if not workers:
                        failures += [f"{jobs[q[0]].label} shards {q[1]}: no worker left" for q in queue]
                        queue.clear()
                    continue
                except Exception as e:  # noqa: BLE001 - reported once the other sub-jobs are done
                    cause = getattr(e, "cause", None) or e
                    failures.append(f"{jobs[ji].label} shards {group}: {type(cause).__name__}: {str(cause)[:300]}")
                    log.error("ray sub-job failed: %s", failures[-1])
                else:
                    parts[ji][group[0]] = st
                    if progress is not None:
                        progress.advance(tasks[ji], st.images)
                if queue:
                    submit(w)
        finally:
            for w in workers:
                ray.kill(w)
        if failures:
            raise RunFailed(f"{len(failures)} of {n_sub} Ray sub-jobs failed (their shards are not stored; "
                               f"rerun to resume). First: {failures[0]}")
        return [aggregate([parts[ji][k] for k in sorted(parts[ji])]) for ji in range(len(jobs))]
