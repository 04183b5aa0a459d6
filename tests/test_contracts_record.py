"""The compact record (``contracts.summarize_logits``) gives what the analyses compute from full logits.

The reference is written here from the definitions (softmax in float64 over all 1000 classes), and checked
against the project's own scoring functions too; equal to 1e-9 (exact for the 0/1 quantities)."""
from __future__ import annotations

import numpy as np

from beyond_inet.analyses.accuracy import topk_correct
from beyond_inet.analyses.calibration import softmax_stats
from beyond_inet.contracts import Outputs, record_stats, summarize_logits


def _logits(seed: int = 0, n: int = 257) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, 1000)) * rng.uniform(0.5, 8, (n, 1))).astype(np.float32)
    z[:5] *= 1e3  # logits far from 0: the log-partition must not overflow
    z[5, [3, 7]] = z[5].max() + 1  # a tie at the top: argmax takes the lower index
    y = rng.integers(0, 1000, n)
    y[6] = int(z[6].argmax())
    return z, y


def _reference(z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    zz = z.astype(np.float64)
    m = zz.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(zz - m).sum(1))  # -log softmax_y = lse - z_y, without underflow
    p = np.exp(zz - m)
    p /= p.sum(1, keepdims=True)
    r = np.arange(len(y))
    order = np.argsort(-zz, axis=1, kind="stable")
    return {"pred": zz.argmax(1), "conf": p.max(1), "p_true": p[r, y], "brier": ((p - np.eye(1000)[y]) ** 2).sum(1),
            "nll": lse - zz[r, y], "top1": (zz.argmax(1) == y).astype(float),
            "top5": (order[:, :5] == y[:, None]).any(1).astype(float)}


def test_record_gives_the_full_logits_numbers():
    z, y = _logits()
    got = record_stats(summarize_logits(z, y), y)
    ref = _reference(z, y)
    for k in ("pred", "top1", "top5"):
        assert np.array_equal(got[k], ref[k]), k
    for k in ("conf", "p_true", "brier", "nll"):
        assert np.abs(got[k] - ref[k]).max() <= 1e-9, k
    st = softmax_stats(z, y)  # the project's own scoring path from full logits
    for k in ("conf", "brier", "nll"):
        assert np.abs(got[k] - st[k]).max() <= 1e-9, k
    assert np.array_equal(got["pred"], st["pred"])
    assert np.array_equal(got["top5"][6:], topk_correct(z[6:], y[6:], 5))  # rows without ties at the 5th place


def test_record_does_not_depend_on_how_rows_are_batched():
    z, y = _logits(1, 100)
    whole = summarize_logits(z, y)
    parts = [summarize_logits(z[a:b], y[a:b]) for a, b in ((0, 1), (1, 37), (37, 100))]
    for k, v in whole.items():
        assert np.array_equal(v, np.concatenate([p[k] for p in parts]), equal_nan=True), k


def test_top1_of_outputs_is_the_argmax_with_or_without_logits():
    z, y = _logits(2, 50)
    full = Outputs([str(i) for i in range(50)], y, z, None)
    compact = Outputs(full.ids, y, None, None, summary=summarize_logits(z, y))
    assert np.array_equal(full.top1(), z.argmax(1)) and np.array_equal(compact.top1(), z.argmax(1))
    keep = np.arange(50) % 3 == 0
    assert np.array_equal(compact.subset(keep).top1(), z[keep].argmax(1))
