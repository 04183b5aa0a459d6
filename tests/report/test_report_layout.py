"""Report layout for 1 or 20 models: absent data said once per dataset, no model selection for one model,
alt text on every figure and headers on every table (a static check of the written page)."""
from __future__ import annotations

import importlib.util
from html.parser import HTMLParser
from pathlib import Path

import pytest

from beyond_inet.analyses.base import Skip
from beyond_inet.data.catalog import PUG_FACTORS
from beyond_inet.report import layout
from beyond_inet.report.html import build_context, write_files


def _report_helpers():
    """test_report.py's run builder, loaded by path (tests have no packages)."""
    spec = importlib.util.spec_from_file_location("_report_helpers", Path(__file__).with_name("test_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _absent_skips(models: list[str]) -> list[Skip]:
    """What a run without data records: per model, per dataset and per part."""
    skips = []
    for m in models:
        skips += [Skip("synthetic", m, f"pug-imagenet/{f}", f"dataset 'pug-imagenet/{f}': no --data-root given")
                  for f in PUG_FACTORS]
        skips += [Skip(a, m, "imagenet-val", "dataset 'imagenet-val': no --data-root given")
                  for a in ("accuracy", "calibration", "imagenet-x", "invariance")]
        skips += [Skip("robustness", m, f"imagenet-c/fog/{s}", "not found") for s in range(1, 6)]
    return skips


def test_twenty_models_get_one_line_per_missing_dataset():
    models = [f"timm:model_{i}" for i in range(20)]
    odd = Skip("shape-bias", "timm:model_3", "imagenet-r", "not found")  # absent for one model only
    real = Skip("shape-bias", "timm:model_4", "cue-conflict", "left out 'x.png': no shape label")
    missing, rest = layout.split_missing(_absent_skips(models) + [odd, real], None, models)
    assert [m.dataset for m in missing] == ["imagenet-c", "imagenet-r", "imagenet-val", "pug-imagenet"]
    by = {m.dataset: m for m in missing}
    assert by["imagenet-val"].analyses == ["accuracy", "calibration", "imagenet-x", "invariance"]
    assert by["imagenet-val"].models_text(20) == "all models"
    assert by["pug-imagenet"].analyses == ["synthetic"] and "beyond-inet download pug-imagenet" in \
        by["pug-imagenet"].how_to_get
    assert by["imagenet-r"].models == ["timm:model_3"]
    assert rest == [real]  # a skip that is not about absent data stays a skip


def test_present_data_is_not_reported_missing(tmp_path):
    (tmp_path / "imagenet-r" / "n01443537").mkdir(parents=True)
    skips = [Skip("robustness", "m", "imagenet-r", "3 unreadable images")]
    missing, rest = layout.split_missing(skips, str(tmp_path), ["m"])
    assert missing == [] and rest == skips


class _Page(HTMLParser):
    """Collects <img> alt texts and, per <table>, whether it has header cells before its first data cell."""

    def __init__(self):
        super().__init__()
        self.alts: list[str | None] = []
        self.tables: list[dict] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.alts.append(a.get("alt"))
        elif tag == "table":
            self.tables.append({"th_first": None})
        elif tag in ("th", "td") and self.tables and self.tables[-1]["th_first"] is None:
            self.tables[-1]["th_first"] = tag == "th"


def _page(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def two_model_page(tmp_path_factory):
    h = _report_helpers()
    out = h.build_run(tmp_path_factory.mktemp("two"), {"model-a": (180, 0.9), "model-b": (100, 0.99)})
    from beyond_inet.report.results import ResultsDB

    db = ResultsDB(out)
    db.add_skips(_absent_skips(["model-a", "model-b"]), "r1")
    db.close()
    ctx, _ = build_context(out, 0.05, 100, 0)
    return ctx, write_files(out, ctx).read_text()


def test_missing_data_listed_once_in_the_page(two_model_page):
    ctx, html = two_model_page
    data = html[html.index('id="data"'):html.index("</section>", html.index('id="data"'))]
    assert {m["dataset"] for m in ctx["missing_data"]} == {"imagenet-c", "imagenet-val", "pug-imagenet", "vtab"}
    assert data.count("<li>") == 4
    for name in ("pug-imagenet", "imagenet-val", "vtab", "imagenet-c"):
        assert data.count(f"<b>{name}</b>") == 1, name
    skipped = html[html.index('id="skips"'):]
    assert "pug-imagenet/Worlds" not in skipped and "imagenet-c/fog" not in skipped
    # each section that needs absent data points to the list instead of repeating it
    synth = next(s for s in ctx["sections"] if s["name"] == "synthetic")
    assert synth["skips"] == []


def test_every_figure_has_alt_text_and_every_table_headers(two_model_page):
    ctx, html = two_model_page
    page = _page(html)
    assert page.alts and all(a and len(a) > 40 for a in page.alts)  # title + caption, not a bare file name
    assert page.tables and all(t["th_first"] for t in page.tables)
    assert "model-selection" in page.ids


def test_single_model_has_no_model_selection(tmp_path):
    h = _report_helpers()
    out = h.build_run(tmp_path, {"only-model": (150, 0.8)})
    ctx, _ = build_context(out, 0.05, 100, 0)
    html = write_files(out, ctx).read_text()
    page = _page(html)
    assert "model-selection" not in page.ids and "only one model" not in html
    assert "## Model selection" not in (out / "report.md").read_text()
    assert all(a and len(a) > 40 for a in page.alts) and all(t["th_first"] for t in page.tables)
