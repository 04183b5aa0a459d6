"""Rebuild ``data/timm_results.csv`` from timm's published result CSVs (the ``results/`` folder).

    python -m beyond_inet.references.build_timm /path/to/timm-results

Keeps, per (model, img_size), the top-1 (%) on each test set, the top-5 (%) on ImageNet val (``val_top5``:
the reproduction check of our top-5 row) and the evaluation settings (img_size, crop_pct, interpolation);
the rest of timm's columns (other top-5s, ranks, params) are not needed.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

# Our column -> timm's file. A and R are the 200-class (masked) results, not the "-clean" val subsets.
SOURCES = {
    "val": "results-imagenet.csv",
    "real": "results-imagenet-real.csv",
    "v2": "results-imagenetv2-matched-frequency.csv",
    "sketch": "results-sketch.csv",
    "a": "results-imagenet-a.csv",
    "r": "results-imagenet-r.csv",
}
SETTINGS = ("img_size", "crop_pct", "interpolation")
VAL_TOP5 = "val_top5"  # top-5 on ImageNet val (the other test sets' top-5 is not kept)
OUT = Path(__file__).parent / "data" / "timm_results.csv"


def read_table(src: Path) -> list[dict[str, str]]:
    """One row per (model, img_size) present in the val file, with every test set's top-1 ('' if absent)."""
    tables = {}
    for col, fname in SOURCES.items():
        with open(src / fname, newline="") as f:
            tables[col] = {(r["model"], r["img_size"]): r for r in csv.DictReader(f)}
    out = []
    for key, row in tables["val"].items():
        rec = {"model": key[0], **{s: row[s] for s in SETTINGS}}
        for col in SOURCES:
            other = tables[col].get(key)
            rec[col] = other["top1"] if other else ""
        rec[VAL_TOP5] = row["top5"]
        out.append(rec)
    return out


def write_table(rows: list[dict[str, str]], path: Path = OUT) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["model", *SETTINGS, *SOURCES, VAL_TOP5])
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m beyond_inet.references.build_timm <timm-results folder>", file=sys.stderr)
        return 2
    rows = read_table(Path(args[0]))
    write_table(rows)
    print(f"wrote {len(rows)} rows to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
