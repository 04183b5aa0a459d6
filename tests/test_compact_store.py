"""The store keeps only what the analyses read, and every number stays what the full store gives.

Real weights (EfficientNet-Lite0) on real photos: ImageNet folders (skimage photos), an ImageNet-C layout,
ImageNet-Sketch, and the shared cue-conflict stimuli. One run keeps the compact store (summary record on
ImageNet-C/-Sketch, full logits where a label-space restriction or calibration needs them, no features);
the reference run forces full outputs (``BEYOND_INET_FULL_OUTPUTS=1``) stored raw, as the store was before
(the compact run stores its tensors compressed where that pays, ``engine.codec``). Every row of results.csv (value,
CI, n) must agree to 1e-9, the compact store must be smaller, and asking later for more than an entry kept
recomputes that entry, says so in one line, and again gives the full store's numbers."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from beyond_inet.engine.plan import FULL_OUTPUTS_ENV
from beyond_inet.pipeline import RunConfig, run
from beyond_inet.report.results import ResultsDB
from tests.conftest import make_imagenet_folder

pytestmark = [pytest.mark.slow]
MODEL = "packaged:efficientnet_lite0"
ANALYSES = ["robustness", "accuracy", "calibration", "shape-bias"]


def _data(shared: Path, root: Path) -> Path:
    for name in ("imagenet-val", "imagenet-sketch", "imagenet-c/fog/1", "imagenet-c/snow/3"):
        make_imagenet_folder(root, n_per_photo=3, name=name, size=96)
    os.symlink(shared / "cue-conflict", root / "cue-conflict")
    return root


def _run(data: Path, out: Path, full: bool, monkeypatch, options: dict | None = None,
         analyses: list[str] = ANALYSES) -> dict:
    from beyond_inet.engine import store

    if full:
        monkeypatch.setenv(FULL_OUTPUTS_ENV, "1")
    else:
        monkeypatch.delenv(FULL_OUTPUTS_ENV, raising=False)
    monkeypatch.setattr(store, "COMPRESS", not full)
    cfg = RunConfig(models=[MODEL], analyses=analyses, out=str(out), data_root=str(data), limit=24,
                    num_workers=0, batch_size=16, n_boot=200, options=options or {}, progress=False, report=False)
    return run(cfg)


def _rows(out: Path) -> dict:
    db = ResultsDB(out)
    try:
        return {(r.analysis, r.dataset, r.metric): (r.value, r.ci_low, r.ci_high, r.n) for r in db.rows()}
    finally:
        db.close()


def _entries(out: Path) -> dict[str, tuple[list, int, set]]:
    """dataset -> (output kinds of its entry, bytes of its shards, tensors stored compressed)."""
    from beyond_inet.engine.store import read_header

    got = {}
    for d in (out / "store").iterdir():
        m = json.loads((d / "meta.json").read_text())
        shards = sorted(d.glob("shard-*.safetensors"))
        got[m["dataset"]] = (m.get("kinds"), sum(p.stat().st_size for p in shards),
                             {t for p in shards for t in read_header(p).get("codecs", {})})
    return got


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        for x, y in zip(a[k], b[k]):
            assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-9, (k, a[k], b[k])


def test_compact_store_gives_the_full_stores_numbers(shared_data, tmp_path, monkeypatch, capfd):
    data = _data(shared_data, tmp_path / "data")
    compact, full = tmp_path / "compact", tmp_path / "full"
    _run(data, compact, False, monkeypatch)
    _run(data, full, True, monkeypatch)
    rows = _rows(compact)
    assert ("robustness", "imagenet-c/fog/1", "top1") in rows and ("robustness", "imagenet-sketch", "top1") in rows
    assert ("calibration", "imagenet-val", "ece") in rows and ("shape-bias", "cue-conflict", "shape_bias") in rows
    _same(rows, _rows(full))

    kept, ref = _entries(compact), _entries(full)
    assert kept["imagenet-c/fog/1"][0] == ["summary"] and kept["imagenet-sketch"][0] == ["summary"]
    assert kept["imagenet-val"][0] == ["logits", "summary"] and kept["cue-conflict"][0] == ["logits"]
    assert all({"features", "logits"} <= set(k) and not c for k, _, c in ref.values())
    for ds in ("imagenet-c/fog/1", "imagenet-val"):  # the image-identity header is common to both
        assert kept[ds][1] < ref[ds][1] / 2, (ds, kept[ds][1], ref[ds][1])
    assert "positions" in kept["imagenet-val"][2]  # stored compressed (12 real logits do not pay; 512 do)

    # Calibration on an ImageNet-C part needs the full logits: that entry is recomputed, and said so once.
    capfd.readouterr()
    more = {"calibration_datasets": "imagenet-val,imagenet-c/fog/1"}
    _run(data, compact, False, monkeypatch, more, ["calibration"])
    err = capfd.readouterr().err
    assert "holds summary; recomputing it for logits" in err and len(err.strip().splitlines()) == 1
    assert _entries(compact)["imagenet-c/fog/1"][0] == ["logits", "summary"]
    _run(data, full, True, monkeypatch, more, ["calibration"])
    a, b = _rows(compact), _rows(full)
    assert ("calibration", "imagenet-c/fog/1", "ece") in a
    _same(a, b)
