"""The analysis contract.

An analysis says which (dataset, view) outputs it needs (`requests`), then turns the stored
outputs of one model into per-sample metric declarations (`declare` -> ``contracts.Metric``) which the
base class scores into tidy rows (`compute`: value, bootstrap CI over images, n) — or, for rows that
are not per-sample (fitted hyper-parameters), into rows directly. It never runs a model: the engine
has already stored what it asked for.

A cross-model analysis sets ``compares_models = True`` and implements
``compare(ctx, models, fetch)``; it runs once after every model ran, with lazy store-backed access to
every model's outputs (``CrossFetch``). `summarize` (older hook) sees every model's rows.
The data classes live in ``beyond_inet.contracts`` and are re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from beyond_inet import registry
from beyond_inet.analyses import stats
from beyond_inet.contracts import (  # noqa: F401  (re-exported: the analyses' public contract)
    FEATURES,
    FULL,
    LOGITS,
    MIN_UNITS,
    SUMMARY,
    AnalysisResult,
    Context,
    CrossFetch,
    Fetch,
    Metric,
    Observer,
    Outputs,
    Request,
    Row,
    Skip,
)
from beyond_inet.registry import AnalysisInfo


def score_metrics(ctx: Context, model: str, analysis: str, metrics: list[Metric]) -> list[Row]:
    """Rows of declared metrics: one scoring path (value, CI over units, n) for every analysis."""
    rows = []
    for m in metrics:
        s = stats.score(m, ctx.n_boot, ctx.seed)
        rows.append(Row(model, m.dataset, analysis, m.metric, s.value, s.ci_low, s.ci_high, s.n))
    return rows


@dataclass
class ModelEnv:
    """What a per-model `Analysis.prepare` step may use besides the built model: the run's output
    folder, its opened datasets (an ``engine.plan.DatasetCache``) and the engine settings."""

    out: str
    datasets: Any
    device: str = "cpu"
    num_workers: int = 0
    amp: bool = True
    numerics: str = "fp32"
    progress: Any = None
    damaged: list = field(default_factory=list)  # damaged stored files a prepare step found (and recomputed)


class Analysis:
    """Base class; subclasses set `name` and implement `requests` and `declare` (or `compute`)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Title, datasets, figures and typed options: declared in the torch-free `beyond_inet.registry` (the CLI
    # reads them without importing analyses); `register_analysis` links the entry here.
    info: ClassVar["AnalysisInfo | None"] = None
    # True: `compare(ctx, models, fetch)` runs once after all models; `compute` is not called.
    compares_models: ClassVar[bool] = False
    # False: the significance analysis does not re-declare this analysis (too costly, e.g. probe training).
    paired_tests: ClassVar[bool] = True

    def requests(self, ctx: Context) -> list[Request]:
        raise NotImplementedError

    def declare(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        """Per-sample metric declarations (``result.metrics``) plus skips, artifacts and any rows that
        are not per-sample. Analyses that declare are scored, compared and flagged generically."""
        raise NotImplementedError

    def compute(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        """Rows of one model: the declared metrics scored (value, CI over units, n)."""
        res = self.declare(ctx, model, fetch)
        res.rows = score_metrics(ctx, model, self.name, res.metrics) + res.rows
        return res

    @classmethod
    def declares(cls) -> bool:
        """Does this analysis publish per-sample declarations (and so get paired tests)?"""
        return cls.declare is not Analysis.declare

    def compare(self, ctx: Context, models: list[str], fetch: CrossFetch) -> AnalysisResult:
        """Cross-model rows (only when `compares_models`)."""
        raise NotImplementedError

    @classmethod
    def scores_observers(cls) -> bool:
        """Can this analysis score a published observer (decisions only, no logits)? A cross-model analysis
        that reads ``ctx.observers`` in `compare` says so by overriding `declare_observer` too."""
        return cls.declare_observer is not Analysis.declare_observer

    def declare_observer(self, ctx: Context, observer: Observer) -> AnalysisResult:
        """Per-sample declarations of one observer from its decisions alone (like `declare` for a model).
        Analyses that need logits or features leave this out: the run lists each observer as a skip."""
        raise NotImplementedError

    def declare_group(self, ctx: Context, name: str, observers: list[Observer]) -> AnalysisResult:
        """Declarations of a group of observers as one (the human subjects as model-vs-human aggregates
        them); default: none."""
        return AnalysisResult()

    def compute_group(self, ctx: Context, name: str, observers: list[Observer]) -> AnalysisResult:
        """Rows of a group of observers (`declare_group`), scored like a model's."""
        res = self.declare_group(ctx, name, observers)
        res.rows = score_metrics(ctx, name, self.name, res.metrics) + res.rows
        return res

    def compute_observer(self, ctx: Context, observer: Observer) -> AnalysisResult:
        """Rows of one observer: its declared metrics scored exactly as a model's are."""
        res = self.declare_observer(ctx, observer)
        res.rows = score_metrics(ctx, observer.name, self.name, res.metrics) + res.rows
        return res

    def prepare_datasets(self, ctx: Context) -> list[str]:
        """Datasets `prepare` reads itself (not through `requests`); the run checks they exist. Default: none."""
        return []

    def prepare(self, ctx: Context, model: Any, env: ModelEnv) -> list[Skip]:
        """Optional per-model step while the model (a ``VisionModel``) is built, for analyses that need
        more than stored logits/features (e.g. `cka`'s layer statistics). Runs after the model's
        inference jobs, before `compute`; returns what it could not do. Default: nothing."""
        return []

    def summarize(self, ctx: Context, rows: list[Row]) -> AnalysisResult:
        """Cross-model rows computed from every model's rows; default: none."""
        return AnalysisResult()


ANALYSES: dict[str, type[Analysis]] = {}


def register_analysis(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator: make an analysis available by its command-line name."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name not in registry.ANALYSES:  # undeclared: a bare entry (no options) so it still runs
        registry.ANALYSES[cls.name] = registry.AnalysisInfo(cls.name, cls.name, cls.description, ())
    cls.info = registry.ANALYSES[cls.name]
    ANALYSES[cls.name] = cls
    return cls


def list_analyses() -> list[str]:
    return sorted(ANALYSES)


def get_analysis(name: str) -> Analysis:
    from beyond_inet.errors import UserError

    if name not in ANALYSES:
        raise UserError(f"unknown analysis {name!r}{registry.did_you_mean(name, ANALYSES)}; "
                        f"choose from: {', '.join(list_analyses())}")
    return ANALYSES[name]()
