"""Report layout that reads well for one model or twenty.

* Absent data is said once: one line per missing dataset (parts such as ``pug-imagenet/Worlds`` or
  ``imagenet-c/fog/3`` fold into their dataset) with the analyses and models it affects and the command that
  gets it, instead of one skip per (model, dataset, part).
* Data read from the package's bundled copy (the demo sets) is named, with what the full set adds.
* With a single model there is nothing to select or test between: those sections are left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from beyond_inet.analyses.base import Skip
from beyond_inet.data import catalog


@dataclass
class MissingData:
    dataset: str
    title: str
    analyses: list[str]
    models: list[str]  # empty = every model of the run
    how_to_get: str

    def models_text(self, n_models: int) -> str:
        if not self.models:
            return "all models" if n_models != 1 else "the model"
        return ", ".join(self.models)


def _base(dataset: str) -> str:
    return dataset.split("/", 1)[0]


def is_missing_data(skip: Skip, data_root: str | None) -> bool:
    """Is this skip there because its dataset (or the dataset part) is absent under the data root?"""
    base = _base(skip.dataset)
    if base not in catalog.ENTRIES or catalog.ENTRIES[base].kind == "labels":
        return False
    return not catalog.available(skip.dataset, data_root)


def split_missing(skips: Sequence[Skip], data_root: str | None, models: Sequence[str]
                  ) -> tuple[list[MissingData], list[Skip]]:
    """(one line per missing dataset, the other skips)."""
    groups: dict[str, dict] = {}
    rest: list[Skip] = []
    for s in skips:
        if not is_missing_data(s, data_root):
            rest.append(s)
            continue
        g = groups.setdefault(_base(s.dataset), {"analyses": [], "models": []})
        if s.analysis not in g["analyses"]:
            g["analyses"].append(s.analysis)
        if s.model not in g["models"]:
            g["models"].append(s.model)
    out = []
    for base, g in groups.items():
        entry = catalog.ENTRIES[base]
        affected = [m for m in models if m in g["models"]] + [m for m in g["models"] if m not in models]
        everyone = set(models) <= set(g["models"]) or "*" in g["models"]
        out.append(MissingData(base, entry.title, sorted(g["analyses"]),
                               [] if everyone else [m for m in affected if m != "*"], entry.how_to_get()))
    return sorted(out, key=lambda m: m.dataset), rest


def bundled_in_use(data_root: str | None, datasets: Sequence[str]) -> list[dict]:
    """Datasets of this run read from the package's bundled copy, with what that copy holds."""
    out = []
    for d in dict.fromkeys(_base(x) for x in datasets):
        e = catalog.ENTRIES.get(d)
        if e is not None and e.uses_bundled(data_root):
            out.append({"dataset": d, "note": e.extras.get("bundled_note", "bundled with the package"),
                        "how_to_get": "" if e.extras.get("bundled_complete") else e.how_to_get()})
    return out
