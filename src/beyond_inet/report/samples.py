"""`--log-samples`: every image's prediction, label, correctness and confidence, as Parquet.

One file per model, ``OUT/samples/<model>.parquet``, one row per (dataset, view, image) of the outputs the
run stored for it (no extra forward pass). Labels and predictions follow the dataset's one label rule, the
accuracy analysis' own function (``analyses.scoring.scored_outputs``): a class-subset dataset (ImageNet-A/R)
is scored by the argmax over its classes, so ``label`` and ``prediction`` are indices into those classes;
``truth`` lists every class counted correct (multi-label sets); images the rule leaves out (no label, or a
label outside the dataset's classes) have ``scored = false`` and null prediction/correct/confidence.
``confidence`` is the maximum softmax probability over the same logits (the calibration analysis'
``softmax_stats``). So top-1 is ``mean(correct)`` over scored rows and ECE is the calibration binning of
(confidence, correct): a number of the report can be recomputed by hand (docs/results.md).
"""
from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from beyond_inet.analyses.accuracy import topk_correct
from beyond_inet.analyses.scoring import scored_outputs
from beyond_inet.analyses.base import Outputs, Request
from beyond_inet.analyses.calibration import softmax_stats
from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import truth_sets
from beyond_inet.engine.store import atomic_write_bytes

COLUMNS = ("model", "dataset", "view", "id", "scored", "label", "truth", "prediction", "correct", "confidence")


def samples_path(out_dir: str | Path, model: str) -> Path:
    """OUT/samples/<spec made file-safe>-<short hash of the spec>.parquet (specs hold ':' and '/')."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")[:80]
    return Path(out_dir) / "samples" / f"{safe}-{hashlib.sha256(model.encode()).hexdigest()[:8]}.parquet"


def sample_table(model: str, dataset: str, view: str, out: Outputs):
    """The rows of one (dataset, view) as a pyarrow Table (vectorised: 50k images in well under a second);
    None for a dataset with classes of its own (scored by a probe, whose predictions are not stored outputs)."""
    import pyarrow as pa

    if catalog.own_label_space(dataset):
        return None
    n = len(out)
    s = scored_outputs(dataset, out)
    pos = np.flatnonzero(s.kept)
    unscored = ~s.kept
    label = np.asarray(out.labels, np.int64).copy()
    label[pos] = s.labels
    pred = np.zeros(n, np.int64)
    correct = np.zeros(n, bool)
    conf = np.zeros(n, np.float64)
    counts = np.zeros(n, np.int64)
    values = np.zeros(0, np.int64)
    if pos.size:
        pred[pos] = np.asarray(s.logits).argmax(axis=1)
        correct[pos] = topk_correct(s.logits, s.labels, 1, s.outputs.multilabels) > 0
        conf[pos] = softmax_stats(s.logits, s.labels)["conf"]
        truth = truth_sets(s.labels, s.outputs.multilabels)
        counts[pos] = (truth >= 0).sum(axis=1)
        values = truth[truth >= 0]  # row-major: each scored image's classes, in order
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.table({
        "model": pa.array([model] * n, pa.string()), "dataset": pa.array([dataset] * n, pa.string()),
        "view": pa.array([view] * n, pa.string()), "id": pa.array(list(out.ids), pa.string()),
        "scored": pa.array(s.kept), "label": pa.array(label),
        "truth": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64()), mask=pa.array(unscored)),
        "prediction": pa.array(pred, mask=unscored), "correct": pa.array(correct, mask=unscored),
        "confidence": pa.array(conf, mask=unscored)})


def sample_columns(model: str, dataset: str, view: str, out: Outputs) -> dict[str, list] | None:
    """`sample_table` as plain Python lists per column (None where a value is null)."""
    t = sample_table(model, dataset, view, out)
    return None if t is None else t.to_pydict()


def write_model_samples(out_dir: str | Path, model: str, keys: Sequence[tuple[str, str]],
                        fetch: Callable[[Request], Outputs | None], loaded: dict | None = None) -> Path | None:
    """Write OUT/samples/<model>.parquet from the stored outputs of every (dataset, view) in `keys`
    (`loaded`, the fetch's cache, is emptied after each so one dataset is in memory at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for dataset, view in keys:
        out = fetch(Request(dataset, view))
        if loaded is not None:
            loaded.clear()
        if out is None:
            continue
        t = sample_table(model, dataset, view, out)
        if t is not None:
            tables.append(t)
    if not tables:
        return None
    buf = io.BytesIO()
    pq.write_table(pa.concat_tables(tables), buf)
    path = samples_path(out_dir, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
