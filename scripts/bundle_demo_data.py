"""Rebuild the demo data bundled in the package (src/beyond_inet/data/bundled/) from the shared data.

What it takes, and why:
  * cue-conflict: 160 of the 1280 images, 10 per shape category, each shape paired with 10 different
    texture categories (shape k with textures k+1 .. k+10, mod 16) so every texture also appears 10
    times; the first image (sorted by name) of each (shape, texture) pair. All are conflict images
    (shape != texture), so every one counts for shape bias.
  * edge and silhouette: all 160 images each.
  * model-vs-human's human raw decisions (10 subjects per experiment) for exactly those images.
PNGs are re-saved with ``optimize=True`` (lossless: pixels stay identical; tests check it).

Usage: python scripts/bundle_demo_data.py /path/to/shared/data
"""
from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "beyond_inet" / "data" / "bundled"
PER_CATEGORY = 10
_STEM = re.compile(r"^([a-z]+)\d+-([a-z]+)\d+$")


def select_cue_conflict(root: Path) -> list[Path]:
    """10 conflict images per shape category, balanced over textures (see the module docstring)."""
    cats = sorted(p.name for p in root.iterdir() if p.is_dir())
    pairs: dict[tuple[str, str], list[Path]] = {}
    for c in cats:
        for f in sorted((root / c).glob("*.png")):
            m = _STEM.match(f.stem)
            if m:
                pairs.setdefault((m.group(1), m.group(2)), []).append(f)
    chosen = []
    for i, shape in enumerate(cats):
        offsets = [k for k in range(1, len(cats)) if pairs.get((shape, cats[(i + k) % len(cats)]))]
        for k in offsets[:PER_CATEGORY]:
            chosen.append(pairs[(shape, cats[(i + k) % len(cats)])][0])
    return chosen


def copy_png(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.load()
        im.save(dst, "PNG", optimize=True)


def copy_human_csvs(raw: Path, exp: str, names: set[str]) -> int:
    """The human subjects' CSVs of `exp`, keeping the rows whose image is bundled (matched on the part of
    the trial's image name after the last underscore, as model-vs-human's image names are built)."""
    n = 0
    for f in sorted((raw / exp).glob(f"{exp}_subject-*.csv")):
        with open(f, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = [r for r in reader if r["imagename"].rsplit("_", 1)[-1] in names]
            fields = reader.fieldnames
        dst = OUT / "model-vs-human-raw-data" / exp / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        n += len(rows)
    return n


def main(shared: Path) -> None:
    for sub in ("cue-conflict", "edge", "silhouette", "model-vs-human-raw-data"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    sets = {"cue-conflict": select_cue_conflict(shared / "cue-conflict"),
            "edge": sorted((shared / "edge").glob("*/*.png")),
            "silhouette": sorted((shared / "silhouette").glob("*/*.png"))}
    for exp, files in sets.items():
        for f in files:
            copy_png(f, OUT / exp / f.parent.name / f.name)
        rows = copy_human_csvs(shared / "model-vs-human-raw-data", exp, {f.name for f in files})
        print(f"{exp}: {len(files)} images, {rows} human trials")
    shutil.copy(shared / "cue-conflict" / "LICENSE", OUT / "LICENSE-stimuli-CC-BY-4.0")
    shutil.copy(shared / "model-vs-human-raw-data" / "LICENSE-model-vs-human-repo-MIT",
                OUT / "LICENSE-human-data-MIT")
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"bundled: {size / 2**20:.2f} MiB")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bundle_demo_data.py SHARED_DATA_DIR")
    main(Path(sys.argv[1]))
