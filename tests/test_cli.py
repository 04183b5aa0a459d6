"""The command line: one clear line and exit code 2 for bad input; listings; a small real run."""
from __future__ import annotations

import subprocess
import sys

import pytest


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "beyond_inet", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.parametrize("args,needle", [
    (["run", "--models", "resnet50", "--out", "OUT"], "unknown model spec 'resnet50'"),
    (["run", "--models", "packaged:efficientnet_lite0", "--analyses", "magic", "--out", "OUT"], "unknown analysis"),
    (["run", "--models", "packaged:efficientnet_lite0", "--data-root", "/nonexistent", "--out", "OUT"],
     "is not a folder"),
    (["run", "--models", "timm:convnext_atto@/no/such.pth", "--out", "OUT"], "does not exist"),
    (["report", "/nonexistent-out"], "holds no results"),
    (["download", "imagenet-val"], "needs --data-root"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "o")) for a in args]
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_models_and_datasets_listing(shared_data):
    r = cli("models")
    assert r.returncode == 0 and "vit-sup" in r.stdout and "packaged:efficientnet_lite0" in r.stdout
    r = cli("datasets", "--data-root", str(shared_data))
    assert r.returncode == 0 and "cue-conflict" in r.stdout and "imagenet-sample" in r.stdout


def test_run_accuracy_on_real_images_with_real_weights(tiny_imagenet, tmp_path):
    """The CLI's top-1 equals a direct forward pass of the same model on the same images."""
    import torch

    from beyond_inet.data import catalog
    from beyond_inet.data.views import build_view
    from beyond_inet.models import create_model

    out = tmp_path / "out"
    r = cli("run", "--models", "packaged:efficientnet_lite0", "--analyses", "accuracy", "--data-root",
            str(tiny_imagenet), "--out", str(out), "--workers", "0", "--bootstrap", "100", "--no-progress",
            "--no-report")
    assert r.returncode == 0, r.stderr
    lines = (out / "results.csv").read_text().splitlines()
    top1 = [ln for ln in lines if ",imagenet-val,accuracy,top1," in ln]
    assert top1, lines
    ds = catalog.open_dataset("imagenet-val", tiny_imagenet)
    m = create_model("packaged:efficientnet_lite0")
    view = build_view("standard", m.preprocessing)
    with torch.inference_mode():
        logits, _ = m.forward(torch.stack([view(ds.load(i)) for i in range(len(ds))]))
    want = (logits.argmax(1).numpy() == [ds.label(i) for i in range(len(ds))]).mean()
    assert float(top1[0].split(",")[4]) == pytest.approx(want)
    assert 0 < want < 1  # espresso copies right, the deliberately mislabelled astronauts wrong
