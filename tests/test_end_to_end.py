"""End to end on the repository's real data with real weights: every analysis through the CLI path,
numbers checked against references computed from the stored outputs, and a rerun that adds an
analysis without running the model again."""
from __future__ import annotations

import numpy as np
import pytest

from beyond_inet.demo import demo_config
from beyond_inet.engine import infer
from beyond_inet.pipeline import RunConfig, run
from beyond_inet.engine.store import Store
from beyond_inet.report.results import ResultsDB

pytestmark = [pytest.mark.slow]
MODEL = "packaged:efficientnet_lite0"


def test_demo_pipeline_on_shared_data(shared_data, tmp_path):
    from netcal.metrics import ECE

    _, analyses, options, _ = demo_config(str(shared_data))
    options = {**options, "invariance_scales": [1, 2], "invariance_shifts": [0, 30],
               "invariance_resolutions": [112, 224]}
    out = tmp_path / "out"
    cfg = RunConfig(models=[MODEL], analyses=[a for a in analyses if a != "calibration"], out=str(out),
                    data_root=str(shared_data), limit=32, num_workers=1, batch_size=16, n_boot=200, options=options,
                    progress=False)
    summary = run(cfg)
    assert summary["jobs"] >= 4 and summary["skipped_images"] == 0
    db = ResultsDB(out)
    rows = {(r.analysis, r.dataset, r.metric): r for r in db.rows()}
    assert rows[("accuracy", "imagenet-sample", "top1")].value > 0.6  # real weights on real images
    assert ("shape-bias", "cue-conflict", "shape_bias") in rows
    assert ("invariance", "imagenet-sample", "top1_scale_2") in rows
    skipped = {(s.analysis, s.dataset) for s in db.skips()}
    assert ("imagenet-x", "imagenet-val") in skipped and ("transfer", "vtab") in skipped

    # Adding an analysis later reuses the stored outputs: no forward pass at all.
    before = infer.FORWARD_CALLS["n"]
    cfg.analyses = ["calibration"]
    run(cfg)
    assert infer.FORWARD_CALLS["n"] == before
    rows = {(r.analysis, r.dataset, r.metric): r for r in ResultsDB(out).rows()}
    key = ResultsDB(out).output_keys()[(MODEL, "imagenet-sample", "standard")]
    o = Store(out / "store").existing(key).load()
    lg = o.logits.astype(np.float64)
    p = np.exp(lg - lg.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = ECE(bins=15).measure(p.max(1), (p.argmax(1) == o.labels).astype(float))
    assert rows[("calibration", "imagenet-sample", "ece")].value == pytest.approx(ref, abs=1e-9)
    assert (out / "results.csv").exists() and (out / "run.log").exists()

    # Shape bias of the real model equals an independent per-image model-vs-human implementation.
    from tests.analyses.test_shape_bias import _loop_reference, _reference_mapping

    key = ResultsDB(out).output_keys()[(MODEL, "cue-conflict", "native")]
    cue = Store(out / "store").existing(key).load()
    _, ref_bias, _, _, _ = _loop_reference(cue.ids, cue.logits, _reference_mapping())
    assert rows[("shape-bias", "cue-conflict", "shape_bias")].value == ref_bias
