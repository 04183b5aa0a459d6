"""Published reference numbers, shipped as package data.

``timm_results``  top-1 of the pretrained timm models on ImageNet val, ReaL, V2, Sketch, A and R
                  (timm's ``results/`` CSVs, Apache-2.0) and the effective-robustness baseline fitted
                  through the standard ImageNet-1k models among them;
``paper``         every number of the Beyond-INet paper's figures (paper-spec §3) with its read-off
                  tolerance, keyed by the (analysis, dataset, metric) rows our analyses produce.

A leaf package: it imports nothing from the rest of beyond_inet, so analyses and the report can use it.
"""
