"""Done-when test of the bare-clone demo: clone this repository's HEAD into a temporary folder with no
``../shared`` beside it, run `beyond-inet demo` there with no data root, and read what it wrote."""
from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
MODELS = ("packaged:efficientnet_lite0", "packaged:efficientnet_lite1")


@pytest.fixture(scope="module")
def bare_demo(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    base = tmp_path_factory.mktemp("bare")
    clone = base / "beyond-inet"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    assert not (base / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("BEYOND_INET_SHARED_DATA", "BEYOND_INET_DATA")}
    env["PYTHONPATH"] = str(clone / "src")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "beyond_inet", "demo", "--out", str(base / "out")], cwd=clone, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"bare-clone demo: {time.monotonic() - t0:.0f} s")
    return base / "out"


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_bare_clone_demo_shows_shape_bias_on_real_data(bare_demo):
    rows = _rows(bare_demo)
    for m in MODELS:
        sb = [r for r in rows if r["model"] == m and r["analysis"] == "shape-bias" and r["dataset"] == "cue-conflict"
              and r["metric"] == "shape_bias"]
        assert len(sb) == 1 and int(sb[0]["n"]) >= 100 and 0 <= float(sb[0]["value"]) <= 1
        for ds in ("edge", "silhouette"):
            assert any(r["model"] == m and r["dataset"] == ds and r["metric"] == "acc16" for r in rows)
        assert any(r["model"] == m and r["metric"] == "kappa_humans" and r["dataset"] == "cue-conflict" for r in rows)
    assert any(r["model"] == "human-subjects" and r["metric"] == "kappa_humans" for r in rows)
    con = sqlite3.connect(bare_demo / "results.sqlite")
    human = [json.loads(d) for (d,) in con.execute("SELECT data FROM artifacts WHERE name='shape-bias/human'")]
    con.close()
    assert human and human[0]["n_trials_cue-conflict"] == 1600


def test_bare_clone_demo_has_no_contradicting_top1(bare_demo):
    top1 = defaultdict(dict)
    for r in _rows(bare_demo):
        if r["metric"] in ("top1", "top1_scale_1", "top1_shift_0"):
            top1[(r["model"], r["dataset"])][r["analysis"] + ":" + r["metric"]] = float(r["value"])
    for key, vals in top1.items():
        assert max(vals.values()) - min(vals.values()) < 1e-9, (key, vals)


def test_bare_clone_report_lists_absent_data_once_and_says_small_samples(bare_demo):
    html = (bare_demo / "report.html").read_text()
    data = html[html.index('id="data"'):html.index("</section>", html.index('id="data"'))]
    for ds in ("imagenet-val", "imagenet-r", "pug-imagenet", "vtab"):
        assert data.count(f"<b>{ds}</b>") == 1, ds
    assert "beyond-inet download imagenet-val" in data
    assert "Read from the package's bundled copy" in data
    skipped = html[html.index('id="skips"'):]
    assert "no --data-root given" not in skipped
    assert "fewer than 30" in html  # the shape-bias per-category points rest on 10 images each, and say so
    for name in ("shape-bias", "error-consistency-matrix", "error-consistency-humans"):
        assert (bare_demo / "figures" / f"{name}.png").exists(), name
