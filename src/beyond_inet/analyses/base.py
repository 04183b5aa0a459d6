"""The analysis contract.

An analysis says which (dataset, view) outputs it needs (`requests`), then turns the stored
outputs of one model into tidy result rows (`compute`). It never runs a model: the engine has
already stored what it asked for. Optional `summarize` sees every model's rows (for cross-model
metrics such as effective robustness).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from beyond_inet import registry
from beyond_inet.engine.outputs import Outputs
from beyond_inet.registry import AnalysisInfo


@dataclass(frozen=True)
class Request:
    """One set of per-sample outputs an analysis needs.

    dataset: a catalog name, possibly with a part: ``imagenet-val``, ``imagenet-c/fog/3``,
             ``pug-imagenet/Worlds``, ``vtab/cifar100/train``.
    view:    a view name from ``data.views`` (``standard``, ``native``, ``scale-1.5``, ``shift-30``,
             ``res-336`` ...). Resolution views make the engine rebuild the model at that size.
    """

    dataset: str
    view: str = "standard"


@dataclass
class Row:
    """One tidy result row: the stable `results.csv` schema."""

    model: str
    dataset: str
    analysis: str
    metric: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0

    COLUMNS: ClassVar[tuple[str, ...]] = ("model", "dataset", "analysis", "metric", "value", "ci_low", "ci_high", "n")

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, c) for c in self.COLUMNS)


@dataclass
class Skip:
    """Something an analysis could not do, and why (shown in the report)."""

    analysis: str
    model: str
    dataset: str
    reason: str


@dataclass
class AnalysisResult:
    rows: list[Row] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    # JSON-able data for figures (reliability bins, per-class shape bias, curves ...), keyed by name.
    artifacts: dict[str, Any] = field(default_factory=dict)

    def extend(self, other: "AnalysisResult") -> None:
        self.rows += other.rows
        self.skips += other.skips
        self.artifacts.update(other.artifacts)


@dataclass
class Context:
    """What an analysis may know besides the outputs: the data root, catalog and options."""

    data_root: str | None
    options: dict[str, Any] = field(default_factory=dict)
    # Filled by the engine: does the catalog find this dataset name under the data root?
    available: Callable[[str], bool] = lambda name: False
    # Parts of a multi-part dataset that are present, e.g. parts("imagenet-c") -> ["fog/1", ...].
    parts: Callable[[str], list[str]] = lambda name: []
    seed: int = 0
    n_boot: int = 1000

    def option_list(self, key: str, default) -> list:
        """An option that holds a list; a single value or a comma-separated string (from the command
        line's ``--option key=a,b``) becomes a list too."""
        v = self.options.get(key, default)
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        if isinstance(v, (int, float)):
            return [v]
        return list(v)


# fetch(request) -> Outputs, or None when that dataset is absent (the engine records why).
Fetch = Callable[[Request], "Outputs | None"]


class Analysis:
    """Base class; subclasses set `name` and implement `requests` and `compute`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Title, datasets, figures and typed options: declared in the torch-free `beyond_inet.registry` (the CLI
    # reads them without importing analyses); `register_analysis` links the entry here.
    info: ClassVar["AnalysisInfo | None"] = None

    def requests(self, ctx: Context) -> list[Request]:
        raise NotImplementedError

    def compute(self, ctx: Context, model: str, fetch: Fetch) -> AnalysisResult:
        raise NotImplementedError

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
