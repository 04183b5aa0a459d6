"""The layer-statistics pass: per layer and per minibatch, the Gram matrix of the layer's per-image
vectors, stored so that CKA between any two models is arithmetic over stored files.

Why Gram matrices: linear CKA with the unbiased HSIC estimator needs, per minibatch, only K = X Xᵀ
([b, b]) of each layer, never X itself; so memory is O(L·b²) whatever the layer width, and two models
can be compared later without running either again — provided both saw the *same* minibatches. The
batch composition (which images, in which order, cut where) is therefore fixed by the dataset's
sample list, the number of images, a seeded permutation of them and the batch size, and recorded with the
statistics; the CKA step refuses to pair batches whose image ids differ.

Why the permutation: datasets list their images sorted by class, so consecutive batches would hold one class
(or neighbouring ones: the 118 dog breeds). The minibatch estimator averages *within-batch* HSIC, which
then measures within-class similarity: late layers come out 0.05-0.10 too high and the value moves with
the batch size. Batches drawn at random are simple random samples of the chosen images, whose per-batch
unbiased HSIC has the full sample's expectation at any batch size. The permutation depends only on the
seed and the number of images (not on the batch size), so every batch size cuts the same image order.

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
them first; a damaged chunk (or a corrupt meta.json) is moved aside to ``<name>.corrupt`` and
computed again by the same pass. A chunk found damaged later, while CKA reads it, is moved aside and the
run stops with one line; rerunning recomputes it. meta.json is checked against its schema when read
(`meta_problem`: types, ranges, batch and chunk counts that follow from the configuration, a layer list
that the stored chunks and the model agree with); one that fails is damage like a bad chunk. Only one
``<name>.corrupt`` copy of a file is kept: a later damage replaces it, so reruns never pile copies up.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from beyond_inet.data.readers import ImageDataset
from beyond_inet.engine.store import (SHARD_SIZE, Damage, ShardDamage, StoreDamaged, VerifyReport, _read_meta,
                                     atomic_write_bytes, entry_folders, hashed_safetensors, make_key, open_file,
                                     read_safetensors_head, read_stats_chunk)
from beyond_inet.models.base import VisionModel
from beyond_inet.models.layers import LAYER_TYPES, REDUCTIONS, capture_layers, typed_modules

log = logging.getLogger("beyond_inet")
STATS_VERSION = "3"  # 2: chunks carry their index and a hash; 3: batches of a seeded random permutation
FORWARD_CALLS: dict[str, int] = {}  # model spec -> forward passes run by this module (tests count them)


@dataclass(frozen=True)
class StatsConfig:
    """What fixes the statistics besides the model and the dataset."""

    n_images: int = 10_000
    batch_size: int = 256
    types: tuple[str, ...] = LAYER_TYPES
    reduce: str = "flatten"
    shuffle_seed: int = 0  # seeds the permutation of the chosen images before they are cut into batches

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


def batch_order(n: int, seed: int) -> np.ndarray:
    """The order in which `n` chosen images (in dataset order) are cut into batches: a permutation fixed by
    `seed` and `n` alone, so that every batch size, and every model, cuts the same order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(n)])).permutation(n)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) batches; a last batch under 4 images joins the one before it, so
    every batch supports the unbiased estimator."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 4:
        (a, _), (_, d) = bounds[-2], bounds[-1]
        bounds[-2:] = [(a, d)]
    return bounds


def plan_batches(positions: np.ndarray, cfg: StatsConfig) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The batch composition of a pass: the chosen positions in batch order, and each batch's [start, stop)
    in that order."""
    chosen = choose_positions(positions, cfg.n_images)
    chosen = chosen[batch_order(len(chosen), cfg.shuffle_seed)]
    return chosen, batch_bounds(len(chosen), cfg.batch_size)


def stats_key(model: VisionModel, dataset: str, fingerprint: str, chosen: list[str], cfg: StatsConfig,
              numerics: str, decoding: str = "") -> str:
    """`decoding` names a non-default image decoding (``exif_transpose``), as in the output store's key."""
    import hashlib

    ids = json.dumps(chosen).encode()
    fields = {"kind": "layer-stats", "version": STATS_VERSION, "weights": model.weights_id,
              "pre": model.preprocessing.describe(), "dataset": dataset, "samples": fingerprint,
              "images": hashlib.sha256(ids).hexdigest()[:16], "batch_size": cfg.batch_size,
              "types": list(cfg.types), "reduce": cfg.reduce, "shuffle_seed": cfg.shuffle_seed, "numerics": numerics,
              "logit_scale": model.info.get("logit_scale")}
    if decoding:
        fields["decoding"] = decoding
    return make_key(fields)


def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.corrupt``, replacing an earlier copy (and any ``<name>.corrupt-<n>``
    left by older versions): one copy is evidence enough, and a file damaged on every rerun must not fill
    the disk."""
    dest = path.with_name(f"{path.name}.corrupt")
    for old in path.parent.glob(f"{path.name}.corrupt-*"):
        old.unlink(missing_ok=True)
    os.replace(path, dest)
    return dest


def chunks_per(batch_size: int) -> int:
    """Batches per stored chunk."""
    return max(1, SHARD_SIZE // batch_size)


def _is_int(x, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def _str_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) and v for v in x)


def meta_problem(meta, expected: dict | None = None) -> str | None:
    """What is wrong with a layer-statistics meta.json, or None: every field has its type and range, the batch
    and chunk counts follow from the image count and batch size, the layer list is non-empty, unique and
    typed. `expected` (the fields the pass would write, all but the layers) must match exactly: the key
    hashes them, so a difference is damage."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        return "config missing"
    layers, types = meta.get("layers"), meta.get("types")
    checks = (("n_images", _is_int(meta.get("n_images"), 1)), ("n_batches", _is_int(meta.get("n_batches"), 1)),
              ("n_chunks", _is_int(meta.get("n_chunks"), 1)),
              ("config.batch_size", _is_int(cfg.get("batch_size"), 4)),
              ("config.n_images", _is_int(cfg.get("n_images"), 4)),
              ("config.shuffle_seed", _is_int(cfg.get("shuffle_seed"))),
              ("config.types", _str_list(cfg.get("types")) and set(cfg["types"]) <= set(LAYER_TYPES)),
              ("config.reduce", cfg.get("reduce") in REDUCTIONS),
              ("version", meta.get("version") == STATS_VERSION),
              ("layers", _str_list(layers) and len(layers) > 0 and len(set(layers)) == len(layers)),
              ("types", _str_list(types) and set(types) <= set(LAYER_TYPES)))
    for name, ok in checks:
        if not ok:
            return f"bad or missing {name}"
    if len(meta["types"]) != len(meta["layers"]):
        return f"{len(meta['types'])} layer types for {len(meta['layers'])} layers"
    if not set(meta["types"]) <= set(cfg["types"]):
        return "layer types outside config.types"
    if meta["n_images"] > cfg["n_images"]:
        return f"n_images {meta['n_images']} above config.n_images {cfg['n_images']}"
    n_batches = len(batch_bounds(meta["n_images"], cfg["batch_size"]))
    if meta["n_batches"] != n_batches:
        return (f"n_batches {meta['n_batches']}, but {meta['n_images']} images in batches of {cfg['batch_size']} "
                f"make {n_batches}")
    n_chunks = -(-n_batches // chunks_per(cfg["batch_size"]))
    if meta["n_chunks"] != n_chunks:
        return f"n_chunks {meta['n_chunks']}, expected {n_chunks}"
    for k, v in (expected or {}).items():
        if meta.get(k) != v:
            return f"{k} is {meta.get(k)!r}, expected {v!r}"
    return None


def _chunk_layers(path: Path) -> list | None:
    """The layer list in a stored chunk's header (hash not checked: `verify` does that); None if unreadable."""
    try:
        f, size = open_file(path)
        with f:
            return read_safetensors_head(f, size, "batches").meta.get("layers")
    except (OSError, ShardDamage):
        return None


@dataclass
class LayerStats:
    """One model's stored statistics (a reader; every chunk is loaded lazily)."""

    root: Path
    meta: dict = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path, damaged: list[Damage] | None = None,
             expected: dict | None = None) -> "LayerStats | None":
        """The statistics in `root`, or None when absent. A meta.json that does not parse, fails `meta_problem`
        (against `expected` when given) or whose layer list no stored chunk shares is moved aside (and
        appended to `damaged`) and reads as absent, so the pass computes everything again."""
        root = Path(root)
        mp = root / "meta.json"
        if not mp.exists():
            return None
        try:
            meta = json.loads(mp.read_text())
            problem = stored_meta_problem(meta, root, expected)
        except (OSError, ValueError):
            problem = "does not parse"
        if problem is None:
            return cls(root, meta)
        d = Damage(str(mp), f"corrupt meta.json ({problem})", str(set_aside(mp)))
        if damaged is not None:
            damaged.append(d)
        return None

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
        per_chunk = chunks_per(int(self.meta["config"]["batch_size"]))
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
                found.append(Damage(str(p), str(e), str(set_aside(p)) if move else None))
        return found

    def batches(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """(image ids, Grams [L, b, b] float64) per batch, in order; one chunk in memory at a time. A
        damaged chunk is moved aside and raises StoreDamaged (one line; rerunning recomputes it)."""
        for c in range(self.n_chunks):
            try:
                tensors, md = self.read_chunk(c)
            except ShardDamage as e:
                p = self.chunk_path(c)
                d = Damage(str(p), str(e), str(set_aside(p)) if p.exists() else None)
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
    """Fill (or reuse) the statistics of `model` on `cfg.n_images` evenly spaced `positions` of `ds`, cut into
    batches in the seeded random order `batch_order` (so a batch is never one class).

    Nothing runs when every chunk is stored and verifies; a partial folder resumes at its first missing
    chunk. Damaged stored files are moved aside, recomputed, and appended to `damaged`.
    """
    args = (model, ds, positions, dataset, fingerprint, root, cfg, device, num_workers, amp, numerics, progress,
            decoding, damaged)
    try:
        return _compute(*args)
    except _StaleLayers as e:  # meta.json named other layers than the model runs: damage, recomputed once
        d = Damage(str(e.path), "corrupt meta.json (its layer list is not the one the model runs)",
                   str(set_aside(e.path)))
        log.warning("layer statistics: damaged file %s (%s) moved aside to %s; recomputing it", d.path, d.reason,
                    d.moved_to)
        if damaged is not None:
            damaged.append(d)
        return _compute(*args)


class _StaleLayers(Exception):
    """The stored meta.json's layer list differs from the one the model's first batch ran."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def _compute(model: VisionModel, ds: ImageDataset, positions: np.ndarray, dataset: str, fingerprint: str,
             root: str | Path, cfg: StatsConfig, device: str, num_workers: int, amp: bool, numerics: str,
             progress, decoding: str, damaged: list[Damage] | None) -> LayerStats:
    from torch.utils.data import DataLoader

    from beyond_inet.cores import torch_threads
    from beyond_inet.data.views import normalize_uint8
    from beyond_inet.engine.infer import _collate, _ViewSet, tune_cpu_allocator

    chosen, bounds = plan_batches(positions, cfg)
    ids = [ds.sample_id(int(p)) for p in chosen]
    key = stats_key(model, dataset, fingerprint, ids, cfg, numerics, decoding)
    folder = Path(root) / key
    per_chunk = chunks_per(cfg.batch_size)
    chunks = [bounds[i:i + per_chunk] for i in range(0, len(bounds), per_chunk)]
    expected = {"weights": model.weights_id, "preprocessing": model.preprocessing.describe(),
                "dataset": dataset, "samples": fingerprint, "n_images": len(chosen), "n_batches": len(bounds),
                "n_chunks": len(chunks), "config": {**asdict(cfg), "types": list(cfg.types)},
                "numerics": numerics, "decoding": decoding, "version": STATS_VERSION}
    expected = json.loads(json.dumps(expected))  # as read back from meta.json
    found: list[Damage] = []
    stats = LayerStats.open(folder, found, expected)
    from_disk = stats is not None
    if stats is not None:
        found += stats.verify(move=True)
    for d in found:
        log.warning("layer statistics: damaged file %s (%s) moved aside to %s; recomputing it", d.path, d.reason,
                    d.moved_to)
    if damaged is not None:
        damaged += found
    if stats is None:
        stats = LayerStats(folder, {"model": model.spec, **expected, "layers": [], "types": []})
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
                if from_disk and list(order) != stats.layers:
                    raise _StaleLayers(folder / "meta.json")
                from_disk = False
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


def stored_meta_problem(meta, folder: Path, expected: dict | None = None) -> str | None:
    """What is wrong with a stored layer-statistics meta.json, or None: its schema (`meta_problem`, against
    `expected` when given) and a layer list that some stored chunk shares. The one rule of `LayerStats.open`
    (a run) and `verify_layer_stats` (`beyond-inet verify`)."""
    problem = meta_problem(meta, expected)
    if problem is None:
        chunks = [folder / f"chunk-{c:05d}.safetensors" for c in range(meta["n_chunks"])]
        stored = [lay for p in chunks if p.exists() for lay in [_chunk_layers(p)] if lay is not None]
        if stored and meta["layers"] not in stored:
            problem = f"its {len(meta['layers'])} layers are not those of any stored chunk"
    return problem


def verify_layer_stats(root: str | Path) -> VerifyReport:
    """Check every layer-statistics folder under `root` (``<out>/layer-stats``) with the checks a run applies:
    meta.json against its schema and the stored chunks' layer list, every chunk's hash and its own index;
    moves nothing."""
    t0 = time.perf_counter()
    rep = VerifyReport()
    for d in entry_folders(root, rep):
        meta = _read_meta(d / "meta.json") if (d / "meta.json").exists() else None
        if meta is None:
            rep.damaged.append(Damage(str(d / "meta.json"), "corrupt meta.json" if (d / "meta.json").exists()
                                      else "meta.json missing"))
            continue
        problem = stored_meta_problem(meta, d)
        if problem:
            rep.damaged.append(Damage(str(d / "meta.json"), f"corrupt meta.json ({problem})"))  # as a run says
            continue
        for p in sorted(d.glob("chunk-*.safetensors")):
            try:
                rep.bytes += read_stats_chunk(p, int(p.name[6:11]))[1].size
                rep.shards += 1
            except (ShardDamage, ValueError) as e:  # ValueError: not a chunk-NNNNN name
                rep.damaged.append(Damage(str(p), str(e)))
        if len(list(d.glob("chunk-*.safetensors"))) < meta["n_chunks"]:
            rep.incomplete.append(str(d))
    rep.seconds = time.perf_counter() - t0
    return rep
