"""One inference pass: a model over a dataset, for one or more crop views at once.

Each image is decoded once in a loader worker and every view is cut from it there. Batches never
cross shard boundaries, so a resumed run feeds the model exactly the same batches as an uninterrupted
one and writes byte-identical shards. On GPU: bf16 autocast, channels_last, pinned memory with
non-blocking copies, and the batch is split in halves on out-of-memory instead of crashing.
Optional: JPEG decoding on the GPU (`gpu_decode`, see ``engine.gpu_decode``; workers then only read
bytes) and `torch.compile` of the forward (`compile`; falls back to eager if compilation fails).
`shards` restricts a pass to some shards, so several workers can share one dataset.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from beyond_inet.cores import torch_threads
from beyond_inet.data.readers import ImageDataset
from beyond_inet.data.views import build_view, normalize_uint8
from beyond_inet.engine.store import Entry, claim, image_identities, refresh_claims, release
from beyond_inet.models.base import Preprocessing, VisionModel

log = logging.getLogger("beyond_inet")
FORWARD_CALLS = {"n": 0}  # counted for tests: a cached rerun makes none
# Counted for tests and benchmarks: image rows that went through a model, and images decoded (in this
# process: with loader workers, their decodes happen elsewhere and are not counted).
FORWARD_ROWS = {"n": 0}
DECODES = {"n": 0}
# CPU forward micro-batches hold at most this many input pixels (8 images at 224 px, 1 at 512 or 640 px):
# activation memory then stays flat across resolutions and batch sizes instead of growing with both
# (Lite0 at 640 px, batch 64 peaked at 14 GB). Overridden by BEYOND_INET_CPU_BATCH_PIXELS.
CPU_BATCH_PIXELS = 8 * 224 * 224
# CPU loader batches hold at most this many bytes of uint8 view crops: the paper's 16-view suite is
# 4.4 MB per image (the 512 and 640 px crops dominate), so 64 images were 280 MB, twice over while
# collated. Overridden by BEYOND_INET_CPU_LOADER_BYTES.
CPU_LOADER_BYTES = 64 * 2**20
_ALLOCATOR_TUNED = {"done": False}
CLAIM_CHUNK = 8  # shards claimed per loader pass: concurrent runs share a job's shards instead of one doing all


def tune_cpu_allocator() -> bool:
    """Keep large tensor allocations on glibc's heap instead of fresh mmap()s.

    By default glibc serves every block above a (dynamic) threshold with its own mmap(), and a CPU
    forward pass allocates and frees many activation blocks of tens of MB per batch: each one then costs
    page faults and zeroing in the kernel. On our 2-core machines that was more system time than compute
    (Lite0 at batch 64: 15 -> 56 img/s; see benchmarks/bench_allocator.py). Raising the mmap threshold
    and the trim threshold makes freed blocks reusable. Off with BEYOND_INET_NO_MALLOC_TUNING=1.
    """
    import ctypes
    import os
    import sys

    if _ALLOCATOR_TUNED["done"] or os.environ.get("BEYOND_INET_NO_MALLOC_TUNING") or not sys.platform.startswith("linux"):
        return _ALLOCATOR_TUNED["done"]
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 2**31 - 1) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        ok = False
    _ALLOCATOR_TUNED["done"] = ok
    return ok


def release_cpu_heap() -> None:
    """Hand the heap that `tune_cpu_allocator` kept for reuse back to the OS once a pass is over.

    The kept blocks (one micro-batch of activations) are only worth keeping while batches follow each
    other; after the pass, the analyses and the report would otherwise grow the process on top of them.
    """
    if not _ALLOCATOR_TUNED["done"]:
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _ViewSet(Dataset):
    """Decode sample `positions[j]` once and apply every view; failures are returned, not raised."""

    def __init__(self, ds: ImageDataset, positions: np.ndarray, pre_by_view: dict[str, Preprocessing],
                 raw: bool = False):
        self.ds, self.positions, self.pre_by_view, self.raw = ds, positions, pre_by_view, raw
        self._fns = None

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, j: int):
        if self._fns is None:
            self._fns = {v: build_view(v, p, uint8=True) for v, p in self.pre_by_view.items()}
        try:
            if self.raw:  # GPU decoding: hand over the JPEG bytes; anything else is decoded here
                from beyond_inet.engine.gpu_decode import gpu_decodable, raw_bytes

                data = raw_bytes(self.ds, int(self.positions[j]))
                if data is not None and gpu_decodable(data):
                    return j, torch.frombuffer(bytearray(data), dtype=torch.uint8), ""
            img = self.ds.load(int(self.positions[j]))
            DECODES["n"] += 1
            return j, {v: fn(img) for v, fn in self._fns.items()}, ""
        except Exception as e:  # noqa: BLE001 - a corrupt image is counted, never fatal
            return j, None, f"{type(e).__name__}: {str(e)[:160]}"


def _collate(items):
    js = [j for j, _, _ in items]
    ok = [(j, t) for j, t, _ in items if t is not None]
    errors = [(j, e) for j, t, e in items if t is None]
    views = {}
    if ok:
        for v in ok[0][1]:
            views[v] = torch.stack([t[v] for _, t in ok])
    return js, [j for j, _ in ok], views, errors


def _collate_raw(items):
    """GPU-decoding batches: per sample JPEG bytes or CPU-made views, assembled by `TensorDecoder`."""
    js = [j for j, _, _ in items]
    ok = [(j, t) for j, t, _ in items if t is not None]
    return js, [j for j, _ in ok], [t for _, t in ok], [(j, e) for j, t, e in items if t is None]


@dataclass
class PassStats:
    images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shards_written: int = 0
    batch_size: int = 0


def cpu_micro_batch(batch_size: int, input_size: int) -> int:
    """The CPU forward's micro-batch: `batch_size` capped to CPU_BATCH_PIXELS input pixels."""
    import os

    budget = int(os.environ.get("BEYOND_INET_CPU_BATCH_PIXELS") or CPU_BATCH_PIXELS)
    return max(1, min(batch_size, budget // (input_size * input_size)))


def cpu_loader_batch(batch_size: int, pre_by_view: dict[str, Preprocessing]) -> int:
    """The CPU loader batch: `batch_size` capped so one batch of every view's uint8 crops fits
    CPU_LOADER_BYTES (never below one image)."""
    import os

    budget = int(os.environ.get("BEYOND_INET_CPU_LOADER_BYTES") or CPU_LOADER_BYTES)
    per_image = sum(3 * p.input_size ** 2 for p in pre_by_view.values())
    return max(1, min(batch_size, budget // per_image))


class _Forward:
    """Runs the model with AMP/channels_last on GPU and halves the batch on OOM; on CPU, forwards in
    micro-batches of at most CPU_BATCH_PIXELS pixels (see `cpu_micro_batch`)."""

    def __init__(self, model: VisionModel, device: torch.device, batch_size: int, amp: bool, compile: bool = False):
        self.model, self.device, self.micro, self.amp = model, device, batch_size, amp
        self.cuda = device.type == "cuda"
        if not self.cuda:
            self.micro = cpu_micro_batch(batch_size, model.preprocessing.input_size)
        self.compiled = torch.compile(model.forward) if compile else None

    def _forward(self, x: torch.Tensor):
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - compilation is an optimisation, never a failure
                log.warning("torch.compile failed (%s: %s); running eagerly", type(e).__name__, str(e)[:200])
                self.compiled = None
        return self.model.forward(x)

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        outs_l, outs_f = [], []
        start = 0
        while start < x.shape[0]:
            chunk = x[start:start + self.micro]
            try:
                lg, ft = self._run(chunk)
            except torch.cuda.OutOfMemoryError:
                if self.micro == 1:
                    raise
                self.micro = max(1, self.micro // 2)
                log.warning("out of memory: batch size reduced to %d", self.micro)
                if self.cuda:
                    torch.cuda.empty_cache()
                continue
            outs_l.append(lg)
            outs_f.append(ft)
            start += chunk.shape[0]
        return np.concatenate(outs_l), np.concatenate(outs_f)

    def _run(self, x: torch.Tensor):
        FORWARD_CALLS["n"] += 1
        FORWARD_ROWS["n"] += int(x.shape[0])
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:  # CPU-decoded views arrive unnormalised (see data.views.build_view)
            x = normalize_uint8(x, self.model.preprocessing)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.cuda and self.amp):
            lg, ft = self._forward(x)
        return lg.float().cpu().numpy(), ft.float().reshape(ft.shape[0], -1).cpu().numpy()


def _batches(entry: Entry, shards: list[int], batch_size: int) -> list[list[int]]:
    out = []
    for s in shards:
        r = list(entry.shard_range(s))
        out += [r[i:i + batch_size] for i in range(0, len(r), batch_size)]
    return out


def _unique_entries(entries: dict[str, Entry]) -> dict[str, Entry]:
    """One view per store folder: views planned under one key (res-<native> and standard) run once."""
    out: dict[str, Entry] = {}
    roots: set = set()
    for v, e in entries.items():
        if e.root not in roots:
            roots.add(e.root)
            out[v] = e
    return out


def _reference_views(views: list[str], model_of: dict[str, VisionModel]) -> dict[str, str | None]:
    """For each view, the view of the same model whose rows it is compared with (None: it is the reference).

    The reference is `standard` where that view is run, else the model's first view. Views that often cut
    exactly the standard crop (scale-1, shift-0 when the image's shorter side is already the resize size;
    res-<native>) then reuse its outputs for those images instead of running the model on them again."""
    ref_of: dict[int, str] = {}
    for v in sorted(views, key=lambda v: v != "standard"):
        ref_of.setdefault(id(model_of[v]), v)
    return {v: (None if ref_of[id(model_of[v])] == v else ref_of[id(model_of[v])]) for v in views}


def _forward_views(batch: dict[str, torch.Tensor], refs: dict[str, str | None], fwd_of: dict[str, "_Forward"],
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Forward every view of a batch; rows whose input equals the reference view's input are not run again
    but take the reference's outputs (the same input gives the same output)."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for v in sorted(batch, key=lambda v: refs[v] is not None):
        x, ref = batch[v], refs[v]
        if ref is None or ref not in batch or batch[ref].shape != x.shape:
            out[v] = fwd_of[v](x)
            continue
        differs = ~(x == batch[ref]).flatten(1).all(1)
        lg, ft = (a.copy() for a in out[ref])
        if bool(differs.any()):
            rows = torch.nonzero(differs).flatten()
            lg[rows.numpy()], ft[rows.numpy()] = fwd_of[v](x[rows])
        out[v] = (lg, ft)
    return out


def run_pass(model: VisionModel, ds: ImageDataset, positions: np.ndarray, entries: dict[str, Entry],
             device: str = "cpu", batch_size: int = 64, num_workers: int = 2, amp: bool = False,
             progress=None, task=None, shards: list[int] | None = None, gpu_decode: bool = False,
             compile: bool = False, poll_s: float = 0.5, models: dict[str, VisionModel] | None = None) -> PassStats:
    """Fill the missing shards of `entries` (one per view, same sample positions) in one loader pass.

    Each image is decoded once for all views. `models` maps a view to the model that runs it (the
    resolution variants of `model` for `res-*` views); views without one run on `model`.
    `amp`: bf16 autocast on a GPU (fp32 otherwise, the paper's setting).
    `shards`: only these shards (those already stored are still skipped). `gpu_decode`: decode JPEGs on
    `device` with torchvision (nvJPEG on CUDA). `compile`: run the forward through `torch.compile`.
    Each shard is claimed before it is computed (see ``engine.store.claim``): shards another live process
    is computing are waited for (every `poll_s` seconds), not computed twice.
    """
    stats = PassStats(batch_size=batch_size)
    entries = _unique_entries(entries)
    todo = _still_missing(entries, sorted(set().union(*[set(e.missing_shards()) for e in entries.values()])))
    if shards is not None:
        wanted = set(shards)
        todo = [s for s in todo if s in wanted]
    state: dict = {}
    # Intra-op threads + loader workers stay within the cores this process may use (beyond_inet.cores).
    with torch_threads(num_workers):
        try:
            while todo:
                mine = _claim_shards(entries, todo, CLAIM_CHUNK)
                got = set(mine)
                if mine:
                    _fill(model, ds, positions, entries, mine, stats, state, device, batch_size, num_workers, amp,
                          progress, task, gpu_decode, compile, models)
                todo = _still_missing(entries, [s for s in todo if s not in got])
                if todo and not got:
                    time.sleep(poll_s)  # another process holds these shards: wait for its files
        finally:
            for s, es in list(state.get("held", {}).items()):
                for e in es:
                    release(e.shard_path(s))
    return stats


def _still_missing(entries: dict[str, Entry], shards: list[int]) -> list[int]:
    return [s for s in shards if any(not e.shard_path(s).exists() for e in entries.values())]


def _claim_shards(entries: dict[str, Entry], shards: list[int], limit: int) -> dict[int, list[Entry]]:
    """shard -> the entries whose copy of it this process now holds the claim for (and must write);
    at most `limit` shards, the first free ones in order."""
    mine: dict[int, list[Entry]] = {}
    for s in shards:
        got = [e for e in entries.values() if not e.shard_path(s).exists() and claim(e.shard_path(s))]
        if got:
            mine[s] = got
            if len(mine) >= limit:
                break
    return mine


def _fill(model: VisionModel, ds: ImageDataset, positions: np.ndarray, entries: dict[str, Entry],
          mine: dict[int, list[Entry]], stats: PassStats, state: dict, device: str, batch_size: int,
          num_workers: int, amp: bool, progress, task, gpu_decode: bool, compile: bool,
          models: dict[str, VisionModel] | None = None) -> None:
    """One loader pass over the claimed shards `mine`, writing each entry whose claim is held."""
    state["held"] = mine
    first = next(iter(entries.values()))
    todo = sorted(mine)
    model_of = {v: (models or {}).get(v, model) for v in entries}
    views = {v: m.preprocessing for v, m in model_of.items()}
    refs = _reference_views(list(entries), model_of)
    dev = torch.device(device)
    tune_cpu_allocator()  # before the loader forks its workers, so they inherit it too
    decoder = None
    if gpu_decode:
        from beyond_inet.engine.gpu_decode import TensorDecoder

        decoder = TensorDecoder(ds, positions, views, dev)
    loader_batch = batch_size if dev.type == "cuda" else cpu_loader_batch(batch_size, views)
    loader = DataLoader(_ViewSet(ds, positions, views, raw=decoder is not None),
                        batch_sampler=_batches(first, todo, loader_batch),
                        collate_fn=_collate if decoder is None else _collate_raw, num_workers=num_workers,
                        pin_memory=dev.type == "cuda", prefetch_factor=4 if num_workers else None,
                        persistent_workers=False)
    fwds: dict[int, _Forward] = {}
    for m in model_of.values():
        if id(m) not in fwds:
            fwds[id(m)] = _Forward(m, dev, batch_size, amp, compile)
            m.module.eval().to(dev)
            if dev.type == "cuda":
                m.module.to(memory_format=torch.channels_last)
    fwd_of = {v: fwds[id(m)] for v, m in model_of.items()}
    cur_shard, seen, failed = None, [], []
    acc: dict[str, list] = {v: [] for v in entries}

    def flush(s: int) -> None:
        js = np.array(seen, dtype=np.int64)
        pos = positions[js] if len(js) else js
        ids = [ds.sample_id(int(i)) for i in pos]
        labels = np.array([ds.label(int(i)) for i in pos], dtype=np.int64)
        multi = None
        ml = [ds.multilabel(int(i)) for i in pos]
        if any(m is not None for m in ml):
            width = max([len(m or []) for m in ml] + [1])
            multi = np.full((len(ml), width), -1, np.int64)
            for r, m in enumerate(ml):
                multi[r, : len(m or [])] = m or []
        skipped = [(ds.sample_id(int(positions[j])), err) for j, err in failed]
        images = image_identities(ds, positions, first.shard_range(s))  # what a load compares them with
        for v, e in entries.items():
            if e in mine[s] and not e.shard_path(s).exists():
                lg = np.concatenate([a for a, _ in acc[v]]) if acc[v] else np.zeros((0, 1000), np.float32)
                ft = np.concatenate([b for _, b in acc[v]]) if acc[v] else np.zeros((0, 0), np.float32)
                e.write_shard(s, js, ids, labels, lg, ft, multi, skipped, [j for j, _ in failed], images)
        for e in mine.pop(s):
            release(e.shard_path(s))
        stats.shards_written += 1
        stats.skipped.extend(skipped)

    for js, ok, batch, errors in loader:
        if decoder is not None:
            ok, batch, more = decoder(ok, batch)
            errors = sorted(errors + more)
        s = js[0] // first.shard_size
        if cur_shard is not None and s != cur_shard:
            flush(cur_shard)
            seen, failed, acc = [], [], {v: [] for v in entries}
        cur_shard = s
        seen += ok
        failed += errors
        for v, out in _forward_views(batch, refs, fwd_of).items():
            acc[v].append(out)
        stats.images += len(js)
        refresh_claims()
        if progress is not None:
            progress.advance(task, len(js))
    if cur_shard is not None:
        flush(cur_shard)
    stats.batch_size = min(f.micro for f in fwds.values())
    del loader, acc, fwds, fwd_of
    release_cpu_heap()
    if decoder is not None and decoder.fallbacks:
        log.info("%d JPEGs refused by the GPU decoder were decoded on the CPU", decoder.fallbacks)
