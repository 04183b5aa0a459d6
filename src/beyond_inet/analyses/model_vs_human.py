"""The model-vs-human benchmark (Geirhos et al., NeurIPS 2021) over its 17 datasets, as pure functions over
decision tables.

An *observer* is one decision table: a DataFrame with model-vs-human's raw-data columns
``subj,session,trial,rt,object_response,category,condition,imagename`` (one row per trial). Tables come
from either source alike: the released CSVs (humans and models, `read_raw_dataset`) or a model run here
(`decision_table`: the 16-class decision of each image by the paper's rule, `shape_bias.decisions16`).
Observers whose ``subj`` starts with ``subject-`` are humans.

Metrics, as model-vs-human's ``plotting/analyses.py`` defines them, per dataset and condition:

* accuracy: fraction of trials with ``object_response == category`` (16-class accuracy);
* with one human subject h, on the images both saw in that condition: accuracy difference
  ``acc_m - acc_h`` (the benchmark averages its *square*), observed consistency c_obs (both right or
  both wrong), expected consistency ``c_exp = p_m p_h + (1-p_m)(1-p_h)`` and error consistency
  ``kappa = (c_obs - c_exp) / (1 - c_exp)`` (1 when c_obs == 1); the per-condition value of a model is
  the mean over the subjects.

Benchmark aggregates, exactly as model-vs-human's ``plotting/plot.py`` builds its tables:

* datasets: ``BENCHMARK_DATASETS`` (its DEFAULT_DATASETS: edge, silhouette, cue-conflict, the 12
  parametric sets, sketch, stylized); in each parametric set the conditions of ``EXCLUDED_CONDITIONS``
  are dropped (no distortion, or mean human accuracy < 0.2);
* OOD accuracy: accuracy over all remaining trials of a dataset (humans: all subjects' trials pooled),
  then the mean over datasets;
* accuracy difference (squared), observed and error consistency: per (model, subject, condition), mean
  over conditions, then over subjects, then over datasets; the human row uses each unordered pair of
  distinct subjects in place of (model, subject).

Same images for every row: when the run's models decided only part of a dataset (``--limit``, unreadable
images), every observer of that dataset (human subjects, published models) is scored on the trials the
models decided (``restrict_to_seen``), and a skip line says so.

Intervals: every value is a function of per-image column sums, so it is bootstrapped over images with the
shared resampler (`stats.replicate_column_sums`); across datasets the images of each dataset are resampled
independently (a stratified bootstrap) and the replicate values averaged like the point values. Human
and model rows of the pairwise metrics also get an interval over subjects (``subject_ci_low/high``:
subjects resampled, images fixed). ``n`` is the number of images a value rests on.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Mapping, Sequence

import numpy as np

from beyond_inet.analyses import stats

if TYPE_CHECKING:  # pandas loads only when tables are built (import footprint)
    import pandas as pd

COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename")
PARAMETRIC = ("colour", "contrast", "high-pass", "low-pass", "phase-scrambling", "power-equalisation",
              "false-colour", "rotation", "eidolonI", "eidolonII", "eidolonIII", "uniform-noise")
BENCHMARK_DATASETS = ("edge", "silhouette", "cue-conflict") + PARAMETRIC + ("sketch", "stylized")
DATASETS = tuple(sorted(BENCHMARK_DATASETS, key=str.lower))  # the 17 released datasets

# The conditions of each parametric experiment in plotting order (model-vs-human datasets/experiments.py),
# with the x-axis label and the shown level of each.
CONDITIONS: dict[str, tuple[str, ...]] = {
    "colour": ("cr", "bw"),
    "contrast": ("c100", "c50", "c30", "c15", "c10", "c05", "c03", "c01"),
    "high-pass": ("inf", "3.0", "1.5", "1.0", "0.7", "0.55", "0.45", "0.4"),
    "low-pass": ("0", "1", "3", "5", "7", "10", "15", "40"),
    "phase-scrambling": ("0", "30", "60", "90", "120", "150", "180"),
    "power-equalisation": ("0", "pow"),
    "false-colour": ("True", "False"),
    "rotation": ("0", "90", "180", "270"),
    "eidolonI": tuple(f"{2 ** i}-10-10" for i in range(8)),
    "eidolonII": tuple(f"{2 ** i}-3-10" for i in range(8)),
    "eidolonIII": tuple(f"{2 ** i}-0-10" for i in range(8)),
    "uniform-noise": ("0.0", "0.03", "0.05", "0.1", "0.2", "0.35", "0.6", "0.9"),
}
LEVELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "colour": ("Colour", ("colour", "greyscale")),
    "contrast": ("Contrast in percent", ("100", "50", "30", "15", "10", "5", "3", "1")),
    "high-pass": ("Filter standard deviation", ("inf", "3.0", "1.5", "1.0", ".7", ".55", ".45", ".4")),
    "low-pass": ("Filter standard deviation", CONDITIONS["low-pass"]),
    "phase-scrambling": ("Phase noise width [deg]", CONDITIONS["phase-scrambling"]),
    "power-equalisation": ("Power spectrum", ("original", "equalised")),
    "false-colour": ("Colour", ("true", "opponent")),
    "rotation": ("Rotation angle [deg]", CONDITIONS["rotation"]),
    "eidolonI": ("log2 of 'reach'", tuple(str(i) for i in range(8))),
    "eidolonII": ("log2 of 'reach'", tuple(str(i) for i in range(8))),
    "eidolonIII": ("log2 of 'reach'", tuple(str(i) for i in range(8))),
    "uniform-noise": ("Uniform noise width", ("0.0", ".03", ".05", ".1", ".2", ".35", ".6", ".9")),
}
EXCLUDED_CONDITIONS: dict[str, tuple[str, ...]] = {
    "colour": ("cr",), "contrast": ("c100", "c03", "c01"), "high-pass": ("inf", "0.55", "0.45", "0.4"),
    "low-pass": ("0", "15", "40"), "phase-scrambling": ("0", "150", "180"), "power-equalisation": ("0",),
    "false-colour": ("True",), "rotation": ("0",), "eidolonI": ("1-10-10", "64-10-10", "128-10-10"),
    "eidolonII": ("1-3-10", "32-3-10", "64-3-10", "128-3-10"),
    "eidolonIII": ("1-0-10", "16-0-10", "32-0-10", "64-0-10", "128-0-10"),
    "uniform-noise": ("0.0", "0.6", "0.9"),
}
PAIR = 4  # per-image columns of one compared pair: both present, agree, a right, b right
BENCHMARK = "benchmark"  # the dataset column of the across-dataset rows
HUMANS = "humans"  # the observer column of human aggregate rows
ALL = "all"  # the condition column of rows over a whole dataset


def is_human(observer: str) -> bool:
    return str(observer).startswith("subject-")


def image_id(imagename: str) -> str:
    """The image a trial showed, without the trial prefix (model-vs-human's short image name):
    ``0001_cl_s01_cr_oven_40_n04111531_14126.png`` -> ``n04111531_14126.png``,
    ``0001_s5n_s01_0_bird_00_bird3-bird2.png`` and ``bird3-bird2.png`` -> ``bird3-bird2.png``."""
    parts = str(imagename).replace("\\", "/").rsplit("/", 1)[-1].split("_")
    if len(parts) == 1:
        return parts[0]
    return "_".join(parts[-2:]) if parts[-2].startswith("n0") else parts[-1]


def parse_trial_name(imagename: str) -> tuple[str, str]:
    """(condition, category) from a released file name ``NNNN_<exp>_<subj>_<condition>_<category>_...``,
    as model-vs-human's ``InfoMappingWithSessions`` reads them; ValueError for other names."""
    parts = str(imagename).replace("\\", "/").rsplit("/", 1)[-1].split("_")
    if len(parts) < 6 or not parts[0].isdigit():
        raise ValueError(f"{imagename!r} is not a model-vs-human trial name "
                         f"(NNNN_<experiment>_<subject>_<condition>_<category>_...)")
    return parts[3], parts[4]


def trial_condition(dataset: str, imagename: str) -> str:
    """The experiment's condition of a released trial name (`parse_trial_name` + `canonical_condition`)."""
    return canonical_condition(dataset, parse_trial_name(imagename)[0])


def benchmark_conditions(dataset: str) -> tuple[str, ...] | None:
    """The conditions the benchmark keeps for a dataset; None: all trials (no parametric conditions)."""
    if dataset not in CONDITIONS:
        return None
    drop = set(EXCLUDED_CONDITIONS[dataset])
    return tuple(c for c in CONDITIONS[dataset] if c not in drop)


def canonical_condition(dataset: str, raw: str) -> str:
    """The experiment's name for a condition as written in a CSV or file name: the release writes
    ``3`` / ``0.00`` / ``false`` where model-vs-human (after pandas parses the column) compares ``3.0`` /
    ``0.0`` / ``False``; matched case-insensitively or by numeric value, else returned unchanged."""
    raw = str(raw).strip()
    for c in CONDITIONS.get(dataset, ()):
        if c == raw or c.lower() == raw.lower():
            return c
    try:
        x = float(raw)
    except ValueError:
        return raw
    for c in CONDITIONS.get(dataset, ()):
        try:
            if float(c) == x:
                return c
        except ValueError:
            continue
    return raw


# --- tables ---------------------------------------------------------------------------------------

def normalise(df: "pd.DataFrame", dataset: str) -> "pd.DataFrame":
    """Lower-case column names (one release file says ``Session``), condition as the experiment names it
    (`canonical_condition`; ``nan`` for none), plus ``image_id`` and ``correct``."""
    df = df.rename(columns=str.lower).copy()
    missing = [c for c in ("subj", "object_response", "category", "condition", "imagename") if c not in df]
    if missing:
        raise ValueError(f"decision table lacks column(s) {', '.join(missing)}")
    df["condition"] = [("nan" if (isinstance(c, float) and math.isnan(c)) or c is None
                        else canonical_condition(dataset, c)) for c in df["condition"]]
    df["image_id"] = [image_id(n) for n in df["imagename"]]
    df["correct"] = (df["object_response"].astype(str).str.strip()
                     == df["category"].astype(str).str.strip()).to_numpy(np.float64)
    return df


def read_raw_dataset(raw_dir: str | Path, dataset: str) -> dict[str, "pd.DataFrame"]:
    """Observer -> normalised table from model-vs-human's ``raw-data/<dataset>/*.csv``."""
    import pandas as pd

    out: dict[str, pd.DataFrame] = {}
    for f in sorted((Path(raw_dir) / dataset).glob("*.csv")):
        df = normalise(pd.read_csv(f, dtype=str), dataset)
        for subj, part in df.groupby("subj", sort=False):
            out[str(subj)] = part.reset_index(drop=True)
    return out


def decision_table(observer: str, dataset: str, sample_ids: Sequence[str], decisions: Sequence[str],
                   categories: Sequence[str]) -> "pd.DataFrame":
    """A model's decision table for one dataset from its 16-class decisions (category names).

    The condition is parsed from a released trial name (``parse_trial_name``); class-folder images
    (cue-conflict, edge, silhouette) have none (``nan``), as in model-vs-human's model CSVs."""
    import pandas as pd

    names = [str(s).replace("\\", "/").rsplit("/", 1)[-1] for s in sample_ids]
    conds = []
    for n in names:
        try:
            conds.append(trial_condition(dataset, n))
        except ValueError:
            if dataset in CONDITIONS:
                raise
            conds.append("nan")
    return normalise(pd.DataFrame({"subj": observer, "session": 1, "trial": np.arange(1, len(names) + 1),
                                   "rt": math.nan, "object_response": list(decisions),
                                   "category": list(categories), "condition": conds, "imagename": names}), dataset)


def observer_table(observer, dataset: str) -> "pd.DataFrame":
    """A published observer's (``--decisions``; `contracts.Observer`) decision table for one dataset: its
    trials as model-vs-human's raw-data CSV holds them (a released ``NaN`` condition is none)."""
    import pandas as pd

    trials = observer.trials.get(dataset, [])
    none = ("", "nan", "none")
    return normalise(pd.DataFrame({
        "subj": observer.name, "object_response": [t.response for t in trials],
        "category": [t.category for t in trials],
        "condition": [math.nan if str(t.condition).strip().lower() in none else t.condition for t in trials],
        "imagename": [t.image for t in trials]}), dataset)


def _by_image(df: "pd.DataFrame", condition: str | None, observer: str) -> dict[str, float]:
    sel = df if condition is None else df[df["condition"] == condition]
    ids = sel["image_id"].tolist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"observer {observer!r}: an image appears twice in condition {condition!r}")
    return dict(zip(ids, sel["correct"].tolist()))


# --- per-dataset column blocks ----------------------------------------------------------------------

class Block:
    """Per-image columns of one dataset (rows: images, the resampling unit) built up from observers'
    correctness vectors; each add returns the column slice it filled."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.cols: list[tuple[np.ndarray, np.ndarray]] = []  # (row indices, values) per column

    def _rows(self, keys: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.index.setdefault(k, len(self.index)) for k in keys), np.int64, count=len(keys))

    def add_mean(self, correct: Mapping[str, float]) -> slice:
        """[right, trials] for one observer (a pooled accuracy)."""
        keys = list(correct)
        rows = self._rows(keys)
        v = np.array([correct[k] for k in keys], np.float64)
        start = len(self.cols)
        self.cols += [(rows, v), (rows, np.ones_like(v))]
        return slice(start, start + 2)

    def add_pair(self, a: Mapping[str, float], b: Mapping[str, float]) -> slice:
        """[present, agree, a right, b right] on the images both observers saw."""
        keys = [k for k in a if k in b]
        rows = self._rows(keys)
        va = np.array([a[k] for k in keys], np.float64)
        vb = np.array([b[k] for k in keys], np.float64)
        start = len(self.cols)
        self.cols += [(rows, np.ones_like(va)), (rows, (va == vb).astype(np.float64)), (rows, va), (rows, vb)]
        return slice(start, start + PAIR)

    def matrix(self) -> np.ndarray:
        U = np.zeros((len(self.index), len(self.cols)))
        for j, (rows, v) in enumerate(self.cols):
            np.add.at(U[:, j], rows, v)
        return U


def pair_values(S: np.ndarray) -> dict[str, np.ndarray]:
    """Column sums [b, 4] of one pair -> accuracy difference (a - b), its square, c_obs, c_exp, kappa."""
    n = S[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        c_obs, pa, pb = S[:, 1] / n, S[:, 2] / n, S[:, 3] / n
        c_exp = pa * pb + (1 - pa) * (1 - pb)
        k = np.where(c_obs >= 1.0, 1.0, (c_obs - c_exp) / (1.0 - c_exp))
    return {"acc_diff": pa - pb, "acc_diff_sq": (pa - pb) ** 2, "c_obs": c_obs, "c_exp": c_exp, "kappa": k}


def _mean(stack: list[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack(stack, axis=0), axis=0)


def _replicates(U: np.ndarray, finish: Callable[[np.ndarray], dict[str, np.ndarray]], n_boot: int, seed: int
                ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Point values and bootstrap replicate values (images resampled) of a dict-valued finish."""
    point = {k: float(v[0]) for k, v in finish(U.sum(axis=0, keepdims=True)).items() if not k.startswith("_")}
    reps = finish(stats.replicate_column_sums(U, n_boot, seed)) if n_boot > 0 and U.shape[0] >= 2 else {}
    return point, reps


def _ci(reps: Mapping[str, np.ndarray], key: str) -> tuple[float, float]:
    if key not in reps:
        return math.nan, math.nan
    return stats.percentile_interval(reps[key])


def subject_replicates(per_subject: np.ndarray, n_boot: int, seed: int, pairs: bool = False) -> np.ndarray | None:
    """Bootstrap replicates [n_boot] of a mean over subjects (``pairs``: over unordered pairs of distinct
    subjects, ``per_subject`` then a symmetric [k, k] matrix) with the subjects resampled; a subject drawn
    twice is never paired with itself, and a resample of one subject only (no pair: 4/256 of them with the
    4 subjects of a parametric set) is redrawn. None with fewer than 2 subjects or no replicates."""
    v = np.asarray(per_subject, np.float64)
    k = v.shape[0]
    if k < 2 or n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    i, j = np.triu_indices(k, 1)
    for b in range(n_boot):
        idx = rng.integers(0, k, size=k)
        if not pairs:
            out[b] = v[idx].mean()
            continue
        while len(set(idx.tolist())) < 2:  # one subject drawn k times has no pair: redraw (conditioning)
            idx = rng.integers(0, k, size=k)
        a, c = idx[i], idx[j]
        ok = a != c
        out[b] = v[a[ok], c[ok]].mean()
    return out


def subject_ci(per_subject: np.ndarray, n_boot: int, seed: int, pairs: bool = False) -> tuple[float, float]:
    """Percentile interval of `subject_replicates` (NaN when there are none)."""
    reps = subject_replicates(per_subject, n_boot, seed, pairs)
    return (math.nan, math.nan) if reps is None else stats.percentile_interval(reps)


# --- the analysis -----------------------------------------------------------------------------------

def _row(observer, dataset, condition, metric, value, lo, hi, n, **extra) -> dict:
    return {"observer": observer, "dataset": dataset, "condition": condition, "metric": metric,
            "value": float(value), "ci_low": float(lo), "ci_high": float(hi), "n": int(n), **extra}


def present_conditions(tables: Mapping[str, "pd.DataFrame"]) -> set[str]:
    """The conditions any of the tables has trials in."""
    return set().union(*(set(t["condition"]) for t in tables.values()))


def dataset_conditions(dataset: str, tables: Mapping[str, "pd.DataFrame"], partial: bool = False) -> list[str]:
    """The conditions to report per condition: the experiment's, in plotting order, or the one ``all``. A
    condition no table has is an error (tables that do not describe this experiment), unless `partial`
    (the tables were cut to the trials a limited run decided: ``restrict_to_seen``), where it is left out."""
    if dataset not in CONDITIONS:
        return [ALL]
    present = present_conditions(tables)
    missing = [c for c in CONDITIONS[dataset] if c not in present]
    if missing and not partial:
        raise ValueError(f"{dataset}: condition(s) {missing} not in the decision tables")
    return [c for c in CONDITIONS[dataset] if c in present]


def per_condition(dataset: str, tables: Mapping[str, "pd.DataFrame"], n_boot: int = 1000, seed: int = 0,
                  partial: bool = False) -> list[dict]:
    """Rows per observer and condition: ``accuracy`` (every observer), and for each model (and for the
    human aggregate ``humans``) ``acc_diff``, ``acc_diff_sq``, ``c_obs``, ``c_exp``, ``kappa`` vs the human
    subjects (mean over subjects; humans: over pairs of distinct subjects). Human accuracy is also given
    pooled over subjects (observer ``humans``)."""
    humans = sorted(o for o in tables if is_human(o))
    models = [o for o in tables if not is_human(o)]
    rows: list[dict] = []
    for ci, cond in enumerate(dataset_conditions(dataset, tables, partial)):
        c = None if cond == ALL else cond
        correct = {o: _by_image(t, c, o) for o, t in tables.items()}
        for oi, o in enumerate(list(models) + [HUMANS]):
            blk = Block()
            members = humans if o == HUMANS else [o]
            acc = [blk.add_mean(correct[m]) for m in members]
            if o == HUMANS:
                pairs = [(a, b) for i, a in enumerate(humans) for b in humans[i + 1:]]
            else:
                pairs = [(o, h) for h in humans]
            sl = [blk.add_pair(correct[a], correct[b]) for a, b in pairs]
            U = blk.matrix()
            if U.shape[0] == 0:
                continue

            def finish(S, acc=acc, sl=sl):
                right = sum(S[:, s.start] for s in acc)
                trials = sum(S[:, s.start + 1] for s in acc)
                out = {"accuracy": right / trials}
                if sl:
                    parts = [pair_values(S[:, s]) for s in sl]
                    out.update({k: _mean([p[k] for p in parts]) for k in parts[0]})
                return out

            point, reps = _replicates(U, finish, n_boot, seed + 7919 * ci + oi)
            n = U.shape[0]
            for key, v in point.items():
                rows.append(_row(o, dataset, cond, key, v, *_ci(reps, key), n, n_pairs=len(sl)))
    return rows


PAIR_METRICS = ("acc_diff_sq", "c_obs", "kappa")


def dataset_block(dataset: str, tables: Mapping[str, "pd.DataFrame"], observer: str
                  ) -> tuple[np.ndarray, Callable[[np.ndarray], dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """The benchmark columns of one observer (or ``humans``) on one dataset, their finish, and for each
    pairwise metric the per-subject values (humans: the per-pair [k, k] matrix) for the subject interval."""
    keep = benchmark_conditions(dataset)
    present = present_conditions(tables)
    # conditions no table has (tables cut to a limited run's trials) are left out, not averaged in as NaN
    conds: list[str | None] = [None] if keep is None else [c for c in keep if c in present]
    humans = sorted(o for o in tables if is_human(o))
    members = humans if observer == HUMANS else [observer]
    blk = Block()
    acc, grid = [], []  # grid[pair] = [slice per condition]
    for c in conds:
        correct = {o: _by_image(tables[o], c, o) for o in set(members) | set(humans)}
        acc += [blk.add_mean(correct[m]) for m in members]
    if observer == HUMANS:
        pairs = [(a, b) for i, a in enumerate(humans) for b in humans[i + 1:]]
    else:
        pairs = [(observer, h) for h in humans]
    for a, b in pairs:
        grid.append([blk.add_pair(_by_image(tables[a], c, a), _by_image(tables[b], c, b)) for c in conds])
    U = blk.matrix()

    def finish(S: np.ndarray) -> dict[str, np.ndarray]:
        right = sum(S[:, s.start] for s in acc)
        trials = sum(S[:, s.start + 1] for s in acc)
        out = {"ood_accuracy": right / trials}
        if grid:
            per_pair = []
            for slices in grid:  # mean over conditions first
                vals = [pair_values(S[:, s]) for s in slices]
                per_pair.append({k: _mean([v[k] for v in vals]) for k in PAIR_METRICS})
            for k in PAIR_METRICS:  # then over subjects (pairs)
                out[k] = _mean([p[k] for p in per_pair])
                out["_per_pair_" + k] = np.stack([p[k] for p in per_pair], axis=1)
        return out

    whole = finish(U.sum(axis=0, keepdims=True))
    per: dict[str, np.ndarray] = {}
    for key in PAIR_METRICS:
        vals = whole.get("_per_pair_" + key, np.zeros((1, 0)))[0]
        if observer == HUMANS:
            k = len(humans)
            mat = np.full((k, k), np.nan)
            for (a, b), v in zip(pairs, vals):
                mat[humans.index(a), humans.index(b)] = mat[humans.index(b), humans.index(a)] = v
            per[key] = mat
        else:
            per[key] = vals
    return U, finish, per


BENCHMARK_METRICS = ("ood_accuracy", "acc_diff_sq", "c_obs", "kappa")


def benchmark(data: Mapping[str, Mapping[str, "pd.DataFrame"]], observers: Sequence[str] | None = None,
              n_boot: int = 1000, seed: int = 0, datasets: Sequence[str] = BENCHMARK_DATASETS) -> list[dict]:
    """The benchmark table: per observer (models and ``humans``) and dataset, and over all datasets
    (dataset ``benchmark``, only for observers with every dataset), the four metrics with CIs.

    ``data``: dataset -> observer -> table. Datasets absent from ``data`` are left out of the per-dataset
    rows; the across-dataset mean needs all of ``datasets`` (else no ``benchmark`` row for that observer)."""
    if observers is None:
        observers = sorted({o for d in datasets if d in data for o in data[d] if not is_human(o)}) + [HUMANS]
    rows: list[dict] = []
    for oi, obs in enumerate(observers):
        points: dict[str, list[float]] = {k: [] for k in BENCHMARK_METRICS}
        reps: dict[str, list[np.ndarray]] = {k: [] for k in BENCHMARK_METRICS}
        subj_reps: dict[str, list[np.ndarray | None]] = {k: [] for k in PAIR_METRICS}
        n_total, complete = 0, True
        for di, ds in enumerate(datasets):
            tables = data.get(ds, {})
            if not any(is_human(o) for o in tables) or (obs != HUMANS and obs not in tables):
                complete = False
                continue
            U, finish, subj = dataset_block(ds, tables, obs)
            point, rep = _replicates(U, finish, n_boot, seed + 104729 * oi + 7919 * di)
            n = U.shape[0]
            n_total += n
            for k in BENCHMARK_METRICS:
                lo, hi = _ci(rep, k)
                extra = {}
                if k in PAIR_METRICS:  # the interval over subjects (pairs of subjects for the human row)
                    sr = subject_replicates(subj[k], n_boot, seed + 15485863 + 7919 * di, pairs=obs == HUMANS)
                    subj_reps[k].append(sr)
                    slo, shi = (math.nan, math.nan) if sr is None else stats.percentile_interval(sr)
                    extra = {"subject_ci_low": slo, "subject_ci_high": shi}
                rows.append(_row(obs, ds, ALL, k, point[k], lo, hi, n, **extra))
                points[k].append(point[k])
                if k in rep:
                    reps[k].append(rep[k])
        if not complete or not points["kappa"]:
            continue
        for k in BENCHMARK_METRICS:
            value = float(np.mean(points[k]))
            lo, hi = (stats.percentile_interval(_mean(reps[k])) if len(reps[k]) == len(points[k])
                      else (math.nan, math.nan))
            extra = {}
            if k in PAIR_METRICS:  # each dataset's subjects resampled on their own, replicates averaged
                srs = subj_reps[k]
                ok = srs and all(r is not None for r in srs)
                extra = dict(zip(("subject_ci_low", "subject_ci_high"),
                                 stats.percentile_interval(_mean(srs)) if ok else (math.nan, math.nan)))
            rows.append(_row(obs, BENCHMARK, ALL, k, value, lo, hi, n_total, n_datasets=len(points[k]), **extra))
    return rows


def ranks(rows: Sequence[Mapping]) -> list[dict]:
    """Model-vs-human's two ranked tables from the ``benchmark`` rows (humans left out): OOD accuracy rank,
    and the mean of the ranks by accuracy difference (low first), observed and error consistency (high
    first); ties share the mean rank."""
    from scipy.stats import rankdata

    agg = [r for r in rows if r["dataset"] == BENCHMARK and r["observer"] != HUMANS]
    models = sorted({r["observer"] for r in agg})
    val = {(r["observer"], r["metric"]): r["value"] for r in agg}
    out = []
    if not models:
        return out
    col = {k: np.array([val[(m, k)] for m in models]) for k in BENCHMARK_METRICS}
    r_acc = rankdata(-col["ood_accuracy"])
    r_diff, r_obs, r_k = rankdata(col["acc_diff_sq"]), rankdata(-col["c_obs"]), rankdata(-col["kappa"])
    mean_rank = (r_diff + r_obs + r_k) / 3.0
    for i, m in enumerate(models):
        out.append({"observer": m, "ood_accuracy_rank": float(r_acc[i]), "humanlike_mean_rank": float(mean_rank[i])})
    return out


# --- the registered analysis: models run here against the released human trials ----------------------

from beyond_inet.analyses.base import (LOGITS, Analysis, AnalysisResult, Context, CrossFetch,  # noqa: E402
                                       Fetch, Request, Row, Skip, register_analysis)
from beyond_inet.contracts import Observer  # noqa: E402

HUMAN_ROWS = "human-subjects"  # the model column of human rows (as in error-consistency)


def _trials(df: "pd.DataFrame", dataset: str) -> "pd.Series":
    """What each trial is about: (condition, image) in a parametric experiment, whose images show in several
    conditions; the image elsewhere (the release numbers those conditions, model tables have none)."""
    if dataset not in CONDITIONS:
        return df["image_id"].astype(str)
    return df["condition"].astype(str) + "\x00" + df["image_id"].astype(str)


def restrict_to_seen(tables: Mapping[str, "pd.DataFrame"], models: Sequence[str], dataset: str
                     ) -> tuple[dict[str, "pd.DataFrame"], int, int]:
    """Every observer's table cut to the (condition, image) trials that all of this run's `models` decided.

    Under ``--limit`` (or with unreadable images) the run's models see part of a dataset, while the released
    humans and published models saw all of it: their accuracy and the human-pair rows would rest on other
    images than the models' rows beside them. Returns (tables, trials kept, trials any observer has); the
    tables are unchanged when the models saw every trial or `models` has none of them."""
    runs = [m for m in models if m in tables]
    every = set().union(*(set(_trials(t, dataset)) for t in tables.values())) if tables else set()
    if not runs:
        return dict(tables), len(every), len(every)
    seen = set.intersection(*(set(_trials(tables[m], dataset)) for m in runs))
    if every <= seen:
        return dict(tables), len(every), len(every)
    return {o: t[_trials(t, dataset).isin(seen).to_numpy()] for o, t in tables.items()}, len(seen), len(every)


def model_tables(dataset: str, model: str, out) -> "pd.DataFrame":
    """A model's decision table from its stored ImageNet logits: 16-class decisions by the paper's rule."""
    from beyond_inet.analyses.shape_bias import CATEGORIES, decisions16

    keep = np.asarray(out.labels) >= 0
    dec = decisions16(np.asarray(out.logits)[keep])
    ids = [i for i, k in zip(out.ids, keep) if k]
    cats = [CATEGORIES[int(lab)] for lab in np.asarray(out.labels)[keep]]
    return decision_table(model, dataset, ids, [CATEGORIES[int(d)] for d in dec], cats)


def to_rows(rows: Sequence[Mapping], analysis: str) -> list[Row]:
    """Tidy result rows: metric ``<metric>@<condition>`` per condition, ``<metric>`` over a dataset
    (dataset ``model-vs-human`` for the across-dataset benchmark)."""
    out = []
    for r in rows:
        model = HUMAN_ROWS if r["observer"] == HUMANS else r["observer"]
        ds = "model-vs-human" if r["dataset"] == BENCHMARK else r["dataset"]
        metric = r["metric"] if r["condition"] == ALL else f"{r['metric']}@{r['condition']}"
        out.append(Row(model, ds, analysis, metric, r["value"], r["ci_low"], r["ci_high"], r["n"]))
    return out


@register_analysis
class ModelVsHuman(Analysis):
    name = "model-vs-human"
    description = "model-vs-human benchmark: 16-class accuracy, accuracy difference, observed and error " \
                  "consistency with human subjects on 17 OOD datasets (Geirhos et al. 2021)"
    compares_models: ClassVar[bool] = True
    paired_tests: ClassVar[bool] = False

    def present(self, ctx: Context) -> list[str]:
        return [d for d in BENCHMARK_DATASETS if ctx.available(d)]

    def requests(self, ctx: Context) -> list[Request]:
        return [Request(d, "native", frozenset({LOGITS})) for d in self.present(ctx)]  # 16-class decisions

    def compute(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        return AnalysisResult()

    def declare_observer(self, ctx: Context, observer: Observer) -> AnalysisResult:
        """Nothing per observer: `compare` puts ``ctx.observers`` beside the models (published human subjects
        replace the raw-data humans on the datasets they cover)."""
        return AnalysisResult()

    def compare(self, ctx: Context, models: list[str], fetch: CrossFetch) -> AnalysisResult:
        from beyond_inet.analyses.shape_bias import human_raw_dir

        res = AnalysisResult()
        published = {ds: {o.name: observer_table(o, ds) for o in ctx.observers if o.trials.get(ds)}
                     for ds in BENCHMARK_DATASETS}
        published_humans = {ds: any(is_human(o) for o in t) for ds, t in published.items()}
        datasets = [d for d in BENCHMARK_DATASETS if ctx.available(d) or published[d]]
        raw = None if all(published_humans[d] for d in datasets) else human_raw_dir(ctx)
        if raw is None and not any(published_humans[d] for d in datasets):
            res.skips.append(Skip(self.name, "*", "*", "no model-vs-human raw data (human trials) found"))
            return res
        data: dict[str, dict] = {}
        for ds in datasets:
            if published_humans[ds]:  # published subjects are the humans of this dataset
                tables = dict(published[ds])
            else:
                tables = {o: t for o, t in read_raw_dataset(raw, ds).items() if is_human(o)} if raw else {}
                if not tables:
                    res.skips.append(Skip(self.name, "*", ds, f"no human trials for {ds}"))
                    continue
                tables.update(published[ds])
            for m in models if ctx.available(ds) else ():
                out = fetch(m, Request(ds, "native"))
                if out is None or not len(out):
                    res.skips.append(Skip(self.name, m, ds, f"{ds} outputs are not available"))
                    continue
                tables[m] = model_tables(ds, m, out)
            tables, kept, every = restrict_to_seen(tables, models, ds)
            partial = kept < every
            if partial:
                present = present_conditions(tables)
                gone = [c for c in CONDITIONS.get(ds, ()) if c not in present]
                res.skips.append(Skip(self.name, "*", ds, f"the models decided {kept} of the {every} trials "
                                                          f"(--limit or unreadable images): every observer, humans "
                                                          f"included, is scored on those {kept}" +
                                      (f"; condition(s) {', '.join(gone)} not reached" if gone else "")))
            try:  # tables that cannot be compared (an image twice in a condition, unknown conditions)
                rows = per_condition(ds, tables, ctx.n_boot, ctx.seed, partial) if ds in CONDITIONS else []
            except ValueError as e:
                res.skips.append(Skip(self.name, "*", ds, str(e)))
                continue
            data[ds] = tables
            res.rows += to_rows(rows, self.name)
            res.artifacts.setdefault("model-vs-human/per-condition", {})[ds] = rows
        try:
            others = sorted({o.name for o in ctx.observers if not is_human(o.name)})
            bench = benchmark(data, observers=list(models) + others + [HUMANS], n_boot=ctx.n_boot, seed=ctx.seed)
        except ValueError as e:
            res.skips.append(Skip(self.name, "*", "model-vs-human", str(e)))
            return res
        res.rows += to_rows(bench, self.name)
        res.artifacts["model-vs-human/benchmark"] = {"rows": bench, "ranks": ranks(bench)}
        missing = [d for d in BENCHMARK_DATASETS if d not in data]
        if missing:
            res.skips.append(Skip(self.name, "*", "model-vs-human",
                                  f"{len(missing)} of the 17 datasets absent ({', '.join(missing)}): no "
                                  f"across-dataset benchmark row"))
        return res
