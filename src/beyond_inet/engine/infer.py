"""One inference pass: a model over a dataset, for one or more crop views at once.

Each image is decoded once in a loader worker and every view is cut from it there. Batches never
cross shard boundaries, so a resumed run feeds the model exactly the same batches as an uninterrupted
one and writes byte-identical shards. On GPU: bf16 autocast, channels_last, pinned memory with
non-blocking copies, and the batch is split in halves on out-of-memory instead of crashing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from beyond_inet.data.readers import ImageDataset
from beyond_inet.data.views import build_view
from beyond_inet.engine.store import Entry
from beyond_inet.models.base import Preprocessing, VisionModel

log = logging.getLogger("beyond_inet")
FORWARD_CALLS = {"n": 0}  # counted for tests: a cached rerun makes none


class _ViewSet(Dataset):
    """Decode sample `positions[j]` once and apply every view; failures are returned, not raised."""

    def __init__(self, ds: ImageDataset, positions: np.ndarray, pre_by_view: dict[str, Preprocessing]):
        self.ds, self.positions, self.pre_by_view = ds, positions, pre_by_view
        self._fns = None

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, j: int):
        if self._fns is None:
            self._fns = {v: build_view(v, p) for v, p in self.pre_by_view.items()}
        try:
            img = self.ds.load(int(self.positions[j]))
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


@dataclass
class PassStats:
    images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    shards_written: int = 0
    batch_size: int = 0


class _Forward:
    """Runs the model with AMP/channels_last on GPU and halves the batch on OOM."""

    def __init__(self, model: VisionModel, device: torch.device, batch_size: int, amp: bool):
        self.model, self.device, self.micro, self.amp = model, device, batch_size, amp
        self.cuda = device.type == "cuda"

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
        x = x.to(self.device, non_blocking=True)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.cuda and self.amp):
            lg, ft = self.model.forward(x)
        return lg.float().cpu().numpy(), ft.float().reshape(ft.shape[0], -1).cpu().numpy()


def _batches(entry: Entry, shards: list[int], batch_size: int) -> list[list[int]]:
    out = []
    for s in shards:
        r = list(entry.shard_range(s))
        out += [r[i:i + batch_size] for i in range(0, len(r), batch_size)]
    return out


def run_pass(model: VisionModel, ds: ImageDataset, positions: np.ndarray, entries: dict[str, Entry],
             device: str = "cpu", batch_size: int = 64, num_workers: int = 2, amp: bool = True,
             progress=None, task=None) -> PassStats:
    """Fill the missing shards of `entries` (one per view, same sample positions) in one loader pass."""
    stats = PassStats(batch_size=batch_size)
    first = next(iter(entries.values()))
    todo = sorted(set().union(*[set(e.missing_shards()) for e in entries.values()]))
    if not todo:
        return stats
    views = {v: model.preprocessing for v in entries}
    dev = torch.device(device)
    loader = DataLoader(_ViewSet(ds, positions, views), batch_sampler=_batches(first, todo, batch_size),
                        collate_fn=_collate, num_workers=num_workers, pin_memory=dev.type == "cuda",
                        prefetch_factor=4 if num_workers else None, persistent_workers=False)
    fwd = _Forward(model, dev, batch_size, amp)
    model.module.eval().to(dev)
    if dev.type == "cuda":
        model.module.to(memory_format=torch.channels_last)
    buf: dict[str, dict] = {}
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
        for v, e in entries.items():
            if not e.shard_path(s).exists():
                lg = np.concatenate([a for a, _ in acc[v]]) if acc[v] else np.zeros((0, 1000), np.float32)
                ft = np.concatenate([b for _, b in acc[v]]) if acc[v] else np.zeros((0, 0), np.float32)
                e.write_shard(s, js, ids, labels, lg, ft, multi, skipped)
        stats.shards_written += 1
        stats.skipped.extend(skipped)

    for js, ok, batch, errors in loader:
        s = js[0] // first.shard_size
        if cur_shard is not None and s != cur_shard:
            flush(cur_shard)
            seen, failed, acc = [], [], {v: [] for v in entries}
        cur_shard = s
        seen += ok
        failed += errors
        for v, x in batch.items():
            acc[v].append(fwd(x))
        stats.images += len(js)
        if progress is not None:
            progress.advance(task, len(js))
    if cur_shard is not None:
        flush(cur_shard)
    stats.batch_size = fwd.micro
    return stats
