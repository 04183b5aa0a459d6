"""`beyond-inet run`: plan -> infer (cached) -> analyze -> compare -> results (and report).

The one module above engine, analyses and report: the engine plans and runs inference and knows nothing
of analyses or results. Models are handled one at a time (built once, every pass it needs, then
dropped) so dozens of models fit in memory. Analyses run on the stored outputs only; an analysis whose
datasets are absent is skipped with the reason recorded, the others still run. Cross-model analyses
(``compares_models``) run once at the end with lazy, store-backed access to every model's outputs; the
paired significance tests are one of them and run whenever two or more models ran.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from beyond_inet import __version__
from beyond_inet.analyses import ANALYSES, Analysis, Context, ModelEnv, Request, Skip, get_analysis, load_builtin
from beyond_inet.data import catalog, decisions
from beyond_inet.errors import UserError
from beyond_inet.engine.executors import ExecConfig, get_executor
from beyond_inet.engine.plan import DatasetCache, exif_transpose_option, numerics_of, plan_model_jobs
from beyond_inet.engine.store import Store, StoreDamaged
from beyond_inet.report.results import ResultsDB

log = logging.getLogger("beyond_inet")


@dataclass
class RunConfig:
    models: list[str]
    analyses: list[str]
    out: str
    data_root: str | None = None
    device: str = "cpu"
    batch_size: int = 64
    num_workers: int = 2
    limit: int | None = None
    precision: str = "fp32"  # GPU numerics: fp32 (the paper's) or bf16 autocast; CPUs always run fp32
    logit_scale: float | None = None
    executor: str = "local"
    ray_address: str | None = None
    seed: int = 0
    n_boot: int = 1000
    options: dict = field(default_factory=dict)
    report: bool = True
    progress: bool = True
    gpu_decode: bool = False
    compile: bool = False
    datasets: dict = field(default_factory=dict)  # the user's own folders: --dataset NAME=PATH
    user_datasets: dict = field(default_factory=dict)  # filled by validation: what each folder is (data.user)
    log_samples: bool = False  # OUT/samples/*.parquet: each image's prediction, label, correctness, confidence
    decisions: list = field(default_factory=list)  # --decisions folders: published observers (data.decisions)

    @property
    def amp(self) -> bool:
        return self.precision == "bf16"


PRECISIONS = ("fp32", "bf16")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def setup_logging(out: Path) -> Path:
    """Every log record, ours and the libraries' (huggingface_hub retries, timm, urllib3, warnings), goes to
    run.log and not to stderr: the handler sits on the root logger, so Python's stderr fallback never fires."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run.log"
    logging.getLogger("beyond_inet").setLevel(logging.INFO)
    root = logging.getLogger()
    for lg in (root, logging.getLogger("beyond_inet")):
        for h in list(lg.handlers):
            if getattr(h, "_beyond_inet", False):
                lg.removeHandler(h)
                h.close()
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    fh._beyond_inet = True  # type: ignore[attr-defined]
    root.addHandler(fh)
    logging.captureWarnings(True)
    return path


def versions(device: str | None = None) -> dict[str, str]:
    """Package versions of the run (and, given `device`, the name of the chip that ran it)."""
    import importlib.metadata as md

    out = {"beyond-inet": __version__, "python": platform.python_version()}
    for pkg in ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "pyarrow", "imagenet-x", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    if device is not None:
        out["device"] = device_name(device)
    return out


def device_name(device: str) -> str:
    """`cuda: NVIDIA H100 80GB HBM3` or `cpu: x86_64 (16 cores)`: what the numbers were computed on."""
    if str(device).startswith("cuda"):
        try:
            import torch

            return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
        except Exception as e:  # noqa: BLE001 - a name is informative only; never fail a run for it
            return f"cuda: (name unknown: {e})"
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


class StageClock:
    """Wall time per stage (planning, inference per model, each analysis, report), summed over repeats."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.seconds: dict = {}

    def add(self, t_start: float, *path: str) -> None:
        node = self.seconds
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = node.get(path[-1], 0.0) + time.perf_counter() - t_start

    def as_dict(self) -> dict:
        """Seconds per stage, to the millisecond, and the run's total so far."""
        def rounded(d: dict) -> dict:
            return {k: rounded(v) if isinstance(v, dict) else round(v, 3) for k, v in d.items()}

        return {**rounded(self.seconds), "total": round(time.perf_counter() - self.t0, 3)}


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    class Rate(TextColumn):
        def render(self, task):
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:6.1f} img/s" if speed else "   ... img/s")

    import sys

    from rich.console import Console

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(""),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console)


def run(cfg: RunConfig) -> dict:
    """Run the whole pipeline; returns a summary (jobs run, images, skips)."""
    if cfg.precision not in PRECISIONS:
        raise UserError(f"unknown precision {cfg.precision!r}; use {' or '.join(PRECISIONS)}")
    from beyond_inet.validate import hub_offline, validate_run

    clock = StageClock()
    cfg = validate_run(cfg)  # every check that needs no model, before any work
    with hub_offline(list(cfg.models)):  # an unreachable Hub: offline for this run only
        return _run_checked(cfg, clock)


def _run_checked(cfg: RunConfig, clock: StageClock) -> dict:
    """``run`` after its checks."""
    load_builtin()
    out = Path(cfg.out)
    setup_logging(out)
    exif = exif_transpose_option(cfg.options)  # a bad value fails before any work
    observers = read_observers(cfg.decisions, cfg.data_root, cfg.models)  # bad files: exit 2 before any model
    analyses = [get_analysis(a) for a in cfg.analyses]
    if len(cfg.models) >= 2 and SIGNIFICANCE in ANALYSES and SIGNIFICANCE not in cfg.analyses:
        analyses.append(get_analysis(SIGNIFICANCE))  # paired tests whenever >= 2 models run
    run_id = uuid.uuid4().hex[:12]
    db = ResultsDB(out)
    numerics = numerics_of(cfg.device, cfg.amp, cfg.gpu_decode)
    db.start_run(run_id, _now(), {**asdict(cfg), "numerics": numerics, "versions": versions(cfg.device),
                                  "observers": decisions.describe(observers)})
    log.info("run %s: models=%s analyses=%s data_root=%s", run_id, cfg.models, cfg.analyses, cfg.data_root)
    ctx = Context(data_root=cfg.data_root, options={**cfg.options, "device": cfg.device},
                  available=lambda n: catalog.available(n, cfg.data_root),
                  parts=lambda n: catalog.parts(n, cfg.data_root), seed=cfg.seed, n_boot=cfg.n_boot,
                  analyses=tuple(a.name for a in analyses), observers=tuple(observers))
    requests = {a.name: a.requests(ctx) for a in analyses}
    store = Store(out / "store")
    store.remove_strays()
    datasets = DatasetCache(cfg.data_root, cfg.limit, exif)
    exec_cfg = ExecConfig(str(store.root), cfg.data_root, cfg.limit, cfg.device, cfg.batch_size, cfg.num_workers,
                          cfg.amp, cfg.logit_scale, gpu_decode=cfg.gpu_decode, compile=cfg.compile,
                          exif_transpose=exif)
    executor = get_executor(cfg.executor, cfg.ray_address)
    summary = {"run_id": run_id, "jobs": 0, "images": 0, "skipped_images": 0, "skips": [], "unreadable": {},
               "damaged": []}
    unreadable: dict[str, dict[str, str]] = {}
    all_rows = {a.name: [] for a in analyses}
    from beyond_inet.models import create_model

    failed: list[str] = []
    wanted = [r for reqs in requests.values() for r in reqs]
    live: dict = {}  # the model now in memory (spec -> model), for recomputing damaged shards without a rebuild

    def run_jobs(todo: list, model, progress: bool, verb: str = "ran") -> None:
        """Run planned jobs (under a progress bar when `progress`), counting and logging each."""
        prog = _progress(progress)
        if prog is not None:
            prog.start()
        try:
            stats = executor.run(todo, exec_cfg, model, datasets, prog)
        finally:
            if prog is not None:
                prog.stop()
        for job, st in zip(todo, stats):
            summary["jobs"] += 1
            summary["images"] += st.images
            for sid, err in st.skipped:
                log.warning("unreadable image skipped: %s in %s (%s)", sid, job.dataset, err)
            log.info("%s %s: %d images, %d shards", verb, job.label, st.images, st.shards_written)

    def recompute(spec: str, dataset: str, err: StoreDamaged) -> None:
        """Shards a load found damaged (already moved aside) are computed again by this run: the dataset's
        jobs are planned anew and only the now-missing shards run. Planning reads no shard: damage is found
        by the load's hash as the shard is read, so it surfaces here."""
        store.damaged += err.damages
        report_damage(store, db, run_id, summary)
        model = live.get(spec)
        if model is None:
            model = create_model(spec, logit_scale=cfg.logit_scale)
        jobs = plan_model_jobs(model, [r for r in wanted if r.dataset == dataset], datasets, store, numerics)
        run_jobs([j for j in jobs if j.shards], model, False, "recomputed")

    model_keys: dict[str, dict] = {}  # spec -> {(dataset, view): (store key, n)}: what cross-model analyses read
    clock.add(clock.t0, "planning")
    for spec in cfg.models:
        t_model = time.perf_counter()
        try:
            model = create_model(spec, logit_scale=cfg.logit_scale)
        except UserError as e:  # the other models still run; the run ends with exit 2 afterwards
            log.error("model %s could not be built: %s", spec, e)
            failed.append(str(e))
            db.add_skips([Skip(a.name, spec, "*", f"model could not be built: {e}") for a in analyses], run_id)
            continue
        db.set_model_info(spec, {**model.describe(), "numerics": numerics})
        live[spec] = model
        jobs = plan_model_jobs(model, wanted, datasets, store, numerics)
        report_damage(store, db, run_id, summary)
        report_upgrades(jobs, summary)
        todo = [j for j in jobs if j.shards]
        log.info("%s: %d jobs planned, %d need inference", spec, len(jobs), len(todo))
        if todo:
            run_jobs(todo, model, cfg.progress)
            log.info("%s: inference done; peak RSS so far %.0f MB", spec, peak_rss_mb())
        clock.add(t_model, "inference", spec)
        keys = {(j.dataset, v): (k, j.n_samples) for j in jobs for v, k in j.keys.items()}
        record_unreadable(store, jobs, db, run_id, unreadable, summary)
        model_keys[spec] = keys
        db.set_outputs(spec, {dv: k for dv, (k, _) in keys.items()})
        loaded: dict = {}  # outputs shared by the analyses of one model, emptied after each analysis

        def fetch(req: Request, _keys=keys, _loaded=loaded, _spec=spec):
            if (req.dataset, req.view) not in _keys:
                return None
            if (req.dataset, req.view) not in _loaded:
                key, _ = _keys[(req.dataset, req.view)]
                _loaded[(req.dataset, req.view)] = load_outputs(
                    store, key, lambda e: recompute(_spec, req.dataset, e), datasets.expected(req.dataset))
            return _loaded[(req.dataset, req.view)]

        # The layer-statistics pass decodes on the CPU: its numerics never include GPU decoding.
        env = ModelEnv(str(out), datasets, cfg.device, cfg.num_workers, cfg.amp,
                       numerics_of(cfg.device, cfg.amp, False))
        for a in analyses:
            t_analysis = time.perf_counter()
            db.clear_skips(a.name, spec)
            prepare_skips = run_prepare(a, ctx, model, env, cfg.progress)
            if env.damaged:  # stored files of the prepare step found damaged (and recomputed there)
                store.damaged += env.damaged
                env.damaged.clear()
                report_damage(store, db, run_id, summary)
            db.add_skips(prepare_skips, run_id)
            summary["skips"] += prepare_skips
            missing = [r.dataset for r in requests[a.name] if (r.dataset, r.view) not in keys]
            skips = [Skip(a.name, spec, d, datasets.missing.get(d, "dataset not available"))
                     for d in dict.fromkeys(missing)]
            if len(missing) == len(requests[a.name]) and requests[a.name]:
                log.info("analysis %s skipped for %s: none of its datasets are present", a.name, spec)
                db.add_skips(skips, run_id)
                summary["skips"] += skips
                clock.add(t_analysis, "analyses", a.name)
                continue
            if getattr(a, "compares_models", False):  # its rows come from `compare`, after every model ran
                db.add_skips(skips, run_id)
                summary["skips"] += skips
                clock.add(t_analysis, "analyses", a.name)
                continue
            res = a.compute(ctx, spec, fetch)
            # The engine's reason for an absent dataset says how to get it; drop the analysis' echo of it.
            absent = {s.dataset for s in skips}
            res.skips = [s for s in res.skips if s.dataset not in absent]
            db.add_rows(res.rows, run_id)
            db.set_metric_info(a.name, res.metrics)
            db.add_skips(skips + res.skips, run_id)
            db.add_artifacts(a.name, spec, res.artifacts, run_id)
            all_rows[a.name] += res.rows
            summary["skips"] += skips + res.skips
            loaded.clear()  # the next analysis reloads what it needs (one read per shard: cheap)
            log.info("analysis %s done for %s; peak RSS so far %.0f MB", a.name, spec, peak_rss_mb())
            clock.add(t_analysis, "analyses", a.name)
        if cfg.log_samples:
            t_samples = time.perf_counter()
            from beyond_inet.report.samples import write_model_samples

            write_model_samples(out, spec, sorted(keys), fetch, loaded)
            clock.add(t_samples, "log_samples")
        live.clear()
        del model, loaded
    run_observers(ctx, analyses, observers, db, run_id, summary, all_rows)
    _run_cross_model(ctx, [a for a in analyses if getattr(a, "compares_models", False)], model_keys, store, db,
                     run_id, summary, recompute, datasets.expected, clock)
    for a in analyses:
        t_summary = time.perf_counter()
        res = a.summarize(ctx, all_rows[a.name])
        clock.add(t_summary, "analyses", a.name)
        db.add_rows(res.rows, run_id)
        db.add_skips(res.skips, run_id)
        for name, data in res.artifacts.items():
            db.add_artifacts(a.name, "*", {name: data}, run_id)
    db.set_run_meta(run_id, "datasets", dataset_provenance(datasets))
    db.finish_run(run_id, _now())
    db.set_run_meta(run_id, "timings", clock.as_dict())
    db.export()
    if cfg.report:
        try:
            from beyond_inet.report.html import write_report
        except ModuleNotFoundError:
            write_report = None
        if write_report is not None:
            t_report = time.perf_counter()
            try:
                write_report(out)
            except BaseException:
                db.close()
                raise
            clock.add(t_report, "report")
            db.set_run_meta(run_id, "timings", clock.as_dict())
            db.export()  # again, now that the report's time is known (results.csv is unchanged)
    db.close()
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    log.info("run %s finished: %d jobs, %d images, %d unreadable (%s); peak RSS %.0f MB", run_id, summary["jobs"],
             summary["images"], summary["skipped_images"], unreadable_text(summary["unreadable"]),
             summary["peak_rss_mb"])
    if failed:
        more = f" (and {len(failed) - 1} more model(s); see run.log)" if len(failed) > 1 else ""
        others = f"; results of the other models are in {out}" if len(failed) < len(cfg.models) else ""
        raise UserError(f"{failed[0]}{more}{others}")
    if datasets.refused:  # present but unusable (e.g. a webdataset whose class list names no label space)
        for name, why in datasets.refused.items():
            log.error("dataset %s could not be used: %s", name, why)
        more = f" (and {len(datasets.refused) - 1} more dataset(s); see run.log)" if len(datasets.refused) > 1 else ""
        raise UserError(f"{next(iter(datasets.refused.values()))}{more}; results of everything else are in {out}")
    return summary


def dataset_provenance(datasets: DatasetCache) -> list[dict]:
    """Each dataset the run opened: images used (n), the fingerprint of its sample list (ids + labels: the
    store key's) and of its files' identities (size, mtime: what each stored shard records)."""
    return [{"name": name, "n": n, "fingerprint": fp, "files": files}
            for name, (n, fp, files) in sorted(datasets.provenance().items())]


def report_damage(store: Store, db: ResultsDB, run_id: str, summary: dict) -> None:
    """Damaged store files found since the last call: one warning line on stderr, run.log and the database."""
    new = store.damaged[len(summary["damaged"]):]
    if not new:
        return
    summary["damaged"] += new
    db.add_damage(new, run_id, _now())
    names = ", ".join(f"{Path(d.path).parent.name}/{Path(d.path).name} ({d.reason})" for d in new[:3])
    more = f" and {len(new) - 3} more" if len(new) > 3 else ""
    line = (f"{len(new)} damaged store file(s) moved aside and recomputed: {names}{more} "
            f"(listed in report.html; `beyond-inet verify {store.root.parent}` checks a whole store)")
    log.warning(line)
    print(f"beyond-inet: warning: {line}", file=sys.stderr)


def report_upgrades(jobs, summary: dict) -> None:
    """Stored entries that held fewer output kinds than this run's analyses read (the store keeps only what
    was asked for; docs/store.md) and are computed again: one line on stderr (each entry is in run.log)."""
    lines = [line for j in jobs for line in j.upgraded]
    if not lines:
        return
    summary.setdefault("upgraded", []).extend(lines)
    more = f" (and {len(lines) - 1} more; see run.log)" if len(lines) > 1 else ""
    print(f"beyond-inet: {lines[0]}{more}", file=sys.stderr)


def record_unreadable(store: Store, jobs, db: ResultsDB, run_id: str, seen: dict[str, dict[str, str]],
                      summary: dict) -> None:
    """Unreadable images as the stored shards record them (so cached reruns know them too), per dataset."""
    for job in jobs:
        for key in dict.fromkeys(job.keys.values()):
            try:
                entry = store.existing(key)
            except StoreDamaged as e:  # its meta.json (moved aside): the entry's load recomputes it
                store.damaged += e.damages
                continue
            if entry is not None:
                seen.setdefault(job.dataset, {}).update(dict(entry.skipped()))
    for dname, files in seen.items():
        db.set_unreadable(dname, sorted(files.items()), run_id)
    summary["unreadable"] = {d: len(f) for d, f in sorted(seen.items()) if f}
    summary["skipped_images"] = sum(summary["unreadable"].values())


def unreadable_text(counts: dict[str, int]) -> str:
    """`imagenet-val 2, imagenet-r 1` or `none`: the summary line's per-dataset count."""
    return ", ".join(f"{d} {n}" for d, n in counts.items()) if counts else "none"


def run_prepare(a: Analysis, ctx: Context, model, env: ModelEnv, progress: bool) -> list[Skip]:
    """An analysis' per-model step (`Analysis.prepare`, e.g. cka's layer-statistics pass) under a progress bar."""
    if type(a).prepare is Analysis.prepare:
        return []
    prog = _progress(progress)
    env.progress = prog
    if prog is not None:
        prog.start()
    try:
        return a.prepare(ctx, model, env)
    finally:
        if prog is not None:
            prog.stop()
        env.progress = None


def _run_cross_model(ctx: Context, analyses: list, model_keys: dict[str, dict], store: Store, db: ResultsDB,
                     run_id: str, summary: dict, recompute=None, expected=None,
                     clock: StageClock | None = None) -> None:
    """Cross-model analyses (`compares_models`): one `compare` call with every model that ran, reading the
    store lazily (``cross_fetch``); their rows, skips and artifacts are stored under model ``*``."""
    if not model_keys:  # published observers alone: only the analyses that score them
        analyses = [a for a in analyses if ctx.observers and a.scores_observers()]
    if not analyses:
        return
    fetch = cross_fetch(store, {m: {dv: k for dv, (k, _) in keys.items()} for m, keys in model_keys.items()},
                        recompute, expected)
    for a in analyses:
        t_compare = time.perf_counter()
        db.clear_skips(a.name, "*")
        res = a.compare(ctx, list(model_keys), fetch)
        if clock is not None:
            clock.add(t_compare, "analyses", a.name)
        db.add_rows(res.rows, run_id)
        db.add_skips(res.skips, run_id)
        db.add_artifacts(a.name, "*", res.artifacts, run_id)
        summary["skips"] += res.skips


SIGNIFICANCE = "significance"
HUMANS = "humans"  # the human subjects among the observers, aggregated (per subject, then the mean)


def read_observers(paths: list, data_root: str | None, models: list[str]) -> list:
    """The ``--decisions`` folders' observers (`data.decisions`), checked before any model runs; an observer
    named like a model of the run, or like the human aggregate, is refused (their rows would mix)."""
    if not paths:
        return []
    observers = decisions.read_observers(paths, data_root)
    for o in observers:
        if o.name in models or o.name == HUMANS:
            raise UserError(f"--decisions: observer {o.name!r} has the name of "
                            f"{'a model of this run' if o.name in models else 'the human aggregate'}")
    return observers


def run_observers(ctx: Context, analyses: list, observers: list, db: ResultsDB, run_id: str, summary: dict,
                  all_rows: dict) -> None:
    """Published observers (``--decisions``) through every per-model analysis that needs decisions only,
    scored like a model; the human subjects also as one aggregate (``humans``). Analyses that need logits
    list each observer as a skip. Cross-model analyses read ``ctx.observers`` in `compare`."""
    if not observers:
        return
    humans = [o for o in observers if o.human]
    for a in analyses:
        for name in [o.name for o in observers] + [HUMANS]:  # a rerun into the same folder replaces them
            db.clear_skips(a.name, name)
        if not a.scores_observers():
            skips = [Skip(a.name, o.name, "*", "needs a model's logits or features; published decisions "
                                               "cannot be scored by it") for o in observers]
            db.add_skips(skips, run_id)
            summary["skips"] += skips
            continue
        if getattr(a, "compares_models", False):
            continue
        results = [(o.name, a.compute_observer(ctx, o)) for o in observers]
        if len(humans) >= 2:
            results.append((HUMANS, a.compute_group(ctx, HUMANS, humans)))
        for name, res in results:
            db.add_rows(res.rows, run_id)
            db.add_skips(res.skips, run_id)
            db.add_artifacts(a.name, name, res.artifacts, run_id)
            all_rows[a.name] += res.rows
            summary["skips"] += res.skips


def load_outputs(store: Store, key: str, recompute=None, expect=None):
    """The stored outputs under `key` (None when absent), every byte verified as it is read and, given
    `expect` (``DatasetCache.expected``), meta.json and every shard checked against the dataset's images.
    Damaged files are moved aside by the load; `recompute(err)` then computes them again and the entry is
    read once more (without `recompute`, or damaged a second time, the StoreDamaged error goes up: one
    line, exit 2)."""
    try:
        entry = store.existing(key, expect)
        if entry is None:
            return None
        return entry.load()
    except StoreDamaged as e:
        if recompute is None:
            raise
        recompute(e)
    try:
        entry = store.existing(key, expect)
        if entry is None:
            raise StoreDamaged(f"stored outputs {store.root / key} are missing after they were recomputed")
        return entry.load()
    except StoreDamaged as e:
        raise StoreDamaged(f"{e} (damaged again right after it was recomputed: is the disk failing?)",
                           e.damages) from None


def store_fetch(store: Store, keys: dict[tuple[str, str], str], cache_size: int = 8, on_damage=None,
                expected=None):
    """fetch(request) for one model: outputs loaded from the store on first use, a few kept in memory.
    `on_damage(dataset, err)` recomputes shards found damaged while loading (see `load_outputs`);
    `expected(dataset)` gives what the entries must hold (``DatasetCache.expected``)."""
    from collections import OrderedDict

    loaded: OrderedDict = OrderedDict()

    def fetch(req: Request):
        dv = (req.dataset, req.view)
        if dv not in keys:
            return None
        if dv not in loaded:
            got = load_outputs(store, keys[dv], None if on_damage is None else lambda e: on_damage(req.dataset, e),
                               None if expected is None else expected(req.dataset))
            if got is None:
                return None
            loaded[dv] = got
            while len(loaded) > cache_size:
                loaded.popitem(last=False)
        loaded.move_to_end(dv)
        return loaded[dv]

    return fetch


def cross_fetch(store: Store, keys_by_model: dict[str, dict[tuple[str, str], str]], recompute=None, expected=None):
    """CrossFetch: (model spec, request) -> that model's stored outputs, lazily loaded (None when absent).
    `recompute(spec, dataset, err)` recomputes shards found damaged while loading (the model is rebuilt)."""
    fetchers = {m: store_fetch(store, k, cache_size=2,
                               on_damage=None if recompute is None else
                               (lambda dataset, e, _m=m: recompute(_m, dataset, e)), expected=expected)
                for m, k in keys_by_model.items()}

    def fetch(model: str, req: Request):
        f = fetchers.get(model)
        return None if f is None else f(req)

    return fetch


def default_workers(device: str = "cpu") -> int:
    """Decoding processes when --workers is not given: `cores.default_workers` over the cores this
    process may use (affinity mask, cgroup quota, OMP_NUM_THREADS; see beyond_inet.cores)."""
    from beyond_inet import cores

    return cores.default_workers(device)
