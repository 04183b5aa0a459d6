"""Compatibility alias: the run orchestration moved to ``beyond_inet.pipeline`` (it sits above engine,
analyses and report). Importing ``beyond_inet.engine.runner`` gives the pipeline module itself, so old
imports (``from beyond_inet.engine.runner import RunConfig, run``) and monkeypatches keep working; nothing
in the engine imports this module, so the engine never depends on the pipeline."""
from __future__ import annotations

import importlib
import sys

sys.modules[__name__] = importlib.import_module("beyond_inet.pipeline")
