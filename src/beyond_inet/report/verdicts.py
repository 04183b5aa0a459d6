"""Which model to pick, from stored rows and the significance analysis' paired tests.

No statistics are computed here: the per-model rows (value, CI, n) and the pairwise tests (the
``significance`` analysis' artifact) are read from the results; this module only groups them, applies
the level alpha to the stored Holm-corrected p-values (``stats.verdict``) and says which model is best
and which are tied with it.

One rule (``Standing``) decides whether a model's value may carry a verdict; every star, tie mark, green
verdict and "pick" of the report goes through it:

  * a value resting on fewer than ``MIN_UNITS`` units is "too few": shown, flagged, never marked best, and
    a paired test involving it (or resting itself on fewer than ``MIN_UNITS`` images) shows no verdict;
  * a model at chance on a dataset -- its top-1 there has a 95% CI reaching down to chance level 1/K
    (K = the classes it chooses among: 1000, 200 for ImageNet-A/R, 16 for the cue datasets, the run's own
    ``n_classes`` row for a user's folder; for a linear probe the largest class's share, ``probe_chance``),
    or, on a dataset without a top-1 row, its ImageNet top-1 does -- is "not a usable model here": flagged, never
    picked as best for any property on that dataset, and a paired test it "wins" there shows no verdict. (A
    random-weight network has a near-perfect ECE at 0% top-1: calibrated, but to nothing.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from beyond_inet.analyses import stats
from beyond_inet.contracts import MIN_UNITS, Row

ALPHA = stats.ALPHA
NO_DIFF = stats.NO_DIFF
SIGNIFICANCE = "significance"


def is_pair(model: str) -> bool:
    return " vs " in model


@dataclass
class RowIndex:
    """Per-model rows keyed (analysis, dataset, metric) -> {model: Row}; cross-model rows left out."""

    rows: dict[tuple[str, str, str], dict[str, Row]]

    @classmethod
    def build(cls, rows: Iterable[Row]) -> "RowIndex":
        d: dict[tuple[str, str, str], dict[str, Row]] = {}
        for r in rows:
            if r.model in ("*", "all") or is_pair(r.model) or r.analysis == SIGNIFICANCE:
                continue
            if r.value is None or not math.isfinite(r.value):
                continue
            d.setdefault((r.analysis, r.dataset, r.metric), {})[r.model] = r
        return cls(d)


@dataclass
class Pair:
    a: str
    b: str
    value_a: float
    value_b: float
    diff: float
    ci_low: float
    ci_high: float
    p: float
    p_holm: float
    verdict: str
    winner: str | None
    n01: int | None = None
    n10: int | None = None
    n: int | None = None  # images the test rests on
    withheld: str | None = None  # why no verdict is shown (Standing.withhold)


@dataclass
class Comparison:
    """Every tested pair of one metric."""

    analysis: str
    dataset: str
    metric: str
    higher_is_better: bool | None
    test: str
    n: int
    unit: str
    models: list[str] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.analysis, self.dataset, self.metric

    def pair(self, a: str, b: str) -> Pair | None:
        for p in self.pairs:
            if {p.a, p.b} == {a, b}:
                return p
        return None


def _num(x) -> float:
    return math.nan if x is None else float(x)


def comparisons(artifacts: dict, alpha: float = ALPHA) -> tuple[dict[tuple[str, str, str], Comparison], dict]:
    """The stored paired tests grouped per metric, with verdicts at `alpha`; and the run's settings."""
    art = artifacts.get((SIGNIFICANCE, "*", "significance/tests"))
    if not art:
        return {}, {}
    out: dict[tuple[str, str, str], Comparison] = {}
    for t in art.get("tests", []):
        key = (t["analysis"], t["dataset"], t["metric"])
        c = out.setdefault(key, Comparison(*key, t.get("higher_is_better"), t["test"], int(t["n"]),
                                           t.get("unit", "")))
        pt = stats.PairTest(t["a"], t["b"], _num(t["value_a"]), _num(t["value_b"]), _num(t["diff"]),
                            _num(t["ci_low"]), _num(t["ci_high"]), _num(t["p"]), int(t["n"]), t["test"],
                            _num(t["p_holm"]))
        v = stats.verdict(pt, alpha, c.higher_is_better)
        winner = None if v == NO_DIFF else (pt.a if v.startswith(f"{pt.a} >") else pt.b)
        c.pairs.append(Pair(pt.a, pt.b, pt.value_a, pt.value_b, pt.diff, pt.ci_low, pt.ci_high, pt.p, pt.p_holm,
                            v, winner, t.get("n01"), t.get("n10"), int(t["n"])))
        c.n = min(c.n, int(t["n"]))
        for m in (pt.a, pt.b):
            if m not in c.models:
                c.models.append(m)
    return out, {k: art.get(k) for k in ("alpha", "n_boot", "seed")}


# Chance level: the metrics that are a top-1 over K classes, and K where it is not ImageNet-1k's 1000. A run's
# own ``n_classes`` row (accuracy: ImageNet-A/R, a user's subset folder, a folder with its own classes) wins
# over this table; a linear probe's chance is its ``probe_chance`` row (the largest class's share).
CHANCE_METRICS = ("top1", "acc16", "acc16_no_conflict", "probe_top1")
CLASSES = {"imagenet-a": 200, "imagenet-r": 200, "cue-conflict": 16, "edge": 16, "silhouette": 16,
           "objectnet": 113}
SIXTEEN = ("acc16", "acc16_no_conflict")  # 16-class decisions whatever the dataset
IMAGENET = ("imagenet-val", "imagenet-sample")  # the fallback for a dataset without its own top-1
NOT_USABLE = "not a usable model here"


def chance_level(dataset: str, metric: str, n_classes: float | None = None, probe_chance: float | None = None
                 ) -> float:
    """1/K for a top-1 over K classes (`n_classes` when the run recorded it); a probe's `probe_chance`."""
    if metric in SIXTEEN:
        return 1 / 16
    if metric == "probe_top1" and probe_chance is not None:
        return probe_chance
    k = n_classes if n_classes else CLASSES.get(dataset.split("/")[0], 1000)
    return 1 / k


class Standing:
    """Whether a model's value may carry a verdict, star, colour or pick: the report's one rule (module doc)."""

    def __init__(self, index: RowIndex):
        self.index = index
        # (model, dataset) -> the top-1 row deciding chance there (the one on most images), and what the run
        # recorded of the classes it was scored over
        self._top1: dict[tuple[str, str], Row] = {}
        self._recorded: dict[tuple[str, str, str], float] = {}
        for (_, dataset, metric), per in index.rows.items():
            if metric in ("n_classes", "probe_chance"):
                for model, row in per.items():
                    self._recorded[(model, dataset, metric)] = row.value
            if metric not in CHANCE_METRICS:
                continue
            for model, row in per.items():
                old = self._top1.get((model, dataset))
                if old is None or row.n > old.n:
                    self._top1[(model, dataset)] = row

    def at_chance(self, model: str, dataset: str) -> str | None:
        """Why `model` is not usable on `dataset` (its top-1 CI includes chance), or None."""
        row, where = self._top1.get((model, dataset)), dataset
        if row is None:
            where = next((d for d in IMAGENET if (model, d) in self._top1), None)
            if where is None:
                return None  # no top-1 anywhere to judge by
            row = self._top1[(model, where)]
        chance = chance_level(where, row.metric, self._recorded.get((model, where, "n_classes")),
                              self._recorded.get((model, where, "probe_chance")))
        low = row.ci_low if math.isfinite(row.ci_low) else row.value
        if low > chance:
            return None
        ci = f" [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]" if math.isfinite(row.ci_low) else ""
        return (f"{NOT_USABLE}: {row.metric} on {where} {100 * row.value:.1f}%{ci} (n={row.n}) reaches chance "
                f"level {100 * chance:.3g}%")

    def reason(self, model: str, key: tuple[str, str, str]) -> str | None:
        """Why `model`'s value on `key` may carry no verdict (too few, or at chance), else None."""
        row = self.index.rows.get(key, {}).get(model)
        if row is not None and row.n < MIN_UNITS:
            return f"too few: n={row.n}"
        return self.at_chance(model, key[1])

    def unusable(self, models: Iterable[str], dataset: str) -> dict[str, str]:
        """{model: why} for the models at chance on `dataset`."""
        return {m: why for m in models if (why := self.at_chance(m, dataset))}

    def withhold(self, comparisons: Iterable[Comparison]) -> None:
        """Remove the verdict (and so its colour) from every paired test resting on a too-few value, and from
        every win of a model at chance (a usable model beating it keeps its verdict: that is true and useful)."""
        for c in comparisons:
            for p in c.pairs:
                why = None
                if p.n is not None and p.n < MIN_UNITS:
                    why = f"too few images (n={p.n})"
                else:
                    for m in (p.a, p.b):
                        r = self.reason(m, c.key)
                        if r and not r.startswith(NOT_USABLE):
                            why = f"{m} {r}"
                            break
                        if r and p.winner == m:
                            why = f"{m}: {NOT_USABLE}"
                            break
                if why:
                    p.withheld, p.winner, p.verdict = why, None, f"no verdict ({why})"


@dataclass
class Choice:
    """Which model to pick for one property."""

    best: str | None
    tied: list[str]  # models not significantly different from the best (best included)
    tested: bool
    text: str


def choose(values: dict[str, float], ns: dict[str, int], higher_is_better: bool,
           comparison: Comparison | None, unusable: dict[str, str] | None = None) -> Choice:
    """The best model by value among those resting on enough units and usable on the dataset (`unusable`:
    model -> why not, from ``Standing.unusable``), and the models the paired tests cannot tell apart from it."""
    vals = {m: v for m, v in values.items() if v is not None and math.isfinite(v)}
    if not vals:
        return Choice(None, [], False, "not computed")
    unusable = {m: why for m, why in (unusable or {}).items() if m in vals}
    enough = {m: v for m, v in vals.items() if ns.get(m, 0) >= MIN_UNITS and m not in unusable}
    few = sorted(m for m in set(vals) - set(enough) if m not in unusable)
    notes = ([f"{', '.join(few)} left out (too few units)"] if few else []) + \
            ([f"{', '.join(sorted(unusable))} left out ({NOT_USABLE}: top-1 at chance)"] if unusable else [])
    note = "".join(f"; {n}" for n in notes)
    if not enough:
        why = f"too few units (< {MIN_UNITS}) or at chance for every model: no pick"
        return Choice(None, [], False, why + note)
    best = (max if higher_is_better else min)(enough, key=lambda m: enough[m])
    if len(enough) == 1:
        return Choice(best, [best], False, "only one usable model has this property with enough units" + note)
    if comparison is None or best not in comparison.models:
        return Choice(best, [best], False, "best value; no paired test available" + note)
    tied = [best] + [m for m in comparison.models if m != best and m in enough
                     and (p := comparison.pair(best, m)) is not None and p.winner is None]
    if len(tied) == 1:
        return Choice(best, tied, True, "significantly better than every other model tested" + note)
    return Choice(best, tied, True, f"{len(tied)} models are tied (no significant difference from the best)" + note)
