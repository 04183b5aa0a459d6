"""The package's import graph points down: models -> data -> engine -> analyses -> report -> pipeline.

Every ``import`` / ``from ... import`` of a beyond_inet module counts, also those inside functions (a
lazy import is still a dependency). ``contracts``, ``errors`` and ``cores`` are leaves any layer may use.
"""
from __future__ import annotations

import ast
from pathlib import Path

import beyond_inet

PKG = Path(beyond_inet.__file__).parent
# Lower rank = lower layer; a module may import only modules of its own or a lower rank.
RANK = {"contracts": 0, "errors": 0, "registry": 0, "model_names": 0, "cores": 0, "lean_imports": 0, "__init__": 0,
        "models": 1, "data": 2, "references": 2,
        "engine": 3, "analyses": 4, "report": 5, "pipeline": 6, "validate": 6, "demo": 6, "api": 7, "cli": 7,
        "__main__": 8}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, mod: str, modules: set[str] | None = None) -> set[str]:
    """beyond_inet modules `path` imports; ``from pkg import sub`` counts as pkg.sub when that is a module."""
    out = set()
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("beyond_inet")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("beyond_inet"):
                for a in node.names:
                    sub = f"{name}.{a.name}"
                    out.add(sub if modules is not None and sub in modules else name)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    g = {}
    for mod, path in files.items():
        g[mod] = {m for m in imports_of(path, mod, set(files)) if m in files and m != mod}
    return g


def test_layers_point_down():
    bad = []
    for mod, deps in graph().items():
        if mod == "beyond_inet":  # the package root is a lazy facade (``beyond_inet.evaluate`` -> api)
            continue
        for d in deps:
            if d == "beyond_inet" or layer(d) == layer(mod):
                continue
            if RANK[layer(d)] > RANK[layer(mod)]:
                bad.append(f"{mod} -> {d}")
    assert not bad, "imports pointing up:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if d == "beyond_inet" or g.get(d) is None:
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_graph_checker_sees_lazy_upward_imports(tmp_path):
    """The checker itself catches an upward import hidden inside a function."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from beyond_inet.analyses import base\n")
    assert "beyond_inet.analyses" in imports_of(f, "beyond_inet.engine.x")
