"""The CPU core budget: how many cores this process may use, and how they are split between torch's
intra-op threads and the loader's worker processes.

Why: torch starts one intra-op thread per core it sees in the affinity mask. It ignores a container's
CPU quota (a 2-CPU quota on a 64-core host still gets 64 threads) and the loader workers that decode
next to the forward. And when the cores are busy with other jobs, OpenMP threads that wait at the end
of every parallel region *spin* for a while before sleeping, burning CPU that a descheduled sibling
thread needed. On 2 shared cores at load 2 above our own process that spinning made a CPU forward pass
cost 9x the CPU seconds per image of an idle run (benchmarks/bench_cpu_load.py, docs/performance.md).

The rule (docs/performance.md, "The CPU core budget"):
  cores   = min(CPUs in sched_getaffinity, ceil(cgroup CPU quota), OMP_NUM_THREADS), at least 1;
  workers = the user's --workers, else 0 on a CPU with at most 4 cores (cores // 4, at most 4, above);
            on a GPU cores - 1, at most 8;
  threads = min(torch's current thread count, cores - workers), at least 1;
so threads + workers never exceed the cores unless the user asks for more workers than cores.
OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE) unless the user chose a policy.

Nothing here imports torch at module level: `quiet_openmp_waits` must run before torch is loaded.
"""
from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# Environment variables through which a user already decided how OpenMP threads wait.
_OMP_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def affinity_cores() -> int:
    """CPUs this process may be scheduled on (its affinity mask; `os.cpu_count()` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` ("$QUOTA $PERIOD", quota "max" = unlimited) -> cores, or None if unlimited."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _own_cgroup_dirs(root: Path, proc_cgroup: Path, controller: str | None) -> list[Path]:
    """The directories of this process's cgroup and of every ancestor up to `root` (v2: the "0::" line;
    v1: the line naming `controller`). Only `root` itself when /proc/self/cgroup is unreadable."""
    rel = None
    for line in (_read(proc_cgroup) or "").splitlines():
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if (controller is None and hid == "0" and ctrls == "") or (
                controller is not None and controller in ctrls.split(",")):
            rel = path
            break
    dirs = [root]
    if rel:
        cur = root
        for part in [p for p in rel.split("/") if p]:
            cur = cur / part
            dirs.append(cur)
    return dirs


def cgroup_quota_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest CPU quota (in cores) on this process's cgroup or its ancestors, or None if none.

    cgroup v2: `cpu.max`. cgroup v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1 = unlimited)
    under `cpu`, `cpu,cpuacct` or the root itself. In a container the cgroup namespace makes `root` the
    container's own cgroup, where its quota is."""
    quotas: list[float] = []
    if (root / "cgroup.controllers").exists() or (root / "cpu.max").exists():  # v2 (unified)
        for d in _own_cgroup_dirs(root, proc_cgroup, None):
            q = parse_cpu_max(_read(d / "cpu.max") or "")
            if q is not None:
                quotas.append(q)
    else:  # v1
        for base in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu", root):
            if not base.is_dir():
                continue
            for d in _own_cgroup_dirs(base, proc_cgroup, "cpu"):
                try:
                    quota = int((_read(d / "cpu.cfs_quota_us") or "-1").strip())
                    period = int((_read(d / "cpu.cfs_period_us") or "100000").strip())
                except ValueError:
                    continue
                if quota > 0 and period > 0:
                    quotas.append(quota / period)
            break
    return min(quotas) if quotas else None


def env_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """OMP_NUM_THREADS as a positive int (its first level for a nested list such as "4,2"), else None."""
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "")
    try:
        n = int(value.split(",")[0].strip())
    except ValueError:
        return None
    return n if n > 0 else None


def usable_cores(environ: Mapping[str, str] | None = None, root: Path = CGROUP_ROOT,
                 proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The cores this process may keep busy: min(affinity mask, ceil(cgroup quota), OMP_NUM_THREADS), >= 1.

    A fractional quota is rounded up (as Go and the JVM do): 1.5 cores run two threads throttled a
    quarter of the time rather than one thread leaving half a core unused."""
    limits = [affinity_cores()]
    quota = cgroup_quota_cores(root, proc_cgroup)
    if quota is not None:
        limits.append(max(1, math.ceil(quota - 1e-9)))
    omp = env_threads(environ)
    if omp is not None:
        limits.append(omp)
    return max(1, min(limits))


def default_workers(device: str = "cpu", cores: int | None = None) -> int:
    """Decoding processes when --workers is not given.

    On a GPU the model waits for decoding, so use most cores. On a CPU the forward pass already uses
    every core: a worker process competes with it, and on small machines costs more (fork, shared
    memory) than it saves — the offline demo on 2 cores ran in 2:04 with none vs 3:05 with one."""
    cores = usable_cores() if cores is None else cores
    if str(device).startswith("cuda"):
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


@dataclass(frozen=True)
class CpuPlan:
    """How one process splits its cores: `threads` intra-op threads next to `workers` loader processes."""

    cores: int
    threads: int
    workers: int


def plan_cpu(workers: int, current_threads: int, cores: int | None = None) -> CpuPlan:
    """Intra-op threads for a pass with `workers` loader processes: what is left of the cores after the
    workers (each runs one thread), never more than the `current_threads` already chosen (by the user,
    OMP_NUM_THREADS or a Ray actor), never fewer than one."""
    cores = usable_cores() if cores is None else cores
    return CpuPlan(cores, max(1, min(current_threads, cores - max(0, workers))), max(0, workers))


@contextmanager
def torch_threads(workers: int, cores: int | None = None) -> Iterator[CpuPlan]:
    """Run the block with torch's intra-op threads set by `plan_cpu`; the previous count is restored."""
    import torch

    before = torch.get_num_threads()
    plan = plan_cpu(workers, before, cores)
    if plan.threads != before:
        torch.set_num_threads(plan.threads)
    try:
        yield plan
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def quiet_openmp_waits(environ: dict | None = None) -> bool:
    """Make OpenMP threads sleep, not spin, while they wait (OMP_WAIT_POLICY=PASSIVE), if still possible.

    OpenMP reads the policy once, when the library loads (with torch), so this only works before torch
    is imported; it is called when `beyond_inet` is imported. A policy the user set (OMP_WAIT_POLICY,
    GOMP_SPINCOUNT, KMP_BLOCKTIME) is kept; BEYOND_INET_OMP_SPIN=1 keeps OpenMP's default. Returns whether
    the policy is now passive. The variable is inherited by child processes (loader workers, Ray workers),
    which is what we want for them too."""
    env = os.environ if environ is None else environ
    if env.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return True
    if env.get("BEYOND_INET_OMP_SPIN") or any(v in env for v in _OMP_WAIT_VARS) or "torch" in sys.modules:
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
