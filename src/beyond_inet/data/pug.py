"""Readers for PUG: ImageNet (Bordes et al. 2023), in the two forms users download.

Both readers expose the same small interface (``__len__``, ``sample_id(i)``, ``load(i) -> RGB PIL image``,
``label(i) -> int``) and label samples with the **PUG class index**: the position of the class name among the
*sorted* keys of ``class_to_imagenet_idx.json`` (0..150), which is how the Beyond-INet code enumerates them.

1. `PugFolder`: the layout the Beyond-INet code expects,
   ``<root>/<Factor>/<class name>/<image>`` with ``<root>/class_to_imagenet_idx.json``
   (``<root>`` is ``<data_root>/pug-imagenet``). One reader per factor folder.

2. `PugParquet`: the Hugging Face release ``facebook/PUG_ImageNet`` (``data/train-*.parquet``). Its schema
   (dataset card, read 2024): ``image`` (struct ``{bytes, path}``), ``world_name``, ``character_name``,
   ``character_label`` (the class name), ``character_rotation_yaw/roll/pitch``, ``character_scale``,
   ``camera_roll/pitch/yaw``, ``character_texture``, ``scene_light``. The release has **no factor column**:
   PUG: ImageNet varies one factor at a time, so we assign rows to factors as follows (an assumption, stated
   here because the authors' per-factor folders are not published):
     * if a ``factor`` column exists it is used as is;
     * otherwise each factor column's *default* is its most frequent value (or ``defaults[column]``), a row
       belongs to factor F when F's column is the only one that differs from its default, and a row that
       differs in none (the base render) belongs to every factor's sweep.
   ``character_label`` values are matched to the JSON keys exactly, else case- and punctuation-insensitively;
   unmatched labels get -1 and are listed in ``unknown_labels``. The JSON is not in the HF release: pass the
   copy from github.com/facebookresearch/PUG (``PUG_ImageNet/class_to_imagenet_idx.json``).
"""
from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from PIL import Image

from beyond_inet.data.decode import decode_rgb
from beyond_inet.data.readers import image_cell_bytes, parquet_row_group_column
from beyond_inet.errors import UserError

FACTORS: tuple[str, ...] = ("Worlds", "Camera_Pitch", "Camera_Yaw", "Camera_Roll", "Object_Pitch", "Object_Yaw",
                            "Object_Roll", "Object_Scale", "Object_Texture", "Scene_Light")
# factor folder name -> the HF parquet column that factor varies
FACTOR_COLUMNS: dict[str, str] = {
    "Worlds": "world_name", "Camera_Pitch": "camera_pitch", "Camera_Yaw": "camera_yaw",
    "Camera_Roll": "camera_roll", "Object_Pitch": "character_rotation_pitch",
    "Object_Yaw": "character_rotation_yaw", "Object_Roll": "character_rotation_roll",
    "Object_Scale": "character_scale", "Object_Texture": "character_texture", "Scene_Light": "scene_light",
}
MAPPING_FILE = "class_to_imagenet_idx.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_class_mapping(path: str | os.PathLike) -> dict[str, list[int]]:
    """``class_to_imagenet_idx.json``: PUG class name -> list of ImageNet-1k indices."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"PUG class mapping {str(p)!r} not found (get {MAPPING_FILE} from "
                        "github.com/facebookresearch/PUG, folder PUG_ImageNet)")
    raw = json.loads(p.read_text())
    return {str(k): [int(i) for i in v] for k, v in raw.items()}


def class_names(mapping: Mapping[str, Sequence[int]]) -> list[str]:
    """PUG class names in label order: the sorted JSON keys (index = PUG label)."""
    return sorted(mapping)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def class_index_lookup(mapping: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """Exact and normalised class name -> PUG index (normalised keys only where they are unambiguous)."""
    names = class_names(mapping)
    out = {n: i for i, n in enumerate(names)}
    counts = Counter(_norm(n) for n in names)
    for i, n in enumerate(names):
        if counts[_norm(n)] == 1:
            out.setdefault(_norm(n), i)
    return out


def _resolve(lookup: Mapping[str, int], name: str) -> int:
    return lookup.get(name, lookup.get(_norm(name), -1))


def class_labeller(mapping: Mapping[str, Sequence[int]]):
    """name -> PUG label (None when unknown), by the one rule every PUG layout uses: the exact JSON key, else
    its unambiguous case/punctuation-normalised form (so ``GoldFish`` and ``gold_fish`` are ``Goldfish``)."""
    lookup = class_index_lookup(mapping)

    def label(name: str) -> int | None:
        i = _resolve(lookup, name)
        return None if i < 0 else i

    return label


class PugFolder:
    """One factor folder ``<root>/<factor>/<class>/<image>`` labelled through ``<root>/class_to_imagenet_idx.json``."""

    exif_transpose: bool = False  # see data.decode

    def __init__(self, root: str | os.PathLike, factor: str, mapping: Mapping[str, Sequence[int]] | None = None):
        self.root, self.factor = Path(root), factor
        self.mapping = dict(mapping) if mapping is not None else load_class_mapping(self.root / MAPPING_FILE)
        self.classes = class_names(self.mapping)
        folder = self.root / factor
        if not folder.is_dir():
            raise UserError(f"PUG factor folder {str(folder)!r} not found")
        lookup = class_index_lookup(self.mapping)
        self._items: list[tuple[str, Path, int]] = []
        unknown = []
        for cdir in sorted(p for p in folder.iterdir() if p.is_dir()):
            idx = _resolve(lookup, cdir.name)
            if idx < 0:
                unknown.append(cdir.name)
                continue
            for f in sorted(cdir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                    self._items.append((f"{factor}/{cdir.name}/{f.name}", f, idx))
        if unknown:
            raise UserError(f"PUG folder {str(folder)!r} has class folders not in {MAPPING_FILE}: "
                            f"{', '.join(unknown)}")

    def __len__(self) -> int:
        return len(self._items)

    def sample_id(self, i: int) -> str:
        return self._items[i][0]

    def path(self, i: int) -> Path:
        return self._items[i][1]

    def load(self, i: int) -> Image.Image:
        return decode_rgb(self._items[i][1], self.exif_transpose)

    def label(self, i: int) -> int:
        return self._items[i][2]


def factors_present(root: str | os.PathLike) -> list[str]:
    """The factor folders present under ``<data_root>/pug-imagenet``, in the canonical order."""
    r = Path(root)
    return [f for f in FACTORS if (r / f).is_dir()]


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """A parquet file, or every ``*.parquet`` below a folder (the HF snapshot's ``data/``), sorted."""
    p = Path(path)
    if p.is_file():
        return [p]
    files = sorted(p.rglob("*.parquet"))
    if not files:
        raise UserError(f"no .parquet files under {str(p)!r} (expected the facebook/PUG_ImageNet snapshot)")
    return files


def infer_factor_rows(columns: Mapping[str, Sequence[Any]], factor: str,
                      defaults: Mapping[str, Any] | None = None) -> list[int]:
    """Row positions that belong to `factor` (see the module docstring for the rule)."""
    if "factor" in columns:
        return [i for i, f in enumerate(columns["factor"]) if str(f) == factor]
    cols = [c for c in FACTOR_COLUMNS.values() if c in columns]
    target = FACTOR_COLUMNS[factor]
    if target not in columns:
        raise UserError(f"PUG parquet has no column {target!r} for factor {factor!r}")
    dflt = {c: (defaults[c] if defaults and c in defaults else Counter(columns[c]).most_common(1)[0][0])
            for c in cols}
    n = len(columns[target])
    rows = []
    for i in range(n):
        varied = [c for c in cols if columns[c][i] != dflt[c]]
        if not varied or varied == [target]:
            rows.append(i)
    return rows


class PugParquet:
    """PUG: ImageNet from the HF parquet release, optionally restricted to one factor's rows."""

    META_COLUMNS = ("character_label", "character_name", "filename", "factor", *FACTOR_COLUMNS.values())

    exif_transpose: bool = False  # see data.decode

    def __init__(self, path: str | os.PathLike, mapping: Mapping[str, Sequence[int]] | str | os.PathLike,
                 factor: str | None = None, defaults: Mapping[str, Any] | None = None):
        import pyarrow.parquet as pq

        self.files = parquet_files(path)
        self.mapping = dict(mapping) if isinstance(mapping, Mapping) else load_class_mapping(mapping)
        self.classes = class_names(self.mapping)
        self.factor = factor
        lookup = class_index_lookup(self.mapping)
        cols: dict[str, list[Any]] = {}
        loc: list[tuple[int, int, int]] = []  # (file, row group, row within group)
        self._group_offsets: list[list[int]] = []
        for fi, f in enumerate(self.files):
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            if "image" not in names or "character_label" not in names:
                raise UserError(f"{str(f)!r} lacks the 'image' / 'character_label' columns of facebook/PUG_ImageNet")
            want = [c for c in self.META_COLUMNS if c in names]
            table = pf.read(columns=want)
            for c in want:
                cols.setdefault(c, []).extend(table.column(c).to_pylist())
            for g in range(pf.metadata.num_row_groups):
                loc += [(fi, g, r) for r in range(pf.metadata.row_group(g).num_rows)]
        n = len(loc)
        for c in list(cols):
            if len(cols[c]) != n:  # a column missing from some files: unusable
                del cols[c]
        rows = list(range(n)) if factor is None else infer_factor_rows(cols, factor, defaults)
        self._loc = [loc[i] for i in rows]
        labels = [_resolve(lookup, str(cols["character_label"][i])) for i in rows]
        self._labels = labels
        self.unknown_labels = sorted({str(cols["character_label"][i]) for i, lab in zip(rows, labels) if lab < 0})
        if "filename" in cols:
            self._ids = [str(cols["filename"][i]) for i in rows]
        else:
            self._ids = [f"{self.files[loc[i][0]].stem}/{i:07d}" for i in rows]
        if factor is not None:
            self._ids = [f"{factor}/{s}" for s in self._ids]

    def __len__(self) -> int:
        return len(self._loc)

    def sample_id(self, i: int) -> str:
        return self._ids[i]

    def label(self, i: int) -> int:
        return self._labels[i]

    def image_bytes(self, i: int) -> bytes:
        fi, g, r = self._loc[i]
        return image_cell_bytes(parquet_row_group_column(str(self.files[fi]), g, "image")[r], self.sample_id(i))

    def load(self, i: int) -> Image.Image:
        return decode_rgb(io.BytesIO(self.image_bytes(i)), self.exif_transpose)


def open_pug(data_root: str | os.PathLike, factor: str) -> PugFolder:
    """The folder reader for ``pug-imagenet/<factor>`` under a data root (convenience for the catalog)."""
    return PugFolder(Path(data_root) / "pug-imagenet", factor)


def iter_samples(reader: PugFolder | PugParquet) -> Iterable[tuple[str, int]]:
    """(id, label) pairs, without decoding images."""
    for i in range(len(reader)):
        yield reader.sample_id(i), reader.label(i)
