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
     "does not exist"),
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


SUBCOMMANDS = ("run", "demo", "report", "analyses", "models", "datasets", "download")


def test_help_imports_nothing_heavy_and_shows_an_example():
    """`--help` of the tool and of every subcommand builds without torch, timm, numpy or pandas."""
    code = (
        "import sys, io, contextlib\n"
        "from beyond_inet.cli import build_parser\n"
        "p = build_parser()\n"
        "sub = next(a for a in p._actions if a.__class__.__name__ == '_SubParsersAction')\n"
        f"assert set({SUBCOMMANDS!r}) <= set(sub.choices)\n"
        "for c in [None, *sub.choices]:\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            build_parser().parse_args(['--help'] if c is None else [c, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    assert 'example:' in buf.getvalue(), c\n"
        "heavy = [m for m in ('torch', 'timm', 'numpy', 'pandas', 'open_clip', 'PIL') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout


def test_import_beyond_inet_is_light_and_the_api_is_lazy():
    code = ("import sys, beyond_inet\n"
            "print([m for m in ('torch', 'numpy', 'pandas') if m in sys.modules])\n"
            "print(callable(beyond_inet.evaluate), callable(beyond_inet.load_results))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[]", "True True"]


def test_version():
    from beyond_inet import __version__

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"beyond-inet {__version__}"


def test_analyses_lists_every_option_with_default_and_datasets():
    from beyond_inet import registry

    r = cli("analyses")
    assert r.returncode == 0, r.stderr
    for name, info in registry.ANALYSES.items():
        assert f"{name}  —  {info.title}" in r.stdout
        assert f"datasets: {', '.join(info.datasets)}" in r.stdout
        for o in info.options:
            assert f"--option {o.key}=<{o.type_label}>  (default {o.default_label()})" in r.stdout
    assert "--option probe=<{lbfgs,paper}>  (default lbfgs)" in r.stdout
    r = cli("analyses", "--markdown")
    assert r.returncode == 0 and r.stdout.strip() == registry.markdown_table()


def test_models_search_finds_timm_and_open_clip_names():
    r = cli("models", "--search", "convnext_base")
    assert r.returncode == 0, r.stderr
    specs = [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]
    assert "timm:convnext_base.fb_in22k_ft_in1k" in specs  # the paper's ConvNeXt-sup weights, with its tag
    assert "open_clip:convnext_base@laion400m_s13b_b51k" in specs  # the paper's ConvNeXt-clip
    assert "convnext-sup" in specs  # the alias whose description matches
    assert all("convnext_base" in s.lower() or s == "convnext-sup" or s == "convnext-clip" for s in specs), specs
    r = cli("models", "--search", "no-such-model-xyz")
    assert r.returncode == 2 and "no model name contains" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_datasets_shows_counts_and_how_to_get_the_rest(shared_data):
    from beyond_inet.cli import dataset_rows

    rows = {r["name"]: r for r in dataset_rows(str(shared_data))}
    n_png = len(list((shared_data / "cue-conflict").rglob("*.png")))
    assert rows["cue-conflict"]["present"] and rows["cue-conflict"]["count"] == f"{n_png} images"
    absent = rows["imagenet-r"]
    assert not absent["present"] and absent["source_label"] == "clip-benchmark/wds_imagenet-r@main"
    assert absent["get"] == f"beyond-inet download imagenet-r --data-root {shared_data}"
    r = cli("datasets", "--data-root", str(shared_data))
    assert r.returncode == 0 and f"{n_png} images" in r.stdout and "clip-benchmark/wds_imagenet-r@main" in r.stdout


def test_datasets_table_shows_whole_reasons(tmp_path, capsys):
    """A present-but-unreadable dataset shows its whole reason (a cut one cannot be acted on); label sets are
    called label sets, not "unreadable"; the printed table ellipsizes nothing."""
    from beyond_inet.cli import dataset_rows, main
    from beyond_inet.data import catalog
    from beyond_inet.errors import UserError

    root = tmp_path / ("a-rather-long-data-root-name-" * 3)
    (root / "imagenet-sample-images").mkdir(parents=True)  # present, but neither labels.csv nor images
    with pytest.raises(UserError) as e:
        catalog.open_dataset("imagenet-sample", str(root))
    rows = {r["name"]: r for r in dataset_rows(str(root))}
    assert rows["imagenet-sample"]["count"] == f"unreadable: {e.value}"
    assert len(str(e.value)) > 80  # the old 80-character cut would show
    for name in ("imagenet-real", "imagenet-x"):
        assert rows[name]["count"].startswith("label set"), rows[name]
    assert main(["datasets", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "..." not in out.replace("...)", "")
    assert "repository's shared data" not in out  # a place only this project's developers know


def test_imagenet_sample_reads_the_upstream_clone(tmp_path):
    """The folder as `git clone github.com/EliSchwartz/imagenet-sample-images` leaves it (no labels.csv):
    labels come from the <wnid>_ file-name prefix, in ImageNet's sorted-wnid order."""
    from PIL import Image

    from beyond_inet.data import catalog
    from beyond_inet.data.labelspaces import wnid_to_index

    d = tmp_path / "imagenet-sample-images"
    d.mkdir()
    for f in ("n01443537_goldfish.JPEG", "n01440764_tench.JPEG"):
        Image.new("RGB", (8, 8)).save(d / f, "JPEG")
    (d / "README.md").write_text("not an image")
    ds = catalog.open_dataset("imagenet-sample", str(tmp_path))
    assert len(ds) == 2
    idx = wnid_to_index()
    assert sorted(ds.label(i) for i in range(len(ds))) == sorted([idx["n01440764"], idx["n01443537"]]) == [0, 1]
