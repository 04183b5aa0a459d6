"""Shape bias and error consistency of the packaged Lite0/1/2 (input 224/240/260) on ALL 1280 cue-conflict
stimuli: the pipeline against the independent model-vs-human reference of
tests/analyses/test_native_stimuli.py (which runs an evenly spaced subset to stay short).

    PYTHONPATH=src:. python benchmarks/check_native_stimuli.py /work/shared/data /tmp/native-out

Prints, per model, the pipeline's shape bias and the reference's (model's own normalisation, and
model-vs-human's literal ImageNet normalisation for comparison), then the model-pair kappas."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch

from beyond_inet.models import create_model
from beyond_inet.pipeline import RunConfig, run
from beyond_inet.report.results import ResultsDB
from tests.analyses.test_error_consistency import loop_kappa
from tests.analyses.test_native_stimuli import mvh_correct, mvh_logits, stimuli
from tests.analyses.test_shape_bias import _loop_reference, _reference_mapping

SPECS = ["packaged:efficientnet_lite0", "packaged:efficientnet_lite1", "packaged:efficientnet_lite2"]


def main(data: str, out: str) -> None:
    root = Path(data)
    run(RunConfig(models=SPECS, analyses=["shape-bias", "error-consistency"], out=out, data_root=data,
                  num_workers=1, batch_size=32, n_boot=100, progress=False, report=False,
                  options={"error_consistency_datasets": ["imagenet-val"]}))
    rows = {(r.model, r.dataset, r.metric): r.value for r in ResultsDB(out).rows()}
    ids, files = stimuli(root, 10 ** 9)
    correct, correct_inet = {}, {}
    for spec in SPECS:
        module = create_model(spec).module
        own = mvh_logits(module, files)
        bias = _loop_reference(ids, own, _reference_mapping())[1]
        module.pretrained_cfg = {**module.pretrained_cfg, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        inet = mvh_logits(module, files)
        bias_inet = _loop_reference(ids, inet, _reference_mapping())[1]
        correct[spec], correct_inet[spec] = mvh_correct(ids, own), mvh_correct(ids, inet)
        print(f"{spec}: shape bias pipeline {rows[(spec, 'cue-conflict', 'shape_bias')]:.6f}  reference {bias:.6f}  "
              f"(literal ImageNet normalisation: {bias_inet:.6f})", flush=True)
    for a, b in itertools.combinations(SPECS, 2):
        print(f"kappa {a} vs {b}: pipeline {rows[(a, 'cue-conflict', f'kappa_vs:{b}')]:.6f}  reference "
              f"{loop_kappa(correct[a], correct[b]):.6f}  (ImageNet normalisation: "
              f"{loop_kappa(correct_inet[a], correct_inet[b]):.6f})", flush=True)
    for spec in SPECS:
        v = rows.get((spec, "cue-conflict", "kappa_humans"))
        print(f"kappa {spec} vs humans (pipeline): {v}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2])
