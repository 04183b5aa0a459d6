"""The real user's path, end to end, offline: the paper's four aliases are fetched with `beyond-inet download`
from a local server speaking the Hugging Face Hub's protocol (tests/hub_server.py), evaluated with `run`,
shown in the report, and evaluated again with the network gone (`HF_HUB_OFFLINE=1`) from the cache, to the
same numbers. The aliases point at tiny stand-ins (tests/tiny_zoo.py says why and how); everything else
(alias -> spec -> timm / open_clip hub loaders -> huggingface_hub -> cache -> strict load) is the real code.

Each CLI call is a child process, as a user's is: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE
when it is imported."""
from __future__ import annotations

import csv
import os
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


def _results(out) -> dict[tuple[str, str, str], str]:
    with open(out / "results.csv") as f:
        return {(r["model"], r["dataset"], r["metric"]): r["value"] for r in csv.DictReader(f)}


def test_download_run_report_then_offline_rerun(tiny_repos, tiny_imagenet, tmp_path):
    hf_home = tmp_path / "hf"
    with HubServer() as hub:
        for repo, files in tiny_repos.items():
            hub.add(repo, files)
        hub.drop_once("model.safetensors")  # the first timm weights file fetched (vit-sup's) is cut off once
        env = hub_env(hub, hf_home)
        got = cli(["download", *ALIASES], env)
        assert got.returncode == 0, got.stderr
        lines = got.stdout.strip().splitlines()
        assert [ln.split(":")[0] for ln in lines] == ALIASES
        assert "timm/test_vit.r160_in1k@main in the Hugging Face cache" in lines[0] and "checked" in lines[0]
        # vit-sup's weights were cut off halfway once; the client asked for the rest with a Range request.
        weights = [r for r in hub.requests if r[0] == "GET" and r[1].startswith("/cdn/")]
        assert any(r[2] and r[2].startswith("bytes=") for r in weights)
        for repo in tiny_repos:
            assert (hf_home / "hub" / f"models--{repo.replace('/', '--')}").is_dir()

        run_args = ["run", "--models", *ALIASES, "--analyses", "accuracy", "--data-root", str(tiny_imagenet),
                    "--workers", "0", "--bootstrap", "20", "--no-progress", "--batch-size", "6"]
        online = cli(run_args + ["--out", str(tmp_path / "online")], env)
        assert online.returncode == 0, online.stderr
    # The Hub is gone (its ports are closed): a fresh run loads every model from the cache.
    offline = cli(run_args + ["--out", str(tmp_path / "offline")], hub_env(hub, hf_home, offline=True))
    assert offline.returncode == 0, offline.stderr
    a, b = _results(tmp_path / "online"), _results(tmp_path / "offline")
    assert {k[0] for k in a} >= set(ALIASES) and a == b  # same models, same numbers
    assert {(m, "imagenet-val", "top1") for m in ALIASES} <= set(a)
    html = (tmp_path / "online" / "report.html").read_text()
    assert all(m in html for m in ALIASES)
    # Offline, without the weights in the cache: one line naming the repo to pre-download, exit 2.
    empty = cli(["download", "vit-sup"], hub_env(hub, tmp_path / "empty-hf", offline=True))
    err = empty.stderr.strip().splitlines()
    assert empty.returncode == 2 and len(err) == 1 and "timm/test_vit.r160_in1k" in err[0], empty.stderr
