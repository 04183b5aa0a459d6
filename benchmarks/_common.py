"""Helpers shared by the benchmark scripts: workload folders, timing, printing.

Benchmarks print ratios measured side by side in one process on one machine; absolute times depend on
the machine (and on anything else running on it), ratios much less.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights / packaged weights only: never the network
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SAMPLE_IMAGES = ROOT.parent / "shared" / "data" / "imagenet-sample-images"


@contextmanager
def timed(out: dict, key: str):
    """Wall seconds of the block into out[key]."""
    t = time.perf_counter()
    try:
        yield
    finally:
        out[key] = time.perf_counter() - t


def val_names_by_class() -> dict[int, str]:
    """One ImageNet val file name per class index: an annotated, non-prototype ImageNet-X image where the
    class has one (so ImageNet-X scoring joins), else any val image of the class."""
    import pandas as pd

    from beyond_inet.analyses.imagenet_x import annotation_dir, load_annotations

    every = pd.read_csv(annotation_dir() / "filename_label.csv").drop_duplicates("label")
    names = dict(zip(every["label"].astype(int), every["file_name"]))
    ann = load_annotations("top", True).drop_duplicates("class")
    names.update(zip(ann["class"].astype(int), ann["file_name"]))
    return names


def sample_val_tree(dest: Path, limit: int | None = None, source: Path = SAMPLE_IMAGES) -> Path:
    """A data root whose `imagenet-val` is the ImageNet sample images (one per class, symlinked) laid out
    as `imagenet-val/<wnid>/<val file name>`, named after an annotated val image of the same class so that
    ImageNet-X scoring joins. `limit` takes that many classes, evenly spaced."""
    import csv

    import numpy as np

    if not (source / "labels.csv").exists():
        raise SystemExit(f"{source} not found: the benchmark needs the ImageNet sample images "
                         f"(../shared/data/imagenet-sample-images)")
    with open(source / "labels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["class_index"]))
    if limit and limit < len(rows):
        rows = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(int))]
    names = val_names_by_class()
    for r in rows:
        d = dest / "imagenet-val" / r["wnid"]
        d.mkdir(parents=True, exist_ok=True)
        link = d / names[int(r["class_index"])]
        if not link.exists():
            link.symlink_to((source / r["file"]).resolve())
    return dest


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for k, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if k and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


def machine() -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs "
            f"(torch threads {torch.get_num_threads()}), {gpu}, torch {torch.__version__}")


def store_digest(store: Path) -> dict[str, bytes]:
    """Every file of an output store (shards and meta.json) by relative path: the bytes to compare."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp")}
