"""The model-name index: the same names as the live libraries, and the commands it serves import no torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from beyond_inet import model_names


def _fresh(code: str) -> None:
    """Run `code` in a fresh interpreter: other tests register stand-in models and aliases in this process
    (tests/tiny_zoo.py), and the index must equal the libraries as a user's process sees them."""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]


def test_shipped_index_holds_the_package_own_names():
    _fresh("""
import json
from beyond_inet import model_names
from beyond_inet.models import _BUILDERS, ALIASES
from beyond_inet.models.packaged import PACKAGED
shipped = model_names.ModelNames.from_json(json.loads(model_names.SHIPPED.read_text()))
assert shipped.aliases == dict(ALIASES)
assert list(shipped.aliases) == list(ALIASES)  # also the order `beyond-inet models` lists them in
assert shipped.packaged == {n: v[2] for n, v in PACKAGED.items()}
assert set(model_names.PREFIXES) == set(_BUILDERS)
""")


def test_index_equals_the_installed_libraries():
    """Whatever the installed timm / open_clip, names() answers with their lists (shipped or rebuilt)."""
    _fresh("""
from beyond_inet import model_names
idx = model_names.names()
live = model_names.build_live(idx.aliases, idx.packaged)
assert (idx.timm_version, idx.open_clip_version) == (live.timm_version, live.open_clip_version)
assert idx.timm_archs == live.timm_archs
assert idx.timm_pretrained == live.timm_pretrained
assert idx.open_clip_archs == live.open_clip_archs, sorted(idx.open_clip_archs ^ live.open_clip_archs)
assert idx.open_clip_pretrained == live.open_clip_pretrained
""")


def test_other_versions_rebuild_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BEYOND_INET_CACHE", str(tmp_path))
    real = model_names.installed_version
    monkeypatch.setattr(model_names, "installed_version", lambda d: "0.0.0-other" if d == "timm" else real(d))
    calls = []
    orig = model_names.build_live
    monkeypatch.setattr(model_names, "build_live", lambda *a: calls.append(1) or orig(*a))
    model_names.names.cache_clear()
    try:
        first = model_names.names()
        model_names.names.cache_clear()
        second = model_names.names()
    finally:
        model_names.names.cache_clear()
    assert calls == [1]  # the second call read the cache
    assert first.timm_version == second.timm_version == "0.0.0-other"
    assert second.timm_archs == first.timm_archs and len(first.timm_archs) > 100
    assert list(tmp_path.glob("model-names-timm0.0.0-other-*.json"))


LIGHT_COMMANDS = [
    ["--help"], ["models"], ["models", "--search", "vit"], ["analyses"], ["datasets"],
    ["run", "--limt", "5"], ["run", "--models", "nosuch", "--out", "x"],
    ["run", "--models", "timm:resnt50", "--out", "x"], ["run", "--models", "open_clip:ViT-B-16@laion2b", "--out", "x"],
    ["run", "--models", "packaged:efficientnet_lite0", "--limit", "0", "--out", "x"],
    ["run", "--models", "vit-sup", "--analyses", "calibraton", "--out", "x"],
    ["run", "--models", "vit-sup", "--option", "probe=nope", "--out", "x"],
    ["run", "--models", "packaged:efficientnet_lite0", "--data-root", ".", "--out", "x"],  # no dataset there
]


@pytest.mark.parametrize("argv", LIGHT_COMMANDS, ids=" ".join)
def test_help_listings_and_argument_errors_import_no_torch(argv, tmp_path):
    code = ("import sys\nfrom beyond_inet.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
            "heavy = [m for m in ('torch', 'timm', 'open_clip', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy, 'RC', rc, file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "HEAVY [] " in p.stderr, p.stderr[-2000:]
    if argv[0] == "run":
        assert "RC 2" in p.stderr and "Traceback" not in p.stderr
        assert not (tmp_path / "x").exists()


def test_unknown_flag_gets_the_subcommand_usage_and_a_suggestion(capsys):
    from beyond_inet.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--limt", "5"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "usage: beyond-inet run" in err
    assert "unrecognized argument --limt; did you mean --limit?" in err
    assert "required" not in err  # the typo is named first, not the missing --models/--out
    with pytest.raises(SystemExit):
        main(["demo", "--bootstap", "3"])
    assert "did you mean --bootstrap?" in capsys.readouterr().err


def test_prefixes_and_values_that_look_like_flags_still_parse():
    from beyond_inet.cli import build_parser, check_flags

    parser = build_parser()
    check_flags(parser, ["run", "--lim", "5", "--models", "vit-sup", "--out", "o"])  # argparse abbreviation
    check_flags(parser, ["run", "--models", "vit-sup", "--out", "o", "--", "--whatever"])
    check_flags(parser, ["run", "--limit=5", "--models", "vit-sup", "--out", "o"])


def test_names_registered_at_run_time_are_accepted(tmp_path):
    """A timm model registered by the user's code, or an open_clip config added at run time, exists only in
    that process: the index answers for the rest, the imported library for these."""
    _fresh("""
import open_clip, timm
from timm.models import register_model
from beyond_inet import validate
from beyond_inet.errors import UserError

@register_model
def my_own_resnet_zz(pretrained=False, **kw):
    return timm.create_model("resnet18", pretrained=False, **kw)

cfg = dict(open_clip.get_model_config("ViT-B-16"))
open_clip.factory._MODEL_CONFIGS["my-own-clip-zz"] = cfg
validate.check_model_spec("timm:my_own_resnet_zz@random")
validate.check_model_spec("open_clip:my-own-clip-zz@random")
try:
    validate.check_model_spec("timm:my_own_resnet_zzz@random")
except UserError:
    pass
else:
    raise SystemExit("an unknown name passed")
""")
