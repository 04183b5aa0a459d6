"""`--log-samples`: every image's prediction, label, correctness and confidence, as Parquet.

One file per model, ``OUT/samples/<model>.parquet``, one row per (dataset, view, image) of the outputs the
run stored for it (no extra forward pass). Labels and predictions follow the dataset's one label rule, the
accuracy analysis' own function (``analyses.accuracy.scored_outputs``): a class-subset dataset (ImageNet-A/R)
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

from beyond_inet.analyses.accuracy import scored_outputs, topk_correct
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


def sample_columns(model: str, dataset: str, view: str, out: Outputs) -> dict[str, list] | None:
    """The rows of one (dataset, view); None for a dataset with classes of its own (scored by a probe,
    whose predictions are not stored outputs)."""
    if catalog.own_label_space(dataset):
        return None
    n = len(out)
    s = scored_outputs(dataset, out)
    pos = np.flatnonzero(s.kept)
    label = np.asarray(out.labels, np.int64).copy()
    label[pos] = s.labels
    truth_all = truth_sets(s.labels, s.outputs.multilabels)
    truth: list = [None] * n
    pred: list = [None] * n
    correct: list = [None] * n
    conf: list = [None] * n
    if pos.size:
        p = np.asarray(s.logits).argmax(axis=1)
        c = topk_correct(s.logits, s.labels, 1, s.outputs.multilabels)
        cf = softmax_stats(s.logits, s.labels)["conf"]
        for j, i in enumerate(pos):
            truth[i] = [int(t) for t in truth_all[j] if t >= 0]
            pred[i], correct[i], conf[i] = int(p[j]), bool(c[j]), float(cf[j])
    return {"model": [model] * n, "dataset": [dataset] * n, "view": [view] * n, "id": list(out.ids),
            "scored": s.kept.tolist(), "label": label.tolist(), "truth": truth, "prediction": pred,
            "correct": correct, "confidence": conf}


def write_model_samples(out_dir: str | Path, model: str, keys: Sequence[tuple[str, str]],
                        fetch: Callable[[Request], Outputs | None], loaded: dict | None = None) -> Path | None:
    """Write OUT/samples/<model>.parquet from the stored outputs of every (dataset, view) in `keys`
    (`loaded`, the fetch's cache, is emptied after each so one dataset is in memory at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("model", pa.string()), ("dataset", pa.string()), ("view", pa.string()),
                        ("id", pa.string()), ("scored", pa.bool_()), ("label", pa.int64()),
                        ("truth", pa.list_(pa.int64())), ("prediction", pa.int64()), ("correct", pa.bool_()),
                        ("confidence", pa.float64())])
    tables = []
    for dataset, view in keys:
        out = fetch(Request(dataset, view))
        if loaded is not None:
            loaded.clear()
        if out is None:
            continue
        cols = sample_columns(model, dataset, view, out)
        if cols is not None:
            tables.append(pa.table(cols, schema=schema))
    if not tables:
        return None
    buf = io.BytesIO()
    pq.write_table(pa.concat_tables(tables), buf)
    path = samples_path(out_dir, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
