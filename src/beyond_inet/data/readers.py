"""Readers for the on-disk layouts users download: class-folder trees, flat labelled folders and
webdataset shards in the ``clip-benchmark/wds_*`` layout.

Every reader is map-style (random access by index) so the engine can split a dataset into shards,
resume at any shard and fan shards out to workers. `load(i)` raises on an undecodable image; the
engine counts and names such samples instead of failing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from PIL import Image

from beyond_inet.data.decode import decode_rgb
from beyond_inet.errors import UserError

IMG_EXT = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".tif", ".tiff")


def open_rgb(fp, exif_transpose: bool = False) -> Image.Image:
    """Decode a file (path or binary file object) to 8-bit RGB by the rules of `data.decode`."""
    return decode_rgb(fp, exif_transpose)


class ImageDataset:
    """Random-access labelled images. Subclasses fill `_ids`, `_labels` and implement `_open`."""

    name: str = ""
    _ids: list[str]
    _labels: list[int]
    _multi: list[list[int]] | None = None
    classnames: list[str] | None = None
    exif_transpose: bool = False  # apply EXIF orientation when decoding (off: as torchvision's ImageFolder)

    def __len__(self) -> int:
        return len(self._ids)

    def sample_id(self, i: int) -> str:
        return self._ids[i]

    def label(self, i: int) -> int:
        return self._labels[i]

    def multilabel(self, i: int) -> list[int] | None:
        return None if self._multi is None else self._multi[i]

    def load(self, i: int) -> Image.Image:
        return self._open(i)

    def source(self, i: int) -> str | None:
        """The file holding sample `i` (an image, a tar, a parquet file), whose size and modification time
        the store records so that a file replaced in place is noticed; None when there is no such file."""
        return None

    def _open(self, i: int) -> Image.Image:
        raise NotImplementedError

    def set_decoding(self, exif_transpose: bool = False) -> "ImageDataset":
        """Choose how images are decoded (see `data.decode`); returns self."""
        self.exif_transpose = bool(exif_transpose)
        return self

    def fingerprint(self) -> str:
        """Identity of the sample list (ids + labels): part of the store key."""
        h = hashlib.sha256()
        for sid, lab in zip(self._ids, self._labels):
            h.update(f"{sid}\t{lab}\n".encode())
        return h.hexdigest()[:16]


class ReaderAdapter(ImageDataset):
    """Any reader with `__len__`, `sample_id(i)`, `label(i)` and `load(i)` as an ImageDataset."""

    def __init__(self, name: str, reader):
        self.name, self._reader = name, reader
        self._ids = [reader.sample_id(i) for i in range(len(reader))]
        self._labels = [int(reader.label(i)) for i in range(len(reader))]

    def _open(self, i: int) -> Image.Image:
        return self._reader.load(i)

    def source(self, i: int) -> str | None:
        src = getattr(self._reader, "source", None)
        return src(i) if callable(src) else None

    def set_decoding(self, exif_transpose: bool = False) -> "ImageDataset":
        super().set_decoding(exif_transpose)
        if hasattr(self._reader, "exif_transpose"):  # readers that decode files themselves (PUG)
            self._reader.exif_transpose = self.exif_transpose
        return self


class FileListDataset(ImageDataset):
    """Images at known paths with known labels (what every folder layout reduces to)."""

    def __init__(self, name: str, paths: list[str], ids: list[str], labels: list[int],
                 multi: list[list[int]] | None = None, classnames: list[str] | None = None):
        self.name, self._paths, self._ids, self._labels, self._multi = name, paths, ids, labels, multi
        self.classnames = classnames

    def source(self, i: int) -> str | None:
        return self._paths[i]

    def load_bytes(self, i: int) -> bytes:
        """The encoded file, unchanged (for decoders that take bytes, e.g. nvJPEG)."""
        return Path(self._paths[i]).read_bytes()

    def _open(self, i: int) -> Image.Image:
        return open_rgb(self._paths[i], self.exif_transpose)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXT)


def class_folder_dataset(name: str, root: Path, class_to_label: Callable[[str], int | None] | None = None,
                         id_style: str = "relpath") -> FileListDataset:
    """`root/<class>/<image>`. Labels by `class_to_label(folder)` (None -> unknown folder: an error),
    or the sorted folder order when not given. id_style: "relpath" (class/file) or "filename"."""
    if not root.is_dir():
        raise UserError(f"dataset {name!r}: {root} is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"dataset {name!r}: {root} has no class sub-folders (expected {root}/<class>/<image>)")
    paths, ids, labels = [], [], []
    for ci, cname in enumerate(classes):
        lab = ci if class_to_label is None else class_to_label(cname)
        if lab is None:
            raise UserError(f"dataset {name!r}: folder {root / cname} is not a class of its label space "
                            f"(expected e.g. ImageNet wnids like n01440764)")
        for p in list_images(root / cname):
            paths.append(str(p))
            ids.append(p.name if id_style == "filename" else f"{cname}/{p.name}")
            labels.append(lab)
    if not paths:
        raise UserError(f"dataset {name!r}: no images under {root}")
    return FileListDataset(name, paths, ids, labels, classnames=classes)


def labelled_flat_dataset(name: str, root: Path, labels_csv: str = "labels.csv", file_col: str = "file",
                          label_col: str = "class_index") -> FileListDataset:
    """A flat folder with a CSV of file -> label (the ImageNet sample images)."""
    with open(root / labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: r[file_col])
    return FileListDataset(name, [str(root / r[file_col]) for r in rows], [r[file_col] for r in rows],
                           [int(r[label_col]) for r in rows])


# --- webdataset shards -------------------------------------------------------------------------

@dataclass
class _Member:
    tar: str
    offset: int
    size: int


class WdsDataset(ImageDataset):
    """A split of a ``clip-benchmark/wds_*`` dataset: ``<root>/<split>/*.tar`` (+ nshards.txt) with
    members ``<key>.<img-ext>`` and ``<key>.cls``; ``<root>/classnames.txt`` names the classes.

    Tars are indexed once (member offsets), then images are read by seeking: random access without
    unpacking. Sample ids are ``<key>`` unless a ``.json``/``.txt`` member gives a file name.
    `label_map` turns a stored label into the dataset's label space (None: out of range, an error).
    """

    def __init__(self, name: str, root: Path, split: str, label_map: Callable[[int], int | None] | None = None):
        self.name, self.root, self.split, self.label_map = name, Path(root), split, label_map
        split_dir = self.root / self.split
        if not split_dir.is_dir():
            raise UserError(f"dataset {self.name!r}: no {self.split!r} split at {split_dir}")
        tars = sorted(split_dir.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
        if not tars:
            raise UserError(f"dataset {self.name!r}: no .tar shards in {split_dir}")
        cn = self.root / "classnames.txt"
        self.classnames = [ln.strip() for ln in cn.read_text().splitlines() if ln.strip()] if cn.exists() else None
        self._ids, self._labels, self._members = [], [], []
        for tar in tars:
            self._index_tar(tar)
        if not self._ids:
            raise UserError(f"dataset {self.name!r}: the shards in {split_dir} hold no labelled images")

    def _index_tar(self, tar: Path) -> None:
        groups: dict[str, dict] = {}
        order: list[str] = []
        try:
            with tarfile.open(tar) as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    base = os.path.basename(m.name)
                    key, dot, ext = base.partition(".")
                    key = os.path.join(os.path.dirname(m.name), key)
                    if key not in groups:
                        groups[key] = {}
                        order.append(key)
                    ext = ext.lower()
                    if "." + ext in IMG_EXT:
                        groups[key]["img"] = _Member(str(tar), m.offset_data, m.size)
                    elif ext in ("cls", "json", "txt", "label"):
                        groups[key][ext] = tf.extractfile(m).read()
        except tarfile.TarError as e:
            raise UserError(f"dataset {self.name!r}: shard {tar} is not a readable tar ({e})") from None
        for key in order:
            g = groups[key]
            if "img" not in g or ("cls" not in g and "label" not in g):
                continue
            lab = int((g.get("cls") or g.get("label")).decode().strip())
            sid = os.path.basename(key)
            meta = g.get("json")
            if meta:
                import json

                try:
                    sid = json.loads(meta).get("filename", sid) or sid
                except (ValueError, AttributeError):
                    pass
            elif sid.startswith("ILSVRC2012_val_"):
                sid += ".JPEG"
            mapped = self.label_map(lab) if self.label_map else lab
            if mapped is None:
                raise UserError(f"dataset {self.name!r}: {tar} holds label {lab} for {key!r}, outside the "
                                f"{len(self.classnames or [])} classes of {self.root / 'classnames.txt'}")
            self._ids.append(sid)
            self._labels.append(mapped)
            self._members.append(g["img"])

    def source(self, i: int) -> str | None:
        return self._members[i].tar

    def load_bytes(self, i: int) -> bytes:
        """The encoded tar member, read by seeking to its indexed offset."""
        m = self._members[i]
        with open(m.tar, "rb") as f:
            f.seek(m.offset)
            return f.read(m.size)

    def _open(self, i: int) -> Image.Image:
        return open_rgb(io.BytesIO(self.load_bytes(i)), self.exif_transpose)


def image_cell_bytes(cell, what: str = "image") -> bytes:
    """Encoded bytes of a Hugging Face ``Image`` cell: ``{"bytes": ..., "path": ...}`` or raw bytes."""
    data = cell
    if isinstance(cell, dict):
        data = cell.get("bytes")
        if data is None and cell.get("path"):
            data = Path(cell["path"]).read_bytes()
    if not data:
        raise OSError(f"{what}: no image bytes")
    return data


@lru_cache(maxsize=2)
def parquet_row_group_column(file: str, group: int, column: str = "image") -> list:
    """One column of one row group (cached: loaders read rows in order, so a group is read once)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(file).read_row_group(group, columns=[column]).column(column).to_pylist()


class ParquetDataset(ImageDataset):
    """Parquet files with an image column (``{"bytes": ...}`` structs or raw bytes) and a label column
    holding an int or a list of ints (multi-label, e.g. ImageNet-Hard). Images are read one row group at
    a time, when first needed."""

    def __init__(self, name: str, files: list[Path], image_col: str = "image", label_col: str = "label",
                 id_col: str | None = None, label_map: Callable[[object], int | list[int]] | None = None):
        import pyarrow.parquet as pq

        if not files:
            raise UserError(f"dataset {name!r}: no .parquet files found")
        self.name, self._files, self._image_col = name, [str(f) for f in files], image_col
        self._ids, self._labels, self._rows = [], [], []
        multi: list[list[int]] = []
        for fi, f in enumerate(self._files):
            pf = pq.ParquetFile(f)
            table = pf.read(columns=[c for c in (label_col, id_col) if c])
            labs = table.column(label_col).to_pylist()
            ids = table.column(id_col).to_pylist() if id_col else None
            where = [(g, r) for g in range(pf.metadata.num_row_groups) for r in range(pf.metadata.row_group(g).num_rows)]
            for r, lab in enumerate(labs):
                lab = label_map(lab) if label_map else lab
                labs_list = [int(x) for x in lab if int(x) >= 0] if isinstance(lab, (list, tuple)) else [int(lab)]
                self._ids.append(str(ids[r]) if ids else f"{Path(f).stem}/{r:06d}")
                self._labels.append(labs_list[0] if labs_list else -1)
                multi.append(labs_list)
                self._rows.append((fi, *where[r]))
        self._multi = multi if any(len(m) > 1 for m in multi) else None

    def source(self, i: int) -> str | None:
        return self._files[self._rows[i][0]]

    def _open(self, i: int) -> Image.Image:
        fi, g, r = self._rows[i]
        cell = parquet_row_group_column(self._files[fi], g, self._image_col)[r]
        return open_rgb(io.BytesIO(image_cell_bytes(cell, self._ids[i])), self.exif_transpose)
