"""Analyses: pure functions over stored per-sample outputs, registered by name.

Importing this package registers every built-in analysis.
"""
from beyond_inet.analyses.base import (  # noqa: F401
    ANALYSES,
    Analysis,
    AnalysisResult,
    Context,
    ModelEnv,
    Request,
    Row,
    Skip,
    get_analysis,
    list_analyses,
    register_analysis,
)

_BUILTIN = ["accuracy", "calibration", "imagenet_x", "robustness", "shape_bias", "invariance", "synthetic", "transfer",
            "error_consistency", "paired_tests", "cka", "model_vs_human"]


def load_builtin() -> None:
    """Import the built-in analysis modules (each registers itself); missing ones are ignored."""
    import importlib

    for mod in _BUILTIN:
        try:
            importlib.import_module(f"beyond_inet.analyses.{mod}")
        except ModuleNotFoundError as e:  # an analysis not written yet
            if e.name != f"beyond_inet.analyses.{mod}":
                raise
