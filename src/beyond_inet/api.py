"""The Python API for notebooks: `evaluate(...)` runs models x analyses, `load_results(out)` reads a run.

The command line is a thin layer over `evaluate`: both build the same `RunConfig`, go through the same
validation (bad input raises `UserError` with the one line the CLI prints) and return the same tidy table.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from beyond_inet.errors import UserError

if TYPE_CHECKING:  # pandas is imported when a result is built, not with the package
    import pandas as pd


# evaluate()'s keywords that are run settings (the CLI's flags), not analysis options.
RUN_KEYWORDS = ("device", "batch_size", "workers", "limit", "bootstrap", "seed", "precision", "amp", "logit_scale",
                "executor",
                "ray_address", "report", "progress", "gpu_decode", "compile", "datasets", "log_samples", "decisions")


@dataclass
class Evaluation:
    """A finished run.

    results: the tidy table (columns model, dataset, analysis, metric, value, ci_low, ci_high, n)
    skips:   what was not computed, and why (columns analysis, model, dataset, reason)
    out:     the output folder (results.csv/json/sqlite, run.log, store/)
    report:  out/report.html, or None when no report was written
    summary: inference jobs, images and skipped images of this call (empty for `load_results`)
    provenance: results.json as written (configuration, versions, timings, rows with direction; docs/results.md)
    """

    results: "pd.DataFrame"
    skips: "pd.DataFrame"
    out: Path
    report: Path | None
    summary: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:  # a notebook shows the table
        return self.results._repr_html_()


def _as_list(x: str | Iterable[str]) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


def _paths(x: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[str]:
    """``--decisions`` as a list of folder paths (one path or several)."""
    if x is None:
        return []
    return [str(x)] if isinstance(x, (str, os.PathLike)) else [str(p) for p in x]


def check_device(device: str, gpu_decode: bool = False) -> None:
    """The device flags as given, before torch is imported (an ``auto`` that resolves to cpu under
    --gpu-decode is refused once resolved)."""
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device {device!r}: use auto, cpu or cuda")
    if gpu_decode and device == "cpu":
        raise UserError("--gpu-decode needs --device cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when a CUDA device is visible, else cpu; cuda without one is a UserError."""
    check_device(device)
    if device == "cpu":
        return device
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    return "cuda" if has_cuda else "cpu"


def run_config(models: str | Iterable[str] = (), analyses: str | Iterable[str] = ("accuracy",),
               data_root: str | os.PathLike | None = None, out: str | os.PathLike = "beyond-inet-out", *,
               device: str = "auto", batch_size: int = 64, workers: int | None = None, limit: int | None = None,
               bootstrap: int = 1000, seed: int = 0, precision: str = "fp32", amp: bool | None = None,
               logit_scale: float | None = None,
               executor: str = "local", ray_address: str | None = None, report: bool = True,
               progress: bool = False, gpu_decode: bool = False, compile: bool = False,
               datasets: dict[str, str | os.PathLike] | Iterable[str] | None = None, log_samples: bool = False,
               decisions: str | os.PathLike | Iterable[str | os.PathLike] | None = None, check_data: bool = False,
               **options: Any):
    """The `RunConfig` that `evaluate` runs (validated when it runs; with `check_data`, a data root holding
    none of the datasets the analyses need is refused here already, before torch is imported).

    `precision`: fp32 (default, the paper's numerics) or bf16 autocast on a GPU. `amp` is the deprecated
    spelling: True means bf16, False fp32."""
    from beyond_inet.validate import check_arguments, check_user_datasets

    check_device(device, gpu_decode)  # flags first, then what the data root holds
    # Before torch is imported: a mistyped argument costs no seconds (validate_run checks it all again, cheaply).
    check_arguments(_as_list(models), _as_list(analyses), options,
                    data_root=None if data_root is None else str(data_root), limit=limit, n_boot=bootstrap, seed=seed,
                    num_workers=workers, batch_size=batch_size, logit_scale=logit_scale, datasets=datasets,
                    decisions=_paths(decisions), check_data=check_data)
    from beyond_inet.engine.runner import RunConfig, default_workers

    dev = resolve_device(device)
    if gpu_decode and dev != "cuda":
        raise UserError("--gpu-decode needs --device cuda")
    return RunConfig(models=_as_list(models), analyses=_as_list(analyses), out=str(out),
                     data_root=None if data_root is None else str(data_root), device=dev, batch_size=batch_size,
                     num_workers=default_workers(dev) if workers is None else workers, limit=limit,
                     precision=precision if amp is None else ("bf16" if amp else "fp32"),
                     logit_scale=logit_scale, executor=executor, ray_address=ray_address, seed=seed, n_boot=bootstrap,
                     options=dict(options), report=report, progress=progress, gpu_decode=gpu_decode,
                     compile=compile, datasets=check_user_datasets(datasets), log_samples=bool(log_samples),
                     decisions=_paths(decisions))


def evaluate(models: str | Iterable[str] = (), analyses: str | Iterable[str] = ("accuracy",),
             data_root: str | os.PathLike | None = None, out: str | os.PathLike = "beyond-inet-out",
             **kwargs: Any) -> Evaluation:
    """Run `models` x `analyses` on the datasets under `data_root`; outputs and results go to `out`.

    Keyword arguments are the command line's flags (device, batch_size, workers, limit, bootstrap, seed, precision,
    logit_scale, executor, ray_address, report, progress, gpu_decode, compile, log_samples) and analysis options by key
    (e.g. ``pug_rule="paper"``, ``calibration_datasets=["imagenet-val"]``; see `beyond-inet analyses`).
    ``decisions=[folder, ...]`` adds published per-trial decisions (model-vs-human raw data) as observers beside
    the models (docs/observers.md); with decisions, `models` may be empty.
    ``datasets={"mypets": "/data/pets"}`` adds your own folders of class folders (docs/user-datasets.md): each is
    scored by every requested analysis that applies, under its name. ``log_samples=True`` also writes each image's
    prediction, label, correctness and confidence to ``out/samples/*.parquet`` (docs/results.md).
    Stored outputs are reused: a second call with another analysis costs seconds. Raises `UserError` on
    bad input (before any model is built) and when a model could not be built (the others' results are kept).
    """
    cfg = run_config(models, analyses, data_root, out, check_data=True, **kwargs)
    from beyond_inet.data import catalog
    from beyond_inet.engine.runner import run

    try:
        summary = run(cfg)
    finally:  # the run's --dataset folders are known by name for this run only
        catalog.set_user_datasets([])
    ev = load_results(cfg.out)
    ev.summary = summary
    return ev


def load_results(out: str | os.PathLike) -> Evaluation:
    """Read a finished run's folder (written by `evaluate` or `beyond-inet run`)."""
    import pandas as pd

    from beyond_inet.analyses.base import Row
    from beyond_inet.report.results import ResultsDB

    p = Path(out)
    if not (p / "results.sqlite").is_file():
        raise UserError(f"{str(p)!r} holds no results.sqlite; run `beyond-inet run ... --out {p}` first")
    db = ResultsDB(p)
    try:
        rows, skips = db.rows(), db.skips()
    finally:
        db.close()
    results = pd.DataFrame([r.as_tuple() for r in rows], columns=list(Row.COLUMNS))
    skip_df = pd.DataFrame([(s.analysis, s.model, s.dataset, s.reason) for s in skips],
                           columns=["analysis", "model", "dataset", "reason"])
    report = p / "report.html"
    provenance = {}
    try:  # written with the table by every run since results.json became a record (older folders: a list)
        got = json.loads((p / "results.json").read_text())
        provenance = got if isinstance(got, dict) else {}
    except (OSError, ValueError):
        pass
    return Evaluation(results, skip_df, p, report if report.is_file() else None, provenance=provenance)
