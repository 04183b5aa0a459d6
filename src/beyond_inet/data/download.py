"""`beyond-inet download NAME`: fetch a dataset into --data-root in the layout the catalog expects.

Hugging Face datasets go through `huggingface_hub.snapshot_download` at the catalog's revision and are then
checked against the Hub's own checksums (`HfApi.verify_repo_checksums`: git blob sha1, LFS sha256), because
the client does not check what it received. URL sources (tarballs, zips) are fetched by `fetch_url`:

- resumable: bytes go to ``<data-root>/.downloads/<name>.part``, kept across attempts and across runs; a retry
  asks for the rest with an HTTP Range request (a server that ignores it restarts the file);
- checked against the catalog's sha256 when it records one (a mismatch deletes the part: it cannot be resumed);
- unpacked atomically: into a temporary folder beside the target, renamed into place only when complete, so a
  failed unpack leaves no half dataset that the catalog would then read;
- with a rich progress bar (bytes, rate, ETA) like the inference bars, on a terminal only.

`file://` URLs work the same way (without Range), which the tests use besides loopback HTTP servers.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from beyond_inet.data.catalog import ENTRIES, VTAB_TASKS, release_label_space, wds_repo
from beyond_inet.errors import UserError
from beyond_inet.models.hub import hub_error, verify_hub_files

RETRIES = 5  # attempts after a dropped connection, each resuming where the last one stopped
RETRY_WAIT_S = 0.5  # doubled after each failed attempt without progress
CHUNK = 1 << 20
PARTS_DIR = ".downloads"  # under the data root: partial files kept for resuming
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def progress_bar(enabled: bool | None = None, console: Any = None):
    """A rich Progress showing bytes, rate and ETA on stderr, or None.

    `enabled=None` means "when stderr is a terminal"; `console` (a rich Console) is for tests."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    console = console or Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console)


def _total_size(resp, offset: int) -> int | None:
    """The whole file's size from Content-Range (a 206) or Content-Length (a 200)."""
    cr = resp.headers.get("Content-Range") if resp.headers else None
    if cr and "/" in cr and cr.rsplit("/", 1)[1].strip().isdigit():
        return int(cr.rsplit("/", 1)[1])
    cl = resp.headers.get("Content-Length") if resp.headers else None
    return offset + int(cl) if cl and cl.isdigit() else None


def fetch_url(url: str, dest_dir: Path, sha256: str | None = None, progress: Any = None,
              retries: int = RETRIES) -> Path:
    """Download `url` into `dest_dir`, resuming a partial `<name>.part` left there; verify; return the file.

    Connection drops and short reads are retried up to `retries` times, each asking for the missing bytes
    only. HTTP errors (404, 403, ...) are not retried. A checksum mismatch raises `UserError` and removes
    the partial file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "download"
    target = dest_dir / name
    part = dest_dir / f"{name}.part"
    if target.exists() and (sha256 is None or sha256_of(target) == sha256):
        return target  # fetched and checked by an earlier attempt that stopped before unpacking
    ranged = not url.startswith("file:")
    task = progress.add_task(name, total=None) if progress is not None else None
    failures, wait = 0, RETRY_WAIT_S
    while True:
        offset = part.stat().st_size if part.exists() and ranged else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        got = 0
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the catalog's or the user's URL
                status = getattr(resp, "status", None) or 200
                if offset and status != 206:  # the server ignored the Range: start over
                    offset = 0
                total = _total_size(resp, offset)
                if task is not None:
                    progress.update(task, total=total, completed=offset)
                with open(part, "ab" if offset else "wb") as out:
                    for chunk in iter(lambda: resp.read(CHUNK), b""):
                        out.write(chunk)
                        got += len(chunk)
                        if task is not None:
                            progress.update(task, advance=len(chunk))
            if total is not None and offset + got < total:
                raise http.client.IncompleteRead(b"", total - offset - got)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # asked past the end: whole if the server's size is the part's
                size = (e.headers.get("Content-Range") or "").rpartition("/")[2].strip() if e.headers else ""
                if size == str(offset):
                    break
                part.unlink()  # longer than the file now served (another version): start over
                continue
            raise UserError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
        except (OSError, http.client.HTTPException) as e:  # dropped connection, timeout, short read
            if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
                raise  # writing the part failed (disk full, read-only): not the network; the CLI says so
            failures = 1 if got else failures + 1  # consecutive failed attempts, the last one counted
            if failures > retries:
                raise UserError(f"could not download {url} after {retries + 1} attempts "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                                f"rerun the same command to resume from {part}") from None
            time.sleep(wait if not got else RETRY_WAIT_S)
            wait = wait * 2 if not got else RETRY_WAIT_S
    if sha256 and (digest := sha256_of(part)) != sha256:
        part.unlink()
        raise UserError(f"checksum mismatch for {url}: sha256 {digest[:12]}..., expected {sha256[:12]}...; "
                        f"the download is corrupt or changed upstream (removed it; nothing was unpacked)")
    os.replace(part, target)
    return target


def _extract(archive: Path, dest: Path) -> None:
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


def unpack(archives: list[Path] | Path, dest: Path) -> Path:
    """Unpack `archives` into the folder `dest`, all or nothing.

    Everything is extracted into a temporary folder beside `dest` (same file system), then renamed to
    `dest`; on any failure the temporary folder is removed and `dest` is as before. An archive whose top
    folder is `dest`'s name (``cue-conflict.tar.gz`` holding ``cue-conflict/...``) is unwrapped. An existing
    `dest` is replaced only once the new one is complete."""
    archives = [archives] if isinstance(archives, Path) else list(archives)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.unpack-"))
    old = None
    try:
        for i, a in enumerate(archives):
            raw = staging / f".archive-{i}"
            _extract(a, raw)
            top = raw / dest.name
            _merge(top if _archive_has_top(a, dest.name) and top.is_dir() else raw, staging)
            shutil.rmtree(raw, ignore_errors=True)
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{os.getpid()}"
            os.replace(dest, old)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not dest.exists():
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _merge(src: Path, dst: Path) -> None:
    """Move the tree `src` into `dst`, merging folders both hold (archives sharing top folders), then
    remove what is left of `src` (its emptied folders)."""
    if src.is_dir() and dst.is_dir():
        for child in list(src.iterdir()):
            _merge(child, dst / child.name)
        shutil.rmtree(src, ignore_errors=True)
    else:
        os.replace(src, dst)


def hf_snapshot(repo: str, revision: str, dest: Path, progress: bool | None = None) -> Path:
    """`snapshot_download` of a dataset repo into `dest`, then checked against the Hub's checksums.

    huggingface_hub draws its own (tqdm) bars; they are switched off unless `progress` (None: stderr is a
    terminal), as ours are."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = not (sys.stderr.isatty() if progress is None else progress)
    was_off = are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    commit = revision
    try:
        if not constants.HF_HUB_OFFLINE:  # one commit for the download and the check, even if `main` moves
            commit = HfApi().repo_info(repo, repo_type="dataset", revision=revision).sha or revision
        got = Path(snapshot_download(repo_id=repo, repo_type="dataset", revision=commit, local_dir=str(dest)))
    except Exception as e:  # noqa: BLE001 - network, auth (gated) and missing-repo errors alike
        raise hub_error(repo, revision, e) from None
    finally:
        if quiet and not was_off:
            enable_progress_bars()
    verify_hub_files(repo, "dataset", commit, local_dir=got)
    return got


def download(name: str, data_root: str | Path, url_override: str | None = None, progress: bool | None = None,
             sha256: str | None = None) -> Path:
    """Fetch catalog dataset `name` (``vtab/<task>`` for one VTAB task) under `data_root`.

    `progress`: a byte progress bar on stderr (None: when stderr is a terminal). `sha256`: the digest to
    check a single-file `url_override` against (else the catalog's, when it records one)."""
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
            hf_snapshot(wds_repo(VTAB_TASKS[t]), "main", root / "vtab" / t, progress)
        return root / "vtab"
    src = url_override or entry.source
    dest = root / entry.dirs[0] if entry.dirs else root / head
    if src.startswith("hf:"):
        repo, _, rev = src[3:].split(" ")[0].partition("@")
        got = hf_snapshot(repo, rev or "main", dest, progress)
        if entry.kind == "imagenet" and repo.startswith("clip-benchmark/"):
            try:  # its labels index its classnames.txt: refuse now a release the reader could not label
                release_label_space(head, got)
            except UserError as e:
                raise UserError(f"{e} (downloaded to {got}, but unusable as {head})") from None
        return got
    if src.startswith("url:") or "://" in src:
        urls = _expand_braces(src.removeprefix("url:"))
        digest = sha256 or (entry.sha256 if not url_override else None)
        if digest and len(urls) > 1:
            raise UserError(f"one sha256 cannot check the {len(urls)} files of {name!r}")
        parts_dir = root / PARTS_DIR
        bar = progress_bar(progress)
        try:
            with bar if bar is not None else nullcontext():
                archives = [fetch_url(u, parts_dir, digest, bar) for u in urls]
        except BaseException:
            _drop_if_empty(parts_dir)  # a part worth resuming keeps it
            raise
        try:
            unpack(archives, dest)
        except (UserError, tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
                raise  # the data root is full or read-only: the archives are fine, keep them
            for a in archives:  # a damaged archive would otherwise be reused by every rerun
                a.unlink(missing_ok=True)
            _drop_if_empty(parts_dir)
            why = (str(e).splitlines() or [""])[0][:120]
            raise UserError(f"could not unpack {name!r} ({type(e).__name__}: {why}); "
                            f"nothing was changed under {root}; removed the downloaded archive(s), rerun to fetch "
                            f"them again") from None
        for a in archives:  # unpacked: the archives are no longer needed
            a.unlink(missing_ok=True)
        _drop_if_empty(parts_dir)
        return dest
    raise UserError(f"{name!r} cannot be downloaded automatically: {entry.how_to_get()}")


def _drop_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _archive_has_top(archive: Path, top: str) -> bool:
    """Does the archive already contain the top folder (e.g. cue-conflict/...)?"""
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            return any(m.name.split("/", 1)[0] == top for m in tf.getmembers()[:50])
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return any(n.split("/", 1)[0] == top for n in zf.namelist()[:50])
    return False


def _expand_braces(url: str) -> list[str]:
    if "{" in url and "}" in url:
        pre, rest = url.split("{", 1)
        alts, post = rest.split("}", 1)
        return [pre + a + post for a in alts.split(",")]
    return [url]
