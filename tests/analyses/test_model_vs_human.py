"""The model-vs-human benchmark metrics against an independent implementation on the released decisions,
and against the benchmark table model-vs-human publishes (ResNet-50 in its README)."""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from beyond_inet.analyses import model_vs_human as M

RAW = "model-vs-human-raw-data"


def _short(name: str) -> str:
    """model-vs-human's image id: the last two '_' parts when the first starts with n0, else the last."""
    parts = name.split("_")
    if len(parts) == 1:
        return name
    return parts[-2] + "_" + parts[-1] if parts[-2].startswith("n0") else parts[-1]


def _canon(ds: str, c: str) -> str:
    """The released CSVs write 3 / 0.00 / false; model-vs-human's condition lists say 3.0 / 0.0 / False."""
    for want in M.CONDITIONS.get(ds, ()):
        if want.lower() == c.lower():
            return want
        try:
            if float(want) == float(c):
                return want
        except ValueError:
            pass
    return c


def _load(raw: Path, ds: str, canon: bool = True) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for f in sorted((raw / ds).glob("*.csv")):
        with open(f, newline="") as fh:
            for r in csv.DictReader(fh):
                r = {k.lower(): v for k, v in r.items()}
                if canon:
                    r["condition"] = _canon(ds, r["condition"])
                out[r["subj"]].append(r)
    return out


def _acc(rows: list[dict]) -> float:
    return sum(r["object_response"] == r["category"] for r in rows) / len(rows)


def _pair(r1: list[dict], r2: list[dict]) -> dict[str, float]:
    """The published definition, written out: accuracies, c_obs on image-matched trials, c_exp, kappa."""
    a = {_short(r["imagename"]): r["object_response"] == r["category"] for r in r1}
    b = {_short(r["imagename"]): r["object_response"] == r["category"] for r in r2}
    assert set(a) == set(b)
    p1, p2 = _acc(r1), _acc(r2)
    c_obs = sum(a[k] == b[k] for k in a) / len(a)
    c_exp = p1 * p2 + (1 - p1) * (1 - p2)
    kappa = 1.0 if c_obs == 1.0 else (c_obs - c_exp) / (1 - c_exp)
    return {"acc_diff": p1 - p2, "acc_diff_sq": (p1 - p2) ** 2, "c_obs": c_obs, "kappa": kappa}


def _cond(rows: list[dict], c: str | None) -> list[dict]:
    return rows if c is None else [r for r in rows if r["condition"] == c]


@pytest.fixture
def raw(shared_data) -> Path:
    p = shared_data / RAW
    if not p.is_dir():
        pytest.skip(f"{p} absent")
    return p


@lru_cache(maxsize=1)
def _tables(raw: Path) -> dict:
    return {ds: M.read_raw_dataset(raw, ds) for ds in M.DATASETS}


@pytest.fixture
def tables(raw):
    return _tables(raw)


def test_seventeen_datasets_released(raw):
    assert sorted(M.DATASETS) == sorted(d.name for d in raw.iterdir() if d.is_dir() and d.name != "performances")
    assert len(M.BENCHMARK_DATASETS) == 17 and set(M.BENCHMARK_DATASETS) == set(M.DATASETS)


def test_condition_and_category_parsed_from_every_released_trial_name(raw):
    """Every trial name of the 12 parametric sets (and of sketch/stylized) carries its CSV's condition and
    category, as model-vs-human's InfoMappingWithSessions reads them."""
    checked = 0
    for ds in M.PARAMETRIC + ("sketch", "stylized"):
        for obs, rows in _load(raw, ds, canon=False).items():
            for r in rows:
                cond, cat = M.parse_trial_name(r["imagename"])
                assert (cond, cat) == (r["condition"], r["category"]), (ds, obs, r["imagename"])
                assert M.trial_condition(ds, r["imagename"]) in M.CONDITIONS.get(ds, ("0",)), (ds, cond)
                checked += 1
    assert checked > 100_000
    with pytest.raises(ValueError):
        M.parse_trial_name("airplane1-bicycle2.png")


def test_image_id():
    assert M.image_id("0000_cl_s01_bw_boat_40_n02951358_5952.JPEG") == "n02951358_5952.JPEG"
    assert M.image_id("0001_s5n_s01_0_bird_00_bird3-bird2.png") == "bird3-bird2.png"
    assert M.image_id("airplane/airplane1-bicycle2.png") == "airplane1-bicycle2.png"


@pytest.mark.parametrize("model", ["resnet50", "swag_vit_h14_in1k"])
def test_per_condition_equals_independent_computation(raw, tables, model):
    """Accuracy per condition, and acc diff / c_obs / kappa averaged over subjects, on all 17 datasets."""
    for ds in M.DATASETS:
        data = _load(raw, ds)
        humans = sorted(s for s in data if s.startswith("subject-"))
        got = {(r["condition"], r["metric"]): r for r in M.per_condition(ds, tables[ds], n_boot=0)
               if r["observer"] == model}
        conds = M.CONDITIONS.get(ds, (None,))
        for c in conds:
            key = c if c is not None else M.ALL
            m = _cond(data[model], c)
            assert got[(key, "accuracy")]["value"] == pytest.approx(_acc(m), abs=1e-12)
            assert got[(key, "accuracy")]["n"] == len({_short(r["imagename"]) for r in m})
            per = [_pair(m, _cond(data[h], c)) for h in humans]
            for k in ("acc_diff", "acc_diff_sq", "c_obs", "kappa"):
                assert got[(key, k)]["value"] == pytest.approx(np.mean([p[k] for p in per]), abs=1e-12), (ds, c, k)


def _independent_benchmark(raw: Path, model: str | None, loaded: dict) -> dict[str, float]:
    """model-vs-human's benchmark tables, restated: OOD accuracy pooled over kept conditions per dataset,
    then mean over datasets; the other metrics mean over conditions, then humans (pairs), then datasets."""
    per_ds = defaultdict(list)
    for ds in M.BENCHMARK_DATASETS:
        data = loaded.setdefault(ds, _load(raw, ds))
        humans = sorted(s for s in data if s.startswith("subject-"))
        keep = M.benchmark_conditions(ds)
        conds = [None] if keep is None else list(keep)
        members = humans if model is None else [model]
        pooled = [r for s in members for r in data[s] if keep is None or r["condition"] in keep]
        per_ds["ood_accuracy"].append(_acc(pooled))
        pairs = ([(a, b) for i, a in enumerate(humans) for b in humans[i + 1:]] if model is None
                 else [(model, h) for h in humans])
        vals = [[_pair(_cond(data[a], c), _cond(data[b], c)) for c in conds] for a, b in pairs]
        for k in ("acc_diff_sq", "c_obs", "kappa"):
            per_ds[k].append(np.mean([np.mean([v[k] for v in pv]) for pv in vals]))  # conditions, then pairs
    return {k: float(np.mean(v)) for k, v in per_ds.items()}


def test_benchmark_equals_independent_computation_and_published_resnet50(raw, tables):
    rows = M.benchmark(tables, observers=["resnet50", M.HUMANS], n_boot=0)
    agg = {(r["observer"], r["metric"]): r for r in rows if r["dataset"] == M.BENCHMARK}
    loaded: dict = {}
    for obs in ("resnet50", M.HUMANS):
        ref = _independent_benchmark(raw, None if obs == M.HUMANS else obs, loaded)
        for k, v in ref.items():
            assert agg[(obs, k)]["value"] == pytest.approx(v, abs=1e-12), (obs, k)
            assert agg[(obs, k)]["n_datasets"] == 17 and agg[(obs, k)]["n"] > 0
    # model-vs-human's README: standard ResNet-50, OOD accuracy .559; accuracy difference .087,
    # observed consistency .665, error consistency .208.
    published = {"ood_accuracy": 0.559, "acc_diff_sq": 0.087, "c_obs": 0.665, "kappa": 0.208}
    for k, v in published.items():
        assert round(agg[("resnet50", k)]["value"], 3) == v, k


def test_benchmark_intervals_cover_and_do_not_depend_on_row_order(tables):
    sub = {ds: tables[ds] for ds in M.BENCHMARK_DATASETS}
    rows = M.benchmark(sub, observers=["resnet50", M.HUMANS], n_boot=200, seed=3)
    shuffled = {ds: {o: t.sample(frac=1.0, random_state=1) for o, t in obs.items()} for ds, obs in sub.items()}
    again = M.benchmark(shuffled, observers=["resnet50", M.HUMANS], n_boot=200, seed=3)
    for a, b in zip(rows, again):
        assert a["value"] == pytest.approx(b["value"], abs=1e-12)
    for r in rows:
        if r["metric"] in ("ood_accuracy", "c_obs", "kappa"):
            assert r["ci_low"] <= r["value"] <= r["ci_high"], r
        if r["metric"] in M.PAIR_METRICS:  # over subjects too, per dataset and over all 17
            assert math.isfinite(r["subject_ci_low"]) and r["subject_ci_low"] <= r["subject_ci_high"], r
        if r["metric"] == "kappa":
            assert r["subject_ci_low"] <= r["value"] <= r["subject_ci_high"], r


def test_subject_interval_never_pairs_a_subject_with_itself():
    """Pairs matrix with 1 on the diagonal (self-agreement) and 0 elsewhere: any resample's mean over
    distinct pairs is 0."""
    mat = np.eye(5)
    mat[~np.eye(5, dtype=bool)] = 0.0
    lo, hi = M.subject_ci(mat, 200, 0, pairs=True)
    assert lo == hi == 0.0


def test_decision_table_from_logits_plugs_in_like_a_released_observer(tables):
    """A model run here (16-class decisions by the paper's rule) is an observer like the released ones:
    feeding resnet50's released decisions back as logits reproduces its per-condition rows."""
    from beyond_inet.analyses.shape_bias import CATEGORIES, category_indices, decisions16

    ds = "contrast"
    ref = tables[ds]["resnet50"]
    logits = np.full((len(ref), 1000), -10.0)
    for i, resp in enumerate(ref["object_response"]):
        logits[i, list(category_indices()[resp])] = 5.0
    dec = [CATEGORIES[j] for j in decisions16(logits)]
    own = M.decision_table("mine", ds, [f"dnn/session-1/{n}" for n in ref["imagename"]], dec,
                           [M.parse_trial_name(n)[1] for n in ref["imagename"]])
    obs = {**{o: t for o, t in tables[ds].items() if M.is_human(o)}, "mine": own, "resnet50": ref}
    rows = M.per_condition(ds, obs, n_boot=0)
    a = {(r["condition"], r["metric"]): r["value"] for r in rows if r["observer"] == "mine"}
    b = {(r["condition"], r["metric"]): r["value"] for r in rows if r["observer"] == "resnet50"}
    assert a == b


def _as_outputs(ds: str, table, sample_prefix: str):
    """Stored outputs of a model whose logits make exactly the decisions of a released table."""
    from beyond_inet.analyses.shape_bias import CATEGORIES, category_indices
    from beyond_inet.contracts import Outputs

    logits = np.full((len(table), 1000), -10.0, np.float32)
    for i, resp in enumerate(table["object_response"]):
        logits[i, list(category_indices()[resp])] = 5.0
    if ds in M.CONDITIONS or ds in ("sketch", "stylized"):
        ids = [f"{sample_prefix}/{n}" for n in table["imagename"]]
    else:  # class folders: <category>/<file>
        ids = [f"{c}/{n}" for c, n in zip(table["category"], table["imagename"])]
    labels = np.array([CATEGORIES.index(c) for c in table["category"]], np.int64)
    return Outputs(ids, labels, logits, np.zeros((len(table), 1), np.float32))


def test_analysis_on_stored_outputs_reproduces_the_published_row_and_draws(raw, tables, tmp_path):
    """The registered analysis, fed stored logits that decide as the released resnet50 does on all 17
    datasets, gives the benchmark row model-vs-human publishes for ResNet-50, and its figures draw."""
    from beyond_inet.analyses.base import Context
    from beyond_inet.report import figures_mvh

    outs = {ds: _as_outputs(ds, tables[ds]["resnet50"], "session-1") for ds in M.DATASETS}
    ctx = Context(data_root=None, options={"mvh_raw_data": str(raw)}, n_boot=50, seed=0,
                  available=lambda d: d in M.DATASETS)
    res = M.ModelVsHuman().compare(ctx, ["mine"], lambda m, req: outs.get(req.dataset))
    rows = {(r.model, r.dataset, r.metric): r for r in res.rows}
    published = {"ood_accuracy": 0.559, "acc_diff_sq": 0.087, "c_obs": 0.665, "kappa": 0.208}
    for k, v in published.items():
        r = rows[("mine", "model-vs-human", k)]
        assert round(r.value, 3) == v and r.ci_low <= r.value <= r.ci_high and r.n > 10_000
    assert ("human-subjects", "model-vs-human", "kappa") in rows
    acc = rows[("mine", "contrast", "accuracy@c05")]
    ref = tables["contrast"]["resnet50"]
    assert acc.value == pytest.approx(ref[ref["condition"] == "c05"]["correct"].mean())
    arts = {(M.ModelVsHuman.name, "*", k): v for k, v in res.artifacts.items()}
    figs = figures_mvh.mvh_figures(arts, ["mine"], tmp_path, {"mine": (0.2, 0.4, 0.8)})
    assert [f.name for f in figs] == ["mvh-accuracy", "mvh-error-consistency", "mvh-benchmark", "mvh-scatter"]


def test_accuracies_equal_the_published_performances_of_all_nine_models(raw, tables):
    """model-vs-human's ``performances/<model>.csv`` (16-class top-1 over all trials of a dataset): the
    benchmark's per-dataset accuracy where nothing is excluded, the trial-weighted mean of the per-condition
    accuracies elsewhere."""
    checked = 0
    for f in sorted((raw / "performances").glob("*.csv")):
        for r in csv.DictReader(open(f, newline="")):
            if r["metric_name"] != "accuracy (top-1)":
                continue
            ds, model = r["dataset_name"], r["subj"]
            if ds not in M.DATASETS:
                continue
            tabs = {o: t for o, t in tables[ds].items() if M.is_human(o) or o == model}
            if ds in M.CONDITIONS:
                rows = [x for x in M.per_condition(ds, tabs, n_boot=0)
                        if x["observer"] == model and x["metric"] == "accuracy"]
                got = sum(x["value"] * x["n"] for x in rows) / sum(x["n"] for x in rows)
            else:
                got = next(x["value"] for x in M.benchmark({ds: tabs}, [model], n_boot=0, datasets=(ds,))
                           if x["metric"] == "ood_accuracy" and x["dataset"] == ds)
            assert got == pytest.approx(float(r["performance"]), abs=1e-9), (model, ds)
            checked += 1
    assert checked == 9 * 17


def test_a_table_with_an_image_twice_in_a_condition_is_a_skip_not_a_crash(raw, tables):
    from beyond_inet.analyses.base import Context

    t = tables["colour"]["resnet50"]
    dup = _as_outputs("colour", t.iloc[[0, 0, 1]].reset_index(drop=True), "session-1")
    ctx = Context(data_root=None, options={"mvh_raw_data": str(raw)}, n_boot=0, available=lambda d: d == "colour")
    res = M.ModelVsHuman().compare(ctx, ["m"], lambda m, req: dup)
    assert any("appears twice" in s.reason for s in res.skips)
    assert not [r for r in res.rows if r.model == "m"]


def test_published_decisions_enter_the_benchmark_as_observers(raw, tmp_path):
    """`run --decisions <model-vs-human raw data>` with no model: the released models and human subjects are
    observers of the benchmark, and its across-dataset rows equal the independent restatement of
    model-vs-human's tables (and the published ResNet-50 row)."""
    import beyond_inet

    ev = beyond_inet.evaluate(models=[], analyses=["model-vs-human"], decisions=[str(raw)], out=str(tmp_path / "o"),
                              bootstrap=1, report=False)
    got = ev.results.query("analysis == 'model-vs-human' and dataset == 'model-vs-human'")
    loaded: dict = {}
    for obs, model_col in (("resnet50", "resnet50"), (M.HUMANS, None)):
        ref = _independent_benchmark(raw, None if obs == M.HUMANS else obs, loaded)
        rows = got[got.model == model_col] if model_col else got[~got.model.isin(["resnet50"])]
        for k, v in ref.items():
            hit = rows[rows.metric.str.startswith(k)]
            assert len(hit) >= 1, (obs, k, sorted(set(got.model)), sorted(set(got.metric)))
            assert any(abs(x - v) < 1e-9 for x in hit.value), (obs, k, v, hit.value.tolist())
    assert {"bagnet33", "swag_vit_h14_in1k"} & set(got.model) or len(set(got.model)) >= 9


def test_under_limit_every_observer_is_scored_on_the_models_images(raw, tables):
    """A run with --limit decides the first images of a dataset only; the human rows (and a published model's)
    used to rest on every released trial beside it. Now every row of the dataset rests on the same trials."""
    from beyond_inet.analyses.base import Context

    ds = "contrast"
    ref = tables[ds]["resnet50"]
    part = ref.iloc[: len(ref) // 3]  # what a limited run decided (several conditions, not all images)
    outs = {ds: _as_outputs(ds, part, "session-1")}
    ctx = Context(data_root=None, options={"mvh_raw_data": str(raw)}, n_boot=20, seed=0,
                  available=lambda d: d == ds)
    res = M.ModelVsHuman().compare(ctx, ["mine"], lambda m, req: outs.get(req.dataset))
    rows = {(r.model, r.dataset, r.metric): r for r in res.rows}
    keys = set(zip(part["condition"], part["image_id"]))
    humans = [t for o, t in tables[ds].items() if M.is_human(o)]
    cut = [t[[(c, i) in keys for c, i in zip(t["condition"], t["image_id"])]] for t in humans]
    for c in M.dataset_conditions(ds, {"mine": part}):  # per condition: humans' accuracy on the models' images
        r = rows[("human-subjects", ds, f"accuracy@{c}")]
        pooled = [x[x["condition"] == c]["correct"] for x in cut]
        assert r.value == pytest.approx(float(np.concatenate(pooled).mean()))
    skip = [s.reason for s in res.skips if s.dataset == ds]
    assert any(f"decided {len(keys)} of the" in s for s in skip), skip
    # the whole dataset decided: nothing is cut, no skip line
    full = {ds: _as_outputs(ds, ref, "session-1")}
    res = M.ModelVsHuman().compare(ctx, ["mine"], lambda m, req: full.get(req.dataset))
    assert not [s for s in res.skips if s.dataset == ds and "decided" in s.reason]
