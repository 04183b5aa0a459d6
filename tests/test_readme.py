"""The README tells the truth: its option table is the registry's, its flags and commands exist, and its
notebook example runs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from beyond_inet import registry
from beyond_inet.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def between(begin: str, end: str) -> str:
    a = README.index(begin)
    return README[README.index("\n", a) + 1:README.index(end)]


def parser_flags() -> tuple[set[str], set[str]]:
    """(every --flag of the tool and its subcommands, the subcommand names)."""
    p = build_parser()
    flags = {s for a in p._actions for s in a.option_strings}
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    for sp in sub.choices.values():
        flags |= {s for a in sp._actions for s in a.option_strings}
    return flags, set(sub.choices)


def test_options_table_is_generated_from_the_registry():
    table = between("<!-- options:begin", "<!-- options:end -->").strip()
    assert table == registry.markdown_table(), "regenerate it: beyond-inet analyses --markdown"


def test_every_flag_and_command_in_the_readme_exists():
    flags, commands = parser_flags()
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", README))
    assert used, "no flags found: the pattern is broken"
    assert used <= flags, f"README names flags the CLI does not have: {sorted(used - flags)}"
    for cmd in re.findall(r"beyond-inet ([a-z]+)", README):
        assert cmd in commands | {"demo"}, cmd


def test_readme_lists_every_analysis():
    for name in registry.analysis_names():
        assert f" {name}" in README or f"`{name}" in README, name


def test_run_commands_parse():
    """Every `beyond-inet run ...` the README shows (the block's and the paper-scale line's) parses with the real
    parser; the paper-scale one asks for all analyses of the paper's four models on a GPU."""
    text = README.replace("\\\n", " ")  # shell line continuations
    cmds = [c.split("#")[0].strip() for c in re.findall(r"beyond-inet run (--[^`\n]*)", text)]
    assert len(cmds) >= 2, cmds
    parsed = [build_parser().parse_args(["run", *c.split()]) for c in cmds]
    assert all(a.models and a.out for a in parsed)
    paper = [a for a in parsed if a.models == ["vit-sup", "convnext-sup", "vit-clip", "convnext-clip"]]
    assert paper and paper[0].analyses == ["all"] and paper[0].device == "cuda"


SETUP = ("make ", "pip install")  # lines that set up the environment this test already runs in


def code_blocks() -> list[tuple[str, str]]:
    """(language, code) of every ```bash and ```python block, in order."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", README, re.S | re.M)


def test_every_code_block_runs(tmp_path, monkeypatch):
    """The README's blocks, as written and in order, in an empty folder with nothing but the package (its bundled
    data and packaged models): bash through a shell with the package's `beyond-inet` on PATH, python through
    exec. Only environment set-up lines (`make ...`, `pip install ...`) are left out."""
    blocks = code_blocks()
    assert [lang for lang, _ in blocks].count("bash") >= 2 and any(lang == "python" for lang, _ in blocks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BEYOND_INET_DATA", raising=False)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert shutil.which("beyond-inet", path=env["PATH"]), "the package's CLI is not installed next to python"
    scope: dict = {}
    for i, (lang, code) in enumerate(blocks):
        if lang == "bash":
            lines = [ln for ln in code.replace("\\\n", " ").splitlines() if not ln.lstrip().startswith(SETUP)]
            script = "\n".join(lines)
            if not script.strip():
                continue
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"README bash block {i} failed:\n{script}\n{r.stderr[-3000:]}"
        else:
            exec(compile(code, f"README.md block {i}", "exec"), scope)
    # the bash quick start wrote its report; the notebook example's results are what it says
    assert (tmp_path / "runs" / "first" / "report.html").is_file()
    ev = scope["ev"]
    bias = ev.results.query("metric == 'shape_bias' and dataset == 'cue-conflict'")
    assert len(bias) == 1 and 0 < int(bias.n.iloc[0]) <= 48
    assert ev.report is not None and ev.report.is_file()
    assert {"shape-bias", "error-consistency"} <= set(ev.results.analysis), ev.skips.to_string()


def test_no_block_needs_absent_data_or_a_gpu():
    """A fresh machine has no /data, no ../shared and maybe no GPU: no block may name them."""
    for lang, code in code_blocks():
        for needle in ("/data", "../shared", "cuda", "--data-root"):
            assert needle not in code, (needle, code)
