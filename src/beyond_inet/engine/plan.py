"""Planning: turn (models x analyses) into deduplicated inference jobs, skipping what is stored.

A job is one pass of one model over one dataset for every view it needs: each image is decoded once
and every view, at every input resolution (`res-*` views run on the model rebuilt at that size), is cut
from it. Jobs are plain data (picklable), so any executor can run them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import logging
import os
from pathlib import Path

import numpy as np

from beyond_inet import ENGINE_VERSION
from beyond_inet.contracts import FULL, Request
from beyond_inet.data import catalog
from beyond_inet.data.readers import ImageDataset
from beyond_inet.data.views import NATIVE_AS_IS, NATIVE_OPEN_CLIP, NATIVE_RESIZED, resolution_of
from beyond_inet.engine.store import STORE_FORMAT, Expected, Store, covers, image_identities, make_key
from beyond_inet.errors import DatasetMissing, UserError

log = logging.getLogger("beyond_inet")


def select_positions(n: int, limit: int | None) -> np.ndarray:
    """All positions, or `limit` evenly spaced ones (spans the classes of a class-sorted dataset)."""
    if not limit or limit >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


@dataclass
class Job:
    model: str
    dataset: str
    views: list[str]
    resolution: int | None
    keys: dict[str, str]  # view -> store key
    n_samples: int
    shards: list[int] = field(default_factory=list)  # shards still missing (union over views)
    view_res: dict[str, int] = field(default_factory=dict)  # view -> resolution the model is rebuilt at
    # view -> the view actually computed, where planning resolves it per model (``native`` -> native:as-is,
    # native:resized or native:open_clip; see `native_plan`). Stored under the resolved name's key.
    run_as: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, frozenset] = field(default_factory=dict)  # view -> output kinds its shards are written with
    upgraded: list[str] = field(default_factory=list)  # lines: entries recomputed because they held too little

    def kinds_of(self, view: str) -> frozenset:
        return self.kinds.get(view, FULL)

    @property
    def label(self) -> str:
        res = f"@{self.resolution}px" if self.resolution else ""
        return f"{self.model}{res} on {self.dataset} [{', '.join(self.views)}]"

    def resolution_of(self, view: str) -> int | None:
        """The input size `view` runs at (None: the model's own)."""
        return self.view_res.get(view) or self.resolution


# Views whose computation changed after stores of them were written: the tag enters their key, so those
# stores are never read for the new computation (other views' keys stay as they were).
#   shift-*: the paper's CropShift box (float, int() truncation) replaced a rounded box.
VIEW_REVISIONS = {"shift-": "crop-shift-int"}


def store_key(weights_id: str, preprocessing: str, view: str, dataset: str, fingerprint: str, limit: int | None,
              info: dict, numerics: str = "fp32", decoding: str = "") -> str:
    """`numerics` names what changes the numbers without changing the model: fp32 vs bf16 autocast, and
    GPU vs CPU JPEG decoding. Outputs computed under different numerics are kept apart. `decoding` names a
    non-default image decoding (``exif_transpose``); default-decoded keys stay as they were."""
    fields = {"weights": weights_id, "pre": preprocessing, "view": view, "dataset": dataset,
              "samples": fingerprint, "limit": limit, "logit_scale": info.get("logit_scale"), "engine": ENGINE_VERSION,
              "store_format": STORE_FORMAT}
    for prefix, tag in VIEW_REVISIONS.items():
        if view.startswith(prefix):
            fields["view_revision"] = tag
    if numerics != "fp32":  # fp32 CPU-decoded keys stay as they were
        fields["numerics"] = numerics
    if decoding:
        fields["decoding"] = decoding
    return make_key(fields)


def exif_transpose_option(options: dict) -> bool:
    """The ``exif_transpose`` run option (``--option exif_transpose=1``) as a bool; bad values are a UserError."""
    v = options.get("exif_transpose", 0)
    text = str(v).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UserError(f"--option exif_transpose={v!r}: use 1 (apply EXIF orientation) or 0 (ignore it, the default)")


def numerics_of(device: str, amp: bool, gpu_decode: bool) -> str:
    cuda = str(device).startswith("cuda")
    parts = ["bf16" if cuda and amp else "fp32"] + (["gpu-decode"] if cuda and gpu_decode else [])
    return "+".join(parts)


class DatasetCache:
    """Opens each dataset once per run; remembers why a dataset could not be opened."""

    def __init__(self, data_root: str | None, limit: int | None, exif_transpose: bool = False):
        self.data_root, self.limit, self.exif_transpose = data_root, limit, exif_transpose
        self._open: dict[str, tuple[ImageDataset, np.ndarray, str]] = {}
        self._sizes: dict[str, int | None] = {}
        self.missing: dict[str, str] = {}  # every dataset that could not be opened, and why
        self.refused: dict[str, str] = {}  # those of them that are present but unusable (bad layout or labels)

    @property
    def decoding(self) -> str:
        """The store key's name for how images are decoded ("" for the default)."""
        return "exif_transpose" if self.exif_transpose else ""

    def get(self, name: str) -> tuple[ImageDataset, np.ndarray, str] | None:
        if name in self._open:
            return self._open[name]
        if name in self.missing:
            return None
        try:
            ds = catalog.open_dataset(name, self.data_root, exif_transpose=self.exif_transpose)
        except DatasetMissing as e:
            self.missing[name] = str(e)
            return None
        except UserError as e:
            self.missing[name] = self.refused[name] = str(e)
            return None
        pos = select_positions(len(ds), self.limit)
        fp = ds.fingerprint() if len(pos) == len(ds) else _fingerprint_subset(ds, pos)
        self._open[name] = (ds, pos, fp)
        return self._open[name]

    def provenance(self) -> dict[str, tuple[int, str, str]]:
        """name -> (images used, sample-list fingerprint, fingerprint of the files' identities) of every
        dataset opened: what results.json states a number was computed from."""
        import hashlib
        import json

        out = {}
        for name, (ds, pos, fp) in self._open.items():
            ident = image_identities(ds, pos, range(len(pos)))
            files = hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:16]
            out[name] = (len(pos), fp, files)
        return out

    def expected(self, name: str) -> Expected | None:
        """What a store entry of dataset `name` must hold (sample count, fingerprint, each shard's images);
        None when the dataset cannot be opened."""
        got = self.get(name)
        if got is None:
            return None
        ds, pos, fp = got
        return Expected(len(pos), fp, lambda r: image_identities(ds, pos, r))


    def stimulus_size(self, name: str) -> int | None:
        """The side of the dataset's stimuli: that of its first readable selected image when square (the
        model-vs-human sets are all 224 x 224), else None. Decoded once per run."""
        if name not in self._sizes:
            got = self.get(name)
            size = None
            if got is not None:
                ds, pos, _ = got
                for i in pos[:8]:
                    try:
                        w, h = ds.load(int(i)).size
                    except Exception:  # noqa: BLE001 - an unreadable image is skipped by the pass too
                        continue
                    size = w if w == h else None
                    break
            self._sizes[name] = size
        return self._sizes[name]


_ACCEPTS: dict[tuple, bool] = {}


def accepts_size(model, size: int) -> bool:
    """Can `model` take a size x size input? It can when `model.rebuild(size)` (the same model at that
    input size: convolutional networks unchanged, ViTs with their position embeddings interpolated as for
    the ``res-`` views) runs one forward of a blank size x size image to 1000 logits. A network that
    refuses (no rebuild, fixed windows or token counts) cannot. Remembered per weights and size."""
    import torch

    k = (model.spec, model.weights_id, model.preprocessing.input_size, size)
    if k not in _ACCEPTS:
        try:
            m = model.rebuild(size)
            p = next(iter(m.module.parameters()), None)
            x = torch.zeros(1, 3, size, size, device=p.device if p is not None else "cpu")
            with torch.inference_mode():
                logits, _ = m.forward(x)
            ok = tuple(logits.shape) == (1, 1000) and bool(torch.isfinite(logits.float()).all())
        except Exception:  # noqa: BLE001 - whatever the network raises, it does not take this size
            ok = False
        _ACCEPTS[k] = ok
    return _ACCEPTS[k]


def native_plan(model, size: int | None) -> tuple[str, int | None]:
    """How the ``native`` view runs `model` on stimuli of side `size`: (resolved view, resolution to rebuild
    the model at, or None for its own).

    CLIP (open_clip) models get open_clip's eval transform, the paper's protocol (docs/paper-spec.md §2.2).
    Every other model sees the stimulus as it is (model-vs-human) whenever it accepts that size
    (`accepts_size`): at its own input size unchanged, else rebuilt at the stimulus size. A model that
    cannot take it, and stimuli that are not square, get the whole image resized to the model's input."""
    if model.weights_id.startswith("open_clip:"):
        return NATIVE_OPEN_CLIP, None
    if size is None:
        return NATIVE_RESIZED, None
    if size == model.preprocessing.input_size:
        return NATIVE_AS_IS, None
    if accepts_size(model, size):
        return NATIVE_AS_IS, size
    return NATIVE_RESIZED, None


NATIVE_RULES = {NATIVE_AS_IS: "stimuli as they are", NATIVE_RESIZED: "whole stimulus resized to the input",
                NATIVE_OPEN_CLIP: "open_clip eval transform (paper protocol)"}


def _fingerprint_subset(ds: ImageDataset, pos: np.ndarray) -> str:
    import hashlib

    if hasattr(ds, "fingerprint_of"):  # readers whose identity is more than ids and labels (a user's folder)
        return ds.fingerprint_of(pos)

    h = hashlib.sha256()
    for i in pos:
        h.update(f"{ds.sample_id(int(i))}\t{ds.label(int(i))}\n".encode())
    return h.hexdigest()[:16]


# Set to 1, every entry keeps the full logits and features whatever the analyses read: the reference the
# compact store is checked against (tests/test_compact_store.py, benchmarks/bench_store_size.py).
FULL_OUTPUTS_ENV = "BEYOND_INET_FULL_OUTPUTS"


def needed_kinds(requests: list[Request]) -> dict[tuple[str, str], frozenset]:
    """(dataset, view) -> the output kinds some request reads there: what the store keeps for it."""
    force = os.environ.get(FULL_OUTPUTS_ENV, "").strip().lower() in ("1", "true", "yes")
    need: dict[tuple[str, str], frozenset] = {}
    for req in requests:
        kinds = frozenset(req.outputs) | (FULL if force else frozenset())
        need[(req.dataset, req.view)] = need.get((req.dataset, req.view), frozenset()) | kinds
    return need


def drop_entry_shards(root: Path) -> None:
    """Remove an entry's shards and meta.json so that it is computed afresh (it holds too few output kinds)."""
    for p in sorted(root.glob("shard-*.safetensors")) + [root / "meta.json"]:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def plan_model_jobs(model, requests: list[Request], datasets: DatasetCache, store: Store,
                    numerics: str = "fp32") -> list[Job]:
    """Jobs for one built model: one per dataset with all its views (every resolution), so each image is
    decoded once; keep only missing shards. Each entry keeps the output kinds the requests read there
    (``Request.outputs``); an entry holding fewer than asked is computed again, with the union of both
    (a later, leaner run then reads it as it is)."""
    groups: dict[str, list[str]] = defaultdict(list)
    own = model.preprocessing.input_size
    need = needed_kinds(requests)
    for req in requests:
        if req.view not in groups[req.dataset]:
            groups[req.dataset].append(req.view)
    jobs = []
    for dname, views in sorted(groups.items()):
        got = datasets.get(dname)
        if got is None:
            continue
        ds, pos, fp = got
        view_res = {v: r for v in views if (r := resolution_of(v)) and r != own}
        run_as: dict[str, str] = {}
        if "native" in views:
            run_as["native"], r = native_plan(model, datasets.stimulus_size(dname))
            if r:
                view_res["native"] = r

        def key(v: str) -> str:
            r = view_res.get(v)
            pre = model.preprocessing if r is None else model.preprocessing.at_resolution(r)
            # res-<own> on the unchanged model is the standard view: share its key (stored and run once).
            # A resolved view is keyed by its resolved name (never by the old "native" key).
            name = "standard" if resolution_of(v) == own else run_as.get(v, v)
            return store_key(model.weights_id, pre.describe(), name, dname, fp, datasets.limit, model.info,
                             numerics, datasets.decoding)

        keys = {v: key(v) for v in views}
        want: dict[str, frozenset] = {}  # key -> kinds wanted (views sharing a key share an entry)
        for v, k in keys.items():
            want[k] = want.get(k, frozenset()) | need.get((dname, v), FULL)
        upgraded: list[str] = []
        missing: set[int] = set()
        for v, k in keys.items():
            entry = store.entry(k, len(pos), expect=datasets.expected(dname))
            if entry.has_meta and not covers(entry.kinds, want[k]):
                line = (f"store entry {k} ({dname}, {v}) holds {', '.join(sorted(entry.kinds))}; recomputing it "
                        f"for {', '.join(sorted(want[k] - entry.kinds))}")
                log.info(line)
                upgraded.append(line)
                want[k] = want[k] | entry.kinds
                drop_entry_shards(entry.root)
                entry = store.entry(k, len(pos), expect=datasets.expected(dname))
            elif entry.has_meta:
                want[k] = want[k] | entry.kinds  # keep what the entry holds: its shards stay alike
            # Shards are not read here: every byte is hashed as a shard is loaded, and a shard found damaged
            # then is moved aside and recomputed by the same run (pipeline.load_outputs); reading them here
            # too would cost a second pass over the data (docs/store.md).
            missing |= set(entry.missing_shards())
        jobs.append(Job(model.spec, dname, views, None, keys, len(pos), sorted(missing), view_res, run_as,
                        {v: want[keys[v]] for v in views}, upgraded))
    return jobs
