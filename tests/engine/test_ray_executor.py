"""The Ray executor: shard-range sub-jobs on a local Ray cluster write the same shard files, byte for
byte, as the local executor. Shards are made tiny (8 samples) so one job spans several tasks."""
from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from scale_helpers import make_imagenet_val, store_files

from beyond_inet.analyses.base import Request
from beyond_inet.engine import store as store_mod
from beyond_inet.engine.executors import ExecConfig, LocalExecutor, execute_job
from beyond_inet.engine.infer import PassStats
from beyond_inet.engine.plan import DatasetCache, Job, plan_model_jobs
from beyond_inet.engine.store import Store

SMALL_SHARD = 8
SPEC = "timm:test_resnet@random"  # 0.5M parameters, random weights (seeded)
REQUESTS = [Request("imagenet-val", "standard"), Request("imagenet-val", "scale-1.5"),
            Request("imagenet-val", "res-128")]


def worker_setup() -> None:
    """Ray worker setup hook: 8-sample shards; with BI_TEST_CRASH_MARKER set, the first worker to get
    shard 1 of the crop-view job dies there (os._exit), once."""
    import os

    from beyond_inet.engine import ray_executor, store

    store.SHARD_SIZE = SMALL_SHARD
    marker = os.environ.get("BI_TEST_CRASH_MARKER")
    if not marker:
        return
    inner = ray_executor.execute_job

    def crashing(job, cfg, model=None, datasets=None, progress=None, task=None, shards=None, **kw):
        if shards == [1] and job.resolution is None and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies in the middle of its sub-job
        return inner(job, cfg, model, datasets, progress, task, shards, **kw)

    ray_executor.execute_job = crashing


@pytest.fixture()
def tiny_shards(monkeypatch):
    monkeypatch.setattr(store_mod, "SHARD_SIZE", SMALL_SHARD)


def _plan(tmp_path, name: str, model):
    cfg = ExecConfig(str(tmp_path / name), str(tmp_path / "data"), None, "cpu", batch_size=4, num_workers=0)
    datasets = DatasetCache(cfg.data_root, None)
    jobs = plan_model_jobs(model, REQUESTS, datasets, Store(cfg.store_dir))
    return cfg, datasets, jobs


def _local(tmp_path, model, threads: int = 1):
    cfg, datasets, jobs = _plan(tmp_path, "local", model)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # CPU kernels' summation order depends on the thread count
    try:
        stats = LocalExecutor().run(jobs, cfg, model, datasets)
    finally:
        torch.set_num_threads(before)
    return jobs, stats, store_files(tmp_path / "local")


def test_split_and_aggregate():
    from beyond_inet.engine.ray_executor import aggregate, auto_shards_per_task, split_job

    job = Job("m", "d", ["standard"], None, {"standard": "k"}, 100, [0, 1, 2, 4, 5])
    assert split_job(job, 2) == [[0, 1], [2, 4], [5]]
    assert split_job(job, 10) == [[0, 1, 2, 4, 5]]
    assert auto_shards_per_task(98, 1) == 8 and auto_shards_per_task(98, 8) == 4 and auto_shards_per_task(3, 8) == 1
    a = PassStats(images=8, skipped=[("x", "e")], shards_written=1, batch_size=4)
    b = PassStats(images=3, skipped=[("y", "e")], shards_written=1, batch_size=2)
    s = aggregate([a, b])
    assert (s.images, s.skipped, s.shards_written, s.batch_size) == (11, [("x", "e"), ("y", "e")], 2, 2)


def test_shard_subsets_compose_to_the_full_run(tmp_path, tiny_shards):
    """execute_job(shards=...) in any split writes the same bytes as one uninterrupted pass."""
    from beyond_inet.models import create_model

    make_imagenet_val(tmp_path / "data", n=20)
    model = create_model(SPEC)
    _, _, ref = _local(tmp_path, model)
    cfg, datasets, jobs = _plan(tmp_path, "split", model)
    assert [len(j.shards) for j in jobs] == [3]  # 20 samples in shards of 8; both resolutions in one pass
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in jobs:
            execute_job(job, cfg, model, datasets, shards=[])  # entries only, no inference
            assert execute_job(job, cfg, model, datasets, shards=[2]).shards_written == 1
            assert execute_job(job, cfg, model, datasets, shards=[0, 2]).shards_written == 1  # 2 is stored
            execute_job(job, cfg, model, datasets, shards=[1])
    finally:
        torch.set_num_threads(before)
    assert store_files(tmp_path / "split") == ref


def test_a_worker_rebuilds_each_resolution_once_for_all_its_sub_jobs(tmp_path, tiny_shards, monkeypatch):
    """A Ray worker runs many sub-jobs of one job: the res-128 model is rebuilt once per worker, not once
    per sub-job, and the files are the bytes of the local run. (`run_subjob` is what an actor calls; here
    it runs in this process, without Ray.)"""
    from beyond_inet.engine import ray_executor
    from beyond_inet.models import base, create_model

    make_imagenet_val(tmp_path / "data", n=20)
    _, _, ref = _local(tmp_path, create_model(SPEC))
    cfg, datasets, jobs = _plan(tmp_path, "worker", create_model(SPEC))
    (job,) = jobs
    rebuilt = []
    real = base.VisionModel.rebuild

    def counting(self, resolution):
        rebuilt.append(resolution)
        return real(self, resolution)

    monkeypatch.setattr(base.VisionModel, "rebuild", counting)
    monkeypatch.setattr(ray_executor, "_WORKER_MODEL", {})
    monkeypatch.setattr(ray_executor, "_WORKER_VARIANTS", {})
    execute_job(job, cfg, create_model(SPEC), datasets, shards=[])  # the driver writes meta.json first
    rebuilt.clear()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for shards in ([0], [1], [2]):
            ray_executor.run_subjob(job, cfg, shards, None, None)
    finally:
        torch.set_num_threads(before)
    assert rebuilt.count(128) == 1  # three sub-jobs, one rebuild
    assert store_files(tmp_path / "worker") == ref


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_ray_executor_matches_local_bytes(tmp_path, tiny_shards, monkeypatch):
    """Two workers share each job shard by shard; one dies mid-job and is restarted: the store still holds
    exactly the local executor's bytes."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    from beyond_inet.engine.ray_executor import RayExecutor
    from beyond_inet.models import create_model

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    make_imagenet_val(tmp_path / "data", n=20)
    model = create_model(SPEC)
    _, stats_local, ref = _local(tmp_path, model)

    marker = tmp_path / "crashed"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship the setup hook to the workers
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             log_to_driver=False, runtime_env={"worker_process_setup_hook": worker_setup,
                                               "env_vars": {"BI_TEST_CRASH_MARKER": str(marker)}})
    try:
        cfg, datasets, jobs = _plan(tmp_path, "ray", model)
        ex = RayExecutor(None, shards_per_task=1, cpus_per_task=1, max_retries=2)
        stats = ex.run(jobs, cfg, model, datasets)
        assert not ex.started  # the test's runtime was reused, not replaced

        # Workers that build other weights than the driver planned with refuse to write, and say why.
        other = dataclasses.replace(model, weights_id="random:not-these")
        cfg2, datasets2, jobs2 = _plan(tmp_path, "mismatch", other)
        with pytest.raises(RuntimeError, match="WorkerMismatch"):
            RayExecutor(None, shards_per_task=3, max_retries=0).run(jobs2[:1], cfg2, other, datasets2)
        assert not list((tmp_path / "mismatch").rglob("*.safetensors"))
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists()  # a worker did die
    got = store_files(tmp_path / "ray")
    assert sorted(got) == sorted(ref) and len([k for k in ref if k.endswith(".safetensors")]) == 9
    assert got == ref  # every meta.json and shard file: identical bytes
    assert [(s.images, s.shards_written) for s in stats] == [(s.images, s.shards_written) for s in stats_local]
    assert [s.images for s in stats] == [20]  # one job: both resolutions share the decode
