"""The layer-statistics pass: per layer and per minibatch, the Gram matrix of the layer's per-image
vectors, stored so that CKA between any two models is arithmetic over stored files.

Why Gram matrices: linear CKA with the unbiased HSIC estimator needs, per minibatch, only K = X Xᵀ
([b, b]) of each layer, never X itself; so memory is O(L·b²) whatever the layer width, and two models
can be compared later without running either again — provided both saw the *same* minibatches. The
batch composition (which images, in which order, cut where) is therefore fixed by the dataset's
sample list, the number of images and the batch size, and recorded with the statistics; the CKA step
refuses to pair batches whose image ids differ.

Each K is computed from batch-centred vectors (X − mean over the batch): the unbiased HSIC and the
usual centred HSIC are exactly invariant to that (U-/double-centering removes rank-one row/column
terms), and centring first avoids float32 cancellation when activations have a large common mean.
K is formed in float32 on the model's device, then stored in float64.

Layout: ``<out>/layer-stats/<key>/meta.json`` plus ``chunk-00000.safetensors`` ..., each chunk holding
up to `SHARD_SIZE` images' batches as tensors ``gram.<t>`` of shape [L, b_t, b_t] (t = batch index
within the chunk); the chunk's metadata lists each batch's image ids and the layer names. Chunks are
written atomically, so a killed pass resumes at the first missing chunk. The key hashes the model's
weights id, preprocessing, the dataset's sample list, the chosen images, batch size, layer selection,
reduction and numerics.

Integrity, as in the output store (docs/store.md): each chunk's metadata records its index and an xxh3_64
hash of the whole file, checked whenever the chunk is read. A pass that finds stored statistics verifies
them first; a damaged chunk (or a corrupt meta.json) is moved aside to ``<name>.corrupt-<n>`` and
computed again by the same pass. A chunk found damaged later, while CKA reads it, is moved aside and the
run stops with one line; rerunning recomputes it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from beyond_inet.data.readers import ImageDataset
from beyond_inet.engine.store import (SHARD_SIZE, Damage, ShardDamage, StoreDamaged, atomic_write_bytes,
                                     hashed_safetensors, make_key, move_aside, read_stats_chunk)
from beyond_inet.models.base import VisionModel
from beyond_inet.models.layers import LAYER_TYPES, REDUCTIONS, capture_layers, typed_modules

log = logging.getLogger("beyond_inet")
STATS_VERSION = "2"  # 2: chunks carry their index and a hash of the whole file
FORWARD_CALLS: dict[str, int] = {}  # model spec -> forward passes run by this module (tests count them)


@dataclass(frozen=True)
class StatsConfig:
    """What fixes the statistics besides the model and the dataset."""

    n_images: int = 10_000
    batch_size: int = 256
    types: tuple[str, ...] = LAYER_TYPES
    reduce: str = "flatten"

    def __post_init__(self):
        if self.batch_size < 4:
            raise ValueError("the unbiased HSIC estimator needs batches of at least 4 images")
        if self.n_images < 4:
            raise ValueError("CKA needs at least 4 images")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduce!r}; choose from {REDUCTIONS}")
        bad = set(self.types) - set(LAYER_TYPES)
        if bad or not self.types:
            raise ValueError(f"unknown layer type(s) {sorted(bad)}; choose from {LAYER_TYPES}")


def choose_positions(positions: np.ndarray, n_images: int) -> np.ndarray:
    """`n_images` evenly spaced among `positions` (all of them if fewer): class-sorted datasets keep
    every class represented."""
    if n_images >= len(positions):
        return np.asarray(positions, np.int64)
    idx = np.unique(np.linspace(0, len(positions) - 1, n_images).round().astype(np.int64))
    return np.asarray(positions, np.int64)[idx]


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) batches; a last batch under 4 images joins the one before it, so
    every batch supports the unbiased estimator."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 4:
        (a, _), (_, d) = bounds[-2], bounds[-1]
        bounds[-2:] = [(a, d)]
    return bounds


def stats_key(model: VisionModel, dataset: str, fingerprint: str, chosen: list[str], cfg: StatsConfig,
              numerics: str, decoding: str = "") -> str:
    """`decoding` names a non-default image decoding (``exif_transpose``), as in the output store's key."""
    import hashlib

    ids = json.dumps(chosen).encode()
    fields = {"kind": "layer-stats", "version": STATS_VERSION, "weights": model.weights_id,
              "pre": model.preprocessing.describe(), "dataset": dataset, "samples": fingerprint,
              "images": hashlib.sha256(ids).hexdigest()[:16], "batch_size": cfg.batch_size,
              "types": list(cfg.types), "reduce": cfg.reduce, "numerics": numerics,
              "logit_scale": model.info.get("logit_scale")}
    if decoding:
        fields["decoding"] = decoding
    return make_key(fields)


@dataclass
class LayerStats:
    """One model's stored statistics (a reader; every chunk is loaded lazily)."""

    root: Path
    meta: dict = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path, damaged: list[Damage] | None = None) -> "LayerStats | None":
        """The statistics in `root`, or None when absent; a corrupt meta.json is moved aside (and appended
        to `damaged`) and reads as absent, so the pass computes everything again."""
        root = Path(root)
        mp = root / "meta.json"
        if not mp.exists():
            return None
        try:
            meta = json.loads(mp.read_text())
            if not isinstance(meta, dict) or not isinstance(meta.get("n_chunks"), int):
                raise ValueError
        except (OSError, ValueError):
            d = Damage(str(mp), "corrupt meta.json", str(move_aside(mp)))
            if damaged is not None:
                damaged.append(d)
            return None
        return cls(root, meta)

    @property
    def layers(self) -> list[str]:
        return list(self.meta.get("layers", []))

    @property
    def types(self) -> list[str]:
        return list(self.meta.get("types", []))

    @property
    def n_chunks(self) -> int:
        return int(self.meta["n_chunks"])

    def chunk_path(self, c: int) -> Path:
        return self.root / f"chunk-{c:05d}.safetensors"

    def missing_chunks(self) -> list[int]:
        return [c for c in range(self.n_chunks) if not self.chunk_path(c).exists()]

    def complete(self) -> bool:
        return bool(self.layers) and not self.missing_chunks()

    def read_chunk(self, c: int) -> tuple[dict[str, np.ndarray], dict]:
        """Chunk `c`'s tensors and metadata, its hash checked as it is read, and its index, layers and batch
        count checked against meta.json. Raises ShardDamage."""
        per_chunk = max(1, SHARD_SIZE // int(self.meta["config"]["batch_size"]))
        expected = min(per_chunk, int(self.meta["n_batches"]) - c * per_chunk)
        tensors, head = read_stats_chunk(self.chunk_path(c), c, self.layers, expected)
        return tensors, head.meta

    def verify(self, move: bool = True) -> list[Damage]:
        """Check every chunk on disk as a read would; damaged ones are moved aside (when `move`), so they
        count as missing."""
        found = []
        for c in range(self.n_chunks):
            p = self.chunk_path(c)
            if not p.exists():
                continue
            try:
                self.read_chunk(c)
            except ShardDamage as e:
                found.append(Damage(str(p), str(e), str(move_aside(p)) if move else None))
        return found

    def batches(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """(image ids, Grams [L, b, b] float64) per batch, in order; one chunk in memory at a time. A
        damaged chunk is moved aside and raises StoreDamaged (one line; rerunning recomputes it)."""
        for c in range(self.n_chunks):
            try:
                tensors, md = self.read_chunk(c)
            except ShardDamage as e:
                p = self.chunk_path(c)
                d = Damage(str(p), str(e), str(move_aside(p)) if p.exists() else None)
                where = f"; moved to {Path(d.moved_to).name}" if d.moved_to else ""
                raise StoreDamaged(f"stored layer statistics {p} are damaged ({e}){where}; rerun the same command "
                                   f"to recompute them", [d]) from None
            for t, ids in enumerate(md["ids"]):
                yield ids, tensors[f"gram.{t}"]


class _GramSink:
    """Receives each hooked layer's [b, d] vectors and keeps only their centred Gram matrix."""

    def __init__(self, device: torch.device):
        self.device = device
        self.grams: dict[str, np.ndarray] = {}

    def __call__(self, name: str, x: torch.Tensor) -> None:
        with torch.autocast(self.device.type, enabled=False):
            x = x.float()
            x = x - x.mean(dim=0, keepdim=True)
            self.grams[name] = (x @ x.T).double().cpu().numpy()


def compute_layer_stats(model: VisionModel, ds: ImageDataset, positions: np.ndarray, dataset: str,
                        fingerprint: str, root: str | Path, cfg: StatsConfig, device: str = "cpu",
                        num_workers: int = 0, amp: bool = True, numerics: str = "fp32",
                        progress=None, decoding: str = "", damaged: list[Damage] | None = None) -> LayerStats:
    """Fill (or reuse) the statistics of `model` on `cfg.n_images` evenly spaced `positions` of `ds`.

    Nothing runs when every chunk is stored and verifies; a partial folder resumes at its first missing
    chunk. Damaged stored files are moved aside, recomputed, and appended to `damaged`.
    """
    from torch.utils.data import DataLoader

    from beyond_inet.cores import torch_threads
    from beyond_inet.data.views import normalize_uint8
    from beyond_inet.engine.infer import _collate, _ViewSet, tune_cpu_allocator

    chosen = choose_positions(positions, cfg.n_images)
    ids = [ds.sample_id(int(p)) for p in chosen]
    key = stats_key(model, dataset, fingerprint, ids, cfg, numerics, decoding)
    folder = Path(root) / key
    bounds = batch_bounds(len(chosen), cfg.batch_size)
    per_chunk = max(1, SHARD_SIZE // cfg.batch_size)
    chunks = [bounds[i:i + per_chunk] for i in range(0, len(bounds), per_chunk)]
    found: list[Damage] = []
    stats = LayerStats.open(folder, found)
    if stats is not None and stats.layers:
        found += stats.verify(move=True)
    for d in found:
        log.warning("layer statistics: damaged file %s (%s) moved aside to %s; recomputing it", d.path, d.reason,
                    d.moved_to)
    if damaged is not None:
        damaged += found
    if stats is None:
        meta = {"model": model.spec, "weights": model.weights_id, "preprocessing": model.preprocessing.describe(),
                "dataset": dataset, "samples": fingerprint, "n_images": len(chosen), "n_batches": len(bounds),
                "n_chunks": len(chunks), "config": {**asdict(cfg), "types": list(cfg.types)},
                "numerics": numerics, "decoding": decoding, "version": STATS_VERSION, "layers": [], "types": []}
        stats = LayerStats(folder, meta)
    todo = stats.missing_chunks() if stats.layers else list(range(len(chunks)))
    if not todo:
        log.info("%s: layer statistics on %d %s images reused (%s)", model.spec, len(chosen), dataset, folder)
        return stats
    folder.mkdir(parents=True, exist_ok=True)
    selected = typed_modules(model.module, cfg.types)
    if not selected:
        raise ValueError(f"{model.spec}: no module of type {', '.join(cfg.types)} to take statistics from")
    dev = torch.device(device)
    tune_cpu_allocator()
    model.module.eval().to(dev)
    batches = [list(range(a, b)) for c in todo for a, b in chunks[c]]
    loader = DataLoader(_ViewSet(ds, chosen, {"standard": model.preprocessing}), batch_sampler=batches,
                        collate_fn=_collate, num_workers=num_workers, pin_memory=dev.type == "cuda")
    sink = _GramSink(dev)
    task = progress.add_task(f"{model.spec}: layer statistics", total=len(batches) * cfg.batch_size) \
        if progress is not None else None
    pending: dict[int, list[tuple[list[str], np.ndarray]]] = {}
    chunk_of = {a: c for c in todo for a, _ in chunks[c]}
    # Intra-op threads + loader workers stay within the cores this process may use (beyond_inet.cores).
    with torch_threads(num_workers), capture_layers(model.module, selected, cfg.reduce, sink) as (order, start):
        for js, ok, views, errors in loader:
            c = chunk_of[js[0]]
            for j, err in errors:
                log.warning("layer statistics: unreadable image %s skipped (%s)", ids[j], err)
            if ok:
                x = views["standard"].to(dev, non_blocking=True)
                x = normalize_uint8(x, model.preprocessing)
                sink.grams.clear()
                start(len(ok))
                with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                            enabled=dev.type == "cuda" and amp):
                    model.forward(x)
                FORWARD_CALLS[model.spec] = FORWARD_CALLS.get(model.spec, 0) + 1
                if not stats.layers:  # the first batch fixes the layer list; record it before any chunk
                    stats.meta["layers"] = list(order)
                    stats.meta["types"] = [selected[n] for n in order]
                    atomic_write_bytes(folder / "meta.json", json.dumps(stats.meta, indent=1, sort_keys=True).encode())
                if list(order) != stats.layers:
                    raise RuntimeError(f"{model.spec}: layers ran in a different order than in the first batch")
                gram = np.stack([sink.grams[n] for n in stats.layers])
            else:  # every image of the batch unreadable: an empty batch keeps the batch indices aligned
                gram = None
            pending.setdefault(c, []).append(([ids[j] for j in ok], gram))
            if len(pending[c]) == len(chunks[c]):
                _write_chunk(stats, c, pending.pop(c))
            if progress is not None:
                progress.advance(task, len(js))
    log.info("%s: layer statistics of %d layers on %d %s images in %d batches of %d (%d chunk(s) computed) -> %s",
             model.spec, len(stats.layers), len(chosen), dataset, len(bounds), cfg.batch_size, len(todo), folder)
    return stats


def _write_chunk(stats: LayerStats, c: int, batches: list[tuple[list[str], np.ndarray]]) -> None:
    empty = np.zeros((len(stats.layers), 0, 0))
    tensors = {f"gram.{t}": np.ascontiguousarray(empty if g is None else g, np.float64)
               for t, (_, g) in enumerate(batches)}
    md = {"chunk": c, "ids": [ids for ids, _ in batches], "layers": stats.layers}
    atomic_write_bytes(stats.chunk_path(c), hashed_safetensors(tensors, "batches", md))
