"""A user's own images: ``--dataset NAME=PATH`` (``evaluate(datasets={NAME: PATH})``), a folder of class folders.

Why a module of its own: a user's folder has no catalog entry, so what it means is read from the folder
itself, once, before any model is built:

* every class folder names an ImageNet class (a wnid such as ``n01440764``, or one of the package's ImageNet
  class names, ``labelspaces.imagenet_classnames()``, matched case- and punctuation-insensitively and only when
  the name is unambiguous) -> an ImageNet subset: labels are ImageNet-1k indices and predictions are the
  argmax over those classes only, the rule ImageNet-A/R follow (``class_subset``);
* otherwise -> the folder's own label space: label k is the k-th class folder in sorted order (torchvision's
  ImageFolder rule), and no ImageNet-scored analysis may read its labels as ImageNet classes.

Layout rules (torchvision ImageFolder's, so the labels equal what ImageFolder gives): images anywhere below a
class folder (sub-folders are walked, links followed), files with an image extension, in sorted order. Hidden
entries (``.ipynb_checkpoints``, ``.DS_Store``) are ignored. Bad input is one `UserError` line: an empty folder,
one class, a class without a readable image, files next to the class folders, a NAME that clashes with a catalog
dataset or is not a plain name, a malformed NAME=PATH. A class with fewer than `FEW_IMAGES` images is a warning.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from beyond_inet.data.readers import FileListDataset
from beyond_inet.errors import UserError

FEW_IMAGES = 5
IMAGENET_SUBSET = "imagenet-subset"
OWN = "own"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class UserDataset:
    """What a user's folder is: its classes (sorted folder names) and, for an ImageNet subset, the ImageNet
    index of each class folder."""

    name: str
    path: str
    kind: str  # IMAGENET_SUBSET or OWN
    classnames: tuple[str, ...]
    counts: tuple[int, ...]  # images per class folder
    imagenet: tuple[int, ...] | None = None  # ImageNet-1k index per class folder (IMAGENET_SUBSET only)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def subset(self) -> tuple[int, ...] | None:
        """The ImageNet classes predictions are restricted to (ascending), or None for an own label space."""
        return tuple(sorted(set(self.imagenet))) if self.imagenet is not None else None

    def note(self) -> str:
        """One sentence for the report and the run record: what the labels mean and how they are scored."""
        n = sum(self.counts)
        if self.kind == IMAGENET_SUBSET:
            return (f"your images at {self.path}: {n} images in {len(self.classnames)} ImageNet classes; "
                    f"predictions are the argmax over these {len(self.classnames)} classes only "
                    f"(logits restricted, as for ImageNet-A/R)")
        return (f"your images at {self.path}: {n} images in {len(self.classnames)} classes of their own "
                f"({', '.join(self.classnames[:5])}{' ...' if len(self.classnames) > 5 else ''}); scored by a "
                f"linear probe with stratified k-fold cross-validation (CLIP models also zero-shot with the "
                f"folder names)")

    def as_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "classes": list(self.classnames), "counts": list(self.counts),
                "imagenet": None if self.imagenet is None else list(self.imagenet), "warnings": list(self.warnings),
                "note": self.note()}


def parse_dataset_arg(item: str) -> tuple[str, str]:
    """``NAME=PATH`` -> (name, path); a UserError on anything else."""
    name, sep, path = str(item).partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise UserError(f"--dataset {item!r}: expected NAME=PATH (e.g. --dataset mypets=/data/pets, a folder of "
                        f"class folders)")
    return name, path


def check_name(name: str, catalog_names) -> None:
    """A user's dataset name is a plain word that names no catalog dataset (results are keyed by it)."""
    if not _NAME.match(name):
        raise UserError(f"--dataset {name!r}: the name may hold letters, digits and . _ + - only (no '/', no "
                        f"spaces), starting with a letter or digit")
    if name in catalog_names or name.lower() in {c.lower() for c in catalog_names}:
        raise UserError(f"--dataset {name}=...: {name!r} is the name of a catalog dataset; choose another name "
                        f"(see `beyond-inet datasets`)")


def normalize_datasets(datasets, catalog_names) -> dict[str, str]:
    """{name: path} from a dict, a list of ``NAME=PATH`` strings or None; names and path shapes checked (cheap,
    no folder is read)."""
    if not datasets:
        return {}
    if isinstance(datasets, str):
        datasets = [datasets]
    items = list(datasets.items()) if isinstance(datasets, dict) else [parse_dataset_arg(x) for x in datasets]
    out: dict[str, str] = {}
    for name, path in items:
        name = str(name).strip()
        check_name(name, catalog_names)
        if name in out:
            raise UserError(f"--dataset {name}=...: given twice; use one name per folder")
        p = Path(os.path.expanduser(str(path)))
        if not p.exists():
            raise UserError(f"--dataset {name}={path}: {str(p)!r} does not exist")
        if not p.is_dir():
            raise UserError(f"--dataset {name}={path}: {str(p)!r} is a file; expected a folder of class folders")
        out[name] = str(p.resolve())
    return out


def _norm(s: str) -> str:
    """Case- and punctuation-free form of a class name: ``Golden_Retriever`` == ``golden retriever``."""
    return re.sub(r"[^0-9a-z]+", "", s.lower())


@lru_cache(maxsize=None)
def _imagenet_names() -> dict[str, int | None]:
    """normalised ImageNet class name -> index, None where the name is ambiguous (two classes share it)."""
    from beyond_inet.data.labelspaces import imagenet_classnames

    out: dict[str, int | None] = {}
    for i, n in enumerate(imagenet_classnames()):
        k = _norm(n)
        out[k] = None if k in out else i
    return out


def imagenet_class_of(folder: str) -> int | None:
    """The ImageNet-1k index a class folder names (wnid, or an unambiguous class name), else None."""
    from beyond_inet.data.labelspaces import wnid_to_index

    idx = wnid_to_index().get(folder.strip())
    if idx is not None:
        return idx
    return _imagenet_names().get(_norm(folder))


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def class_images(folder: Path) -> list[Path]:
    """Image files anywhere below `folder` (links followed), sorted by relative path: ImageFolder's walk."""
    from beyond_inet.data.readers import IMG_EXT

    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMG_EXT:
                found.append(Path(root) / f)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _readable(paths: list[Path]) -> bool:
    """Does at least one of the files open as an image (header and size read; cheap)?"""
    from PIL import Image, UnidentifiedImageError

    for p in paths:
        try:
            with Image.open(p) as im:
                im.size  # noqa: B018 - the header parsed
            return True
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    return False


def inspect(name: str, path: str) -> UserDataset:
    """Read the folder's structure once and decide its label space; every bad layout is one UserError line."""
    root = Path(path)
    where = f"--dataset {name}={path}"
    entries = sorted((p for p in root.iterdir() if _visible(p)), key=lambda p: p.name)
    files = [p.name for p in entries if not p.is_dir()]
    classes = [p.name for p in entries if p.is_dir()]
    if files:
        raise UserError(f"{where}: {len(files)} file(s) at the top level ({', '.join(files[:3])}"
                        f"{' ...' if len(files) > 3 else ''}); put every image in a folder named after its class "
                        f"({path}/<class>/<image>)")
    if not classes:
        raise UserError(f"{where}: the folder is empty; expected class folders ({path}/<class>/<image>)")
    if len(classes) < 2:
        raise UserError(f"{where}: only one class folder ({classes[0]!r}); accuracy needs at least two classes")
    counts, warnings = [], []
    for c in classes:
        imgs = class_images(root / c)
        if not imgs:
            raise UserError(f"{where}: class folder {c!r} holds no image files (extensions: jpg, jpeg, png, webp, "
                            f"bmp, ppm, tif, tiff)")
        if not _readable(imgs):
            raise UserError(f"{where}: class folder {c!r} holds no readable image ({len(imgs)} file(s), none "
                            f"opens as an image)")
        counts.append(len(imgs))
    few = [f"{c} ({k})" for c, k in zip(classes, counts) if k < FEW_IMAGES]
    if few:
        warnings.append(f"dataset {name!r}: {len(few)} class(es) with fewer than {FEW_IMAGES} images: "
                        f"{', '.join(few[:5])}{' ...' if len(few) > 5 else ''}; their accuracies are very uncertain")
    idx = [imagenet_class_of(c) for c in classes]
    if all(i is not None for i in idx):
        seen: dict[int, str] = {}
        for c, i in zip(classes, idx):
            if i in seen:
                raise UserError(f"{where}: class folders {seen[i]!r} and {c!r} name the same ImageNet class "
                                f"(index {i}); merge them")
            seen[i] = c
        return UserDataset(name, str(root), IMAGENET_SUBSET, tuple(classes), tuple(counts), tuple(idx),
                           tuple(warnings))
    return UserDataset(name, str(root), OWN, tuple(classes), tuple(counts), None, tuple(warnings))


class UserFolderDataset(FileListDataset):
    """A user's folder. Its store identity is the folder's path and every file's size and modification time
    besides ids and labels: the same NAME pointed at another folder, or an image replaced under the same file
    name, must never reuse outputs stored for the old images."""

    root: str = ""

    def fingerprint_of(self, positions) -> str:
        import hashlib

        h = hashlib.sha256(f"user-folder\t{self.root}\n".encode())
        for i in positions:
            i = int(i)
            st = os.stat(self._paths[i])
            h.update(f"{self._ids[i]}\t{self._labels[i]}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        return self.fingerprint_of(range(len(self._ids)))


def open_user_dataset(ud: UserDataset):
    """The reader: every image below each class folder, labelled by ImageNet index (subset) or folder order."""
    root = Path(ud.path)
    paths, ids, labels = [], [], []
    for k, c in enumerate(ud.classnames):
        lab = ud.imagenet[k] if ud.imagenet is not None else k
        for p in class_images(root / c):
            paths.append(str(p))
            ids.append(f"{c}/{p.relative_to(root / c).as_posix()}")
            labels.append(int(lab))
    ds = UserFolderDataset(ud.name, paths, ids, labels, classnames=list(ud.classnames))
    ds.root = str(root)
    return ds
