"""A model run with --decisions: the published observers land in the same tables, figures and checks as the model.

Error consistency is checked against kappa written here from Geirhos et al. (2020): c_obs = share of images both
get right or both wrong; c_exp = p1 p2 + (1 - p1)(1 - p2); kappa = (c_obs - c_exp) / (1 - c_exp).
"""
from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from beyond_inet.api import evaluate

LITE0 = "packaged:efficientnet_lite0"


def correct_by_image(path) -> dict[str, bool]:
    with open(path, newline="") as f:
        return {r["imagename"].rsplit("_", 1)[-1]: r["object_response"] == r["category"] for r in csv.DictReader(f)}


def geirhos_kappa(a: dict[str, bool], b: dict[str, bool]) -> float:
    keys = sorted(set(a) & set(b))
    x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    c_obs = np.mean(x == y)
    p1, p2 = x.mean(), y.mean()
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    return float((c_obs - c_exp) / (1 - c_exp))


@pytest.fixture(scope="module")
def model_and_observers(tmp_path_factory):
    from tests.conftest import shared_data_path

    shared = shared_data_path()
    if shared is None:
        pytest.skip("shared data folder absent")
    out = tmp_path_factory.mktemp("with-model")
    # No data root: the model sees the bundled cue-conflict subset; the observers bring all 1280 trials.
    ev = evaluate([LITE0], ["shape-bias", "error-consistency"], None, out, device="cpu", bootstrap=20, limit=48,
                  decisions=[shared / "beyond-inet-raw-data" / "cue-conflict",
                             shared / "model-vs-human-raw-data" / "cue-conflict"])
    return shared, ev


def test_observers_and_the_model_share_the_tables(model_and_observers, shared_data):
    _, ev = model_and_observers
    r = ev.results
    sb = r[(r.analysis == "shape-bias") & (r.metric == "shape_bias")]
    assert {LITE0, "vit_clip", "resnet50", "humans", "subject-01"} <= set(sb.model)
    ec = r[r.analysis == "error-consistency"]
    assert {f"kappa_vs:vit_clip", f"kappa_vs:{LITE0}"} <= set(ec.metric)
    both = ec[(ec.model == LITE0) & (ec.metric == "kappa_vs:vit_clip")]
    back = ec[(ec.model == "vit_clip") & (ec.metric == f"kappa_vs:{LITE0}")]
    assert len(both) == 1 and both.value.item() == back.value.item()
    # observers against the published humans, like the model
    assert {LITE0, "vit_clip", "bagnet33"} <= set(ec[ec.metric == "kappa_humans"].model)


def test_observer_kappas_are_geirhos_kappa(model_and_observers, shared_data):
    shared, ev = model_and_observers
    r = ev.results
    bi, mvh = shared / "beyond-inet-raw-data" / "cue-conflict", shared / "model-vs-human-raw-data" / "cue-conflict"
    a, b = correct_by_image(bi / "cue-conflict_vit-clip_session-1.csv"), correct_by_image(
        mvh / "cue-conflict_resnet50_session-1.csv")
    got = r[(r.model == "vit_clip") & (r.dataset == "cue-conflict") & (r.metric == "kappa_vs:resnet50")]
    assert got.value.item() == pytest.approx(geirhos_kappa(a, b), abs=1e-12)
    subjects = [correct_by_image(f) for f in sorted(mvh.glob("cue-conflict_subject-*.csv"))]
    want = np.mean([geirhos_kappa(a, s) for s in subjects])
    got = r[(r.model == "vit_clip") & (r.dataset == "cue-conflict") & (r.metric == "kappa_humans")]
    assert got.value.item() == pytest.approx(want, abs=1e-12)
    ceiling = np.mean([geirhos_kappa(s, t) for s, t in itertools.combinations(subjects, 2)])
    got = r[(r.model == "human-subjects") & (r.dataset == "cue-conflict") & (r.metric == "kappa_humans")]
    assert got.value.item() == pytest.approx(ceiling, abs=1e-12)


def test_the_report_has_the_papers_figure_and_the_released_check(model_and_observers, shared_data):
    _, ev = model_and_observers
    figs = ev.out / "figures"
    assert (figs / "shape-bias.png").is_file() and (figs / "shape-bias-paper.png").is_file()
    import html as html_lib

    html = html_lib.unescape((ev.out / "report.html").read_text())
    assert "the paper's figure" in html.lower() and "then the mean" in html
    pick = next(x for x in (ev.out / "report.md").read_text().splitlines() if x.startswith("- **Shape bias**"))
    assert "pick vit\\_clip" in pick  # the highest non-human shape bias: humans are the reference, not a pick
    with open(ev.out / "reproduction.csv", newline="") as f:
        checks = list(csv.DictReader(f))
    cn = [c for c in checks if c["model"] == "convnext_clip"]
    assert {c["verdict"] for c in cn} == {"matches", "differs"}
