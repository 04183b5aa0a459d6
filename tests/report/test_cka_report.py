"""The CKA section: heatmaps from the cka analysis' artifacts, model names escaped."""
from __future__ import annotations

import numpy as np

from beyond_inet.analyses.base import Row
from beyond_inet.report.figures import cka_figure, collect_cka
from beyond_inet.report.html import write_report
from beyond_inet.report.results import ResultsDB

EVIL = "<script>alert(1)</script>"


def _pair(a: str, b: str, la: int, lb: int) -> dict:
    types_a = (["block", "attn", "norm"] * la)[:la]
    types_b = (["block", "norm"] * lb)[:lb]
    m = np.clip(np.random.default_rng(0).random((la, lb)), 0, 1).round(5).tolist()
    return {"a": a, "b": b, "dataset": "imagenet-sample", "n_images": 64, "n_batches": 4, "batch_size": 16,
            "reduce": "flatten", "layers_a": [f"l{i}" for i in range(la)], "types_a": types_a,
            "layers_b": [f"m{j}" for j in range(lb)], "types_b": types_b, "cka": m, "summary": {}}


def test_heatmap_panels_per_shared_layer_type():
    fig = cka_figure(_pair("A", "B", 9, 6))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["all (9x6 layers)", "block (3x3 layers)", "norm (3x3 layers)"]  # attn: B has none
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (9, 6) and fig.axes[0].images[0].get_clim() == (0.0, 1.0)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["0", "0.25", "0.5", "0.75", "1"]  # the relative-depth scale


def test_report_draws_one_figure_per_pair_and_escapes_names(tmp_path):
    out = tmp_path / "run"
    db = ResultsDB(out)
    db.start_run("r1", "2026-01-01T00:00:00+00:00", {"models": [EVIL, "B"], "analyses": ["cka"]})
    db.add_rows([Row(EVIL, "imagenet-sample", "cka", "diag[all] vs B", 0.5, 0.4, 0.6, 64)], "r1")
    db.add_artifacts("cka", "*", {"matrices": [_pair(EVIL, EVIL, 5, 5), _pair(EVIL, "B", 5, 4)]}, "r1")
    db.finish_run("r1", "2026-01-01T00:01:00+00:00")
    db.export()
    db.close()
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "cka-07.png").write_bytes(b"stale")
    write_report(out)
    figs = sorted(p.name for p in (out / "figures").glob("cka-*.png"))
    assert figs == ["cka-01.png", "cka-02.png"]  # the stale figure of an older run is gone
    html = (out / "report.html").read_text()
    assert 'id="a-cka"' in html and "Layer-wise CKA" in html
    assert EVIL not in html and "&lt;script&gt;" in html
    assert len(collect_cka({("cka", "*", "matrices"): [_pair("B", "B", 3, 3), _pair(EVIL, "B", 3, 3)]},
                           [EVIL, "B"])) == 2
