"""Shared fixtures: the repository's shared data (skipped when absent) and tiny on-disk datasets."""
from __future__ import annotations

import os
import sys
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shared_data_path() -> Path | None:
    env = os.environ.get("BEYOND_INET_SHARED_DATA")
    p = Path(env) if env else REPO.parent / "shared" / "data"
    return p if p.is_dir() else None


REQUIRE_ENV = "BEYOND_INET_REQUIRE_SHARED_DATA"  # set to 1 by `make test` (with data) and .ci/run
# Skips that say the machine lacks a tool, not the data: they stay skips even where data is required.
ENVIRONMENT_SKIPS = re.compile(r"could not import|not installed|chromium|chromedriver|\bcuda\b|\bgpu\b", re.I)


def shared_data_required() -> bool:
    """Whether a data test may not skip: the shared folder is there, or the runner says it must be."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes") or shared_data_path() is not None


@pytest.fixture
def shared_data() -> Path:
    p = shared_data_path()
    if p is None:
        pytest.skip("shared data folder absent (set BEYOND_INET_SHARED_DATA or run via .ci/run)")
    return p


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip of a test that uses `shared_data` is a failure where the data is required (the folder is
    present, or BEYOND_INET_REQUIRE_SHARED_DATA=1): a moved or renamed folder must not turn the real-data
    tests off unnoticed. Skips for a missing tool (ENVIRONMENT_SKIPS: an import, Chromium, a GPU) stay skips."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or "shared_data" not in getattr(item, "fixturenames", ()) or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else str(rep.longrepr)
    if ENVIRONMENT_SKIPS.search(reason) or not shared_data_required():
        return
    rep.outcome = "failed"
    where = shared_data_path()
    rep.longrepr = (f"data test skipped where the shared data is required ({REQUIRE_ENV}="
                    f"{os.environ.get(REQUIRE_ENV, '')!r}, shared folder: {where or 'absent'}): {reason}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BEYOND_INET_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # A run that finds the Hub unreachable switches this process to offline mode (validate.hub_offline, undone when the run ends);
    # one test's switch must not carry into the next (nor into the subprocesses it starts).
    offline = os.environ.get("HF_HUB_OFFLINE")
    yield
    if offline is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = offline
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = offline is not None and offline.lower() in ("1", "true", "yes", "on")


def skimage_photo(name: str) -> Image.Image:
    from skimage import data

    arr = getattr(data, name)()
    if isinstance(arr, tuple):
        arr = arr[0]
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return Image.fromarray(arr[..., :3].astype(np.uint8))


PHOTOS = {  # photo -> ImageNet wnid of its class
    "chelsea": "n02123045",  # tabby
    "coffee": "n07920052",   # espresso
    "rocket": "n03773504",   # missile
    "astronaut": "n04591713",  # wine bottle (deliberately wrong: a mistake for the metrics)
}


def make_imagenet_folder(root: Path, n_per_photo: int = 3, name: str = "imagenet-val", size: int = 96) -> Path:
    """root/<name>/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG from real photos (crops differ per copy)."""
    k = 1
    for photo, wnid in PHOTOS.items():
        img = skimage_photo(photo)
        d = root / name / wnid
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n_per_photo):
            w, h = img.size
            crop = img.crop((j * 7, j * 5, w - j * 3, h - j * 4)).resize((size + 16 * j, size), Image.BILINEAR)
            crop.save(d / f"ILSVRC2012_val_{k:08d}.JPEG", quality=90)
            k += 1
    return root


@pytest.fixture
def tiny_imagenet(tmp_path) -> Path:
    """A data root holding a 12-image imagenet-val in the class-folder layout."""
    return make_imagenet_folder(tmp_path / "data")
