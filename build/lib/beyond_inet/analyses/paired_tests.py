"""Which differences between models are real: paired tests on the same images, as a cross-model analysis.

Per-model CIs do not say whether two models differ: their errors are correlated (same images), so
overlapping CIs can hide a real difference. This analysis asks every declaring analysis of the run for
its per-sample metric declarations (``Analysis.declare``, on each model's stored outputs), pairs the
models on the units both have, and tests every pair with ``stats.paired``: McNemar's exact test for
accuracies, a paired bootstrap (same resampled images for both models) for everything else; p-values
are Holm-corrected within a metric. No scoring rule is restated here: the declaration is the rule.

Rows (analysis ``significance``, model ``"A vs B"``): ``<analysis>/<metric>:diff`` (A - B, paired
bootstrap CI) and ``<analysis>/<metric>:p_holm``. The artifact ``significance/tests`` holds every
pair with its verdict for the report.
"""
from __future__ import annotations

import math

from beyond_inet.analyses import stats
from beyond_inet.analyses.base import (
    ANALYSES,
    Analysis,
    AnalysisResult,
    Context,
    CrossFetch,
    Metric,
    Request,
    Row,
    Skip,
    register_analysis,
)


ALPHA = stats.ALPHA  # the option `alpha`'s fallback (declared in the registry)


def pair_name(a: str, b: str) -> str:
    return f"{a} vs {b}"


@register_analysis
class Significance(Analysis):
    name = "significance"
    description = "paired tests between models on the same images (McNemar / paired bootstrap, Holm-corrected)"
    compares_models = True

    def requests(self, ctx: Context) -> list[Request]:
        return []  # it reads what the compared analyses requested

    def compare(self, ctx: Context, models: list[str], fetch: CrossFetch) -> AnalysisResult:
        res = AnalysisResult()
        alpha = float(ctx.options.get("alpha", ALPHA))
        tests: list[dict] = []
        for name in ctx.analyses:
            cls = ANALYSES.get(name)
            if cls is None or cls.compares_models:
                continue
            if not cls.declares() or not cls.paired_tests:
                why = ("declares no per-sample metrics" if not cls.declares() else
                       "its declarations are not re-derived for paired tests (e.g. linear probes would be retrained)")
                res.skips.append(Skip(self.name, "*", name, f"{name}: {why}; compare its CIs instead"))
                continue
            analysis = cls()
            by_key: dict[tuple[str, str], dict[str, Metric]] = {}
            for m in models:
                try:
                    declared = analysis.declare(ctx, m, lambda req, _m=m: fetch(_m, req))
                except Exception as e:  # one analysis failing must not take the other tests down
                    res.skips.append(Skip(self.name, m, name, f"declarations failed: {type(e).__name__}: {e}"))
                    continue
                for met in declared.metrics:
                    by_key.setdefault(met.key, {})[m] = met
            for (ds, metric), per_model in sorted(by_key.items()):
                ms = [m for m in models if m in per_model]
                if len(ms) < 2:
                    continue
                decl = [per_model[m] for m in ms]
                try:
                    pairs = stats.paired(ms, decl, ctx.n_boot, ctx.seed, alpha)
                except stats.IncomparableLayouts as e:
                    res.skips.append(Skip(self.name, "*", ds, f"{name}/{metric}: not tested: {e}"))
                    continue
                if not pairs:
                    res.skips.append(Skip(self.name, "*", ds, f"{name}/{metric}: the models share no images"))
                    continue
                hib = decl[0].higher_is_better
                label = f"{name}/{metric}"
                for t in pairs:
                    v = stats.verdict(t, alpha, hib)
                    winner = None if v == stats.NO_DIFF else (t.a if v.startswith(t.a + " >") else t.b)
                    who = pair_name(t.a, t.b)
                    res.rows.append(Row(who, ds, self.name, f"{label}:diff", t.diff, t.ci_low, t.ci_high, t.n))
                    res.rows.append(Row(who, ds, self.name, f"{label}:p_holm", t.p_holm, math.nan, math.nan, t.n))
                    tests.append({"analysis": name, "dataset": ds, "metric": metric, "a": t.a, "b": t.b,
                                  "value_a": t.value_a, "value_b": t.value_b, "diff": t.diff,
                                  "ci_low": t.ci_low, "ci_high": t.ci_high, "p": t.p, "p_holm": t.p_holm,
                                  "n": t.n, "test": t.test, "verdict": v, "winner": winner,
                                  "n01": t.n01, "n10": t.n10,
                                  "higher_is_better": hib, "unit": decl[0].unit,
                                  "too_few": stats.too_few(t.n)})
        res.artifacts["significance/tests"] = {"alpha": alpha, "n_boot": ctx.n_boot, "seed": ctx.seed,
                                               "models": list(models), "tests": [_jsonable(t) for t in tests]}
        return res


def _jsonable(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
