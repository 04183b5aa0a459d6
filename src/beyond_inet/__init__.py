"""beyond-inet: how pretrained vision models behave beyond ImageNet accuracy.

Pipeline: models -> data -> engine (plan, infer, store) -> analyses -> report.

Notebook API (imported on first use, so `import beyond_inet` stays light)::

    ev = beyond_inet.evaluate(models=[...], analyses=[...], data_root=..., out=..., **options)
    ev.results        # pandas DataFrame: model, dataset, analysis, metric, value, ci_low, ci_high, n
    beyond_inet.load_results(out)
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
ENGINE_VERSION = "1"  # bump when stored outputs would change for the same key

from beyond_inet import cores, lean_imports

lean_imports.install()  # no Triton (100 MB) in a process that has no GPU; see lean_imports.py
cores.quiet_openmp_waits()  # OpenMP threads sleep, not spin, when they wait (before torch loads); see cores.py

__all__ = ["__version__", "evaluate", "load_results", "Evaluation", "UserError"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "load_results", "Evaluation"):
        from beyond_inet import api

        return getattr(api, name)
    if name == "UserError":
        from beyond_inet.errors import UserError

        return UserError
    raise AttributeError(f"module 'beyond_inet' has no attribute {name!r}")
