"""The README tells the truth: its option table is the registry's, its flags and commands exist, and its
notebook example runs."""
from __future__ import annotations

import re
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


def test_quick_start_flags_are_run_flags():
    """The quick-start `beyond-inet run ...` command parses with the real parser."""
    block = README[README.index("## The real thing"):README.index("`--analyses` takes any of")]
    cmd = re.search(r"beyond-inet run (.*?)(?:\n\S|\n\n|#)", block.replace("\\\n", " "), re.S).group(1)
    args = build_parser().parse_args(["run", *cmd.split()])
    assert args.models and args.analyses == ["all"] and args.out and args.device == "cuda"


def test_notebook_example_runs(tmp_path, monkeypatch):
    """The README's API example, verbatim, in an empty folder: it needs nothing but the package (bundled data)."""
    code = between("<!-- api-example:begin", "<!-- api-example:end -->")
    code = code.split("```python\n", 1)[1].rsplit("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BEYOND_INET_DATA", raising=False)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    ev = scope["ev"]
    bias = ev.results.query("metric == 'shape_bias' and dataset == 'cue-conflict'")
    assert len(bias) == 1 and 0 < int(bias.n.iloc[0]) <= 48
    assert ev.report is not None and ev.report.is_file()
    assert {"shape-bias", "error-consistency"} <= set(ev.results.analysis), ev.skips.to_string()
