"""results.json is an auditable record (configuration, versions, timings, per-metric direction), and
`--log-samples` writes per-image predictions from which the report's numbers can be recomputed by hand."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import beyond_inet
from conftest import make_imagenet_folder

from beyond_inet.analyses.base import Context, Outputs, Request

LITE0 = "packaged:efficientnet_lite0"


def _csv_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _ece_by_definition(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """The paper's ECE (Guo et al. 2017): 15 equal-width bins, a sample in bin b when lower < conf <= upper;
    sum over bins of |bin| / N * |accuracy - mean confidence|. Written from the definition, in a loop."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() / conf.size * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = make_imagenet_folder(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("run") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BEYOND_INET_CACHE", str(tmp_path_factory.mktemp("cache")))
        ev = beyond_inet.evaluate(LITE0, ["accuracy", "calibration"], data_root=root, out=out, bootstrap=50, report=True,
                             workers=0, accuracy_datasets="imagenet-val", calibration_datasets="imagenet-val",
                             log_samples=True)
    assert ev.provenance == json.loads((out / "results.json").read_text())  # the API hands the record over
    return out


def test_results_json_carries_the_resolved_configuration_and_versions(run_folder):
    doc = json.loads((run_folder / "results.json").read_text())
    assert doc["schema"] == "beyond-inet results" and doc["schema_version"] == 1
    cfg = doc["config"]
    (model,) = cfg["models"]
    assert model["spec"] == LITE0 and model["weights"].endswith(model["weights_hash"]) and model["weights_hash"]
    assert model["preprocessing"] and model["numerics"] == "fp32"
    # The dataset's fingerprint is the one its stored outputs were keyed by (the store's own record).
    from beyond_inet.engine.store import Store
    from beyond_inet.report.results import ResultsDB

    db = ResultsDB(run_folder)
    keys = db.output_keys()
    db.close()
    entry = Store(run_folder / "store").existing(keys[(LITE0, "imagenet-val", "standard")])
    meta = json.loads((entry.root / "meta.json").read_text())
    (ds,) = cfg["datasets"]
    assert ds["name"] == "imagenet-val" and ds["n"] == 12 and ds["fingerprint"] == meta["samples"]
    assert len(ds["files"]) == 16
    for page in ("report.html", "report.md"):  # the report shows the same record
        text = (run_folder / page).read_text()
        assert ds["fingerprint"] in text and ds["files"] in text, page
    names = [a["name"] for a in cfg["analyses"]]
    assert names == ["accuracy", "calibration"]
    assert next(a for a in cfg["analyses"] if a["name"] == "accuracy")["options"]["accuracy_datasets"] \
        == ["imagenet-val"]
    assert cfg["seed"] == 0 and cfg["n_boot"] == 50 and cfg["limit"] is None and cfg["precision"] == "fp32"
    assert cfg["log_samples"] is True
    for pkg in ("beyond-inet", "python", "torch", "timm", "open_clip_torch", "numpy", "device"):
        assert doc["versions"].get(pkg), pkg
    assert doc["versions"]["device"].startswith("cpu")


def test_results_json_times_each_stage(run_folder):
    t = json.loads((run_folder / "results.json").read_text())["timings_s"]
    parts = [t["planning"], t["inference"][LITE0], t["analyses"]["accuracy"], t["analyses"]["calibration"],
             t["log_samples"], t["report"]]
    assert all(p >= 0 for p in parts) and t["inference"][LITE0] > 0 and t["report"] > 0
    assert t["total"] >= sum(parts) - 1e-2  # stages are disjoint slices of the run (each rounded to 1 ms)


def test_results_json_rows_are_results_csv_with_direction_and_too_few(run_folder):
    doc = json.loads((run_folder / "results.json").read_text())
    csv_rows = _csv_rows(run_folder / "results.csv")
    assert list(csv_rows[0]) == ["model", "dataset", "analysis", "metric", "value", "ci_low", "ci_high", "n"]
    assert len(doc["results"]) == len(csv_rows)
    for j, c in zip(doc["results"], csv_rows):
        assert (j["model"], j["dataset"], j["analysis"], j["metric"], j["n"]) == \
               (c["model"], c["dataset"], c["analysis"], c["metric"], int(c["n"]))
        assert (j["value"] is None and c["value"] == "") or j["value"] == float(c["value"])
        assert j["too_few"] == (j["n"] < 30) and j["run_id"] == doc["run"]["run_id"]
    by = {(r["analysis"], r["metric"]): r for r in doc["results"]}
    # Direction comes from the metric's declaration (one source), not from a table of names.
    from beyond_inet.analyses.base import get_analysis
    from beyond_inet.analyses.calibration import softmax_stats  # noqa: F401  (registers calibration)

    declared = {}
    for name in ("accuracy", "calibration"):
        a = get_analysis(name)
        out = Outputs([f"i{k}" for k in range(40)], np.arange(40) % 10, np.random.default_rng(0).normal(
            size=(40, 1000)).astype(np.float32), np.zeros((40, 4), np.float32))
        ctx = Context(None, {"accuracy_datasets": "imagenet-val", "calibration_datasets": "imagenet-val"}, n_boot=10)
        for m in a.declare(ctx, LITE0, lambda req: out if req.dataset == "imagenet-val" else None).metrics:
            declared[(name, m.metric)] = m.higher_is_better
    for key, hib in declared.items():
        assert by[key]["higher_is_better"] == hib and by[key]["declared"], key
    assert by[("accuracy", "top1")]["higher_is_better"] is True
    assert by[("calibration", "ece")]["higher_is_better"] is False
    assert by[("calibration", "overconfidence")]["higher_is_better"] is None
    assert by[("calibration", "ece_adaptive")]["declared"] is False  # a row scored outside the declarations
    assert by[("accuracy", "top1")]["too_few"] is True  # 12 images


def test_logged_samples_recompute_top1_and_ece_of_results_csv(run_folder):
    import pyarrow.parquet as pq

    files = sorted((run_folder / "samples").glob("*.parquet"))
    assert len(files) == 1
    t = pq.read_table(files[0]).to_pandas()
    assert set(t.model) == {LITE0} and set(t.dataset) == {"imagenet-val"} and len(t) == 12
    assert t.id.is_unique and t.scored.all()
    assert (t.correct == (t.prediction == t.label)).all()
    vals = {(r["analysis"], r["metric"]): float(r["value"]) for r in _csv_rows(run_folder / "results.csv")
            if r["dataset"] == "imagenet-val"}
    top1 = t.correct.astype(float).sum() / len(t)
    assert top1 == vals[("accuracy", "top1")] == vals[("calibration", "top1")]  # exactly
    assert 0 < top1 < 1
    conf, correct = t.confidence.to_numpy(float), t.correct.to_numpy(float)
    assert _ece_by_definition(conf, correct) == pytest.approx(vals[("calibration", "ece")], rel=1e-12, abs=1e-15)


def test_log_samples_reads_the_store_without_a_forward_pass(run_folder, tmp_path):
    """A rerun with --log-samples over stored outputs runs no inference and logs the same rows; the
    samples of a run that did infer are therefore the stored outputs, not a second forward pass."""
    import shutil

    import pyarrow.parquet as pq

    out = tmp_path / "out"
    shutil.copytree(run_folder, out)  # the module's run folder stays as the other tests expect it
    (first,) = sorted((out / "samples").glob("*.parquet"))
    before = pq.read_table(first)
    first.unlink()
    doc = json.loads((out / "results.json").read_text())
    ev = beyond_inet.evaluate(LITE0, ["accuracy"], data_root=doc["config"]["data_root"], out=out,
                              bootstrap=50, report=False, workers=0, accuracy_datasets="imagenet-val",
                              log_samples=True)
    assert ev.summary["jobs"] == 0 and ev.summary["images"] == 0
    assert pq.read_table(first).equals(before)
    assert ev.provenance["timings_s"]["inference"][LITE0] < doc["timings_s"]["inference"][LITE0]


def test_logged_samples_follow_the_accuracy_label_rule_on_subsets_and_multilabels():
    """Per dataset, mean(correct) of the logged rows equals accuracy's top-1 on the same outputs: the class
    subset of ImageNet-R (argmax over its 200 classes; a label outside them is left out), multi-labels and
    unlabelled images alike."""
    from beyond_inet.analyses.accuracy import Accuracy
    from beyond_inet.analyses.stats import score
    from beyond_inet.data.labelspaces import subset_indices, truth_sets
    from beyond_inet.report.samples import sample_columns

    rng = np.random.default_rng(1)
    n = 300
    r_classes = subset_indices("imagenet-r")
    not_r = int(np.setdiff1d(np.arange(1000), r_classes)[0])
    cases = {
        "imagenet-r": Outputs([f"r{i}" for i in range(n)], np.where(np.arange(n) % 10 == 0, not_r, r_classes[
            rng.integers(0, 200, n)]), rng.normal(size=(n, 1000)).astype(np.float32), np.zeros((n, 2), np.float32)),
        "imagenet-val": Outputs([f"v{i}" for i in range(n)], np.where(np.arange(n) % 7 == 0, -1, rng.integers(
            0, 1000, n)), rng.normal(size=(n, 1000)).astype(np.float32), np.zeros((n, 2), np.float32)),
        "imagenet-hard": Outputs([f"h{i}" for i in range(n)], rng.integers(0, 1000, n),
                                 rng.normal(size=(n, 1000)).astype(np.float32), np.zeros((n, 2), np.float32),
                                 multilabels=np.where(rng.random((n, 3)) < 0.5, rng.integers(0, 1000, (n, 3)), -1)),
    }
    for name, out in cases.items():
        # Make about half the predictions right so the comparison means something.
        truth = truth_sets(out.labels, out.multilabels).max(axis=1)  # one acceptable class (-1: none)
        for i in range(0, n, 2):
            if truth[i] >= 0:
                out.logits[i, truth[i]] = 50.0
        ctx = Context(None, {"accuracy_datasets": name}, n_boot=0)
        res = Accuracy().declare(ctx, "m", lambda req, _o=out, _n=name: _o if req == Request(_n) else None)
        top1 = next(score(m, 0).value for m in res.metrics if m.metric == "top1")
        cols = sample_columns("m", name, "standard", out)
        scored = np.asarray(cols["scored"])
        correct = np.asarray([c for c, s in zip(cols["correct"], scored) if s], float)
        assert correct.sum() / correct.size == top1, name
        assert 0.2 < top1 < 0.9, name
        assert len(cols["id"]) == n and all(c is None for c, s in zip(cols["correct"], scored) if not s)
    r = sample_columns("m", "imagenet-r", "standard", cases["imagenet-r"])
    assert max(p for p in r["prediction"] if p is not None) < 200  # indices into the 200 classes
    assert sum(not s for s in r["scored"]) == n // 10  # labelled outside ImageNet-R's classes: left out


def test_log_samples_flag_reaches_the_run():
    from beyond_inet.api import run_config
    from beyond_inet.cli import build_parser

    args = build_parser().parse_args(["run", "--models", LITE0, "--out", "x", "--log-samples"])
    assert args.log_samples is True
    assert run_config(LITE0, "accuracy", out="x", device="cpu", log_samples=True).log_samples is True
    assert run_config(LITE0, "accuracy", out="x", device="cpu").log_samples is False
