"""One published number, keyed like our result rows."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reference:
    """A published value for the row (model, analysis, dataset, metric), in our units (fractions, ratios).

    tolerance: how precisely the number is known (printed rounding or read-off error), same units;
    source:    where it was read; note: a caveat shown beside the comparison;
    settings:  the published evaluation settings (img_size, crop_pct, interpolation) where known.
    """

    model: str
    analysis: str
    dataset: str
    metric: str
    value: float
    tolerance: float
    source: str
    note: str = ""
    settings: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.model, self.analysis, self.dataset, self.metric
