"""Published per-trial decisions (``--decisions PATH``): model-vs-human's raw-data CSVs read into observers.

A decisions folder either holds ``<dataset>/`` subfolders (model-vs-human's ``raw-data/``) or is itself one
dataset folder (``.../cue-conflict``); a dataset folder's CSVs are named ``<dataset>_<observer>_session...csv``
and hold the columns ``subj,session,trial,rt,object_response,category,condition,imagename`` (model-vs-human
writes ``Session`` in some human files: header names are matched without case). Every ``subj`` becomes an
`Observer` (``subject-NN`` = a human).

Everything is checked before any model runs, so a bad file is one line and exit 2 (`UserError`):

* a missing column;
* a ``category`` outside the 16 categories, or an ``object_response`` outside them other than a human's
  ``na`` (a model always decides);
* an image that is not in the dataset, when the full dataset is present under the data root (a bundled
  subset cannot tell: it lacks most images);
* a repeated trial: the same (subj, session, trial), or the same subject with the same ``imagename`` twice,
  in one dataset (a duplicated file would otherwise count twice).
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from beyond_inet.contracts import Observer, Trial
from beyond_inet.data import catalog
from beyond_inet.data.labelspaces import CUE_CONFLICT_CATEGORIES
from beyond_inet.errors import UserError

COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename")
NO_DECISION = "na"  # a human's "no answer" (counts as neither shape nor texture, and as wrong)
HUMAN = re.compile(r"^subject-\d+$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".PNG", ".JPG")
_CATS = frozenset(CUE_CONFLICT_CATEGORIES)


def image_key(name: str) -> str:
    """``0001_s5n_s01_0_bird_00_bird3-bird2.png`` and ``bird/bird3-bird2.png`` -> ``bird3-bird2.png``: the
    image file a trial showed (model-vs-human prefixes human trials with their trial information)."""
    return name.replace("\\", "/").rsplit("/", 1)[-1].rsplit("_", 1)[-1]


def is_human(subj: str) -> bool:
    """model-vs-human names its human subjects ``subject-NN``."""
    return bool(HUMAN.match(subj))


def _csvs(folder: Path) -> list[Path]:
    """The decision CSVs of a dataset folder: ``<folder name>_*.csv``."""
    return sorted(p for p in folder.glob(f"{folder.name}_*.csv") if p.is_file())


def dataset_folders(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """(dataset, folder) pairs a ``--decisions`` path holds: itself when it is a dataset folder, else its
    subfolders that are (``performances/`` and other folders without ``<name>_*.csv`` are not)."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"--decisions {path}: not a folder")
    if _csvs(p):
        return [(p.name, p)]
    found = [(d.name, d) for d in sorted(p.iterdir()) if d.is_dir() and _csvs(d)]
    if not found:
        raise UserError(f"--decisions {path}: holds no decision CSVs (expected <dataset>/<dataset>_<observer>_"
                        f"session-1.csv, or a dataset folder such as .../cue-conflict)")
    return found


def dataset_images(dataset: str, data_root: str | os.PathLike | None) -> set[str] | None:
    """The image file names of `dataset` when its full copy is present under the data root; None when it is
    absent, unknown to the catalog, or only a bundled subset (which cannot tell a wrong name from a left-out
    image)."""
    entry = catalog.ENTRIES.get(dataset)
    if entry is None or entry.kind != "cue":
        return None
    found = entry.find(data_root)
    if found is None or not found.is_dir():
        return None
    if entry.uses_bundled(data_root) and not entry.extras.get("bundled_complete"):
        return None
    return {f.name for f in found.rglob("*") if f.suffix in IMAGE_SUFFIXES and f.is_file()}


def _fail(path: Path, line: int | None, what: str) -> UserError:
    where = f"{path}:{line}" if line else str(path)
    return UserError(f"--decisions {where}: {what}")


def read_file(path: Path, dataset: str, images: set[str] | None) -> list[tuple[int, str, Trial, tuple[str, str]]]:
    """(line, subj, trial, (session, trial number)) per row of one CSV, every row checked (module docstring)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise _fail(path, None, "empty file")
        col = {h.strip().lower(): i for i, h in enumerate(header)}
        missing = [c for c in COLUMNS if c not in col]
        if missing:
            raise _fail(path, 1, f"missing column(s) {', '.join(missing)}; model-vs-human's raw data has "
                                 f"{','.join(COLUMNS)}")
        out = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < len(header):
                raise _fail(path, line, f"{len(row)} fields, the header has {len(header)}")
            get = {c: row[col[c]].strip() for c in COLUMNS}
            subj, cat, resp = get["subj"], get["category"], get["object_response"]
            if not subj:
                raise _fail(path, line, "empty subj")
            if cat not in _CATS:
                raise _fail(path, line, f"category {cat!r} is not one of the 16 categories")
            if resp not in _CATS and not (resp == NO_DECISION and is_human(subj)):
                also = f" (only a human subject may answer {NO_DECISION!r})" if resp == NO_DECISION else ""
                raise _fail(path, line, f"object_response {resp!r} is not one of the 16 categories{also}")
            key = image_key(get["imagename"])
            if images is not None and key not in images:
                raise _fail(path, line, f"image {get['imagename']!r} ({key}) is not in the {dataset} dataset "
                                        f"under the data root")
            trial = Trial(get["imagename"], resp, cat, get["condition"])
            out.append((line, subj, trial, (get["session"], get["trial"])))
        return out


def read_observers(paths: Sequence[str | os.PathLike], data_root: str | os.PathLike | None = None
                   ) -> list[Observer]:
    """Every observer in the ``--decisions`` folders, in the order met (module docstring for the checks)."""
    observers: dict[str, Observer] = {}
    seen_trial: dict[tuple[str, str, str, str], Path] = {}
    seen_image: dict[tuple[str, str, str], Path] = {}
    images_of: dict[str, set[str] | None] = {}
    for path in paths:
        for dataset, folder in dataset_folders(path):
            if dataset not in images_of:
                images_of[dataset] = dataset_images(dataset, data_root)
            for f in _csvs(folder):
                for line, subj, trial, (session, number) in read_file(f, dataset, images_of[dataset]):
                    tkey = (dataset, subj, session, number)
                    if tkey in seen_trial:
                        raise _fail(f, line, f"trial {number} of session {session} of {subj} is repeated "
                                             f"(also in {seen_trial[tkey]})")
                    ikey = (dataset, subj, trial.image)
                    if ikey in seen_image:
                        raise _fail(f, line, f"{subj} has two trials named {trial.image} "
                                             f"(also in {seen_image[ikey]})")
                    seen_trial[tkey], seen_image[ikey] = f, f
                    obs = observers.setdefault(subj, Observer(subj, is_human(subj)))
                    obs.trials.setdefault(dataset, []).append(trial)
                    obs.source.setdefault(dataset, str(f))
    return list(observers.values())


def describe(observers: Iterable[Observer]) -> dict[str, dict]:
    """JSON-able summary for the run record: observer -> {human, datasets: {name: (trials, source)}}."""
    return {o.name: {"human": o.human, "datasets": {d: {"trials": len(t), "source": o.source.get(d, "")}
                                                      for d, t in o.trials.items()}} for o in observers}
