"""The CPU core budget (beyond_inet.cores): the cores a process may use come from its affinity mask, its
cgroup CPU quota and OMP_NUM_THREADS, and torch threads + loader workers never exceed them. cgroup files
are faked in tmp_path; the affinity mask is monkeypatched."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beyond_inet import cores


@pytest.fixture()
def no_limits(monkeypatch, tmp_path):
    """8 CPUs in the affinity mask, no OMP_NUM_THREADS, an empty cgroup v2 root."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    monkeypatch.setattr(cores, "CGROUP_ROOT", root)
    monkeypatch.setattr(cores, "PROC_SELF_CGROUP", proc)
    return root, proc


def _usable(root: Path, proc: Path, env: dict | None = None) -> int:
    return cores.usable_cores(env or {}, root, proc)


@pytest.mark.parametrize("text, want", [("max 100000", None), ("max", None), ("200000 100000", 2.0),
                                        ("150000 100000", 1.5), ("50000 100000", 0.5), ("", None),
                                        ("garbage 1", None), ("100000", 1.0)])
def test_parse_cpu_max(text, want):
    assert cores.parse_cpu_max(text) == want


def test_affinity_mask_is_the_limit_without_quota_or_env(no_limits, monkeypatch):
    root, proc = no_limits
    assert _usable(root, proc) == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 5}, raising=False)
    assert cores.affinity_cores() == 2 and _usable(root, proc) == 2


def test_cgroup_v2_quota_of_the_own_cgroup_and_its_ancestors(no_limits):
    root, proc = no_limits
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "cpu.max").write_text("300000 100000\n")
    (root / "a" / "b" / "cpu.max").write_text("150000 100000\n")
    proc.write_text("0::/a/b\n")
    assert cores.cgroup_quota_cores(root, proc) == 1.5
    assert _usable(root, proc) == 2  # 1.5 cores rounded up, below the 8 of the mask
    (root / "a" / "b" / "cpu.max").write_text("max 100000\n")
    assert cores.cgroup_quota_cores(root, proc) == 3.0  # the ancestor's quota still applies
    (root / "cpu.max").write_text("50000 100000\n")
    assert _usable(root, proc) == 1  # half a core: one thread


def test_cgroup_v1_quota(no_limits, tmp_path):
    root = tmp_path / "v1"
    d = root / "cpu,cpuacct"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-v1"
    proc.write_text("12:memory:/x\n4:cpu,cpuacct:/\n")
    assert cores.cgroup_quota_cores(root, proc) is None
    assert _usable(root, proc) == 8
    (d / "cpu.cfs_quota_us").write_text("300000\n")
    assert cores.cgroup_quota_cores(root, proc) == 3.0 and _usable(root, proc) == 3


def test_missing_cgroup_files_mean_no_quota(tmp_path):
    assert cores.cgroup_quota_cores(tmp_path / "absent", tmp_path / "absent-proc") is None


@pytest.mark.parametrize("value, want", [("1", 1), ("3", 3), ("4,2", 4), ("0", None), ("-2", None),
                                         ("many", None), ("", None)])
def test_omp_num_threads(value, want):
    assert cores.env_threads({"OMP_NUM_THREADS": value}) == want


def test_usable_cores_is_the_tightest_limit(no_limits):
    root, proc = no_limits
    (root / "cpu.max").write_text("400000 100000\n")
    assert _usable(root, proc) == 4
    assert _usable(root, proc, {"OMP_NUM_THREADS": "3"}) == 3
    assert _usable(root, proc, {"OMP_NUM_THREADS": "16"}) == 4  # more threads than the quota: quota wins
    assert _usable(root, proc, {"OMP_NUM_THREADS": "bad"}) == 4


@pytest.mark.parametrize("n_cores", range(1, 17))
def test_threads_plus_workers_never_exceed_the_cores(n_cores):
    for workers in range(0, n_cores + 3):
        for current in (1, 2, n_cores, 64):
            p = cores.plan_cpu(workers, current, n_cores)
            assert 1 <= p.threads <= current
            if workers < n_cores:
                assert p.threads + p.workers <= n_cores
            else:  # more workers than cores was asked for explicitly: one thread is the floor
                assert p.threads == 1
    for device in ("cpu", "cuda", "cuda:1"):
        w = cores.default_workers(device, n_cores)
        assert w < n_cores or n_cores == 1
        assert cores.plan_cpu(w, 64, n_cores).threads + w <= max(n_cores, 2)


def test_default_workers_follow_the_budget_not_cpu_count(monkeypatch):
    monkeypatch.setattr(cores, "usable_cores", lambda *a, **k: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert cores.default_workers("cpu") == 0 and cores.default_workers("cuda") == 1
    from beyond_inet.pipeline import default_workers

    assert default_workers("cpu") == 0 and default_workers("cuda") == 1


def test_torch_threads_sets_and_restores(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(cores, "usable_cores", lambda *a, **k: 4)
    torch.set_num_threads(8)
    try:
        with cores.torch_threads(workers=1) as plan:
            assert plan.threads == 3 and torch.get_num_threads() == 3
        assert torch.get_num_threads() == 8
        torch.set_num_threads(1)  # a lower count chosen by the caller (Ray actor, user) is kept
        with cores.torch_threads(workers=0) as plan:
            assert plan.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _policy_in_fresh_process(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "BEYOND_INET_OMP_SPIN")}
    out = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         env={**clean, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_openmp_threads_wait_passively_when_beyond_inet_is_imported_first():
    assert _policy_in_fresh_process("import beyond_inet") == "PASSIVE"
    assert _policy_in_fresh_process("import beyond_inet", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"  # user's choice
    assert _policy_in_fresh_process("import beyond_inet", GOMP_SPINCOUNT="1000") == "None"
    assert _policy_in_fresh_process("import beyond_inet", BEYOND_INET_OMP_SPIN="1") == "None"


def test_quiet_openmp_waits_does_nothing_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401  (loaded: OpenMP has read its policy already)

    env: dict = {}
    assert cores.quiet_openmp_waits(env) is False and env == {}
    monkeypatch.delitem(sys.modules, "torch")
    assert cores.quiet_openmp_waits(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
