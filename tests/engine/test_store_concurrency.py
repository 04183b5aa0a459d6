"""Two runs on one store compute each shard once and corrupt nothing; stray temp files of killed writes
are removed by the next run; claims of dead processes are taken over, live ones respected."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from beyond_inet.engine.runner import RunConfig, run
from beyond_inet.engine.store import Entry

SPEC = "timm:convnext_atto@random"
_HOST = socket.gethostname().replace(".", "_")  # as the store names its temp and lock files

_WORKER = r"""
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import beyond_inet.engine.store as store
store.SHARD_SIZE = 3                     # 12 images -> 4 shards
from beyond_inet.engine import infer
infer.CLAIM_CHUNK = 1                    # claim one shard per pass, so the two processes interleave
from beyond_inet.analyses import Request
from beyond_inet.engine.executors import ExecConfig, execute_job
from beyond_inet.engine.plan import DatasetCache, plan_model_jobs
from beyond_inet.models import create_model

data, out, me, other = sys.argv[1:5]
model = create_model("timm:convnext_atto@random")
_forward = model.forward
model.forward = lambda x: (time.sleep(0.3), _forward(x))[1]  # slow enough that the two runs overlap
ds = DatasetCache(data, None)
ds.get("imagenet-val")
Path(out, f"ready-{me}").touch()
while not Path(out, f"ready-{other}").exists():   # start together
    time.sleep(0.02)
jobs = plan_model_jobs(model, [Request("imagenet-val")], ds, store.Store(Path(out) / "store"))
cfg = ExecConfig(str(Path(out) / "store"), data, None, batch_size=4, num_workers=0)
stats = [execute_job(j, cfg, model, ds) for j in jobs]
print(json.dumps({"forward": infer.FORWARD_CALLS["n"], "written": sum(s.shards_written for s in stats)}))
"""


def test_two_processes_compute_each_shard_once(tiny_imagenet, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    import beyond_inet

    src = str(Path(beyond_inet.__file__).parents[1])  # the sources under test, wherever they are
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tiny_imagenet), str(out), me, other],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for me, other in (("a", "b"), ("b", "a"))]
    results = []
    for p in procs:
        so, se = p.communicate(timeout=300)
        assert p.returncode == 0, se[-2000:]
        results.append(json.loads(so.strip().splitlines()[-1]))
    # One shard of 3 images at batch 4 is one forward call: 4 shards -> 4 calls in all, not 8.
    assert sum(r["forward"] for r in results) == 4, results
    assert sum(r["written"] for r in results) == 4, results
    (entry_dir,) = [p for p in (out / "store").iterdir() if p.is_dir()]
    e = Entry(entry_dir, 12, 3)
    assert e.verify(move=False) == [] and e.missing_shards() == []
    assert len(e.load().ids) == 12 and len(set(e.load().ids)) == 12
    assert not list(entry_dir.glob("*.lock")) and not list(entry_dir.glob(".*.tmp"))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_claims_respect_live_owners_and_take_over_dead_ones(tmp_path):
    from beyond_inet.engine.store import claim, release

    shard = tmp_path / "shard-00000.safetensors"
    lock = tmp_path / "shard-00000.safetensors.lock"
    lock.write_text(json.dumps({"host": _HOST, "pid": os.getppid(), "time": 0}))  # a live process holds it
    assert not claim(shard)
    lock.write_text(json.dumps({"host": _HOST, "pid": _dead_pid(), "time": 0}))  # its owner died
    assert claim(shard) and json.loads(lock.read_text())["pid"] == os.getpid()
    release(shard)
    assert not lock.exists()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))  # another host, refreshed just now
    assert not claim(shard)
    os.utime(lock, (1, 1))  # ... not refreshed for decades: stale
    assert claim(shard)
    release(shard)
    shard.write_bytes(b"x")
    assert not claim(shard)  # already written: nothing to claim


def test_stray_temp_files_are_removed_by_the_next_run(tiny_imagenet, tmp_path):
    cfg = RunConfig(models=[SPEC], analyses=["accuracy"], out=str(tmp_path / "out"), data_root=str(tiny_imagenet),
                    num_workers=0, batch_size=4, n_boot=20, progress=False, report=False,
                    options={"accuracy_datasets": ["imagenet-val"]})
    run(cfg)
    (entry_dir,) = [p for p in (tmp_path / "out" / "store").iterdir() if p.is_dir()]
    dead = _dead_pid()
    strays = [entry_dir / f".shard-00000.safetensors.{_HOST}.{dead}.tmp",  # killed mid-write
              entry_dir / f".shard-00000.safetensors.{dead}.tmp",          # same, older naming
              entry_dir / f".meta.json.{dead}.tmp"]
    live = entry_dir / f".shard-00000.safetensors.{_HOST}.{os.getppid()}.tmp"  # a write still in progress
    for p in strays + [live]:
        p.write_bytes(b"partial")
    run(cfg)
    assert [p for p in strays if p.exists()] == []
    assert live.exists()
