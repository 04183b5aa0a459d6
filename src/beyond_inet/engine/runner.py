"""Compatibility alias: the run orchestration moved to ``beyond_inet.pipeline`` (it sits above engine,
analyses and report). ``from beyond_inet.engine.runner import RunConfig, run`` keeps working; the
lookup is lazy so the engine package itself never imports the pipeline."""
from __future__ import annotations

import importlib


def __getattr__(name: str):
    return getattr(importlib.import_module("beyond_inet.pipeline"), name)
