"""Start-up cost of the commands a user types first, and the install size of each README command.

    python benchmarks/bench_startup.py [--repeat 3]

Each command runs in a fresh process (median wall time and peak memory of `--repeat` runs), side by side
with `python -c "import torch"`, the floor any command that imports torch pays. The install size is the
on-disk size (from each distribution's RECORD) of the dependency closure of `pip install -e .` (what
`make demo` installs) and of `pip install -e '.[test]'` (what `make test` adds), measured in this venv.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

COMMANDS = [
    ["--help"], ["models"], ["models", "--search", "vit"], ["analyses"], ["datasets"],
    ["run", "--limt", "5"], ["run", "--models", "nosuch", "--out", "x"],
    ["run", "--models", "packaged:efficientnet_lite0", "--bootstrap", "0", "--out", "x"],
]


def timed(argv: list[str], repeat: int, cwd: str) -> tuple[float, float]:
    """Median wall seconds and peak RSS (MB) of `argv` in fresh processes."""
    walls, peaks = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True, cwd=cwd)
        walls.append(time.perf_counter() - t)
        peaks.append(int(p.stderr.strip().splitlines()[-1]) / 1024)
    return statistics.median(walls), statistics.median(peaks)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(dist: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Installed distributions `dist` (with `extras`) pulls in, itself included."""
    seen: set[str] = set()
    todo = [(dist, extras)]
    while todo:
        name, ex = todo.pop()
        try:
            d = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = _norm(d.metadata["Name"])
        first = key not in seen
        seen.add(key)
        for req in d.requires or []:
            spec, _, marker = req.partition(";")
            wanted_extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if wanted_extra and wanted_extra.group(1) not in ex:
                continue
            if marker.strip() and not wanted_extra and not _marker_ok(marker):
                continue
            m = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[([^\]]+)\])?", spec)
            sub_ex = tuple(x.strip() for x in m.group(3).split(",")) if m.group(3) else ()
            if first or ex:
                todo.append((m.group(1), sub_ex))
        ex = ()
    return seen


def _marker_ok(marker: str) -> bool:
    try:
        from packaging.markers import Marker

        return Marker(marker).evaluate()
    except Exception:  # noqa: BLE001 - an unreadable marker: count the dependency
        return True


def size_mb(dists: set[str]) -> float:
    total = 0
    for d in metadata.distributions():
        if _norm(d.metadata["Name"]) in dists:
            for f in d.files or []:
                try:
                    total += f.locate().stat().st_size
                except OSError:
                    pass
    return total / 1e6


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    exe = [sys.executable, "-m", "beyond_inet"]
    figs: dict = {"commands": {}}
    with tempfile.TemporaryDirectory() as cwd:
        floor, floor_mb = timed([sys.executable, "-c", "import torch"], args.repeat, cwd)
        print(f"{'command':60s} {'wall s':>7s} {'peak MB':>8s}")
        print(f"{'(python -c import torch: the floor of any torch import)':60s} {floor:7.2f} {floor_mb:8.0f}")
        for c in COMMANDS:
            w, mb = timed([*exe, *c], args.repeat, cwd)
            figs["commands"][" ".join(c)] = {"wall_s": w, "peak_mb": mb}
            print(f"{'beyond-inet ' + ' '.join(c):60s} {w:7.2f} {mb:8.0f}")
    demo = closure("beyond-inet")
    test = closure("beyond-inet", ("test",))
    figs.update(import_torch_s=floor, demo_install_mb=size_mb(demo), test_install_mb=size_mb(test),
                demo_dists=len(demo), test_dists=len(test))
    heavy = sorted(test - demo)
    print(f"\ninstall (on-disk size of the dependency closure in this venv):")
    print(f"  make demo  (pip install -e .):         {figs['demo_install_mb']:8.0f} MB, {len(demo)} distributions")
    print(f"  make test  (pip install -e '.[test]'): {figs['test_install_mb']:8.0f} MB, {len(test)} distributions")
    print(f"  test-only: {', '.join(heavy[:30])}{' ...' if len(heavy) > 30 else ''}")
    return figs


if __name__ == "__main__":
    main()
