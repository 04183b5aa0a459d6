"""Shape vs texture bias on the cue-conflict set (model-vs-human protocol), plus edge/silhouette.

Protocol (Geirhos et al.; Beyond-INet paper-spec §2.2):
  * softmax over the 1000 ImageNet logits;
  * each of the 16 categories is scored by the *mean* probability of its ImageNet classes
    (model-vs-human ``ImageNetProbabilitiesTo16ClassesMapping``; the mapping ships with this package
    as ``data/assets/mvh_16class_indices.json``); the decision is the best-scoring category;
  * the shape category is the image's label (its folder), the texture category is parsed from the file
    name ``<shape>N-<texture>M.png``; images whose shape == texture (80 of 1280) are dropped;
  * shape_bias = #shape decisions / (#shape decisions + #texture decisions), overall and per shape category.

Rows (dataset ``cue-conflict``): ``shape_bias``, ``shape_bias_<category>``, ``shape_acc`` and ``texture_acc``
(fractions of the conflict images decided as their shape / texture), ``acc16_no_conflict`` (16-class accuracy
on the shape == texture images). Datasets ``edge`` and ``silhouette``: ``acc16``.

The same metric code recomputes shape bias from published decision CSVs (`shape_bias_from_decisions`) and
gives human reference values from model-vs-human's raw data (`human_reference`).

Published observers (``--decisions``; `beyond_inet.contracts.Observer`) get the same rows from their
decisions (`declare_observer`: ``object_response`` is the decision, ``category`` the shape, the texture is
parsed from ``imagename``; a human's "na" is neither shape nor texture). Human subjects are also aggregated
as model-vs-human aggregates them: each subject's shape bias, then the mean over subjects (rows of observer
``humans``; `declare_group`), per category the same way.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import (LOGITS, Analysis, AnalysisResult, Context, Fetch, Metric, Observer, Request,
                                       Skip,
                                       register_analysis)
from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import CUE_CONFLICT_CATEGORIES

CATEGORIES: tuple[str, ...] = tuple(CUE_CONFLICT_CATEGORIES)
_CAT_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
# "<shape><digits>-<texture><digits>" after an optional "<prefix>_" (human CSVs prefix trial info).
_NAME_RE = re.compile(r"^([a-z]+)(\d+)-([a-z]+)(\d+)$")


@lru_cache(maxsize=None)
def category_indices() -> dict[str, tuple[int, ...]]:
    """The 16 categories -> their ImageNet-1k indices (model-vs-human mapping, shipped as package data)."""
    text = resources.files("beyond_inet.data").joinpath("assets", "mvh_16class_indices.json").read_text()
    cats = json.loads(text)["categories"]
    return {c: tuple(int(i) for i in cats[c]) for c in CATEGORIES}


def category_scores(logits: np.ndarray) -> np.ndarray:
    """[N, 16] mean softmax probability of each category's ImageNet classes."""
    from scipy.special import softmax  # scipy loads after inference (tests/engine/test_import_footprint.py)

    p = softmax(np.asarray(logits, np.float64), axis=1)
    idx = category_indices()
    return np.stack([p[:, list(idx[c])].mean(axis=1) for c in CATEGORIES], axis=1)


def decisions16(logits: np.ndarray) -> np.ndarray:
    """The 16-class decision (index into CATEGORIES) for each row of 1000-class logits."""
    return category_scores(logits).argmax(axis=1)


def parse_cue_conflict_name(name: str) -> tuple[str, str]:
    """``airplane/airplane1-bicycle2.png`` or ``0001_s5n_s01_0_bird_00_bird3-bird2.png`` -> (shape, texture).

    Raises ValueError for names that do not follow ``<shape>N-<texture>M.<ext>`` with known categories.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit("_", 1)[-1].split(".", 1)[0]
    m = _NAME_RE.match(stem)
    if not m or m.group(1) not in _CAT_INDEX or m.group(3) not in _CAT_INDEX:
        raise ValueError(f"cue-conflict file name {name!r} is not '<shape>N-<texture>M.png' with known categories")
    return m.group(1), m.group(3)


def shape_bias_metrics(decisions: np.ndarray, shapes: np.ndarray, textures: np.ndarray) -> dict[str, Any]:
    """Shape-bias numbers from per-image decisions; all arrays are category indices (-1 = no decision).

    Returns the boolean per-image arrays the CIs need as well as the point values.
    """
    d, s, t = (np.asarray(a, dtype=np.int64) for a in (decisions, shapes, textures))
    conflict = s != t
    dc, sc, tc = d[conflict], s[conflict], t[conflict]
    is_shape, is_texture = dc == sc, dc == tc
    cue = is_shape | is_texture
    out: dict[str, Any] = {
        "conflict": conflict,
        "n_conflict": int(conflict.sum()),
        "n_no_conflict": int((~conflict).sum()),
        "is_shape": is_shape, "is_texture": is_texture, "shape_of_conflict": sc,
        "correct_no_conflict": d[~conflict] == s[~conflict],
        "shape_bias": float(is_shape.sum() / cue.sum()) if cue.any() else math.nan,
        "shape_acc": float(is_shape.mean()) if is_shape.size else math.nan,
        "texture_acc": float(is_texture.mean()) if is_texture.size else math.nan,
        "acc16_no_conflict": float((d[~conflict] == s[~conflict]).mean()) if (~conflict).any() else math.nan,
        "per_category": {},
    }
    for k, c in enumerate(CATEGORIES):
        m = sc == k
        n_cue = int(cue[m].sum())
        out["per_category"][c] = float(is_shape[m].sum() / n_cue) if n_cue else math.nan
    return out


def _category_or_none(x: str) -> int:
    return _CAT_INDEX.get(str(x).strip(), -1)


def shape_bias_from_decisions(csv_rows: Iterable[Mapping[str, str]]) -> dict[str, Any]:
    """Shape bias from published model-vs-human decision rows (``object_response``, ``category``, ``imagename``).

    ``object_response`` values outside the 16 categories (humans' "na") count as neither shape nor texture.
    Rows whose image name cannot be parsed are counted in ``n_malformed`` and left out.
    """
    dec, sha, tex, bad = [], [], [], 0
    for r in csv_rows:
        try:
            _, texture = parse_cue_conflict_name(r["imagename"])
        except ValueError:
            bad += 1
            continue
        dec.append(_category_or_none(r["object_response"]))
        sha.append(_category_or_none(r["category"]))
        tex.append(_CAT_INDEX[texture])
    out = shape_bias_metrics(np.array(dec), np.array(sha), np.array(tex))
    out["n_malformed"] = bad
    return {k: v for k, v in out.items() if not isinstance(v, np.ndarray)}


def read_decision_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def default_shared_data() -> Path | None:
    """``$BEYOND_INET_SHARED_DATA`` or ``<repo root>/../shared/data`` when it exists (offline reference data)."""
    env = os.environ.get("BEYOND_INET_SHARED_DATA")
    p = Path(env) if env else Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
    return p.resolve() if p.is_dir() else None


def human_raw_dir(ctx: Context) -> Path | None:
    """model-vs-human's human raw decisions to compare with: ``--option mvh_raw_data=DIR``; else, when the
    cue-conflict images are the package's bundled subset, the human trials bundled with them (the same
    images); else ``<data root>/model-vs-human-raw-data``; else the shared data's full raw data; else the
    bundled trials; None when none is present."""
    raw = ctx.options.get("mvh_raw_data")
    if raw is not None:
        return Path(raw) if Path(raw).is_dir() else None
    bundled = catalog.bundled_path("model-vs-human-raw-data")
    if bundled is not None and catalog.ENTRIES["cue-conflict"].uses_bundled(ctx.data_root):
        return bundled
    if ctx.data_root and (Path(ctx.data_root) / "model-vs-human-raw-data").is_dir():
        return Path(ctx.data_root) / "model-vs-human-raw-data"
    shared = default_shared_data()
    if shared is not None and (shared / "model-vs-human-raw-data").is_dir():
        return shared / "model-vs-human-raw-data"
    return bundled


def human_reference(raw_dir: str | os.PathLike) -> dict[str, Any]:
    """Human shape bias (per subject, their mean, pooled, pooled per category) and edge/silhouette accuracy.

    ``raw_dir`` is model-vs-human's ``raw-data`` folder: ``cue-conflict/cue-conflict_subject-NN_session_1.csv``
    etc. The shape bias uses exactly the metric code applied to models.
    """
    raw = Path(raw_dir)
    out: dict[str, Any] = {"source": str(raw)}
    subj_files = sorted((raw / "cue-conflict").glob("cue-conflict_subject-*.csv"))
    if subj_files:
        per_subject, pooled_rows = {}, []
        for f in subj_files:
            rows = read_decision_csv(f)
            pooled_rows += rows
            per_subject[rows[0]["subj"] if rows else f.stem] = shape_bias_from_decisions(rows)["shape_bias"]
        pooled = shape_bias_from_decisions(pooled_rows)
        out["shape_bias_subjects"] = per_subject
        out["shape_bias_mean"] = float(np.mean(list(per_subject.values())))
        out["shape_bias_pooled"] = pooled["shape_bias"]
        out["shape_bias_per_category"] = pooled["per_category"]
        out["n_trials_cue-conflict"] = len(pooled_rows)
        out["n_images_cue-conflict"] = len({r["imagename"].rsplit("_", 1)[-1] for r in pooled_rows})
    for ds in ("edge", "silhouette"):
        files = sorted((raw / ds).glob(f"{ds}_subject-*.csv"))
        if files:
            accs = {}
            for f in files:
                rows = read_decision_csv(f)
                ok = [r["object_response"].strip() == r["category"].strip() for r in rows]
                accs[rows[0]["subj"] if rows else f.stem] = float(np.mean(ok)) if ok else math.nan
            out[f"acc16_{ds}_subjects"] = accs
            out[f"acc16_{ds}_mean"] = float(np.mean(list(accs.values())))
    return out


def native_rule_of(out) -> dict:
    """How the stimuli entered the model (recorded by the engine with the outputs, see
    ``engine.plan.native_plan``): the rule and the input size the model ran at."""
    m = getattr(out, "meta", None) or {}
    return {"rule": m.get("native_rule", "unknown (outputs stored before the rule was recorded)"),
            "view": m.get("view"), "input_size": m.get("input_size")}


def shape_bias_metric(dataset: str, metric: str, is_shape: np.ndarray, is_texture: np.ndarray,
                      ids: list[str]) -> Metric:
    """Shape bias = shape decisions / (shape + texture decisions); it rests on the images whose decision
    was the shape or the texture (``rests_on``), not on every image shown."""
    shape = np.asarray(is_shape, np.float64)
    cue = np.asarray(is_shape | is_texture, np.float64)
    return Metric(dataset, metric, np.stack([shape, cue], axis=1), ids, stats.ratio_finish, True, "fraction",
                  rests_on=1, description="higher = more shape decisions (humans: ~0.96)")


def mean_of_ratios(sums: np.ndarray) -> np.ndarray:
    """Column sums [b, 2k] (k observers' (shape, shape-or-texture) side by side) -> the mean over the
    observers of their shape bias, [b]: model-vs-human's human aggregate (per subject, then the mean)."""
    s = np.asarray(sums, np.float64)
    s = s.reshape(s.shape[0], -1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = s[..., 0] / s[..., 1]
    ok = np.isfinite(r)
    return np.where(ok.any(axis=1), np.where(ok, r, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1), math.nan)


def observer_cue_conflict(trials) -> tuple[dict[str, Any], list[str], list[str], list[str]]:
    """`shape_bias_metrics` of an observer's cue-conflict trials, with the image ids of its conflict trials,
    the names it could not parse (left out) and the ids of its no-conflict trials."""
    dec, sha, tex, ids, bad = [], [], [], [], []
    for t in trials:
        try:
            _, texture = parse_cue_conflict_name(t.image)
        except ValueError:
            bad.append(t.image)
            continue
        dec.append(_category_or_none(t.response))
        sha.append(_category_or_none(t.category))
        tex.append(_CAT_INDEX[texture])
        ids.append(t.image.replace("\\", "/").rsplit("/", 1)[-1].rsplit("_", 1)[-1])
    m = shape_bias_metrics(np.array(dec, np.int64), np.array(sha, np.int64), np.array(tex, np.int64))
    return (m, [i for i, c in zip(ids, m["conflict"]) if c], bad,
            [i for i, c in zip(ids, m["conflict"]) if not c])


def _per_category_artifact(m: dict[str, Any]) -> dict[str, Any]:
    return {"categories": list(CATEGORIES), "shape_bias": [m["per_category"][c] for c in CATEGORIES],
            "overall": m["shape_bias"], "n_conflict": m["n_conflict"]}


@register_analysis
class ShapeBias(Analysis):
    name = "shape-bias"
    description = "Shape vs texture bias on cue-conflict (model-vs-human protocol); edge/silhouette 16-class accuracy"

    def requests(self, ctx: Context) -> list[Request]:
        return [Request(d, "native", frozenset({LOGITS})) for d in ("cue-conflict", "edge", "silhouette")]

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        res = AnalysisResult()
        out = fetch(Request("cue-conflict", "native"))
        if out is None:
            res.skips.append(Skip(self.name, model, "cue-conflict", "cue-conflict outputs are not available"))
        else:
            self._cue_conflict(ctx, model, out, res)
        for ds in ("edge", "silhouette"):
            o = fetch(Request(ds, "native"))
            if o is None:
                res.skips.append(Skip(self.name, model, ds, f"{ds} outputs are not available"))
                continue
            keep = o.labels >= 0
            res.metrics.append(stats.mean_metric(ds, "acc16", decisions16(o.logits[keep]) == o.labels[keep],
                                                 [i for i, k in zip(o.ids, keep) if k]))
        seen = {ds: native_rule_of(o) for ds in ("cue-conflict", "edge", "silhouette")
                if (o := fetch(Request(ds, "native"))) is not None}
        if seen:
            res.artifacts["shape-bias/native-view"] = seen
        raw = human_raw_dir(ctx)
        if raw is not None:
            res.artifacts["shape-bias/human"] = human_reference(raw)
        return res

    def declare_observer(self, ctx: Context, observer: Observer) -> AnalysisResult:
        """An observer's rows from its published decisions: the same metrics as a model's (module docstring)."""
        res = AnalysisResult()
        trials = observer.trials.get("cue-conflict")
        if not trials:
            res.skips.append(Skip(self.name, observer.name, "cue-conflict", "no published cue-conflict decisions"))
        else:
            m, ids, bad, no_conflict = observer_cue_conflict(trials)
            for name in bad[:3]:
                res.skips.append(Skip(self.name, observer.name, "cue-conflict", f"left out {name!r}: not "
                                      f"'<shape>N-<texture>M.png'" + (f" ({len(bad)} such)" if len(bad) > 1 else "")))
            self._declare_cue_conflict(m, ids, no_conflict, res)
            res.artifacts["shape-bias/per-category"] = _per_category_artifact(m)
        for ds in ("edge", "silhouette"):
            ts = observer.trials.get(ds)
            if ts:
                ok = np.array([t.response == t.category for t in ts], np.float64)
                res.metrics.append(stats.mean_metric(ds, "acc16", ok, [t.image for t in ts]))
        return res

    def declare_group(self, ctx: Context, name: str, observers: list[Observer]) -> AnalysisResult:
        """The human aggregate (model-vs-human's): each subject's shape bias, then the mean over subjects;
        per category the same. Units are the images (a subject's trial names reduce to the image file), so
        the CI resamples images, every subject's trial on an image together."""
        res = AnalysisResult()
        per = [(o, observer_cue_conflict(o.trials["cue-conflict"])[:2]) for o in observers
               if o.trials.get("cue-conflict")]
        if not per:
            return res
        images = sorted({i for _, (_, ids) in per for i in ids})
        at = {k: j for j, k in enumerate(images)}
        shapes = np.full(len(images), -1, np.int64)
        cols = np.zeros((len(images), 2 * len(per)))
        for k, (_, (m, ids)) in enumerate(per):
            rows = np.array([at[i] for i in ids], np.int64)
            cols[rows, 2 * k] = m["is_shape"]
            cols[rows, 2 * k + 1] = m["is_shape"] | m["is_texture"]
            shapes[rows] = m["shape_of_conflict"]
        desc = f"each subject's shape bias, then the mean over the {len(per)} subjects (model-vs-human's aggregate)"
        ds = "cue-conflict"
        res.metrics.append(Metric(ds, "shape_bias", cols, images, mean_of_ratios, True, "fraction",
                                  description=desc))
        per_cat = []
        for k, c in enumerate(CATEGORIES):
            sel = shapes == k
            if sel.any():
                res.metrics.append(Metric(ds, f"shape_bias_{c}", cols[sel], [i for i, s_ in zip(images, sel) if s_],
                                          mean_of_ratios, True, "fraction", description=desc))
            per_cat.append(float(mean_of_ratios(cols[sel].sum(axis=0, keepdims=True))[0]) if sel.any()
                           else math.nan)
        overall = float(mean_of_ratios(cols.sum(axis=0, keepdims=True))[0])
        res.artifacts["shape-bias/per-category"] = {"categories": list(CATEGORIES), "shape_bias": per_cat,
                                                    "overall": overall, "n_conflict": len(images),
                                                    "subjects": [o.name for o, _ in per], "aggregate": desc}
        return res

    def _declare_cue_conflict(self, m: dict[str, Any], conflict_ids: list[str], no_conflict_ids: list[str],
                              res: AnalysisResult) -> None:
        """The cue-conflict metrics of one decision maker (model or observer) from `shape_bias_metrics`."""
        is_shape, is_tex, sc = m["is_shape"], m["is_texture"], m["shape_of_conflict"]
        ds = "cue-conflict"
        res.metrics.append(shape_bias_metric(ds, "shape_bias", is_shape, is_tex, conflict_ids))
        for k, c in enumerate(CATEGORIES):
            sel = sc == k
            if sel.any():
                res.metrics.append(shape_bias_metric(ds, f"shape_bias_{c}", is_shape[sel], is_tex[sel],
                                                     [i for i, s_ in zip(conflict_ids, sel) if s_]))
        res.metrics.append(stats.mean_metric(ds, "shape_acc", is_shape, conflict_ids))
        res.metrics.append(stats.mean_metric(ds, "texture_acc", is_tex, conflict_ids))
        if m["n_no_conflict"]:
            res.metrics.append(stats.mean_metric(ds, "acc16_no_conflict", m["correct_no_conflict"], no_conflict_ids))

    def _cue_conflict(self, ctx: Context, model: str, out, res: AnalysisResult) -> None:
        keep, textures = [], []
        for i, sid in enumerate(out.ids):
            try:
                _, tex = parse_cue_conflict_name(sid)
            except ValueError as e:
                res.skips.append(Skip(self.name, model, "cue-conflict", f"left out {sid!r}: {e}"))
                continue
            if out.labels[i] < 0:
                res.skips.append(Skip(self.name, model, "cue-conflict", f"left out {sid!r}: no shape label"))
                continue
            keep.append(i)
            textures.append(_CAT_INDEX[tex])
        if not keep:
            res.skips.append(Skip(self.name, model, "cue-conflict", "no usable cue-conflict images"))
            return
        idx = np.array(keep)
        m = shape_bias_metrics(decisions16(out.logits[idx]), out.labels[idx], np.array(textures))
        self._declare_cue_conflict(m, [out.ids[i] for i in idx[m["conflict"]]],
                                   [out.ids[i] for i in idx[~m["conflict"]]], res)
        res.artifacts["shape-bias/per-category"] = _per_category_artifact(m)
