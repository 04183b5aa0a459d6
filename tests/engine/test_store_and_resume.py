"""The store: a second run recomputes nothing; an interrupted run resumes to byte-identical shards;
unreadable images are skipped, counted and named."""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.data import catalog
from beyond_inet.engine import infer
from beyond_inet.engine.executors import ExecConfig, execute_job
from beyond_inet.engine.plan import DatasetCache, plan_model_jobs
from beyond_inet.pipeline import RunConfig, run
from beyond_inet.engine.store import Store
from beyond_inet.analyses import Request
from beyond_inet.models import create_model
from beyond_inet.report.results import ResultsDB

SPEC = "timm:convnext_atto@random"


def _cfg(root, out, **kw):
    return RunConfig(models=[SPEC], analyses=["accuracy"], out=str(out), data_root=str(root), num_workers=0,
                     batch_size=4, n_boot=50, progress=False, report=False,
                     options={"accuracy_datasets": ["imagenet-val"]}, **kw)


def test_second_run_makes_no_forward_calls(tiny_imagenet, tmp_path):
    run(_cfg(tiny_imagenet, tmp_path / "out"))
    first = infer.FORWARD_CALLS["n"]
    run(_cfg(tiny_imagenet, tmp_path / "out"))
    assert infer.FORWARD_CALLS["n"] == first
    db = ResultsDB(tmp_path / "out")
    rows = {(r.dataset, r.metric): r for r in db.rows()}
    assert rows[("imagenet-val", "top1")].n == 12
    assert 0 <= rows[("imagenet-val", "top1")].ci_low <= rows[("imagenet-val", "top1")].value
    csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv[0] == "model,dataset,analysis,metric,value,ci_low,ci_high,n"
    assert (tmp_path / "out" / "results.json").exists() and (tmp_path / "out" / "run.log").exists()


class _Crash(Exception):
    pass


def test_killed_run_resumes_byte_identical(tiny_imagenet, tmp_path, monkeypatch):
    monkeypatch.setattr("beyond_inet.engine.store.SHARD_SIZE", 5)  # 12 images -> 3 shards
    model = create_model(SPEC)

    def plan(out):
        ds = DatasetCache(str(tiny_imagenet), None)
        jobs = plan_model_jobs(model, [Request("imagenet-val"), Request("imagenet-val", "scale-1.5")], ds,
                               Store(out / "store"))
        return jobs, ds

    cfg = lambda out: ExecConfig(str(out / "store"), str(tiny_imagenet), None, batch_size=2, num_workers=0)
    # Uninterrupted reference.
    ref = tmp_path / "ref"
    jobs, ds = plan(ref)
    for j in jobs:
        execute_job(j, cfg(ref), model, ds)
    # A run that dies while decoding image 8 (inside the second shard).
    out = tmp_path / "out"
    jobs, ds = plan(out)
    real_load = type(ds.get("imagenet-val")[0]).load
    calls = {"n": 0}

    def dying_load(self, i):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt  # not swallowed like a decode error: the process "dies"
        return real_load(self, i)

    monkeypatch.setattr(type(ds.get("imagenet-val")[0]), "load", dying_load)
    with pytest.raises(KeyboardInterrupt):
        execute_job(jobs[0], cfg(out), model, ds)
    monkeypatch.setattr(type(ds.get("imagenet-val")[0]), "load", real_load)
    done = sorted(p.name for p in (out / "store").rglob("shard-*"))
    assert len(done) == 2  # shard 0 for both views survived; shard 1 was in flight
    jobs, ds = plan(out)
    assert all(j.shards == [1, 2] for j in jobs)
    for j in jobs:
        execute_job(j, cfg(out), model, ds)
    ref_files = sorted((ref / "store").rglob("shard-*"))
    out_files = sorted((out / "store").rglob("shard-*"))
    assert [p.relative_to(ref) for p in ref_files] == [p.relative_to(out) for p in out_files]
    assert len(ref_files) == 6
    for a, b in zip(ref_files, out_files):
        assert a.read_bytes() == b.read_bytes()


def test_unreadable_images_are_skipped_counted_and_named(tiny_imagenet, tmp_path):
    bad = tiny_imagenet / "imagenet-val" / "n07920052" / "ILSVRC2012_val_00099999.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    summary = run(_cfg(tiny_imagenet, tmp_path / "out"))
    assert summary["skipped_images"] == 1
    assert "ILSVRC2012_val_00099999.JPEG" in (tmp_path / "out" / "run.log").read_text()
    db = ResultsDB(tmp_path / "out")
    key = db.output_keys()[(SPEC, "imagenet-val", "standard")]
    outs = Store(tmp_path / "out" / "store").existing(key).load()
    assert len(outs) == 12 and outs.skipped == ["ILSVRC2012_val_00099999.JPEG"]
    assert outs.logits.shape == (12, 1000) and outs.features is None  # accuracy reads no features here
    assert np.isfinite(outs.logits).all()


def test_limit_takes_evenly_spaced_subset(tiny_imagenet, tmp_path):
    run(_cfg(tiny_imagenet, tmp_path / "out", limit=4))
    db = ResultsDB(tmp_path / "out")
    key = db.output_keys()[(SPEC, "imagenet-val", "standard")]
    outs = Store(tmp_path / "out" / "store").existing(key).load()
    assert len(outs) == 4 and len(set(outs.labels.tolist())) == 4  # one per class folder


def test_missing_dataset_is_recorded_not_fatal(tiny_imagenet, tmp_path):
    cfg = _cfg(tiny_imagenet, tmp_path / "out")
    cfg.options = {"accuracy_datasets": ["imagenet-val", "imagenet-sketch"]}
    run(cfg)
    db = ResultsDB(tmp_path / "out")
    assert any(s.dataset == "imagenet-sketch" and "not found" in s.reason for s in db.skips())
    assert any(r.dataset == "imagenet-val" for r in db.rows())
    assert catalog.available("imagenet-val", tiny_imagenet)


def test_a_model_that_fails_to_build_does_not_lose_the_others(tiny_imagenet, tmp_path, monkeypatch):
    """A model that passed validation but fails when built (a download cut, weights changed since) costs
    only itself. (A checkpoint that cannot be read at all is refused before any work: tests/test_validate.py.)"""
    from beyond_inet import models
    from beyond_inet.errors import UserError

    bad = "timm:resnet18@random"
    real = models.create_model

    def create(spec, *a, **kw):
        if spec == bad:
            raise UserError(f"checkpoint for {spec!r} could not be read (simulated build failure)")
        return real(spec, *a, **kw)

    monkeypatch.setattr(models, "create_model", create)
    cfg = _cfg(tiny_imagenet, tmp_path / "out")
    cfg.models = [bad, SPEC]
    with pytest.raises(UserError, match="could not be read"):
        run(cfg)
    csv = (tmp_path / "out" / "results.csv").read_text()
    assert f"{SPEC},imagenet-val,accuracy,top1," in csv  # the good model's results were exported
    db = ResultsDB(tmp_path / "out")
    assert any(s.model == bad and "could not be built" in s.reason for s in db.skips())
