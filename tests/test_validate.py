"""Mistakes that used to surface only when a model was built (or after ~40 s of Ray retries) are refused by
`validate.py` first: one line, exit 2, no output folder, no model built, no Ray started."""
from __future__ import annotations

import os
import socket
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest
import torch

from beyond_inet import cli, validate
from beyond_inet.errors import UserError

LITE0 = "packaged:efficientnet_lite0"
needs_ray = pytest.mark.skipif(not validate.has_module("ray"), reason="Ray not installed")


def _no_model(monkeypatch) -> None:
    import beyond_inet.models as models

    def no_model(*a, **k):
        raise AssertionError("a model was built before the input was checked")

    monkeypatch.setattr(models, "create_model", no_model)


def _refused(capsys, out: Path, *args) -> str:
    """cli.main refuses the run with one line and exit 2, leaving no output folder; returns the line."""
    rc = cli.main([str(a) for a in ("run", "--out", out, "--no-progress", *args)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()
    return err


class _SilentServer:
    """Accepts TCP connections and never says a word (a wrong port: some other service, a proxy)."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.conns: list = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.srv.settimeout(0.2)
        while not self.stop.is_set():
            try:
                self.conns.append(self.srv.accept()[0])
            except OSError:
                pass

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()
        for c in self.conns:
            c.close()
        self.srv.close()


# --- Ray Client addresses -------------------------------------------------------------------------
@needs_ray
def test_ray_client_address_that_accepts_but_is_no_ray_gives_up_in_the_stated_time():
    """ray://HOST:PORT got only a TCP check: ray.init then retried ~40 s and died with a traceback."""
    with _SilentServer() as s:
        t0 = time.monotonic()
        with pytest.raises(UserError, match=r"no Ray head answered .* within 1 s"):
            validate.check_ray_address(f"ray://127.0.0.1:{s.port}", timeout=1.0)
        assert time.monotonic() - t0 < 5


@needs_ray
def test_ray_client_address_run_is_refused_before_ray_starts_or_out_is_made(tiny_imagenet, tmp_path, capsys,
                                                                          monkeypatch):
    import ray

    def no_init(*a, **k):
        raise AssertionError("ray.init was called for an address that is no Ray Client server")

    monkeypatch.setattr(ray, "init", no_init)
    real_check, spent = validate.check_ray_address, []

    def timed(address, timeout=2.0):  # the stated timeout, shortened for the test
        t0 = time.monotonic()
        try:
            return real_check(address, timeout)
        finally:
            spent.append(time.monotonic() - t0)

    monkeypatch.setattr(validate, "check_ray_address", timed)
    _no_model(monkeypatch)
    with _SilentServer() as s:
        err = _refused(capsys, tmp_path / "o", "--models", LITE0, "--data-root", tiny_imagenet,
                       "--executor", "ray", "--ray-address", f"ray://127.0.0.1:{s.port}")
    assert "not a Ray Client server" in err and "within 2 s" in err
    assert len(spent) == 1 and spent[0] < 6


def _grpc_server(add_service=None):
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    if add_service is not None:
        add_service(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@needs_ray
def test_ray_client_probe_tells_a_ray_client_server_from_another_grpc_server():
    """The probe is Ray's own first call (ClusterInfo PING): a server answering it passes, one that speaks
    gRPC without Ray's service is refused at once."""
    from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

    class Pinged(ray_client_pb2_grpc.RayletDriverServicer):
        def ClusterInfo(self, request, context):
            assert request.type == ray_client_pb2.ClusterInfoType.PING
            return ray_client_pb2.ClusterInfoResponse(json="{}")

    server, port = _grpc_server(lambda s: ray_client_pb2_grpc.add_RayletDriverServicer_to_server(Pinged(), s))
    try:
        validate.check_ray_address(f"ray://127.0.0.1:{port}", timeout=5.0)
    finally:
        server.stop(0)
    server, port = _grpc_server()
    try:
        with pytest.raises(UserError, match="not a Ray Client server: UNIMPLEMENTED"):
            validate.check_ray_address(f"ray://127.0.0.1:{port}", timeout=5.0)
    finally:
        server.stop(0)


@needs_ray
def test_failed_ray_init_is_one_line_and_stops_what_it_started(monkeypatch):
    """A head lost between the probe and ray.init: RunFailed (one line), and ray.shutdown is called."""
    import ray

    from beyond_inet.engine.ray_executor import RayExecutor
    from beyond_inet.errors import RunFailed

    calls = []

    def bad_init(*a, **k):
        raise ConnectionError("ray client connection timeout")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", bad_init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    ex = RayExecutor(address="ray://10.0.0.1:10001")
    with pytest.raises(RunFailed, match="could not connect to Ray at ray://10.0.0.1:10001: ConnectionError"):
        ex._ray()
    assert calls == ["shutdown"] and not ex.started


# --- numbers and paths ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-1"])
def test_logit_scale_must_be_finite_and_positive(value, tiny_imagenet, tmp_path, capsys, monkeypatch):
    """--logit-scale inf ran (every CLIP softmax one-hot, every ECE meaningless) with no word said."""
    _no_model(monkeypatch)
    err = _refused(capsys, tmp_path / "o", "--models", LITE0, "--data-root", tiny_imagenet,
                   f"--logit-scale={value}")
    assert "--logit-scale must be a finite number > 0" in err


def test_logit_scale_as_option_points_to_the_flag(tiny_imagenet, tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    err = _refused(capsys, tmp_path / "o", "--models", LITE0, "--data-root", tiny_imagenet,
                   "--option", "logit_scale=inf")
    assert "set by --logit-scale" in err


def test_infinite_float_option_is_refused(tiny_imagenet, tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    err = _refused(capsys, tmp_path / "o", "--models", LITE0, "--data-root", tiny_imagenet, "--analyses",
                   "invariance", "--option", "invariance_scales=1,inf")
    assert "invariance_scales=inf: expected a finite number" in err


@pytest.mark.parametrize("where,needle", [
    ("missing", "does not exist"), ("file", "is a file"), ("empty", "holds no human trials")])
def test_mvh_raw_data_must_hold_human_trials(where, needle, tiny_imagenet, tmp_path, capsys, monkeypatch):
    """A wrong mvh_raw_data ran everything and silently dropped the human reference (shape bias 'nan')."""
    _no_model(monkeypatch)
    p = tmp_path / "raw"
    if where == "file":
        p.write_text("x")
    elif where == "empty":
        (p / "cue-conflict").mkdir(parents=True)
    err = _refused(capsys, tmp_path / "o", "--models", LITE0, "--data-root", tiny_imagenet, "--analyses",
                   "accuracy", "--option", f"mvh_raw_data={p}")
    assert f"mvh_raw_data={str(p)!r}" in err and needle in err


def test_mvh_raw_data_with_trials_is_accepted(tmp_path):
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "edge_subject-01_session_1.csv").write_text("a,b\n")
    validate.check_path_option("mvh_raw_data", str(tmp_path))


def test_pug_mapping_must_be_a_file(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        validate.check_path_option("pug_mapping", str(tmp_path))


# --- checkpoints ------------------------------------------------------------------------------------
ARCH = "convnext_atto"


@pytest.fixture(scope="module")
def atto_state() -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False).state_dict()


def _checkpoints(d: Path, state: dict[str, torch.Tensor]) -> dict[str, tuple[Path, str]]:
    """name -> (file, the words the refusal must contain)."""
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for ext in ("pth", "safetensors"):
        good = d / f"good.{ext}"
        torch.save(state, good) if ext == "pth" else save_file(state, str(good))
        cut = d / f"truncated.{ext}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        out[f"truncated-{ext}"] = (cut, "could not be read" if ext == "pth" else "not a valid safetensors file")
    junk = d / "junk.pth"
    junk.write_bytes(b"\x00garbage" * 100)
    out["junk"] = (junk, "could not be read")
    ten = {**state, "head.fc.weight": state["head.fc.weight"][:10], "head.fc.bias": state["head.fc.bias"][:10]}
    torch.save(ten, d / "ten-classes.pth")
    out["ten-classes"] = (d / "ten-classes.pth", "size mismatch for head.fc.weight")
    fewer = {k: v for k, v in state.items() if not k.startswith("stages.3")}
    save_file(fewer, str(d / "fewer.safetensors"))
    out["fewer-keys"] = (d / "fewer.safetensors", "missing keys")
    return out


@pytest.mark.parametrize("case", ["truncated-pth", "truncated-safetensors", "junk", "ten-classes", "fewer-keys"])
def test_checkpoint_that_cannot_load_is_refused_before_the_run(case, atto_state, tiny_imagenet, tmp_path, capsys,
                                                               monkeypatch):
    """Each of these was refused only when the model was built, after the output folder was made."""
    path, needle = _checkpoints(tmp_path / "ck", atto_state)[case]
    _no_model(monkeypatch)
    err = _refused(capsys, tmp_path / "o", "--models", f"timm:{ARCH}@{path}", "--data-root", tiny_imagenet)
    assert str(path) in err and needle in err, err


def test_checkpoint_check_agrees_with_the_real_load(atto_state, tmp_path):
    """The cheap check (header / mmap + meta-device architecture) refuses exactly what the full load refuses,
    and passes what it loads."""
    from beyond_inet.models import create_model
    from beyond_inet.models.timm_models import check_checkpoint

    cases = _checkpoints(tmp_path, atto_state)
    for ext in ("pth", "safetensors"):
        check_checkpoint(ARCH, str(tmp_path / f"good.{ext}"))
        m = create_model(f"timm:{ARCH}@{tmp_path / f'good.{ext}'}")
        assert torch.equal(m.module.state_dict()["head.fc.weight"], atto_state["head.fc.weight"])
    for name, (path, _) in cases.items():
        with pytest.raises(UserError):
            check_checkpoint(ARCH, str(path))
        with pytest.raises(UserError):
            create_model(f"timm:{ARCH}@{path}")


def test_checkpoint_check_reads_no_tensor_data(atto_state, tmp_path, monkeypatch):
    """Validation must not double the run's cost: no full torch.load / safetensors load_file."""
    import safetensors.torch

    from beyond_inet.models import timm_models

    _checkpoints(tmp_path, atto_state)
    real = torch.load

    def lazy_only(*a, **k):
        assert k.get("mmap") is True, "a checkpoint was read whole to validate it"
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", lazy_only)
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("safetensors read whole"))
    for ext in ("pth", "safetensors"):
        timm_models.check_checkpoint(ARCH, str(tmp_path / f"good.{ext}"))


def test_an_unreachable_hub_is_offline_for_that_run_only(tiny_imagenet, tmp_path, monkeypatch):
    """In one process (a notebook), a run that found the Hub unreachable used to leave HF_HUB_OFFLINE set, and
    huggingface_hub's constant with it, for every later run: weights never downloaded again until a restart."""
    import huggingface_hub.constants

    from beyond_inet.pipeline import RunConfig, run

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(validate, "_resolves", lambda host, timeout: False)
    seen = []
    with validate.hub_offline(["timm:resnet18"]) as offline:
        seen.append((offline, os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE))
    assert seen == [(True, "1", True)]
    assert "HF_HUB_OFFLINE" not in os.environ and huggingface_hub.constants.HF_HUB_OFFLINE is False
    with validate.hub_offline(["packaged:efficientnet_lite0"]) as offline:  # no Hub model: nothing probed
        assert offline is False and "HF_HUB_OFFLINE" not in os.environ

    cfg = RunConfig(models=["timm:resnet18"], analyses=["accuracy"], out=str(tmp_path / "o"),
                    data_root=str(tiny_imagenet), num_workers=0, progress=False, report=False)
    with pytest.raises(UserError, match="could not fetch weights"):  # offline inside the run: fails at once
        run(cfg)
    assert "HF_HUB_OFFLINE" not in os.environ and huggingface_hub.constants.HF_HUB_OFFLINE is False
