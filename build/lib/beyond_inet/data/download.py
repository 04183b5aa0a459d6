"""`beyond-inet download NAME`: fetch a dataset into --data-root in the layout the catalog expects.

Hugging Face datasets go through `huggingface_hub.snapshot_download` at the catalog's revision;
URL sources are streamed to a temp file, checked against their sha256 when the catalog pins one, and
unpacked (tar/tar.gz/zip). `file://` URLs work the same way, which is how the tests exercise it offline.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from beyond_inet.data.catalog import ENTRIES, VTAB_TASKS, release_label_space, wds_repo
from beyond_inet.errors import UserError


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_url(url: str, dest_dir: Path, sha256: str | None = None) -> Path:
    """Download `url` into `dest_dir` (atomically), verify, and return the file path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    target = dest_dir / name
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
            shutil.copyfileobj(resp, out, 1 << 20)
        if sha256 and sha256_of(Path(tmp)) != sha256:
            raise UserError(f"checksum mismatch for {url}: the download is corrupt or changed upstream")
        os.replace(tmp, target)
    except OSError as e:
        raise UserError(f"could not download {url}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def unpack(archive: Path, dest: Path) -> None:
    """Unpack tar/zip safely (no absolute paths or '..' escaping `dest`)."""
    dest = dest.resolve()
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for m in zf.namelist():
                if not (dest / m).resolve().is_relative_to(dest):
                    raise UserError(f"{archive} holds an unsafe path {m!r}; refusing to unpack")
            zf.extractall(dest)
    else:
        raise UserError(f"{archive} is neither a tar nor a zip archive")


def hf_snapshot(repo: str, revision: str, dest: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo, repo_type="dataset", revision=revision, local_dir=str(dest)))
    except Exception as e:  # noqa: BLE001 - network, auth (gated) and missing-repo errors alike
        raise UserError(f"could not download {repo}@{revision} from the Hugging Face Hub "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


def download(name: str, data_root: str | Path, url_override: str | None = None) -> Path:
    """Fetch catalog dataset `name` (``vtab/<task>`` for one VTAB task) under `data_root`."""
    root = Path(data_root)
    head, _, part = name.partition("/")
    if head not in ENTRIES:
        raise UserError(f"unknown dataset {name!r}; see `beyond-inet datasets`")
    entry = ENTRIES[head]
    if head == "vtab":
        tasks = [part] if part else list(VTAB_TASKS)
        for t in tasks:
            if t not in VTAB_TASKS:
                raise UserError(f"unknown VTAB task {t!r}; choose from: {', '.join(VTAB_TASKS)}")
            hf_snapshot(wds_repo(VTAB_TASKS[t]), "main", root / "vtab" / t)
        return root / "vtab"
    src = url_override or entry.source
    dest = root / entry.dirs[0] if entry.dirs else root / head
    if src.startswith("hf:"):
        repo, _, rev = src[3:].split(" ")[0].partition("@")
        got = hf_snapshot(repo, rev or "main", dest)
        if entry.kind == "imagenet" and repo.startswith("clip-benchmark/"):
            try:  # its labels index its classnames.txt: refuse now a release the reader could not label
                release_label_space(head, got)
            except UserError as e:
                raise UserError(f"{e} (downloaded to {got}, but unusable as {head})") from None
        return got
    if src.startswith("url:") or "://" in src:
        url = src.removeprefix("url:")
        urls = _expand_braces(url)
        with tempfile.TemporaryDirectory(dir=root if root.exists() else None) as tmp:
            for u in urls:
                archive = fetch_url(u, Path(tmp), entry.sha256 if len(urls) == 1 else None)
                unpack(archive, dest.parent if _archive_has_top(archive, dest.name) else dest)
        return dest
    raise UserError(f"{name!r} cannot be downloaded automatically: {entry.how_to_get()}")


def _archive_has_top(archive: Path, top: str) -> bool:
    """Does the archive already contain the top folder (e.g. cue-conflict/...)?"""
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            return any(m.name.split("/", 1)[0] == top for m in tf.getmembers()[:50])
    return False


def _expand_braces(url: str) -> list[str]:
    if "{" in url and "}" in url:
        pre, rest = url.split("{", 1)
        alts, post = rest.split("}", 1)
        return [pre + a + post for a in alts.split(",")]
    return [url]
