"""Which model to pick, from stored rows and the significance analysis' paired tests.

No statistics are computed here: the per-model rows (value, CI, n) and the pairwise tests (the
``significance`` analysis' artifact) are read from the results; this module only groups them, applies
the level alpha to the stored Holm-corrected p-values (``stats.verdict``) and says which model is best
and which are tied with it. A value resting on fewer than ``MIN_UNITS`` units is "too few": shown,
flagged, and never marked best.
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
                            v, winner, t.get("n01"), t.get("n10")))
        c.n = min(c.n, int(t["n"]))
        for m in (pt.a, pt.b):
            if m not in c.models:
                c.models.append(m)
    return out, {k: art.get(k) for k in ("alpha", "n_boot", "seed")}


@dataclass
class Choice:
    """Which model to pick for one property."""

    best: str | None
    tied: list[str]  # models not significantly different from the best (best included)
    tested: bool
    text: str


def choose(values: dict[str, float], ns: dict[str, int], higher_is_better: bool,
           comparison: Comparison | None) -> Choice:
    """The best model by value among those resting on enough units, and the models the paired tests
    cannot tell apart from it."""
    vals = {m: v for m, v in values.items() if v is not None and math.isfinite(v)}
    if not vals:
        return Choice(None, [], False, "not computed")
    enough = {m: v for m, v in vals.items() if ns.get(m, 0) >= MIN_UNITS}
    if not enough:
        return Choice(None, [], False, f"too few units (< {MIN_UNITS}) for every model: no pick")
    best = (max if higher_is_better else min)(enough, key=lambda m: enough[m])
    few = sorted(set(vals) - set(enough))
    note = f"; {', '.join(few)} left out (too few units)" if few else ""
    if len(enough) == 1:
        return Choice(best, [best], False, "only one model has this property with enough units" + note)
    if comparison is None or best not in comparison.models:
        return Choice(best, [best], False, "best value; no paired test available" + note)
    tied = [best] + [m for m in comparison.models if m != best and m in enough
                     and (p := comparison.pair(best, m)) is not None and p.verdict == NO_DIFF]
    if len(tied) == 1:
        return Choice(best, tied, True, "significantly better than every other model tested" + note)
    return Choice(best, tied, True, f"{len(tied)} models are tied (no significant difference from the best)" + note)
