"""Linear probes on real small data (sklearn digits), against scikit-learn, and the analysis wiring."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from beyond_inet.analyses import transfer as T
from beyond_inet.analyses.base import Context, Request
from beyond_inet.engine.outputs import Outputs


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te


@pytest.mark.parametrize("mode", T.MODES)
def test_probe_on_digits_well_above_chance(digits, mode):
    x_tr, y_tr, x_te, y_te = digits
    r = T.run_probe(mode, x_tr, y_tr, x_te, seed=0)
    acc = float((r.test_pred == y_te).mean())
    assert acc > 0.9, (mode, acc)                     # chance is 0.1
    assert r.mode == mode and r.hyper > 0 and 0 < r.val_acc <= 1
    if mode == "paper":
        assert r.hyper_name == "paper_weight_decay" and r.hyper in T.PAPER_WD_GRID
        assert len(r.search) <= 7 + 2 * 4              # 7 initial points + at most 2 new per bisection step
    else:
        assert r.hyper_name == "lbfgs_c"


def test_lbfgs_solves_the_sklearn_objective(digits):
    """Same features, same C: the L-BFGS solution equals scikit-learn's multinomial LogisticRegression."""
    x_tr, y_tr, _, _ = digits
    x = T.l2_normalize(x_tr)
    x = T.Standardizer.fit(x)(x).astype(np.float64)
    for c in (0.01, 1.0):
        with T._cpu_threads(torch.device("cpu"), 0.0):
            w, b = T.fit_logreg(torch.tensor(x), torch.tensor(y_tr), 10, c, tol=1e-9, max_iter=2000)
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            sk = LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(x, y_tr)
        np.testing.assert_allclose(w.numpy().T, sk.coef_, atol=5e-3 * max(1.0, np.abs(sk.coef_).max()))
        assert (((x @ w.numpy() + b.numpy()).argmax(1)) == sk.predict(x)).mean() > 0.99


def test_default_probe_matches_sklearn_accuracy(digits):
    """Default probe vs scikit-learn with C chosen on the same validation split over the same grid."""
    x_tr, y_tr, x_te, y_te = digits
    r = T.run_probe("lbfgs", x_tr, y_tr, x_te, seed=0)
    ours = float((r.test_pred == y_te).mean())

    xn_tr, xn_te = T.l2_normalize(x_tr), T.l2_normalize(x_te)
    tr, va = T.split_train_val(len(y_tr), 0.2, 0)
    best_c, best = None, -1.0
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        for c in T.LBFGS_DECADES:
            acc = LogisticRegression(C=c, max_iter=3000).fit(xn_tr[tr], y_tr[tr]).score(xn_tr[va], y_tr[va])
            if acc > best:
                best_c, best = c, acc
        ref = LogisticRegression(C=best_c, max_iter=3000).fit(xn_tr, y_tr).score(xn_te, y_te)
    assert abs(ours - ref) <= 0.02, (ours, ref)


def test_find_peak_semantics():
    accs = {0: 0.0, 3: 0.5, 5: 0.5, 7: 0.7, 9: 0.2}
    assert T.find_peak(accs.get, [3, 5, 9]) == 3             # ties keep the first
    assert T.find_peak(accs.get, [5, 7, 9]) == 7
    assert T.find_peak(lambda i: 0.0, [4, 8]) == 0            # upstream quirk: nothing beats 0 -> index 0
    assert T.paper_search_indices() == [0, 16, 32, 48, 64, 80, 96]


def test_paper_wd_search_bisection():
    calls = []

    def acc(i):
        calls.append(i)
        return 1 - abs(i - 37) / 100

    # init best 32; span 8: [24,32,40] -> 40; span 4: [36,40,44] -> 36; span 2: [34,36,38] -> 36 (tie);
    # span 1: [35,36,37] -> 37
    assert T.paper_wd_search(acc) == 37
    assert calls[:7] == [0, 16, 32, 48, 64, 80, 96] and calls[7:] == [24, 32, 40, 36, 40, 44, 34, 36, 38, 35, 36, 37]
    assert T.paper_wd_search(lambda i: 1 - abs(i - 95) / 100) == 95    # clipped at the grid's end


def test_cosine_lr_and_split():
    assert T.cosine_lr(0, 100, 0.1) == pytest.approx(0.1)
    assert T.cosine_lr(50, 100, 0.1) == pytest.approx(0.05)
    assert T.cosine_lr(100, 100, 0.1) == pytest.approx(0.0)
    tr, va = T.split_train_val(10, 0.2, 0)
    assert len(va) == 2 and len(tr) == 8 and set(tr) | set(va) == set(range(10))
    assert np.array_equal(T.split_train_val(10, 0.2, 0)[1], va)


def test_paper_training_is_deterministic():
    x = torch.randn(50, 4)
    y = (x[:, 0] > 0).long()
    a = T.train_linear_adamw(x, y, 2, 1e-3, epochs=2, batch_size=16, seed=0)
    b = T.train_linear_adamw(x, y, 2, 1e-3, epochs=2, batch_size=16, seed=0)
    assert torch.equal(a.weight, b.weight)


def _outputs(x, y):
    return Outputs(ids=[str(i) for i in range(len(y))], labels=np.asarray(y, np.int64),
                   logits=np.zeros((len(y), 1), np.float32), features=np.asarray(x, np.float32))


def test_compute_wiring(digits):
    x_tr, y_tr, x_te, y_te = digits
    # task "digits" with a hosted val split, task "nested/half" (name with '/') without, task "orphan" without train
    outs = {
        "vtab/digits/train": _outputs(x_tr[:900], y_tr[:900]),
        "vtab/digits/val": _outputs(x_tr[900:], y_tr[900:]),
        "vtab/digits/test": _outputs(x_te, y_te),
        "vtab/nested/half/train": _outputs(x_tr[:600] * 3.0, y_tr[:600]),   # scale must not matter (L2-normalised)
        "vtab/nested/half/test": _outputs(x_te[:200], y_te[:200]),
    }
    parts = ["digits/train", "digits/val", "digits/test", "nested/half/train", "nested/half/test", "orphan/test"]
    ctx = Context(None, parts=lambda n: parts if n == "vtab" else [], n_boot=100)
    reqs = T.Transfer().requests(ctx)
    assert Request("vtab/digits/val") in reqs and Request("vtab/nested/half/train") in reqs
    assert not any(r.dataset.startswith("vtab/orphan") for r in reqs)

    res = T.Transfer().compute(ctx, "m", lambda r: outs.get(r.dataset))
    rows = {(r.dataset, r.metric): r for r in res.rows}
    d = rows[("vtab/digits", "top1")]
    assert d.value > 0.9 and d.n == len(y_te) and d.ci_low <= d.value <= d.ci_high
    assert rows[("vtab/digits", "val_top1")].n == len(y_tr) - 900
    assert ("vtab/digits", "lbfgs_c") in rows and ("vtab/nested/half", "top1") in rows
    avg = rows[("vtab", "top1_avg")]
    assert avg.value == pytest.approx((d.value + rows[("vtab/nested/half", "top1")].value) / 2)
    assert avg.n == len(y_te) + 200
    (skip,) = res.skips
    assert "vtab/orphan" in skip.reason and "train split" in skip.reason
    art = res.artifacts["transfer/probe"]
    assert art["mode"] == "lbfgs" and art["tasks"]["digits"]["hosted_val"] is True


def test_compute_nothing_present():
    res = T.Transfer().compute(Context(None), "m", lambda r: None)
    assert not res.rows and "no VTAB tasks" in res.skips[0].reason
    assert T.Transfer().requests(Context(None)) == []


def test_unknown_mode_is_a_skip():
    ctx = Context(None, options={"probe": "svm"}, parts=lambda n: ["a/train", "a/test"])
    res = T.Transfer().compute(ctx, "m", lambda r: None)
    assert not res.rows and "unknown probe" in res.skips[0].reason
    assert T.l2_normalize(np.array([[3.0, 4.0]]))[0, 0] == pytest.approx(0.6)
