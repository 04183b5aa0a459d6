"""The report says one number for one thing: the row count is results.csv's, a dataset has one image count
(``figures.images_scored``) wherever a header or caption names it, and only analyses with something to show
get a section (one asked for but lacking data is named once, with the data it needs)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from beyond_inet.report.figures import images_scored
from beyond_inet.report.html import build_context, write_files
from beyond_inet.report.results import ResultsDB


def _report_helpers():
    spec = importlib.util.spec_from_file_location("_report_helpers", Path(__file__).with_name("test_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    h = _report_helpers()
    out = h.build_run(tmp_path_factory.mktemp("counts"), h.THREE)
    ctx, _ = build_context(out, 0.05, None, None)
    page = write_files(out, ctx).read_text()
    return out, ctx, page, (out / "report.md").read_text()


def test_row_count_is_the_results_tables(run):
    """results.csv holds every row (the paired tests' too); the page and report.md say that number."""
    out, ctx, page, md = run
    db = ResultsDB(out)
    try:
        n = len(db.rows())
        db.export()
    finally:
        db.close()
    assert n == len((out / "results.csv").read_text().strip().splitlines()) - 1
    assert ctx["n_rows"] == n
    assert f"{n} result rows" in md and re.search(rf"\b{n} result rows", page)


def test_one_image_count_per_dataset(run):
    """Every "n = N images" and "of the N images" a paired-test header says for a dataset is that dataset's one
    count of scored images; no title carries a fixed count such as "(1000 imgs)"."""
    out, ctx, page, md = run
    scored = images_scored(ResultsDB(out).rows())
    seen = 0
    for t in ctx["tests_head"] + [v for _, vs in ctx["tests_other"] for v in vs]:
        said = [int(x) for x in re.findall(r"(?:n = (\d+) images|of the (\d+) images)", t["n_text"])[0] if x]
        assert said[-1] == scored[t["dataset"]], (t["label"], t["n_text"])
        seen += 1
    assert seen
    assert "imgs)" not in page and "imgs)" not in md
    # the shape-bias caption: the dataset's one count, and each model's own number of decisions (its row's n)
    cap = next(f.caption for s in ctx["sections"] for f in s["figures"] if f.name == "shape-bias")
    rows = [r for r in ResultsDB(out).rows() if r.analysis == "shape-bias" and r.metric == "shape_bias"
            and r.dataset == "cue-conflict"]
    assert rows and f"of the {scored['cue-conflict']} cue-conflict images scored" in cap, cap
    for r in rows:
        assert f"{r.n} ({r.model})" in cap, cap


def test_header_does_not_deny_the_run(run):
    _, _, page, _ = run
    assert "no model was run" not in page


def test_only_analyses_with_results_get_sections(tmp_path):
    """A run asking for shape-bias only: no section for the nine analyses nobody asked for."""
    h = _report_helpers()
    out = h.build_run(tmp_path / "run", h.THREE)
    db = ResultsDB(out)
    try:  # keep only the shape-bias rows, as a run of that one analysis leaves them
        db.con.execute("DELETE FROM results WHERE analysis NOT IN ('shape-bias', 'significance')")
        db.con.execute("DELETE FROM skips")
        db.con.execute("DELETE FROM artifacts WHERE analysis NOT IN ('shape-bias', 'significance')")
        db.con.commit()
    finally:
        db.close()
    ctx, _ = build_context(out, 0.05, None, None)
    page = write_files(out, ctx).read_text()
    assert [s["name"] for s in ctx["sections"]] == ["shape-bias"]
    assert page.count('<section id="a-') == 1 and "This analysis was not run" not in page
    assert 'href="#a-calibration"' not in page


def test_no_text_points_to_a_place_only_developers_know(run):
    """The page, the option help and the dataset sources name places a user can act on (a command, a URL,
    a folder under their data root), never "the shared data" of this project's development machines."""
    from beyond_inet import registry
    from beyond_inet.data import catalog

    _, _, page, md = run
    for text in (page, md, registry.markdown_table(), *(e.source for e in catalog.ENTRIES.values())):
        assert "shared data" not in text.lower(), text[:200]
