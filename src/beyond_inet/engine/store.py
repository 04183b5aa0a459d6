"""The output store: per-sample outputs of one (model, dataset, view) in fixed-size shards.

Layout: ``<out>/store/<key>/meta.json`` and ``shard-00000.safetensors`` ... Each shard covers a fixed
range of sample positions and is written to a temp file then renamed, so a killed run loses at most the
shard in flight and a rerun skips every shard already there. Shards are safetensors (deterministic
bytes: a resumed run produces byte-identical files). The key hashes everything that changes outputs:
weights, preprocessing, view, the dataset's sample list, logit scale and the engine version.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beyond_inet import ENGINE_VERSION
from beyond_inet.engine.outputs import Outputs

SHARD_SIZE = 512


def make_key(fields: dict) -> str:
    blob = json.dumps({**fields, "engine": ENGINE_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Entry:
    """One stored (model, dataset, view) output set."""

    root: Path
    n_samples: int
    shard_size: int = SHARD_SIZE

    @property
    def n_shards(self) -> int:
        return max(1, -(-self.n_samples // self.shard_size))

    def shard_path(self, s: int) -> Path:
        return self.root / f"shard-{s:05d}.safetensors"

    def shard_range(self, s: int) -> range:
        return range(s * self.shard_size, min((s + 1) * self.shard_size, self.n_samples))

    def missing_shards(self) -> list[int]:
        return [s for s in range(self.n_shards) if not self.shard_path(s).exists()]

    def complete(self) -> bool:
        return not self.missing_shards()

    def write_shard(self, s: int, positions: np.ndarray, ids: list[str], labels: np.ndarray, logits: np.ndarray,
                    features: np.ndarray, multilabels: np.ndarray | None, skipped: list[tuple[str, str]]) -> None:
        from safetensors.numpy import save

        tensors = {"positions": np.ascontiguousarray(positions, np.int64),
                   "labels": np.ascontiguousarray(labels, np.int64),
                   "logits": np.ascontiguousarray(logits, np.float32),
                   "features": np.ascontiguousarray(features, np.float32)}
        if multilabels is not None:
            tensors["multilabels"] = np.ascontiguousarray(multilabels, np.int64)
        # One metadata key: safetensors keeps metadata in a hash map, so several keys come out in
        # varying order and the bytes would differ between otherwise identical shards.
        meta = {"samples": json.dumps({"ids": ids, "skipped": skipped})}
        atomic_write_bytes(self.shard_path(s), save(tensors, metadata=meta))

    def load(self) -> Outputs:
        from safetensors import safe_open

        ids: list[str] = []
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("labels", "logits", "features", "multilabels")}
        skipped: list[str] = []
        width = 0
        for s in range(self.n_shards):
            with safe_open(str(self.shard_path(s)), framework="numpy") as f:
                md = json.loads(f.metadata()["samples"])
                ids += md["ids"]
                skipped += [sid for sid, _ in md["skipped"]]
                for k in ("labels", "logits", "features"):
                    parts[k].append(f.get_tensor(k))
                ml = f.get_tensor("multilabels") if "multilabels" in f.keys() else None
                parts["multilabels"].append(ml)
                if ml is not None:
                    width = max(width, ml.shape[1])
        multi = None
        if width:
            rows = []
            for ml, lab in zip(parts["multilabels"], parts["labels"]):
                block = np.full((len(lab), width), -1, np.int64)
                if ml is not None:
                    block[:, : ml.shape[1]] = ml
                rows.append(block)
            multi = np.concatenate(rows)
        meta = json.loads((self.root / "meta.json").read_text())
        feats = [f for f in parts["features"] if f.size]
        d = feats[0].shape[1] if feats else 0
        return Outputs(ids=ids, labels=np.concatenate(parts["labels"]),
                       logits=np.concatenate([x.reshape(-1, 1000) for x in parts["logits"]]),
                       features=np.concatenate([x.reshape(-1, d) for x in parts["features"]]),
                       multilabels=multi, skipped=skipped, meta=meta)

    def skipped(self) -> list[tuple[str, str]]:
        from safetensors import safe_open

        out = []
        for s in range(self.n_shards):
            p = self.shard_path(s)
            if p.exists():
                with safe_open(str(p), framework="numpy") as f:
                    out += [tuple(x) for x in json.loads(f.metadata()["samples"])["skipped"]]
        return out


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, key: str, n_samples: int, meta: dict | None = None) -> Entry:
        """The entry for `key`, creating its folder and meta.json on first use."""
        d = self.root / key
        d.mkdir(parents=True, exist_ok=True)
        mp = d / "meta.json"
        if meta is not None and not mp.exists():
            atomic_write_bytes(mp, json.dumps({**meta, "n_samples": n_samples, "shard_size": SHARD_SIZE},
                                              indent=1, sort_keys=True).encode())
        if mp.exists():
            return Entry(d, n_samples, json.loads(mp.read_text()).get("shard_size", SHARD_SIZE))
        return Entry(d, n_samples, SHARD_SIZE)

    def existing(self, key: str) -> Entry | None:
        mp = self.root / key / "meta.json"
        if not mp.exists():
            return None
        m = json.loads(mp.read_text())
        return Entry(self.root / key, m["n_samples"], m.get("shard_size", SHARD_SIZE))
