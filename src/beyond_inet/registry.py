"""The registry of analyses: names, titles, datasets, figures and typed options, in one place.

Why a separate module: the command line builds its help, validates `--option KEY=VALUE` and lists the
analyses from here, and must do so without importing torch, numpy or pandas (the analysis modules import
them at the top). So this module is a leaf that imports the standard library only. Each analysis class
points at its entry (`Analysis.info`, filled in by `register_analysis`), and tests check that every option
key the analyses read is declared here, with the same default the analysis would fall back to.

An option is global (one `--option` namespace), owned by exactly one analysis.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

# Option kinds and what a value must look like.
KINDS = ("bool", "int", "float", "str", "choice", "path", "dataset", "list[int]", "list[float]", "list[dataset]")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class OptionError(ValueError):
    """A bad option key or value; the message is one line meant for the user."""


@dataclass(frozen=True)
class Option:
    """One typed analysis option: `--option key=value` on the command line, `key=value` in `evaluate()`."""

    key: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive lower bound for numbers (each list element too)
    maximum: float | None = None  # inclusive upper bound
    exclusive: bool = False  # bounds are exclusive

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.key}: unknown kind {self.kind!r}")

    @property
    def type_label(self) -> str:
        """How the type reads in help and docs."""
        if self.kind == "choice":
            return "{" + ",".join(self.choices) + "}"
        return self.kind

    def default_label(self) -> str:
        d = self.default
        if d is None:
            return "auto"
        if isinstance(d, bool):
            return "true" if d else "false"
        if isinstance(d, (list, tuple)):
            return ",".join(_fmt(x) for x in d)
        return _fmt(d)

    def parse(self, value: Any) -> Any:
        """The typed value of `value` (a command-line string or a Python value); OptionError if bad.

        Dataset names are only checked for shape here; `validate.py` checks them against the catalog. An option
        whose default is chosen at run time (shown as "auto") takes "auto" to mean exactly that default."""
        if self.default is None and isinstance(value, str) and value.strip().lower() == "auto":
            return None
        if self.kind.startswith("list["):
            items = _as_list(value)
            if not items:
                raise OptionError(f"option {self.key}: give at least one value (comma-separated)")
            inner = self.kind[5:-1]
            return [self._scalar(inner, v) for v in items]
        return self._scalar(self.kind, value)

    def _scalar(self, kind: str, v: Any) -> Any:
        what = f"option {self.key}={_fmt(v)}"
        if kind == "bool":
            if isinstance(v, bool):
                return v
            s = str(v).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise OptionError(f"{what}: expected true/false (or 1/0)")
        if kind in ("int", "float"):
            if isinstance(v, bool):
                raise OptionError(f"{what}: expected a number")
            try:
                x = int(str(v).strip()) if kind == "int" else float(str(v).strip())
            except ValueError:
                raise OptionError(f"{what}: expected {'an integer' if kind == 'int' else 'a number'}") from None
            if kind == "float" and not math.isfinite(x):  # inf/nan would only fail (or mislead) mid-run
                raise OptionError(f"{what}: expected a finite number")
            self._check_range(what, x)
            return x
        s = str(v).strip()
        if not s:
            raise OptionError(f"{what}: empty value")
        if kind == "choice" and s not in self.choices:
            raise OptionError(f"{what}: choose one of {', '.join(self.choices)}{did_you_mean(s, self.choices)}")
        return s

    def _check_range(self, what: str, x: float) -> None:
        lo, hi = self.minimum, self.maximum
        if self.exclusive:
            bad = (lo is not None and x <= lo) or (hi is not None and x >= hi)
        else:
            bad = (lo is not None and x < lo) or (hi is not None and x > hi)
        if bad:
            op = ("<" if self.exclusive else "<=")
            rng = " and ".join(s for s in (f"{_fmt(lo)} {op} value" if lo is not None else "",
                                           f"value {op} {_fmt(hi)}" if hi is not None else "") if s)
            raise OptionError(f"{what}: out of range (need {rng})")


@dataclass(frozen=True)
class AnalysisInfo:
    """What the CLI, the demo and the report need to know about an analysis without importing it."""

    name: str
    title: str
    blurb: str  # one sentence: what the report section shows
    datasets: tuple[str, ...]  # catalog datasets it can use (the first present ones drive it)
    figures: tuple[str, ...] = ()  # report figure names (report/figures.py), empty: a table only
    options: tuple[Option, ...] = field(default_factory=tuple)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def _as_list(value: Any) -> list:
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def did_you_mean(word: str, candidates: Iterable[str], n: int = 1) -> str:
    """'; did you mean X?' for the closest candidate, or '' when none is close (difflib ratio >= 0.6)."""
    close = difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {' or '.join(repr(c) for c in close)}?"


# ---------------------------------------------------------------------------------------------------------
# The declarations, one block per analysis, in report order. Defaults equal what each analysis falls back
# to (tests/test_cli_registry.py checks it against the analysis modules).
# ---------------------------------------------------------------------------------------------------------
ANALYSES: dict[str, AnalysisInfo] = {}


def _declare(info: AnalysisInfo) -> None:
    ANALYSES[info.name] = info


_declare(AnalysisInfo(
    "accuracy", "Accuracy", "Top-1 / top-5 accuracy (ReaL on ImageNet val).",
    ("imagenet-val", "imagenet-sample", "skimage-photos", "imagenet-hard"),
    options=(
        Option("accuracy_datasets", "list[dataset]", ("imagenet-val", "imagenet-sample"),
               "datasets scored for top-1/top-5 (any catalog name, e.g. skimage-photos)"),
        Option("probe_folds", "int", 5, "k of the stratified k-fold linear probe on --dataset folders with classes "
                                        "of their own", minimum=2),
    )))
_declare(AnalysisInfo(
    "imagenet-x", "ImageNet-X", "Per-factor error ratios on ImageNet val (paper §2.1).",
    ("imagenet-val",), figures=("imagenet-x",),
    options=(
        Option("imagenet_x_multi_factor", "bool", False,
               "also score the multi-factor annotations (an image counts for every factor marked)"),
    )))
_declare(AnalysisInfo(
    "shape-bias", "Shape bias", "Shape vs texture decisions on cue-conflict images (paper §2.2).",
    ("cue-conflict", "edge", "silhouette"), figures=("shape-bias", "shape-bias-paper"),
    options=(
        Option("mvh_raw_data", "path", None,
               ("folder of model-vs-human raw human decisions for the human reference (auto: the bundled "
                "decisions with the bundled images, else <data root>/model-vs-human-raw-data)")),
    )))
_declare(AnalysisInfo(
    "error-consistency", "Error consistency", "Do two observers err on the same images? Kappa between every pair "
                                              "of models and with model-vs-human's subjects (Geirhos et al. 2020).",
    ("cue-conflict", "edge", "silhouette", "imagenet-val", "imagenet-v2", "imagenet-sketch", "imagenet-sample"),
    figures=("error-consistency-matrix", "error-consistency-humans"),
    options=(
        Option("error_consistency_datasets", "list[dataset]",
               ("imagenet-val", "imagenet-v2", "imagenet-sketch", "imagenet-sample"),
               "ImageNet-labelled datasets compared by top-1, when present (cue-conflict, edge and silhouette "
               "are always compared by 16-class decisions)"),
    )))
_declare(AnalysisInfo(
    "model-vs-human", "Model vs human (17 datasets)",
    "16-class accuracy, accuracy difference, observed and error consistency with human subjects per dataset "
    "and distortion level, and model-vs-human's benchmark aggregates (Geirhos et al. 2021).",
    ("edge", "silhouette", "cue-conflict", "colour", "contrast", "high-pass", "low-pass", "phase-scrambling",
     "power-equalisation", "false-colour", "rotation", "eidolonI", "eidolonII", "eidolonIII", "uniform-noise",
     "sketch", "stylized"),
    figures=("mvh-accuracy", "mvh-error-consistency", "mvh-benchmark", "mvh-scatter")))
_declare(AnalysisInfo(
    "calibration", "Calibration", "Reliability diagrams, confidence histograms and ECE on ImageNet-1K val and "
                                  "ImageNet-R (paper §2.3).",
    ("imagenet-val", "imagenet-r", "imagenet-sample"), figures=("reliability-<dataset>", "ece"),
    options=(
        Option("calibration_datasets", "list[dataset]", ("imagenet-val", "imagenet-r"),
               "datasets whose ECE, MCE, Brier, NLL and temperature are computed"),
    )))
_declare(AnalysisInfo(
    "robustness", "Robustness", "Top-1 on ImageNet variants (paper §2.4).",
    ("imagenet-val", "imagenet-v2", "imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-c", "imagenet-hard",
     "objectnet"), figures=("robustness",)))
_declare(AnalysisInfo(
    "transfer", "Transfer (VTAB)", "Linear probes on frozen features, VTAB tasks (paper §2.5).",
    ("vtab",), figures=("vtab",),
    options=(
        Option("probe", "choice", "lbfgs", "linear probe: lbfgs (L-BFGS, C chosen on val) or paper "
                                           "(CLIP_benchmark AdamW protocol)", choices=("lbfgs", "paper")),
        Option("probe_val_fraction", "float", 0.2, "share of train held out for validation when a task has no val "
                                                   "split", minimum=0.0, maximum=1.0, exclusive=True),
    )))
_declare(AnalysisInfo(
    "synthetic", "Synthetic data (PUG)", "Top-1 per PUG-ImageNet factor of variation (paper §2.6).",
    ("pug-imagenet",), figures=("pug",),
    options=(
        Option("pug_rule", "choice", "any", "PUG scoring: any (argmax is any listed ImageNet class) or paper "
                                            "(Beyond-INet's dict, later keys overwrite)", choices=("any", "paper")),
        Option("pug_mapping", "path", None, "class_to_imagenet_idx.json to use (auto: under the PUG folder)"),
    )))
_declare(AnalysisInfo(
    "invariance", "Invariance", "Top-1 under scale, shift and resolution changes (paper §2.7).",
    ("imagenet-val", "imagenet-sample"), figures=("invariance",),
    options=(
        Option("invariance_dataset", "dataset", None, "dataset of the sweep (auto: imagenet-val, else imagenet-sample)"),
        Option("invariance_scales", "list[float]", (1, 1.25, 1.5, 2, 3), "zoom-in scale factors",
               minimum=0.0, exclusive=True),
        Option("invariance_shifts", "list[int]", (0, 5, 30, 75, 100), "crop shifts in original-image pixels",
               minimum=0),
        Option("invariance_resolutions", "list[int]", (112, 224, 336, 512, 640), "input resolutions (px)",
               minimum=16, maximum=4096),
    )))

_declare(AnalysisInfo(
    "significance", "Which differences are real", "Paired tests between models on the same images (McNemar for "
                                                  "accuracies, paired bootstrap otherwise), Holm-corrected; runs "
                                                  "by itself whenever two or more models ran.",
    (),
    options=(
        Option("alpha", "float", 0.05, "level of the paired tests' verdicts (Holm-corrected p < alpha)",
               minimum=0.0, maximum=1.0, exclusive=True),
    )))

_declare(AnalysisInfo(
    "cka", "Layer-wise CKA", "Linear CKA between every pair of layers of two models, per layer type, from stored "
                             "minibatch statistics (paper §2.8); rows: mean CKA at corresponding relative depths.",
    ("imagenet-val", "imagenet-sample"), figures=("cka-<pair>",),
    options=(
        Option("cka_dataset", "dataset", "imagenet-val", "images the layer statistics are taken on"),
        Option("cka_images", "int", 10000, "evenly spaced images of the dataset", minimum=4),
        Option("cka_batch_size", "int", 256, "minibatch size (fixes the batch composition; part of the key)",
               minimum=4),
        Option("cka_layers", "str", "block,attn,linear,norm", "comma-separated layer types to take "
                                                              "(block, attn, linear, norm)"),
        Option("cka_reduce", "choice", "flatten", "per-image vector of a layer output: flatten (paper, AntixK) "
                                                  "or mean over space/tokens", choices=("flatten", "mean")),
    )))


# Options of the pipeline itself (read by the engine, recorded with every run), shown as analysis "(run)".
RUN_OPTIONS: tuple[Option, ...] = (
    Option("exif_transpose", "bool", False, "apply each image's EXIF orientation before the views (own store key; "
                                            "off as in the reference pipelines)"),
)
RUN_SCOPE = "(run)"


def analysis_names() -> list[str]:
    """Every analysis name, in report order."""
    return list(ANALYSES)


def all_options() -> dict[str, tuple[str, Option]]:
    """option key -> (owning analysis, declaration)."""
    out: dict[str, tuple[str, Option]] = {o.key: (RUN_SCOPE, o) for o in RUN_OPTIONS}
    for info in ANALYSES.values():
        for o in info.options:
            if o.key in out:
                raise ValueError(f"option {o.key} declared by {out[o.key][0]} and {info.name}")
            out[o.key] = (info.name, o)
    return out


def resolve_analyses(names: Iterable[str]) -> list[str]:
    """Names as typed (``all`` expands) -> registered names, in the order given; OptionError if unknown."""
    out: list[str] = []
    for n in names:
        todo = analysis_names() if n == "all" else [n]
        for a in todo:
            if a not in ANALYSES:
                raise OptionError(f"unknown analysis {a!r}{did_you_mean(a, [*ANALYSES, 'all'])} "
                                  f"(choose from: {', '.join(ANALYSES)}, or all)")
            if a not in out:
                out.append(a)
    return out


def parse_option_items(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings from the command line -> {key: raw value}; OptionError on a missing '='."""
    out: dict[str, str] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise OptionError(f"--option {it!r}: expected KEY=VALUE (see `beyond-inet analyses`)")
        out[k.strip()] = v.strip()
    return out


def typed_options(raw: dict[str, Any]) -> dict[str, Any]:
    """Check every key and value against the declarations; returns {key: typed value} for the keys given.

    Defaults are not filled in: an analysis falls back to its declared default itself."""
    known = all_options()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise OptionError(f"unknown option {key!r}{did_you_mean(key, known)} "
                              f"(see `beyond-inet analyses` for every option)")
        out[key] = known[key][1].parse(value)
    return out


def markdown_table() -> str:
    """The README's option documentation, generated (``beyond-inet analyses --markdown``)."""
    lines = ["| analysis | option | type | default | what it does |", "|---|---|---|---|---|"]
    for o in RUN_OPTIONS:
        lines.append(f"| {RUN_SCOPE} | `{o.key}` | {o.type_label} | `{o.default_label()}` | {o.help} |")
    for info in ANALYSES.values():
        if not info.options:
            lines.append(f"| `{info.name}` | — | | | {info.title}: no options |")
        for o in info.options:
            lines.append(f"| `{info.name}` | `{o.key}` | {o.type_label} | `{o.default_label()}` | {o.help} |")
    return "\n".join(lines)
