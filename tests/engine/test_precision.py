"""Numerics follow the paper by default: fp32 on every device; bf16 autocast only when asked for, and its
outputs stored under other keys. No GPU here: the CUDA side is checked through `numerics_of`, the function
that picks the store keys' numerics from the device name, with the run config a GPU run would have."""
from __future__ import annotations

import pytest

from beyond_inet import api
from beyond_inet.cli import _evaluate, build_parser
from beyond_inet.engine.executors import ExecConfig
from beyond_inet.engine.plan import numerics_of, store_key
from beyond_inet.engine.runner import RunConfig

KEY = dict(weights_id="w", preprocessing="p", view="standard", dataset="d", fingerprint="f", limit=None, info={})


def cli_config(tmp_path, monkeypatch, *extra: str) -> RunConfig:
    """The RunConfig the CLI would run (the run itself replaced by capturing it)."""
    args = build_parser().parse_args(["run", "--models", "packaged:efficientnet_lite0", "--out", str(tmp_path),
                                      "--device", "cpu", *extra])
    got = {}
    monkeypatch.setattr(api, "evaluate", lambda *a, **kw: got.setdefault("cfg", api.run_config(*a, **kw)))
    _evaluate(args, args.models, args.analyses)
    return got["cfg"]


def test_defaults_are_fp32(tmp_path, monkeypatch):
    assert RunConfig(models=["m"], analyses=["accuracy"], out="o").precision == "fp32"
    assert not RunConfig(models=["m"], analyses=["accuracy"], out="o").amp
    assert not ExecConfig("s", None, None).amp
    cfg = cli_config(tmp_path, monkeypatch)
    assert (cfg.precision, cfg.amp) == ("fp32", False)
    # A GPU run with the default config computes fp32 and keeps today's fp32 keys.
    assert numerics_of("cuda", cfg.amp, False) == "fp32"


def test_bf16_is_opt_in_and_stored_apart(tmp_path, monkeypatch):
    cfg = cli_config(tmp_path, monkeypatch, "--precision", "bf16")
    assert (cfg.precision, cfg.amp) == ("bf16", True)
    assert numerics_of("cuda", cfg.amp, False) == "bf16"
    assert store_key(**KEY, numerics=numerics_of("cuda", cfg.amp, False)) != store_key(**KEY)
    # On a CPU autocast never runs: the outputs are fp32 and share the fp32 keys.
    assert numerics_of("cpu", cfg.amp, False) == "fp32"


def test_no_amp_is_a_silent_fp32_alias(tmp_path, monkeypatch, capsys):
    assert cli_config(tmp_path, monkeypatch, "--no-amp").precision == "fp32"
    assert cli_config(tmp_path, monkeypatch, "--no-amp", "--precision", "bf16").precision == "fp32"
    assert capsys.readouterr().err == ""
    # The Python API: fp32 by default; its old `amp` keyword still works (True: bf16).
    assert api.run_config("timm:resnet18@random", device="cpu").precision == "fp32"
    assert api.run_config("timm:resnet18@random", device="cpu", amp=True).precision == "bf16"
    assert api.run_config("timm:resnet18@random", device="cpu", precision="bf16").precision == "bf16"


def test_fp32_keys_unchanged():
    """Cached CPU outputs stay valid: the fp32 key has no numerics field (value computed before this change)."""
    assert store_key(**KEY) == store_key(**KEY, numerics="fp32")
    from beyond_inet import ENGINE_VERSION
    from beyond_inet.engine.store import STORE_FORMAT, make_key

    assert store_key(**KEY) == make_key({"weights": "w", "pre": "p", "view": "standard", "dataset": "d",
                                         "samples": "f", "limit": None, "logit_scale": None, "engine": ENGINE_VERSION,
                                         "store_format": STORE_FORMAT})


def test_unknown_precision_is_a_user_error(tmp_path):
    from beyond_inet.engine.runner import run
    from beyond_inet.errors import UserError

    with pytest.raises(UserError, match="precision"):
        run(RunConfig(models=["packaged:efficientnet_lite0"], analyses=["accuracy"], out=str(tmp_path),
                      precision="fp16"))
