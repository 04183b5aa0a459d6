"""The analysis registry: every option an analysis reads is declared once, typed, with the analysis' own default."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from beyond_inet import registry
from beyond_inet.registry import Option, OptionError

SRC = Path(__file__).resolve().parents[1] / "src" / "beyond_inet"
SCANNED = [*sorted((SRC / "analyses").glob("*.py")), *sorted((SRC / "engine").glob("*.py"))]
PIPELINE_KEYS = {"device"}  # set by the pipeline from --device, not an --option


def option_reads(path: Path) -> dict[str, ast.expr | None]:
    """{key: fallback expression or None} for every `*.options.get(k, d)`, `*.options[k]` and
    `*.option_list(k, d)` in a source file."""
    found: dict[str, ast.expr | None] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            f = node.func
            holder = f.value.attr if isinstance(f.value, ast.Attribute) else getattr(f.value, "id", None)
            is_get = f.attr == "get" and holder == "options"
            if is_get or f.attr == "option_list":
                found.setdefault(node.args[0].value, node.args[1] if len(node.args) > 1 else None)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "options" and isinstance(node.slice, ast.Constant):
            found.setdefault(node.slice.value, None)
    return found


def all_reads() -> dict[str, tuple[Path, ast.expr | None]]:
    out = {}
    for p in SCANNED:
        for k, d in option_reads(p).items():
            out.setdefault(k, (p, d))
    return out


def test_every_option_read_by_an_analysis_is_declared():
    declared = set(registry.all_options())
    read = set(all_reads()) - PIPELINE_KEYS
    assert read, "the scan found no option reads: the scanner is broken"
    assert read <= declared, f"read but not declared in registry.py: {sorted(read - declared)}"
    assert declared <= read, f"declared but never read: {sorted(declared - read)}"


def test_declared_defaults_are_the_analysis_fallbacks():
    """An analysis run without the option behaves as the declared default says."""
    for key, (path, expr) in all_reads().items():
        if key in PIPELINE_KEYS:
            continue
        opt = registry.all_options()[key][1]
        if expr is None:  # read as ctx.options[key] / .get(key): absent is None ("auto"), or false for a flag
            assert opt.default is (False if opt.kind == "bool" else None), key
            continue
        if isinstance(expr, ast.Name):  # a module constant
            mod = importlib.import_module(f"beyond_inet.{path.parent.name}.{path.stem}")
            fallback = getattr(mod, expr.id)
        else:
            fallback = ast.literal_eval(expr)
        assert opt.default is not None and opt.parse(fallback) == opt.parse(opt.default), key


def test_every_registered_analysis_is_declared_and_linked():
    from beyond_inet.analyses import ANALYSES, load_builtin

    load_builtin()
    declared = set(registry.ANALYSES)
    for name, cls in ANALYSES.items():
        assert cls.info is registry.ANALYSES[name]
        assert cls.info.options or cls.info.datasets, f"{name} has only the bare automatic entry; declare it"
    assert set(ANALYSES) <= declared


def test_requested_datasets_are_among_the_declared_ones(shared_data):
    from beyond_inet.analyses import Context, get_analysis, load_builtin
    from beyond_inet.data import catalog

    load_builtin()  # alone (not after a test that loaded them) the analyses were not registered: 'accuracy' unknown
    for name, info in registry.ANALYSES.items():
        ctx = Context(data_root=str(shared_data), available=lambda n: True, parts=lambda n: catalog.parts(n, shared_data))
        heads = {r.dataset.split("/")[0] for r in get_analysis(name).requests(ctx)}
        assert heads <= set(info.datasets), (name, heads - set(info.datasets))
        assert set(info.datasets) <= set(catalog.ENTRIES), name


def test_report_sections_and_demo_come_from_the_registry():
    from beyond_inet.demo import demo_config
    from beyond_inet.report import html

    assert [s[0] for s in html.SECTIONS] == registry.analysis_names()
    assert html.FIGURE_SECTIONS == {n for n, i in registry.ANALYSES.items() if i.figures}
    assert demo_config(None)[1] == registry.analysis_names()


def test_declared_figures_are_the_reports_figures():
    from beyond_inet.report import figures

    declared = {f for i in registry.ANALYSES.values() for f in i.figures}
    # Templated names (one figure per dataset or model pair) are written under their prefix.
    assert {f for f in declared if "<" not in f} == set(figures.OWN_FIGURES)
    assert {f.split("<")[0] for f in declared if "<" in f} == {"reliability-", "cka-"}


@pytest.mark.parametrize("opt,value,want", [
    (Option("b", "bool", False, ""), "1", True),
    (Option("b", "bool", False, ""), "No", False),
    (Option("i", "list[int]", (1,), "", minimum=0), "0, 5,30", [0, 5, 30]),
    (Option("f", "list[float]", (1.0,), ""), [1, "1.25"], [1.0, 1.25]),
    (Option("f", "float", 0.2, "", minimum=0, maximum=1, exclusive=True), "0.5", 0.5),
    (Option("c", "choice", "a", "", choices=("a", "b")), "b", "b"),
    (Option("d", "list[dataset]", ("x",), ""), "imagenet-val,imagenet-r", ["imagenet-val", "imagenet-r"]),
])
def test_option_parsing(opt, value, want):
    assert opt.parse(value) == want


@pytest.mark.parametrize("opt,value,needle", [
    (Option("b", "bool", False, ""), "2", "expected true/false"),
    (Option("i", "list[int]", (1,), "", minimum=0), "3,-1", "out of range"),
    (Option("i", "int", 1, ""), True, "expected a number"),
    (Option("f", "float", 0.2, "", minimum=0, maximum=1, exclusive=True), "1", "out of range"),
    (Option("f", "float", 0.2, "", minimum=0, maximum=1, exclusive=True), "0", "out of range"),
    (Option("f", "float", 0.2, ""), "nan", "expected a finite number"),
    (Option("f", "list[float]", (1.0,), ""), "1,inf", "expected a finite number"),
    (Option("c", "choice", "a", "", choices=("alpha", "beta")), "alpah", "did you mean 'alpha'?"),
    (Option("d", "list[dataset]", ("x",), ""), ",", "at least one value"),
])
def test_option_rejects(opt, value, needle):
    with pytest.raises(OptionError, match=needle):
        opt.parse(value)


def test_option_keys_are_unique_and_distinct_from_run_keywords():
    from beyond_inet.api import RUN_KEYWORDS

    keys = registry.all_options()  # raises on a key declared twice
    assert not set(keys) & set(RUN_KEYWORDS)


def test_resolve_analyses_expands_all_and_suggests():
    assert registry.resolve_analyses(["all"]) == registry.analysis_names()
    assert registry.resolve_analyses(["shape-bias", "accuracy", "shape-bias"]) == ["shape-bias", "accuracy"]
    with pytest.raises(OptionError, match="did you mean 'shape-bias'"):
        registry.resolve_analyses(["shape_bias"])


def test_auto_means_the_default_for_every_option_shown_as_auto():
    """The README and `beyond-inet analyses` show these defaults as "auto": typing it must mean the default,
    not a folder or dataset literally named "auto" (it made mvh_raw_data=auto silently find no human data)."""
    auto = [o for _, o in registry.all_options().values() if o.default_label() == "auto"]
    assert auto, "no option shows an auto default"
    for o in auto:
        assert o.parse("auto") is None and o.parse("AUTO") is None, o.key
        assert registry.typed_options({o.key: "auto"})[o.key] is None
