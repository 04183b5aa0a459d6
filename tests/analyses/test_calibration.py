"""Calibration metrics against netcal, torchmetrics, sklearn, torch, scipy and hand-worked cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from beyond_inet.analyses import calibration as C
from beyond_inet.analyses.base import Context, Request
from beyond_inet.analyses.scoring import restrict_logits
from beyond_inet.analyses.stats import replicate_indices
from beyond_inet.data import labelspaces
from beyond_inet.engine.outputs import Outputs


def _random_logits(n: int = 900, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k)) * 2.0
    z[np.arange(n), y] += rng.normal(1.5, 1.0, n)  # some signal, so accuracies vary by bin
    return z, y


def _probs(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _off_edges(conf: np.ndarray, n_bins: int = 15) -> bool:
    """True when no confidence is within 1e-9 of a bin edge (where (lower, upper] and [lower, upper) differ)."""
    d = np.abs(conf[:, None] - C.bin_edges(n_bins)[None, :])
    return bool(d.min() > 1e-9)


def test_ece_matches_netcal_and_torchmetrics():
    """torchmetrics' public function casts confidences to float32 before binning, so it is compared at
    1e-6; its binning routine (``_ce_compute``) run on the float64 confidences is compared at 1e-9."""
    from netcal.metrics import ECE
    from torchmetrics.functional.classification import multiclass_calibration_error
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    z, y = _random_logits()
    p = _probs(z)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    assert _off_edges(conf)
    ours = C.ece(conf, correct)
    ref_netcal = ECE(bins=15).measure(p, y)
    ref_tm64 = _ce_compute(torch.tensor(conf), torch.tensor(correct), 15, norm="l1").item()
    ref_tm32 = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=p.shape[1], n_bins=15,
                                            norm="l1").item()
    assert ours == pytest.approx(ref_netcal, abs=1e-9)
    assert ours == pytest.approx(ref_tm64, abs=1e-9)
    assert ours == pytest.approx(ref_tm32, abs=1e-6)
    # and through the full pipeline from logits
    metrics, _ = C.calibration_metrics(z, y, n_boot=20)
    assert metrics["ece"][0] == pytest.approx(ref_netcal, abs=1e-9)


def test_bins_are_lower_open_upper_closed_hand_worked():
    edges = C.bin_edges(15)
    # every interior/upper edge belongs to the bin below it: (lower, upper]
    assert C.bin_index(edges[1:]).tolist() == list(range(15))
    assert C.bin_index(np.array([edges[1] + 1e-12, 0.5, 1.0])).tolist() == [1, 7, 14]
    # a = edge 1/15, correct; b = 0.1, wrong.
    # (lower, upper]: a alone in bin 0 -> |1/15 - 1|, b alone in bin 1 -> |0.1 - 0|; ECE = mean of the two.
    # [lower, upper) would put both in bin 1: |(1/15 + 0.1)/2 - 0.5| = 0.41667 instead.
    conf = np.array([edges[1], 0.1])
    correct = np.array([1.0, 0.0])
    hand = 0.5 * (1 - edges[1]) + 0.5 * 0.1
    assert C.ece(conf, correct) == pytest.approx(hand, abs=1e-12)
    assert abs(hand - abs((edges[1] + 0.1) / 2 - 0.5)) > 0.05
    # MCE in the same example is the larger of the two gaps
    assert C.mce(conf, correct) == pytest.approx(1 - edges[1], abs=1e-12)


def test_mce_matches_netcal():
    from netcal.metrics import MCE

    z, y = _random_logits(seed=1)
    p = _probs(z)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    assert _off_edges(conf)
    assert C.mce(conf, correct) == pytest.approx(MCE(bins=15).measure(p, y), abs=1e-9)
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    ref_tm = _ce_compute(torch.tensor(conf), torch.tensor(correct), 15, norm="max").item()
    assert C.mce(conf, correct) == pytest.approx(ref_tm, abs=1e-9)


def test_adaptive_ece_matches_netcal_equal_mass_bins():
    """netcal's ACE is a different metric (unweighted mean over equal-width bins, checked below);
    the equal-mass ECE corresponds to netcal ECE(equal_intervals=False). With N = 15 m distinct
    confidences every quantile edge falls strictly between two samples, so both binnings agree."""
    from netcal.metrics import ECE

    z, y = _random_logits(n=15 * 60, seed=2)
    p = _probs(z)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    assert np.unique(conf).size == conf.size
    ref = ECE(bins=15, equal_intervals=False).measure(p, y)
    assert C.adaptive_ece(conf, correct) == pytest.approx(ref, abs=1e-9)


def test_adaptive_ece_hand_worked():
    # 4 samples, 2 equal-mass bins: {0.2, 0.4} conf .3 acc .5 -> .2 ; {0.6, 0.9} conf .75 acc 1 -> .25
    conf = np.array([0.9, 0.2, 0.6, 0.4])
    correct = np.array([1.0, 0.0, 1.0, 1.0])
    assert C.adaptive_ece(conf, correct, n_bins=2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.25, abs=1e-12)
    # 5 samples, 2 bins: rank r in bin floor(2r/5) -> ranks 0,1,2 | 3,4
    conf5 = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    corr5 = np.array([0.0, 0.0, 1.0, 1.0, 0.0])
    hand = 3 / 5 * abs(0.2 - 1 / 3) + 2 / 5 * abs(0.85 - 0.5)
    assert C.adaptive_ece(conf5, corr5, n_bins=2) == pytest.approx(hand, abs=1e-12)


def test_netcal_ace_is_unweighted_bin_average():
    """Documents why netcal's ACE is not our adaptive ECE: it averages |gap| over non-empty
    equal-width bins without weights."""
    from netcal.metrics import ACE

    z, y = _random_logits(seed=3)
    p = _probs(z)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    cnt, cs, acs = C.binned(conf, correct)
    ne = cnt > 0
    unweighted = np.abs(cs[ne] / cnt[ne] - acs[ne] / cnt[ne]).mean()
    assert ACE(bins=15).measure(p, y) == pytest.approx(unweighted, abs=1e-9)
    assert abs(unweighted - C.adaptive_ece(conf, correct)) > 1e-4


@pytest.mark.parametrize("n,B", [(37, 5), (7, 15), (1, 15)])
def test_equal_mass_sums_on_resamples_match_expanded_sort(n, B):
    """Resampled multisets (duplicates straddling bin edges; fewer samples than bins) against sorting
    the expanded multiset and cutting it at ranks floor(r * B / n)."""
    rng = np.random.default_rng(4)
    conf = np.sort(rng.random(n))
    correct = (rng.random(n) < conf).astype(float)
    idx = next(replicate_indices(n, 6, 7))
    counts = C.resample_counts(idx, n)
    assert np.array_equal(counts.sum(1), np.full(6, n))
    cnt, sums = C.equal_mass_sums(counts, np.stack([conf, correct], 1), B)
    for r in range(6):
        expanded = np.sort(idx[r])  # samples are in confidence order, so sorting positions sorts conf
        bins = np.arange(n) * B // n
        ref_c = np.bincount(bins, weights=conf[expanded], minlength=B)
        ref_a = np.bincount(bins, weights=correct[expanded], minlength=B)
        assert np.allclose(sums[r, :, 0], ref_c, atol=1e-12)
        assert np.allclose(sums[r, :, 1], ref_a, atol=1e-12)
        assert np.array_equal(cnt[r], np.bincount(bins, minlength=B))


def test_brier_and_nll_match_sklearn_and_torch():
    from sklearn.metrics import brier_score_loss

    z, y = _random_logits(n=300, k=7, seed=5)
    st = C.softmax_stats(z, y)
    p = _probs(z)
    assert st["brier"].mean() == pytest.approx(brier_score_loss(y, p, labels=list(range(7)), scale_by_half=False),
                                               abs=1e-9)
    ref_nll = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y)).item()
    assert st["nll"].mean() == pytest.approx(ref_nll, abs=1e-9)


def test_overconfidence_sign_and_identity():
    # always 0.9 confident, right half the time -> over-confident by 0.4
    conf = np.full(10, 0.9)
    correct = np.array([1.0, 0.0] * 5)
    assert C.overconfidence(conf, correct) == pytest.approx(0.4)
    z, y = _random_logits(seed=6)
    st = C.softmax_stats(z, y)
    # sum_b (n_b/N)(conf_b - acc_b) collapses to mean(conf) - accuracy
    assert C.overconfidence(st["conf"], st["correct"]) == pytest.approx(st["conf"].mean() - st["correct"].mean(),
                                                                        abs=1e-12)
    under = C.overconfidence(np.full(4, 0.3), np.ones(4))
    assert under == pytest.approx(-0.7)


def test_temperature_matches_scipy_and_one_step_bootstrap_is_close():
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    z, y = _random_logits(n=400, k=10, seed=7)
    z = z * 3.0  # over-confident logits: T > 1 expected
    r = np.arange(len(y))

    def nll_log_t(lt: float) -> float:
        t = math.exp(lt)
        return float((logsumexp(z / t, axis=1) - z[r, y] / t).mean())

    ref = math.exp(minimize_scalar(nll_log_t, bounds=(-4, 4), method="bounded", options={"xatol": 1e-10}).x)
    t = C.fit_temperature(z, y)
    assert t > 1
    assert t == pytest.approx(ref, rel=1e-6)
    # one Newton step from the fit vs an exact refit on a resample
    idx = next(replicate_indices(len(y), 2, 3))
    _, g, h = C._temp_derivatives(z, y, 1.0 / t)
    for row in idx:
        s_one = 1.0 / t - g[row].sum() / h[row].sum()
        assert 1.0 / s_one == pytest.approx(C.fit_temperature(z[row], y[row]), rel=2e-3)


def test_temperature_scaling_improves_ece_of_overconfident_model():
    z, y = _random_logits(n=2000, k=10, seed=8)
    metrics, arts = C.calibration_metrics(z * 4.0, y, n_boot=50, seed=0)
    assert metrics["temperature"][0] > 1
    assert metrics["ece_temp_scaled"][0] < metrics["ece"][0]
    assert metrics["temperature"][3] + metrics["ece_temp_scaled"][3] == 2000
    assert "reliability_temp_scaled" in arts


def test_vectorised_bootstrap_equals_loop_reference():
    z, y = _random_logits(n=120, seed=9)
    st = C.softmax_stats(z, y)
    order = np.argsort(st["conf"])  # the bootstrap sorts by confidence first; pre-sort so positions agree
    st = {k: v[order] for k, v in st.items()}
    conf, correct = st["conf"], st["correct"]
    n_boot, seed = 40, 11
    loops = {"ece": [], "ece_adaptive": [], "mce": [], "nll": []}
    for idx in replicate_indices(conf.size, n_boot, seed):
        for row in idx:
            loops["ece"].append(C.ece(conf[row], correct[row]))
            loops["mce"].append(C.mce(conf[row], correct[row]))
            loops["ece_adaptive"].append(C.adaptive_ece(conf[row], correct[row]))
            loops["nll"].append(st["nll"][row].mean())
    cis = C._bootstrap_main(conf, correct, st["brier"], st["nll"], 15, n_boot, seed)
    for k, vals in loops.items():
        ref = np.quantile(vals, [0.025, 0.975])
        assert np.allclose(cis[k], ref, atol=1e-5), k
    assert np.allclose(C.ece_bootstrap(conf, correct, n_boot=n_boot, seed=seed)[1:],
                       np.quantile(loops["ece"], [0.025, 0.975]), atol=1e-5)
    # the declared metrics, scored by the shared bootstrap on the same (sorted) order, give the same CIs
    from beyond_inet.analyses import stats

    ids = [str(i) for i in range(conf.size)]
    for k in ("ece", "mce"):
        s = stats.score(C.ece_metric("d", k, conf, correct, ids, 15, k), n_boot, seed)
        assert np.allclose((s.ci_low, s.ci_high), np.quantile(loops[k], [0.025, 0.975]), atol=1e-9), k
    s = stats.score(stats.mean_metric("d", "nll", st["nll"], ids), n_boot, seed)
    assert np.allclose((s.ci_low, s.ci_high), np.quantile(loops["nll"], [0.025, 0.975]), atol=1e-9)


def test_ece_bootstrap_50k_samples_1000_replicates_runs():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 50_000)
    correct = (rng.random(50_000) < conf).astype(float)
    v, lo, hi = C.ece_bootstrap(conf, correct, n_boot=1000, seed=0)
    assert lo <= v + 0.01 and lo < hi and hi < 0.05


def test_imagenet_r_logits_are_cut_before_softmax():
    sub = labelspaces.subset_indices("imagenet-r")
    rng = np.random.default_rng(10)
    n = 50
    labels = sub[rng.integers(0, 200, n)]
    z = rng.normal(size=(n, 1000)).astype(np.float32)
    outside = np.setdiff1d(np.arange(1000), sub)
    z[:, outside[0]] = 50.0  # a huge logit outside the R classes must not matter
    zr, lab = restrict_logits(z, labels, sub)
    assert zr.shape == (n, 200)
    assert np.array_equal(sub[lab], labels)
    ref = C.softmax_stats(z[:, sub], np.searchsorted(sub, labels))
    got = C.softmax_stats(zr, lab)
    assert np.allclose(got["conf"], ref["conf"]) and got["conf"].min() < 0.99
    # a label outside the subset is flagged -1
    _, bad = restrict_logits(z[:1], np.array([outside[0]]), sub)
    assert bad.tolist() == [-1]


def _outputs(z: np.ndarray, y: np.ndarray) -> Outputs:
    n = len(y)
    return Outputs(ids=[f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n)], labels=y.astype(np.int64),
                   logits=z.astype(np.float32), features=np.zeros((n, 2), np.float32))


def test_compute_wires_rows_skips_and_json_artifacts():
    z, y = _random_logits(n=200, k=1000, seed=12)
    sub = labelspaces.subset_indices("imagenet-r")
    zr, yr = _random_logits(n=100, k=1000, seed=13)
    yr = sub[yr % 200]
    data = {"imagenet-val": _outputs(z, y), "imagenet-r": _outputs(zr, yr)}
    ctx = Context(data_root=None, n_boot=30, seed=0)
    an = C.Calibration()
    assert an.requests(ctx) == [Request("imagenet-val", "standard"), Request("imagenet-r", "standard")]
    res = an.compute(ctx, "m", lambda r: data.get(r.dataset))
    got = {(r.dataset, r.metric): r for r in res.rows}
    for ds, n in (("imagenet-val", 200), ("imagenet-r", 100)):
        for m in ("top1", "ece", "mce", "ece_adaptive", "brier", "nll", "overconfidence"):
            row = got[(ds, m)]
            assert row.n == n and row.ci_low <= row.value + 1e-9 and row.value <= row.ci_high + 1e-9, (ds, m)
        assert got[(ds, "temperature")].n + got[(ds, "ece_temp_scaled")].n == n
    zrr, yrr = restrict_logits(data["imagenet-r"].logits, yr, sub)
    assert got[("imagenet-r", "ece")].value == pytest.approx(C.ece(*_conf_correct(zrr, yrr)), abs=1e-9)
    assert {"reliability/imagenet-val", "confidence_hist/imagenet-r", "reliability_temp_scaled/imagenet-val"} \
        <= set(res.artifacts)
    rel = res.artifacts["reliability/imagenet-val"]
    assert sum(rel["count"]) == 200 and len(rel["accuracy"]) == 15
    json.dumps(res.artifacts, allow_nan=False)

    # absent ImageNet-R -> a Skip, the rest still computed
    res2 = an.compute(ctx, "m", lambda r: data.get(r.dataset) if r.dataset == "imagenet-val" else None)
    assert any(s.dataset == "imagenet-r" for s in res2.skips)
    assert {r.dataset for r in res2.rows} == {"imagenet-val"}


def _conf_correct(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = _probs(z.astype(np.float64))
    return p.max(1), (p.argmax(1) == y).astype(float)
