"""Model weights from the Hugging Face Hub: where a spec's weights come from, fetching them ahead of a run
(`beyond-inet download vit-sup`), and checking what was fetched against the Hub's checksums.

Fetching builds the model through the same code as `run` (timm's, open_clip's or transformers' own hub
loaders, into the Hugging Face cache), so what `download` fetches is exactly what `run` will read, and a
later run with `HF_HUB_OFFLINE=1` finds it. The Hub client verifies no checksum of its own; after the
build, every file of the repo present in the cache is compared with the sha256 (LFS) or git sha1 the Hub
lists (`HfApi.verify_repo_checksums`); a mismatch removes the file and is one line.
"""
from __future__ import annotations

import os
from pathlib import Path

from beyond_inet.errors import UserError
from beyond_inet.models.aliases import resolve_alias


class ChecksumMismatch(UserError):
    """A fetched file differs from the checksum its source lists (one line, exit 2)."""


def hub_source(spec: str) -> tuple[str, str] | None:
    """(repo id, revision) of the Hub model repo `spec`'s weights come from, or None (random, local, packaged)."""
    alias = resolve_alias(spec)
    target = alias[0] if alias else spec
    prefix, _, rest = target.partition(":")
    if prefix == "timm":
        name, _, ckpt = rest.partition("@")
        if ckpt:
            return None
        if name.startswith("hf-hub:"):
            repo = name[len("hf-hub:"):]
        else:
            import timm

            try:
                repo = timm.models.get_pretrained_cfg(name).hf_hub_id or ""
            except Exception:  # noqa: BLE001 - unknown names are reported by the build
                return None
        repo, _, rev = repo.partition("@")
        return (repo, rev or "main") if repo else None
    if prefix == "open_clip":
        arch, _, tag = rest.partition("@")
        if arch.startswith("hf-hub:"):
            return arch[len("hf-hub:"):], "main"
        if not tag or tag == "random":
            return None
        import open_clip

        hub = ((open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub") or "").rstrip("/")
        if not hub:
            return None
        repo = hub if hub.count("/") == 1 else os.path.dirname(hub)  # "org/name/file" names a file in org/name
        return repo, "main"
    if prefix == "hf":
        return None if os.path.isdir(rest) else (rest, "main")
    return None


def verify_hub_files(repo: str, repo_type: str, revision: str, *, local_dir: Path | None = None,
                     cache_dir: Path | None = None) -> int:
    """Check the files of `repo` present locally against the checksums the Hub lists (sha256 for LFS files,
    git sha1 for the rest); returns how many were checked.

    A mismatch deletes the bad files (the cache blob behind a snapshot symlink too, so the next download
    fetches them again) and raises `UserError`. Skipped (0) in offline mode, where the list cannot be had."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return 0
    try:
        res = HfApi().verify_repo_checksums(repo, repo_type=repo_type, revision=revision,
                                            local_dir=local_dir, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - network and Hub errors alike
        raise hub_error(repo, revision, e) from None
    if res.mismatches:
        for m in res.mismatches:
            p = Path(res.verified_path) / m["path"]
            if p.is_symlink():
                p.resolve().unlink(missing_ok=True)
            p.unlink(missing_ok=True)
        m = res.mismatches[0]
        rev = revision[:12] if len(revision) == 40 else revision  # a commit hash, shortened
        raise ChecksumMismatch(f"checksum mismatch for {repo}@{rev}: {m['path']} has {m['algorithm']} "
                        f"{m['actual'][:12]}..., the Hub lists {m['expected'][:12]}... ({len(res.mismatches)} bad "
                        f"file(s), removed; rerun to fetch them again)")
    return res.checked_count


def hub_error(repo: str, revision: str, e: Exception) -> UserError:
    return UserError(f"could not download {repo}@{revision} from the Hugging Face Hub "
                     f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]})")


def fetch_model(spec: str) -> str:
    """Fetch `spec`'s weights into the Hugging Face cache by building the model as `run` does, then check
    them; returns one line saying what was fetched."""
    from beyond_inet.models import create_model

    source = hub_source(spec)
    try:
        model = create_model(spec)
    except Exception:  # a corrupt file can fail the build: then the checksum is the message to give
        if source is not None:
            try:
                _verify_model(source)
            except ChecksumMismatch as bad:
                raise bad from None
            except UserError:
                pass
        raise
    if source is None:
        return f"{spec}: nothing to download ({model.weights_id})"
    n = _verify_model(source)
    return f"{spec}: {source[0]}@{source[1]} in the Hugging Face cache, {n} file(s) checked ({model.weights_id})"


def _verify_model(source: tuple[str, str]) -> int:
    from huggingface_hub import constants

    return verify_hub_files(source[0], "model", source[1], cache_dir=Path(constants.HF_HUB_CACHE))
