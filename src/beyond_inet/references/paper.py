"""The Beyond-INet paper's numbers for its four models, as references for our rows.

``data/paper_numbers.json`` transcribes paper-spec §3 section by section, in the paper's units (percent
or fraction, ``scale``), each entry with the (dataset, metric) our analysis writes and the tolerance the
spec gives (printed rounding, or the ±0.1 / ±0.02 / ±0.3 of the read-off). Values are divided by ``scale``;
tolerances are stored already in OUR units (±0.1 percentage points is 0.001) and are not rescaled. ``load()`` turns it into
`Reference`s in our units, keyed by the model aliases (``vit-sup``, ``convnext-sup``, ``vit-clip``,
``convnext-clip``).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from beyond_inet.references.reference import Reference

ALIASES = ("vit-sup", "convnext-sup", "vit-clip", "convnext-clip")
# A paper metric also compared against our other variant of it, with the caveat to show.
ALTERNATES = {
    "top1_paper": ("top1_any", "our default PUG rule 'any' (any listed ImageNet class counts) differs from the "
                               "paper's dict rule only for classes sharing an ImageNet index (Shirt/Sweatshirt); "
                               "--option pug_rule=paper gives the paper's"),
    "top1_avg_paper": ("top1_avg_any", "our default PUG rule 'any' (see the per-factor rows); "
                                       "--option pug_rule=paper gives the paper's"),
}


@lru_cache(maxsize=1)
def document() -> dict:
    """The shipped transcription as stored (paper units)."""
    text = resources.files("beyond_inet.references").joinpath("data", "paper_numbers.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def load() -> tuple[Reference, ...]:
    """Every paper number as a Reference in our units (percent / 100)."""
    out = []
    for sec in document()["sections"]:
        source = f"paper: {sec['source']}"
        for e in sec["entries"]:
            scale, tol = float(e["scale"]), float(e["tolerance"])
            for model, v in e["values"].items():
                value = round(float(v) / scale, 10)
                out.append(Reference(model, sec["analysis"], e["dataset"], e["metric"], value, tol, source,
                                     e.get("note", "")))
                if e["metric"] in ALTERNATES:
                    alt, why = ALTERNATES[e["metric"]]
                    note = "; ".join(x for x in (e.get("note", ""), why) if x)
                    out.append(Reference(model, sec["analysis"], e["dataset"], alt, value, tol, source, note))
    return tuple(out)


def for_model(alias: str) -> list[Reference]:
    """The paper's numbers for one alias (``vit-sup`` ...); empty for anything else."""
    return [r for r in load() if r.model == alias]


# The paper's released cue-conflict decisions (kirill-vish/Beyond-INet inference/modelvshuman/raw-data): the CSVs'
# ``subj`` -> the alias of the model they are. Run with ``--decisions``, these observers are the paper's own data.
RELEASED_DECISIONS = {"deit3_21k": "vit-sup", "convnext_base_21k": "convnext-sup", "vit_clip": "vit-clip",
                      "convnext_clip": "convnext-clip"}
# paper-spec §3 "Shape bias": the figure's dashed lines (the mean shape bias drawn), measured in pixels. The spec
# states no read-off error; three of them equal the released CSVs' values to 3 decimals, so ±0.003 is generous.
SHAPE_BIAS_FIGURE = {"vit-sup": 0.399, "convnext-sup": 0.333, "vit-clip": 0.465, "convnext-clip": 0.447}
SHAPE_BIAS_FIGURE_TOLERANCE = 0.003
SHAPE_BIAS_FIGURE_SOURCE = "paper: shape-bias figure, dashed lines measured in pixels (paper-spec §3 Shape bias)"
SHAPE_BIAS_FIGURE_NOTE = {
    "convnext-clip": "paper-spec: the released convnext-clip CSV does not match the figure (several per-class "
                     "points differ: truck, dog, bicycle); the other three CSVs match it exactly",
}


def released_references(observer: str) -> list[Reference]:
    """The paper's shape-bias numbers for a released-decisions observer (`RELEASED_DECISIONS`): the value the
    spec computes from the released CSV, and the figure's dashed line, so that a released file which is not
    the figure's run shows as such."""
    alias = RELEASED_DECISIONS.get(observer)
    if alias is None:
        return []
    out = [Reference(observer, r.analysis, r.dataset, r.metric, r.value, r.tolerance, r.source,
                     r.note if alias == "convnext-clip" else "")
           for r in for_model(alias) if r.analysis == "shape-bias"]
    out.append(Reference(observer, "shape-bias", "cue-conflict", "shape_bias", SHAPE_BIAS_FIGURE[alias],
                         SHAPE_BIAS_FIGURE_TOLERANCE, SHAPE_BIAS_FIGURE_SOURCE, SHAPE_BIAS_FIGURE_NOTE.get(alias, "")))
    return out

