"""The HTML / Markdown report on synthetic output folders (no model is run).

`build_run` writes rows, skips, artifacts and small stored outputs the way the pipeline does, and runs
the ``significance`` analysis on the stored outputs (as the pipeline does after all models); the
paired-test verdicts are checked on constructed cases (A clearly better than B, C identical to A).
"""
from __future__ import annotations

import hashlib
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import Row, Skip
from beyond_inet.engine.store import Store
from beyond_inet.report import verdicts as cmp
from beyond_inet.report.html import build_context, fmt, write_files, write_report
from beyond_inet.report.results import ResultsDB

N = 200
EVIL = "<script>alert(1)</script>"
FACTORS = ("pose", "background", "pattern", "color", "smaller", "shape", "partial_view", "subcategory", "texture",
           "larger", "darker", "object_blocking", "person_blocking", "style", "brighter", "multiple_objects")
CATS = ("airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog", "elephant",
        "keyboard", "knife", "oven", "truck")
SECTION_IDS = ("summary", "model-selection", "paired-tests", "a-accuracy", "a-imagenet-x", "a-shape-bias",
               "a-calibration", "a-robustness", "a-synthetic", "a-invariance", "reproducibility", "skips")
# (transfer only lacks its data in these runs: it is named once, with the data it needs, not given a section)
FIGURES = ("imagenet-x", "shape-bias", "reliability-imagenet-val", "robustness", "pug", "invariance")


def val_ids(n: int = N) -> list[str]:
    return [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, n + 1)]


def labels_for(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, n)


def conf_logits(pred: np.ndarray, conf: float | np.ndarray) -> np.ndarray:
    """Logits whose softmax puts `conf` on `pred` (all other classes at logit 0)."""
    z = np.zeros((len(pred), 1000), np.float32)
    c = np.broadcast_to(np.asarray(conf, float), pred.shape)
    z[np.arange(len(pred)), pred] = np.log(999 * c / (1 - c))
    return z


def model_logits(correct: np.ndarray, conf: float, labels: np.ndarray) -> np.ndarray:
    """Top-1 = label where `correct`, else the next class; max softmax = conf."""
    pred = np.where(correct.astype(bool), labels, (labels + 1) % 1000)
    return conf_logits(pred, conf)


def store_outputs(out: Path, db: ResultsDB, model: str, dataset: str, view: str, ids: list[str], labels: np.ndarray,
                  logits: np.ndarray) -> str:
    key = hashlib.sha256(f"{model}|{dataset}|{view}".encode()).hexdigest()[:20]
    entry = Store(out / "store").entry(key, len(ids), {"model": model, "dataset": dataset, "view": view})
    for s in range(entry.n_shards):
        pos = np.arange(entry.shard_range(s).start, entry.shard_range(s).stop)
        entry.write_shard(s, pos, [ids[i] for i in pos], labels[pos], logits[pos], np.zeros((len(pos), 4)), None, [])
    db.set_outputs(model, {(dataset, view): key})
    return key


def _row(model: str, ds: str, analysis: str, metric: str, v: float, n: int = N, half: float = 0.02) -> Row:
    return Row(model, ds, analysis, metric, v, v - half, v + half, n)


def build_run(out: Path, spec: dict[str, tuple[int, float]], skip_transfer: bool = True) -> Path:
    """A run folder: `spec` = {model: (#correct of N on imagenet-val, confidence)}.

    Stored outputs: imagenet-val (standard, scale-1, scale-2); rows and artifacts for every analysis
    (values derived from the model's accuracy); transfer skipped for all models.
    """
    db = ResultsDB(out)
    models = list(spec)
    db.start_run("r1", "2024-01-01T00:00:00+00:00",
                 {"models": models, "analyses": ["accuracy", "calibration"], "seed": 0, "n_boot": 200,
                  "data_root": None, "options": {}, "logit_scale": None,
                  "versions": {"beyond-inet": "0.1.0", "torch": "2.x"}})
    ids, labels = val_ids(), labels_for()
    rows, skips = [], []
    for k, (m, (n_correct, conf)) in enumerate(spec.items()):
        correct = np.arange(N) < n_correct
        acc = n_correct / N
        logits = model_logits(correct, conf, labels)
        for view in ("standard", "scale-1", "scale-2"):
            store_outputs(out, db, m, "imagenet-val", view, ids, labels, logits)
        db.set_model_info(m, {"spec": m, "weights": f"sha-{k:04d}", "preprocessing": "Resize(256) CenterCrop(224)",
                              **({"logit_scale": 100.0} if k == 0 else {})})
        v, lo, hi = stats.mean_ci(correct.astype(float), 200, 0)
        rows += [Row(m, "imagenet-val", "accuracy", "top1", v, lo, hi, N),
                 _row(m, "imagenet-val", "accuracy", "top5", min(1.0, acc + 0.05)),
                 _row(m, "imagenet-val", "calibration", "ece", abs(conf - acc)),
                 _row(m, "imagenet-r", "calibration", "ece", abs(conf - acc) / 2),
                 _row(m, "imagenet-val", "imagenet-x", "error_ratio_mean", 1 + (1 - acc)),
                 _row(m, "cue-conflict", "shape-bias", "shape_bias", 0.2 + 0.1 * k),
                 _row(m, "variants", "robustness", "top1_avg", acc * 0.6),
                 _row(m, "pug-imagenet", "synthetic", "top1_avg_any", acc * 0.5),
                 _row(m, "imagenet-val", "invariance", "top1_scale_1", acc),
                 _row(m, "imagenet-val", "invariance", "top1_scale_2", acc),
                 _row(m, "imagenet-val", "invariance", "top1_mean_scale", acc)]
        rows += [_row(m, "imagenet-val", "imagenet-x", f"error_ratio_{f}", 0.8 + 0.05 * j + 0.1 * k)
                 for j, f in enumerate(FACTORS)]
        rows += [_row(m, "cue-conflict", "shape-bias", f"shape_bias_{c}", (0.1 + 0.05 * j + 0.05 * k) % 1)
                 for j, c in enumerate(CATS)]
        rows += [_row(m, d, "robustness", "top1", acc * f) for d, f in
                 (("imagenet-val", 1.0), ("imagenet-v2", 0.8), ("imagenet-a", 0.3), ("imagenet-r", 0.5))]
        rows += [_row(m, f"pug-imagenet/{f}", "synthetic", "top1_any", acc * w) for f, w in
                 (("Worlds", 0.6), ("Camera_Yaw", 0.5), ("Scene_Light", 0.4))]
        counts = np.zeros(15, int)
        counts[int(math.ceil(conf * 15)) - 1] = N
        db.add_artifacts("calibration", m, {"reliability/imagenet-val": {
            "edges": np.linspace(0, 1, 16).tolist(), "accuracy": [acc if c else None for c in counts],
            "confidence": [conf if c else None for c in counts], "count": counts.tolist(),
            "fraction": (counts / N).tolist(), "ece": abs(conf - acc), "top1": acc, "n": N}}, "r1")
        db.add_artifacts("shape-bias", m, {
            "shape-bias/per-category": {"categories": list(CATS), "overall": 0.2 + 0.1 * k,
                                        "shape_bias": [(0.1 + 0.05 * j + 0.05 * k) % 1 for j in range(16)]},
            "shape-bias/human": {"shape_bias_mean": 0.96, "shape_bias_per_category": {c: 0.95 for c in CATS}}}, "r1")
        db.add_artifacts("invariance", m, {"invariance/scale": {"x": [1.0, 2.0], "top1": [acc, acc], "n": N}}, "r1")
        if skip_transfer:
            skips.append(Skip("transfer", m, "vtab", "no VTAB tasks present under the data root"))
        skips.append(Skip("robustness", m, "imagenet-c", "imagenet-c not available (no corruption parts)"))
    db.add_rows(rows, "r1")
    db.add_skips(skips, "r1")
    if len(models) >= 2:
        run_significance(db, out, models, "r1")
    db.finish_run("r1", "2024-01-01T00:01:00+00:00")
    db.close()
    return out


def run_significance(db: ResultsDB, out: Path, models: list[str], run_id: str,
                     analyses=("accuracy", "calibration", "invariance")) -> None:
    """The pipeline's cross-model step: the significance analysis on the stored outputs."""
    from beyond_inet.analyses import Context, get_analysis, load_builtin
    from beyond_inet.pipeline import cross_fetch

    load_builtin()
    keys: dict[str, dict] = {}
    for (m, d, v), k in db.output_keys().items():
        keys.setdefault(m, {})[(d, v)] = k
    ctx = Context(None, options={"invariance_scales": [1, 2], "invariance_shifts": [], "invariance_resolutions": []},
                  available=lambda n: n == "imagenet-val", seed=0, n_boot=200, analyses=tuple(analyses))
    res = get_analysis("significance").compare(ctx, models, cross_fetch(Store(out / "store"), keys))
    db.add_rows(res.rows, run_id)
    db.add_skips(res.skips, run_id)
    db.add_artifacts("significance", "*", res.artifacts, run_id)


THREE = {"model-a": (180, 0.9), "model-b": (100, 0.99), "model-c": (180, 0.9)}


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> tuple[Path, str, dict]:
    out = build_run(tmp_path_factory.mktemp("three"), THREE)
    ctx, _ = build_context(out, 0.05, None, None)
    return out, write_files(out, ctx).read_text(), ctx


def test_every_section_and_figure_present(three):
    out, html, _ = three
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in html, sid
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
        assert f'id="fig-{name}"' in html
    assert html.count("data:image/png;base64,") == len(FIGURES)
    md = (out / "report.md").read_text()
    for h in ("## Summary", "## Model selection", "## Which differences are real", "## Reproducibility",
              "### Skipped analyses"):
        assert h in md
    assert "src=\"http" not in html and "<link" not in html and "<script" not in html  # self-contained, no JS


def test_skipped_analysis_is_said_in_place_of_its_figure(three):
    _, html, ctx = three
    assert "transfer" not in [s["name"] for s in ctx["sections"]] and 'id="a-transfer"' not in html
    assert {"name": "transfer", "title": "Transfer (VTAB)", "needs": ["vtab"]} in ctx["blocked"]
    vtab = next(m for m in ctx["missing_data"] if m["dataset"] == "vtab")  # said once, for every model
    assert vtab["analyses"] == ["transfer"] and vtab["models"] == "all models"
    assert "beyond-inet download vtab" in html
    assert "VTAB avg" in ctx["missing"]


def test_verdicts_on_constructed_cases(three):
    _, html, ctx = three
    out = three[0]
    db = ResultsDB(out)
    comps, settings = cmp.comparisons(db.artifacts())
    db.close()
    assert settings["n_boot"] == 200
    top1 = comps[("accuracy", "imagenet-val", "top1")]
    assert top1.test == "mcnemar" and top1.n == N
    ab = top1.pair("model-a", "model-b")
    assert ab.verdict == "model-a > model-b" and (ab.n01, ab.n10) == (80, 0)
    assert ab.p == pytest.approx(2 * 0.5 ** 80)  # binomtest(80, 80, 0.5)
    assert top1.pair("model-a", "model-c").verdict == cmp.NO_DIFF
    assert top1.pair("model-b", "model-c").verdict == "model-c > model-b"
    # ECE from the stored logits: A calibrated (0.9 conf, 90% right), B over-confident.
    ece = comps[("calibration", "imagenet-val", "ece")]
    assert ece.test == "bootstrap"
    ab = ece.pair("model-a", "model-b")
    assert ab.value_a == pytest.approx(0.0, abs=1e-6) and ab.value_b == pytest.approx(0.49, abs=1e-6)
    assert ab.verdict == "model-a > model-b"  # lower ECE is better
    assert ece.pair("model-a", "model-c").verdict == cmp.NO_DIFF
    assert ece.pair("model-a", "model-c").p == 1.0
    # The invariance sweep mean is a declared metric: every image one unit across its views.
    inv = comps[("invariance", "imagenet-val", "top1_mean_scale")]
    assert inv.pair("model-a", "model-b").value_a == pytest.approx(0.9)
    # Shown in the page: verdict text and the model-selection line.
    assert "model-a &gt; model-b" in html
    sel = next(s for s in ctx["selection"] if s["title"] == "Top-1")
    assert sorted(sel["tied"]) == ["model-a", "model-c"]
    assert "Holm-corrected" in html and "α = 0.05" in html


def test_too_few_units_are_flagged_and_never_best(tmp_path):
    """A random-weight model must not win "best shape bias" from 3 decisions."""
    out = build_run(tmp_path, THREE)
    db = ResultsDB(out)
    db.add_rows([Row("model-b", "cue-conflict", "shape-bias", "shape_bias", 1.0, 1.0, 1.0, 3)], "r1")
    db.close()
    ctx, _ = build_context(out, 0.05, 100, 0)
    col = next(c for c in ctx["columns"] if c["prop"].key == "shape_bias")
    assert col["cells"]["model-b"]["too_few"] and "too few" in col["cells"]["model-b"]["text"]
    assert not col["cells"]["model-b"]["best"]
    assert col["cells"]["model-c"]["best"]  # the best among models resting on enough decisions
    html = write_files(out, ctx).read_text()
    assert "too few" in html and "too few" in (out / "report.md").read_text()
    section = next(s for s in ctx["sections"] if s["name"] == "shape-bias")
    line = next(ln for ln in section["table"]["lines"] if ln["metric"] == "shape_bias")
    cells = dict(zip(section["table"]["models"], line["cells"]))
    assert "too few: n=3" in cells["model-b"]["text"] and "too few" not in cells["model-a"]["text"]


def test_ece_column_is_named_after_the_dataset_measured(tmp_path):
    """"ECE IN-1K" only when computed on ImageNet val; the 1000-image sample set is named as such."""
    out = build_run(tmp_path, {"m1": (150, 0.8), "m2": (120, 0.8)})
    ctx, _ = build_context(out, 0.05, 100, 0)
    assert "ECE IN-1K" in [c["title"] for c in ctx["columns"]]
    db = ResultsDB(out)
    db.con.execute("UPDATE results SET dataset = 'imagenet-sample' WHERE analysis = 'calibration' "
                   "AND dataset = 'imagenet-val'")
    db.con.commit()
    db.close()
    ctx, _ = build_context(out, 0.05, 100, 0)
    col = next(c for c in ctx["columns"] if c["prop"].key == "ece_in1k")
    assert col["dataset"] == "imagenet-sample"
    assert col["title"] != "ECE IN-1K" and col["title"].startswith("ECE IN-1K sample")
    assert "ECE IN-1K sample" in write_files(out, ctx).read_text()


def test_best_is_marked_in_the_right_direction(three):
    _, _, ctx = three
    cols = {c["prop"].key: c for c in ctx["columns"]}
    assert cols["ece_in1k"]["cells"]["model-a"]["best"]  # ECE 0.0 vs 0.49: lower wins
    assert not cols["ece_in1k"]["cells"]["model-b"]["best"]
    assert cols["imagenet_x"]["cells"]["model-a"]["best"]  # error ratio 1.1 vs 1.5: lower wins
    assert cols["shape_bias"]["cells"]["model-c"]["best"]  # 0.4 is the largest shape bias: higher wins
    assert cols["top1"]["cells"]["model-a"]["best"] and cols["top1"]["cells"]["model-c"]["tied"]
    assert cols["top1"]["cells"]["model-a"]["text"].startswith("90.0 [")  # percent with its 95% CI


def test_mcnemar_p_equals_binomtest_on_handmade_discordant_counts():
    from scipy.stats import binomtest

    a = np.array([1] * 15 + [0] * 5 + [1] * 30 + [0] * 10, float)
    b = np.array([0] * 15 + [1] * 5 + [1] * 30 + [0] * 10, float)
    ids = val_ids(len(a))
    decl = [stats.mean_metric("imagenet-val", "top1", c, ids) for c in (a, b)]
    p = stats.paired(["A", "B"], decl)[0]
    assert p.test == "mcnemar" and (p.n01, p.n10) == (15, 5)
    assert p.p == pytest.approx(binomtest(15, 20, 0.5).pvalue)
    assert p.p_holm == pytest.approx(p.p)  # one pair: Holm changes nothing
    assert stats.verdict(p, 0.05, True) == "A > B"  # p = 0.041 < 0.05


def test_malicious_names_are_text(tmp_path):
    spec = {EVIL: (150, 0.8), "fine-model": (120, 0.8), "$x^2$_under": (60, 0.7)}
    out = build_run(tmp_path, spec)
    db = ResultsDB(out)
    db.add_skips([Skip("calibration", EVIL, "<b>imagenet-r</b>", 'reason with <img src=x onerror="alert(2)">')], "r1")
    db.close()
    html = Path(write_report(out)).read_text()
    assert EVIL not in html and "<img src=x" not in html and "<b>imagenet-r</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "onerror" not in re.sub(r"&[a-z#0-9]+;", "", html.replace("onerror=&#34;", "")) or \
        'onerror="' not in html
    md = (out / "report.md").read_text()
    assert EVIL not in md and "<img" not in md and "&lt;script&gt;" in md
    for svg in (out / "figures").glob("*.svg"):
        root = ET.parse(svg).getroot()  # well-formed XML
        assert not [e for e in root.iter() if e.tag.split("}")[-1].lower() in ("script", "foreignobject")]
        text = svg.read_text()
        assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (out / "figures" / "robustness.svg").read_text()


def test_eight_models_render(tmp_path):
    spec = {f"timm:model_number_{i}.with_a_long_pretrained_tag": (60 + 15 * i, 0.9) for i in range(8)}
    out = build_run(tmp_path, spec)
    ctx, _ = build_context(out, 0.05, 100, 0)
    html = write_files(out, ctx).read_text()
    assert len(set(ctx["colors"].values())) == 8
    top1 = next(t for t in ctx["tests_head"] if t["metric"] == "top1")
    assert len(top1["pairs"]) == 28
    summary = html[html.index('id="summary"'):html.index('id="model-selection"')]
    assert summary.count("<tr>") == 9  # header + 8 models
    assert 'class="fit"' in summary  # shares the width (tests/report/test_browser.py: no sideways scrolling)
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").exists()


def test_single_model_report(tmp_path):
    out = build_run(tmp_path, {"only-model": (150, 0.8)})
    html = Path(write_report(out)).read_text()
    assert "a single model has nothing to be compared with" in html
    assert "only one model has this property" not in html and 'id="model-selection"' not in html
    assert "★" not in html.split('id="summary"')[1].split("</table>")[0]  # nothing to be best against
    assert (out / "figures" / "invariance.png").exists()


def test_report_needs_no_store(tmp_path):
    """The paired tests are results in the database: the report renders them with the store deleted."""
    out = build_run(tmp_path, THREE)
    import shutil

    shutil.rmtree(out / "store")
    ctx, _ = build_context(out, 0.05, 100, 0)
    assert any(t["metric"] == "top1" for t in ctx["tests_head"])
    col = next(c for c in ctx["columns"] if c["prop"].key == "inv_scale")
    assert col["cells"]["model-a"]["text"].startswith("90.0 [")


def test_report_with_real_analyses(tmp_path):
    """The report on rows and artifacts the analyses themselves compute from stored outputs."""
    from beyond_inet.analyses import Context, Request, get_analysis, load_builtin

    load_builtin()
    db = ResultsDB(tmp_path)
    db.start_run("r", "2024-01-01T00:00:00+00:00", {"models": ["good", "bad"], "seed": 0, "n_boot": 100})
    ids, labels = val_ids(), labels_for()
    outs = {}
    for m, (n_ok, conf) in {"good": (170, 0.85), "bad": (110, 0.97)}.items():
        lg = model_logits(np.arange(N) < n_ok, conf, labels)
        keys = {}
        for view in ("standard", "scale-1", "scale-2"):
            keys[("imagenet-val", view)] = store_outputs(tmp_path, db, m, "imagenet-val", view, ids, labels, lg)
        outs[m] = keys
    ctx = Context(data_root=None, options={"invariance_scales": [1, 2], "invariance_shifts": [],
                                           "invariance_resolutions": []},
                  available=lambda n: n == "imagenet-val", seed=0, n_boot=100)
    store = Store(tmp_path / "store")
    for m, keys in outs.items():
        def fetch(req: Request, keys=keys):
            k = keys.get((req.dataset, req.view))
            return store.existing(k).load() if k else None

        for name in ("accuracy", "calibration", "invariance"):
            try:
                a = get_analysis(name)
            except Exception:
                continue
            res = a.compute(ctx, m, fetch)
            db.add_rows(res.rows, "r")
            db.add_skips(res.skips, "r")
            db.add_artifacts(a.name, m, res.artifacts, "r")
    run_significance(db, tmp_path, ["good", "bad"], "r")
    rows = db.rows()
    db.close()
    assert rows
    ctx_r, _ = build_context(tmp_path, 0.05, 100, 0)
    html = write_files(tmp_path, ctx_r).read_text()
    heads = {(t["analysis"], t["dataset"], t["metric"]): t for t in ctx_r["tests_head"]}
    others = [t for _, ts in ctx_r["tests_other"] for t in ts]
    assert heads and others
    # The tests' values are the rows' values: one scoring rule.
    by_key = {(r.analysis, r.dataset, r.metric, r.model): r.value for r in rows}
    for t in list(heads.values()) + others:
        for p in t["pairs"]:
            assert p["va"] == fmt(by_key[(t["analysis"], t["dataset"], t["metric"], p["a"])], t["metric"])
    if ("accuracy", "imagenet-val", "top1") in heads:
        assert heads[("accuracy", "imagenet-val", "top1")]["pairs"][0]["verdict"] == "good > bad"
    if any(r.analysis == "calibration" for r in rows):
        assert (tmp_path / "figures" / "reliability-imagenet-val.png").exists()
        assert 'id="fig-reliability-imagenet-val"' in html


def test_reproducibility_block_states_options_in_effect():
    """The PUG rule (and every other option of the analyses run) is stated even when left at its default."""
    import json

    from beyond_inet.report.html import _options_in_effect

    (label, text), = _options_in_effect({"analyses": ["synthetic", "accuracy"], "options": {}})
    shown = json.loads(text)
    assert label == "options in effect" and shown["pug_rule"] == "any" and "probe" not in shown
    (_, text), = _options_in_effect({"analyses": ["synthetic"], "options": {"pug_rule": "paper"}})
    assert json.loads(text)["pug_rule"] == "paper"


# ---------------------------------------------------------------------------------------------- one rule
CHANCE = {"model-a": (180, 0.99), "model-c": (170, 0.9), "net@random": (0, 0.001)}  # random: 0% top-1, ECE 0.001


def test_a_model_at_chance_is_never_picked_best(tmp_path):
    """Issue 18: a random-weight network (0% top-1, uniform softmax: ECE 0.001) was recommended as the
    best-calibrated model. At chance on a dataset it is 'not a usable model here' and never best there; on a
    dataset without its own top-1 (cue-conflict) its ImageNet top-1 decides."""
    out = build_run(tmp_path, CHANCE)
    ctx, _ = build_context(out, 0.05, 100, 0)
    cols = {c["prop"].key: c for c in ctx["columns"]}
    # the old pick: lowest ECE (IN-1K and IN-R), highest shape bias (0.2 + 0.1 k) went to the random net
    for key in ("ece_in1k", "ece_inr", "shape_bias"):
        cell = cols[key]["cells"]["net@random"]
        assert not cell["best"] and not cell["tied"] and "not a usable model here" in cell["text"], key
    assert cols["ece_in1k"]["cells"]["model-c"]["best"]  # ECE 0.0 at 90%: the best usable one
    assert cols["shape_bias"]["cells"]["model-c"]["best"]
    for c in cols.values():
        assert c["choice"].best != "net@random" and "net@random" not in c["choice"].tied
    for s in ctx["selection"]:
        assert s["best"] != "net@random" and "net@random" not in s["tied"], s
    ece = next(s for s in ctx["selection"] if s["title"] == "ECE IN-1K")
    assert "net@random left out (not a usable model here" in ece["text"]
    # no paired verdict it wins is shown or coloured (ECE: 0.001 vs 0.09, significant); losing ones stay
    wins = 0
    for t in ctx["tests_head"]:
        for p in t["pairs"]:
            if "net@random" in (p["a"], p["b"]):
                assert not p["verdict"].startswith("net@random >"), p
                wins += p["verdict"] == "no verdict (net@random: not a usable model here)"
                assert not (p["significant"] and p["verdict"].startswith("no verdict"))
    assert wins >= 1
    top1 = next(t for t in ctx["tests_head"] if t["metric"] == "top1")
    assert any(p["verdict"] == "model-a > net@random" and p["significant"] for p in top1["pairs"])
    html = write_files(out, ctx).read_text()
    summary = html[html.index('id="summary"'):html.index('id="paired-tests"')]
    assert re.search(r'<td class="num best[^"]*"[^>]*>[^<]*not a usable', summary) is None
    assert "not a usable model here" in (out / "report.md").read_text()


def test_chance_level_rule():
    """CI reaching down to 1/K (K by dataset) marks chance; a weak but real model (3% on ImageNet-A) is usable."""
    rows = [Row("rand", "imagenet-val", "accuracy", "top1", 0.001, 0.0, 0.003, 50000),
            Row("weak", "imagenet-a", "robustness", "top1", 0.0305, 0.0267, 0.0344, 7500),
            Row("weak", "imagenet-val", "accuracy", "top1", 0.748, 0.744, 0.752, 50000),
            Row("coin", "imagenet-r", "robustness", "top1", 0.006, 0.004, 0.008, 30000),  # chance 1/200 = 0.5%
            Row("few", "imagenet-val", "accuracy", "top1", 1 / 3, 0.0, 1.0, 3)]
    st = cmp.Standing(cmp.RowIndex.build(rows))
    assert st.at_chance("rand", "imagenet-val") and st.at_chance("rand", "cue-conflict")  # ImageNet fallback
    assert st.at_chance("weak", "imagenet-a") is None and st.at_chance("weak", "cue-conflict") is None
    assert "0.5%" in st.at_chance("coin", "imagenet-r")
    assert st.at_chance("few", "imagenet-val")  # 3 images cannot rule chance out
    assert st.at_chance("unknown", "imagenet-val") is None  # nothing to judge by


def _comparison(n_test: int, key=("shape-bias", "cue-conflict", "shape_bias")) -> cmp.Comparison:
    c = cmp.Comparison(*key, True, "bootstrap", n_test, "fraction", ["A", "B"])
    c.pairs.append(cmp.Pair("A", "B", 0.6, 0.2, 0.4, 0.3, 0.5, 0.001, 0.001, "A > B", "A", n=n_test))
    return c


@pytest.mark.parametrize("n_a, n_b, n_test, shown", [
    (800, 800, 800, True), (800, 3, 800, False), (3, 800, 800, False), (800, 800, 12, False)])
def test_no_verdict_rests_on_a_too_few_value(n_a, n_b, n_test, shown):
    """A significant paired test is shown (and coloured) only when neither value nor the test itself is too few."""
    rows = [Row("A", "cue-conflict", "shape-bias", "shape_bias", 0.6, 0.55, 0.65, n_a),
            Row("B", "cue-conflict", "shape-bias", "shape_bias", 0.2, 0.15, 0.25, n_b),
            *(Row(m, "imagenet-val", "accuracy", "top1", 0.75, 0.74, 0.76, 50000) for m in "AB")]
    c = _comparison(n_test)
    cmp.Standing(cmp.RowIndex.build(rows)).withhold([c])
    p = c.pairs[0]
    assert (p.winner == "A") is shown and (p.verdict == "A > B") is shown
    if not shown:
        assert p.verdict.startswith("no verdict") and "too few" in p.verdict


def test_too_few_paired_verdict_is_not_green_in_the_page(tmp_path):
    """The report's case: model-b's shape bias rests on 3 decisions, and a stored test calls A significantly
    better; the page shows no verdict and no green for it."""
    out = build_run(tmp_path, THREE)
    db = ResultsDB(out)
    db.add_rows([Row("model-b", "cue-conflict", "shape-bias", "shape_bias", 0.1, 0.0, 0.3, 3)], "r1")
    art = db.artifacts()[("significance", "*", "significance/tests")]
    art["tests"].append({"analysis": "shape-bias", "dataset": "cue-conflict", "metric": "shape_bias",
                         "a": "model-a", "b": "model-b", "value_a": 0.2, "value_b": 0.1, "diff": 0.1, "ci_low": 0.05,
                         "ci_high": 0.15, "p": 0.001, "p_holm": 0.001, "n": 200, "test": "bootstrap",
                         "higher_is_better": True, "unit": "fraction"})
    db.add_artifacts("significance", "*", {"significance/tests": art}, "r1")
    db.close()
    ctx, _ = build_context(out, 0.05, 100, 0)
    t = next(t for t in ctx["tests_head"] if t["metric"] == "shape_bias")
    p = next(p for p in t["pairs"] if {p["a"], p["b"]} == {"model-a", "model-b"})
    assert not p["significant"] and "too few" in p["verdict"]
    html = write_files(out, ctx).read_text()
    assert '<td class="muted">no verdict (model-b too few: n=3)</td>' in html
    assert "| no verdict (model-b too few: n=3) |" in (out / "report.md").read_text()


def test_chance_level_of_a_users_folder_is_its_own():
    """A 3-class folder of one's own: a probe at 36% [25, 47] is at chance (1/3), not 'usable' against 1/1000;
    an unbalanced folder's probe is judged against its largest class (60%); a 5-class ImageNet-subset folder
    judges top-1 against 1/5 from the run's n_classes row."""
    rows = [Row("m", "mine", "accuracy", "probe_top1", 0.36, 0.25, 0.47, 90),
            Row("m", "mine", "accuracy", "n_classes", 3.0, n=90),
            Row("m", "mine", "accuracy", "probe_chance", 1 / 3, n=90),
            Row("m", "skewed", "accuracy", "probe_top1", 0.66, 0.57, 0.75, 100),
            Row("m", "skewed", "accuracy", "n_classes", 3.0, n=100),
            Row("m", "skewed", "accuracy", "probe_chance", 0.6, n=100),
            Row("good", "skewed", "accuracy", "probe_top1", 0.9, 0.84, 0.95, 100),
            Row("good", "skewed", "accuracy", "probe_chance", 0.6, n=100),
            Row("m", "dogs", "accuracy", "top1", 0.24, 0.16, 0.33, 100),
            Row("m", "dogs", "accuracy", "n_classes", 5.0, n=100)]
    st = cmp.Standing(cmp.RowIndex.build(rows))
    assert "33.3%" in st.at_chance("m", "mine")
    assert "60%" in st.at_chance("m", "skewed") and st.at_chance("good", "skewed") is None
    assert "20%" in st.at_chance("m", "dogs")
