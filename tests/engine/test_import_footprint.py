"""A run of a timm/packaged model must not load libraries it only needs later (or never) before inference.

Checked in a fresh interpreter by looking at `sys.modules` (not by timing): at the first forward pass and
when the report step starts. Each of these modules costs tens of MB resident for the whole run
(docs/performance.md, "Where the base goes").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Loaded only by the model families or the steps that need them.
NEVER_BEFORE_REPORT = ["matplotlib", "jinja2", "open_clip", "transformers", "sklearn"]
# Needed by some analyses (ImageNet-X reads its annotations with pandas), never by inference.
NOT_DURING_INFERENCE = NEVER_BEFORE_REPORT + ["pandas", "scipy"]

CHILD = r"""
import importlib.abc, json, sys
snaps = {}

def modules():  # a None entry is an import that was refused, not a loaded module
    return sorted(n for n, m in list(sys.modules.items()) if m is not None)

class ReportStep(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "beyond_inet.report.html" and "report" not in snaps:
            snaps["report"] = modules()
        return None

sys.meta_path.insert(0, ReportStep())
from beyond_inet.models import base
from beyond_inet.pipeline import RunConfig, run

forward = base.VisionModel.forward
def first_forward(self, x):
    snaps.setdefault("forward", modules())
    return forward(self, x)
base.VisionModel.forward = first_forward
run(RunConfig(models=["packaged:efficientnet_lite0"], analyses=["all"], out=sys.argv[1], data_root=sys.argv[2],
              limit=2, num_workers=0, progress=False))
import torch
snaps["gpu"] = bool(torch.cuda.is_available())
print("SNAPS " + json.dumps(snaps))
"""


def loaded(mods: list[str], names: list[str]) -> list[str]:
    tops = {m.split(".")[0] for m in mods}
    return [n for n in names if n in tops]


@pytest.mark.slow
def test_heavy_libraries_stay_unloaded_until_needed(tmp_path, tiny_imagenet):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("BEYOND_INET_KEEP_TRITON", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "out"), str(tiny_imagenet)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    snaps = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("SNAPS "))[6:])
    assert "forward" in snaps and "report" in snaps, "the run never reached inference or its report step"
    assert "timm" in loaded(snaps["forward"], ["timm"])  # the snapshot is taken where the model runs
    assert loaded(snaps["forward"], NOT_DURING_INFERENCE) == []
    assert loaded(snaps["report"], NEVER_BEFORE_REPORT) == []
    if not snaps["gpu"]:  # Triton compiles GPU kernels only: 100 MB for nothing on a CPU
        assert loaded(snaps["forward"], ["triton"]) == []
