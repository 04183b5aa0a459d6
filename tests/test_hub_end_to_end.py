"""The real user's path, end to end, offline: the paper's four aliases are fetched with `beyond-inet download`
from a local server speaking the Hugging Face Hub's protocol (tests/hub_server.py), then the Hub goes away
and `run` evaluates them with `HF_HUB_OFFLINE=1` from the cache, and the report shows them. The aliases
point at tiny stand-ins (tests/tiny_zoo.py says why and how); everything else (alias -> spec -> timm /
open_clip hub loaders -> huggingface_hub -> cache -> strict load) is the real code.

Each CLI call is a child process, as a user's is: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE
when it is imported."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.hub_server import HubServer, hub_env

pytestmark = [pytest.mark.slow]
ALIASES = ["vit-sup", "convnext-sup", "vit-clip", "convnext-clip"]


@pytest.fixture(scope="module")
def tiny_repos():
    from tests import tiny_zoo

    return tiny_zoo.repos()


def cli(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
            "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tests.tiny_zoo", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=timeout)


def test_download_then_offline_run_and_report(tiny_repos, tiny_imagenet, tmp_path):
    hf_home = tmp_path / "hf"
    with HubServer() as hub:
        for repo, files in tiny_repos.items():
            hub.add(repo, files)
        hub.drop_once("model.safetensors")  # the first timm weights file fetched (vit-sup's) is cut off once
        got = cli(["download", *ALIASES], hub_env(hub, hf_home))
        assert got.returncode == 0, got.stderr
        # No bars without a terminal; the Hub client's own note of the resume is all there is.
        assert "Traceback" not in got.stderr and all("resume" in ln or "Error while downloading" in ln
                                                     for ln in got.stderr.splitlines()), got.stderr
        lines = got.stdout.strip().splitlines()
        assert [ln.split(":")[0] for ln in lines] == ALIASES
        assert "timm/test_vit.r160_in1k@main in the Hugging Face cache, 1 file(s) checked" in lines[0]
        assert "test-org/tiny-clip-vit@main in the Hugging Face cache, 1 file(s) checked" in lines[2]
        # vit-sup's weights were cut off halfway once; the client asked for the rest with a Range request.
        ranged = [r for r in hub.requests if r[0] == "GET" and r[1].startswith("/cdn/") and r[2]]
        assert len(ranged) == 1 and ranged[0][2].startswith("bytes=")
    weights = [re.search(r"\((\S+)\)$", ln).group(1) for ln in lines]
    assert weights[0].startswith("hub:test_vit.r160_in1k:") and weights[2].startswith("open_clip:tiny-clip-vit@")

    # The Hub is gone (its ports are closed): the run loads every model from the cache.
    out = tmp_path / "out"
    run = cli(["run", "--models", *ALIASES, "--analyses", "accuracy", "--data-root", str(tiny_imagenet),
               "--workers", "0", "--bootstrap", "20", "--no-progress", "--out", str(out)],
              hub_env(hub, hf_home, offline=True))
    assert run.returncode == 0, run.stderr
    with open(out / "results.csv") as f:
        rows = {(r["model"], r["dataset"], r["metric"]): r for r in csv.DictReader(f)}
    assert {(m, "imagenet-val", "top1") for m in ALIASES} <= set(rows)
    assert all(rows[(m, "imagenet-val", "top1")]["n"] == "12" for m in ALIASES)
    report = (out / "report.html").read_text()
    assert all(m in report for m in ALIASES)
    assert all(w in report for w in weights)  # the very weights `download` fetched and checked, not others
