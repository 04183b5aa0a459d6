"""No figure draws text over text: every text artist's drawn box (titles, tick labels, legends, annotations)
is checked against every other at draw time (`figures.overlapping_texts`)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure

from beyond_inet.report import figures as fg
from beyond_inet.report import figures_consistency as fc

LITES = ["packaged:efficientnet_lite0", "packaged:efficientnet_lite1"]
DEMO_SETS = ("cue-conflict", "edge", "silhouette", "imagenet-sample")


def test_the_check_finds_overlaps_and_ignores_rotated_extents():
    f = Figure()
    f.text(0.5, 0.5, "hello world")
    f.text(0.52, 0.5, "again here")
    f.text(0.1, 0.9, "far away")
    assert fg.overlapping_texts(f) == [("hello world", "again here")]
    # 45-degree tick labels whose axis-aligned extents overlap, while the labels themselves do not
    f = Figure(figsize=(6, 4))
    ax = f.add_subplot()
    ax.set_xticks(range(8), [f"a rather long label {i}" for i in range(8)], rotation=45, ha="right")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    r = FigureCanvasAgg(f).get_renderer()
    f.canvas.draw()
    boxes = [t.get_window_extent(r) for t in ax.get_xticklabels()]
    assert any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), "the case must have overlapping extents"
    assert fg.overlapping_texts(f) == []
    ax.set_xticks(range(8), [f"a rather long label {i}" for i in range(8)], rotation=0)  # now they collide
    assert fg.overlapping_texts(f)


@pytest.mark.parametrize("n_models", [1, 2, 3, 8])
def test_error_consistency_matrix_titles_do_not_overlap(n_models):
    """The demo's case (two models, four datasets) ran each panel's title into the next one."""
    models = LITES + [f"timm:model_{i}" for i in range(n_models - 2)] if n_models >= 2 else LITES[:1]
    k = [[1.0 if i == j else 0.4 for j in range(n_models)] for i in range(n_models)]
    mats = {d: {"models": models, "kappa": k, "n": 160} for d in DEMO_SETS}
    with matplotlib.rc_context(fg.RC):
        assert fg.overlapping_texts(fc.matrix_figure(mats)) == []


def test_error_consistency_humans_figure_is_legible():
    colors = fg.palette(LITES)
    data = {d: {"models": {m: {"kappa": 0.2, "ci": [0.1, 0.3], "n": 160} for m in LITES},
                "human_human": {"kappa": 0.3, "pairs": [0.2, 0.4]}, "subjects": list(range(10))}
            for d in DEMO_SETS[:3]}
    with matplotlib.rc_context(fg.RC):
        assert fg.overlapping_texts(fc.humans_figure(data, LITES, colors)) == []


def _report_helpers():
    spec = importlib.util.spec_from_file_location("_report_helpers", Path(__file__).with_name("test_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("n_models", [2, 8])
def test_every_report_figure_is_legible(tmp_path, n_models):
    """Every figure the report draws (the fixture run has rows and artifacts for every analysis)."""
    from beyond_inet.report.html import build_context

    h = _report_helpers()
    spec = {f"timm:model_{i}.tag_{i}": (60 + 15 * i, 0.9) for i in range(n_models)}
    out = h.build_run(tmp_path / "run", spec)
    ctx, _ = build_context(out, 0.05, 100, 0)
    figs = [f for s in ctx["sections"] for f in s["figures"]]
    assert len(figs) >= len(h.FIGURES)
    bad = {f.name: f.overlaps for f in figs if f.overlaps}
    assert not bad, bad
