"""Every failure is one line on stderr and exit 2, found before the first model is built, nothing lost.

Each case here ran work, hung, printed many lines or a traceback before `validate.py` existed."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from beyond_inet import cli, validate
from beyond_inet.errors import UserError

SRC = str(Path(__file__).resolve().parents[1] / "src")
LITE0 = "packaged:efficientnet_lite0"


def run_cli(*args, env=None, timeout=300):
    e = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-m", "beyond_inet", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)


def assert_one_line_exit_2(r, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) <= 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert needle in r.stderr, r.stderr


def in_process(capsys, *args) -> tuple[int, str]:
    """cli.main in this process (fast; lets a test patch what a subprocess cannot)."""
    rc = cli.main([str(a) for a in args])
    return rc, capsys.readouterr().err


def stored(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != "run.log"}


@pytest.mark.parametrize("flag,value,needle", [
    ("--limit", "0", "--limit must be an integer >= 1, got 0"),
    ("--limit", "-5", "--limit must be an integer >= 1, got -5"),
    ("--bootstrap", "0", "--bootstrap must be an integer >= 1, got 0"),
    ("--bootstrap", "-1", "--bootstrap must be an integer >= 1"),
    ("--seed", "-1", "--seed must be an integer >= 0"),
    ("--workers", "-1", "--workers must be an integer >= 0"),
    ("--batch-size", "0", "--batch-size must be an integer >= 1"),
])
def test_bad_numbers_stop_before_any_work(flag, value, needle, tiny_imagenet, tmp_path, capsys, monkeypatch):
    """`--limit 0` used to run every image; the others crashed deep inside with a traceback."""
    import beyond_inet.models as models

    def no_model(*a, **k):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setattr(models, "create_model", no_model)
    out = tmp_path / "out"
    rc, err = in_process(capsys, "run", "--models", LITE0, "--data-root", tiny_imagenet, "--out", out,
                         "--no-progress", flag, value)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing created for a rejected run


def test_out_is_a_file_or_cannot_be_created(tiny_imagenet, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("keep me")
    rc, err = in_process(capsys, "run", "--models", LITE0, "--data-root", tiny_imagenet, "--out", f)
    assert rc == 2 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    assert f.read_text() == "keep me"
    rc, err = in_process(capsys, "run", "--models", LITE0, "--data-root", tiny_imagenet, "--out", "/proc/no/such")
    assert rc == 2 and "cannot be created" in err and len(err.strip().splitlines()) == 1


def test_ray_executor_without_ray_names_the_extra(tiny_imagenet, tmp_path, capsys, monkeypatch):
    real = validate.has_module
    monkeypatch.setattr(validate, "has_module", lambda name: False if name == "ray" else real(name))
    rc, err = in_process(capsys, "run", "--models", LITE0, "--data-root", tiny_imagenet, "--out", tmp_path / "o",
                         "--executor", "ray")
    assert rc == 2 and "pip install 'beyond-inet[ray]'" in err and len(err.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not validate.has_module("ray"), reason="Ray not installed")
def test_unreachable_ray_address_is_one_line_not_a_hang(tiny_imagenet, tmp_path):
    r = run_cli("run", "--models", LITE0, "--data-root", tiny_imagenet, "--out", tmp_path / "o", "--executor", "ray",
                "--ray-address", f"127.0.0.1:{_free_port()}", timeout=120)
    assert_one_line_exit_2(r, "no Ray head answered at 127.0.0.1")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not validate.has_module("ray"), reason="Ray not installed")
def test_silent_ray_address_gives_up_after_the_stated_timeout():
    """A host that accepts the connection but is no Ray head (Ray retried for > 5 minutes)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])  # accept and say nothing
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError, match=r"within 1 s"):
            validate.check_ray_address(f"127.0.0.1:{srv.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - t0 < 15
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def test_ray_sub_job_failures_are_one_line_and_keep_what_is_stored(tiny_imagenet, tmp_path, capsys, monkeypatch):
    """Retries used up: the executor's error was a RuntimeError with a traceback; now one line / exit 2, and the
    shards of the first model stay stored."""
    from beyond_inet.engine import runner
    from beyond_inet.errors import RunFailed

    assert issubclass(RunFailed, UserError) and issubclass(RunFailed, RuntimeError)  # old callers still catch it
    src = (Path(SRC) / "beyond_inet" / "engine" / "ray_executor.py").read_text()
    assert "raise RuntimeError(" not in src  # every failure the Ray executor reports reaches the user as RunFailed
    out = tmp_path / "o"
    base = ["run", "--models", LITE0, "--data-root", tiny_imagenet, "--out", out, "--no-progress", "--no-report",
            "--workers", "0", "--bootstrap", "20"]
    assert in_process(capsys, *base)[0] == 0
    before = stored(out / "store")

    class Exhausted:
        def run(self, *a, **k):
            raise RunFailed("2 of 2 Ray sub-jobs failed (their shards are not stored; rerun to resume). First: "
                            "lite0 shards [0]: worker died\n(RayActorError)")

    monkeypatch.setattr(runner, "get_executor", lambda *a, **k: Exhausted())
    rc, err = in_process(capsys, *base, "--limit", "5")  # new work, which the "cluster" fails
    assert rc == 2 and "Ray sub-jobs failed" in err and len(err.strip().splitlines()) == 1
    assert stored(out / "store").items() >= before.items()


def test_data_root_without_any_needed_dataset(tmp_path, capsys):
    """Used to exit 0 with zero rows."""
    empty = tmp_path / "empty"
    empty.mkdir()
    # (shape-bias always finds the cue-conflict/edge/silhouette copies bundled with the package)
    rc, err = in_process(capsys, "run", "--models", LITE0, "--analyses", "robustness", "calibration",
                         "--data-root", empty, "--out", tmp_path / "o")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "looked for: imagenet-val, imagenet-v2, imagenet-a, imagenet-r" in err
    assert not (tmp_path / "o").exists()


def test_datasets_data_root_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "f.txt"
    f.write_text("x")
    rc, err = in_process(capsys, "datasets", "--data-root", f)
    assert rc == 2 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,needle", [
    (["--analyses", "calibraton"], "did you mean 'calibration'?"),
    (["--option", "pug_rul=paper"], "unknown option 'pug_rul'; did you mean 'pug_rule'?"),
    (["--option", "pug_rule=papr"], "choose one of any, paper; did you mean 'paper'?"),
    (["--option", "probe_val_fraction=1.5"], "out of range"),
    (["--option", "imagenet_x_multi_factor=maybe"], "expected true/false"),
    (["--option", "invariance_resolutions=224,big"], "invariance_resolutions=big: expected an integer"),
    (["--option", "calibration_datasets=imagenet-vall"], "did you mean 'imagenet-val'?"),
    (["--option", "noequals"], "expected KEY=VALUE"),
    (["--option", "device=cuda"], "is set by --device, not --option"),
])
def test_bad_analysis_or_option_is_one_line_with_a_suggestion(args, needle, tiny_imagenet, tmp_path, capsys):
    rc, err = in_process(capsys, "run", "--models", LITE0, "--data-root", tiny_imagenet, "--out", tmp_path / "o",
                         *args)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("spec,needle", [
    ("vit-sop", "did you mean 'vit-sup'?"),
    ("packaged:efficientnet_lite", "did you mean 'packaged:efficientnet_lite"),
    ("timm:resnet5O", "unknown timm model 'resnet5O'"),
    ("open_clip:ViT-B-16@laion400m_e3", "did you mean 'laion400m_e3"),
])
def test_model_spec_suggestions(spec, needle, tmp_path, capsys, tiny_imagenet):
    rc, err = in_process(capsys, "run", "--models", spec, "--data-root", tiny_imagenet, "--out", tmp_path / "o")
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_timm_typo_suggests_the_architecture(capsys, tmp_path, tiny_imagenet):
    rc, err = in_process(capsys, "run", "--models", "timm:convnext_tinny", "--data-root", tiny_imagenet,
                         "--out", tmp_path / "o")
    assert rc == 2 and "did you mean 'timm:convnext_tiny" in err


def test_offline_hub_weights_are_one_line_with_how_to_predownload(tiny_imagenet, tmp_path):
    """Unresolvable hub host, nothing cached: 23 lines of retries and a minute of waiting before."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "https://hub.invalid", "HF_HUB_OFFLINE": ""}
    t0 = time.monotonic()
    r = run_cli("run", "--models", "timm:resnet18", "--data-root", tiny_imagenet, "--out", tmp_path / "o",
                "--no-progress", env=env)
    assert_one_line_exit_2(r, "could not fetch weights for timm model 'resnet18'")
    assert "hf download timm/resnet18" in r.stderr and "results of the other models" not in r.stderr
    assert time.monotonic() - t0 < 120
    log = (tmp_path / "o" / "run.log").read_text()
    assert "could not be built" in log


def test_offline_flag_set_by_user(tiny_imagenet, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    r = run_cli("run", "--models", "timm:resnet18", "--data-root", tiny_imagenet, "--out", tmp_path / "o",
                "--no-progress", env=env)
    assert_one_line_exit_2(r, "the Hugging Face Hub is offline")


def test_other_models_results_named_only_when_there_are_some(tiny_imagenet, tmp_path):
    """One good and one unbuildable model: the good one's results are kept and named; nothing recomputed."""
    out = tmp_path / "o"
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    args = ["run", "--models", LITE0, "timm:resnet18", "--data-root", tiny_imagenet, "--out", out, "--no-progress",
            "--no-report", "--bootstrap", "50", "--workers", "0"]
    r = run_cli(*args, env=env)
    assert_one_line_exit_2(r, f"results of the other models are in {out}")
    rows = (out / "results.csv").read_text()
    assert f"{LITE0},imagenet-val,accuracy,top1" in rows
    before = stored(out / "store")
    r = run_cli(*args, env=env)  # rerun: the stored outputs are reused, untouched
    assert r.returncode == 2 and stored(out / "store") == before
