"""The package's layering, read from the source with ``ast`` (nothing is imported).

- the core (everything outside ``hybriddsl.cli``) never imports the CLI;
- layers, kernels and specs never import the compiler (passes, lower, the registry's table, the API); they may
  import the registry's types (``hybriddsl.layer_spec``);
- no import cycle, counting imports inside functions too (a lazy import hides a cycle, it does not remove it).
  The one exception: Jupyter calls ``_repr_svg_``/``_repr_pretty_`` on the object itself, so the data types
  (Graph, HybridModel) reach up to the display layer from inside those methods.

Known exceptions are listed below by name, each with its reason; a test also fails when one of them is gone, so
the list cannot outlive the code it excuses.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PKG = Path(__file__).resolve().parents[1] / "hybriddsl"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


class _Imports(ast.NodeVisitor):
    """(target module, line, in a _repr_ method) for every import of a hybriddsl module in one file."""

    def __init__(self, name: str, is_package: bool):
        self.name, self.is_package = name, is_package
        self.found: list[tuple[str, int, bool]] = []
        self.display = 0

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        hook = node.name.startswith("_repr_")
        self.display += hook
        self.generic_visit(node)
        self.display -= hook

    def _add(self, target: str, line: int) -> None:
        # `from pkg import sub` imports the module pkg.sub; `from pkg import name` imports pkg
        if target in MODULES and target != self.name:
            self.found.append((target, line, self.display > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._add(a.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            pkg = self.name.split(".")
            if not self.is_package:
                pkg = pkg[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        for a in node.names:
            sub = f"{base}.{a.name}"
            self._add(sub if sub in MODULES else base, node.lineno)


def _imports() -> dict[str, list[tuple[str, int, bool]]]:
    out = {}
    for name, path in MODULES.items():
        v = _Imports(name, path.name == "__init__.py")
        v.visit(ast.parse(path.read_text(), str(path)))
        out[name] = v.found
    return out


IMPORTS = _imports()


def _inside(mod: str, *pkgs: str) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in pkgs)


def test_the_scan_sees_known_imports():  # the checks below are only as good as this scan
    targets = lambda m: {t for t, _, _ in IMPORTS[m]}  # noqa: E731
    assert "hybriddsl.ir" in targets("hybriddsl.passes.count")
    assert "hybriddsl.specs.mamba" in targets("hybriddsl.layers.mamba")  # `from hybriddsl.specs.mamba import SPEC`
    assert "hybriddsl.layer_spec" in targets("hybriddsl.specs.mamba")  # `from hybriddsl.layer_spec import ...`
    assert "hybriddsl.specs" in targets("hybriddsl.registry")  # a lazy import, inside a function
    assert any(d for _, _, d in IMPORTS["hybriddsl.ir"])  # ir's _repr_svg_ reaches the notebook module


# `python -m hybriddsl` is the CLI's entry point, not part of the core.
CLI_ENTRY = {"hybriddsl.__main__"}


def test_the_core_never_imports_the_cli():
    bad = [
        f"{m} imports {t} (line {ln})"
        for m, found in IMPORTS.items()
        if not _inside(m, "hybriddsl.cli") and m not in CLI_ENTRY
        for t, ln, _ in found
        if _inside(t, "hybriddsl.cli")
    ]
    assert not bad, "\n".join(bad)


COMPILER = ("hybriddsl.passes", "hybriddsl.lower", "hybriddsl.registry", "hybriddsl.api", "hybriddsl.codegen")

# KNOWN EXCEPTIONS: none left. (Issue 13 removed the last ones: the parallel kind gets its branches as modules built
# by registry.build and count adds their FLOPs, so neither layers.parallel nor specs.parallel reaches the compiler;
# the spec modules import only the types in layer_spec, so registry -> specs is no longer half of a cycle.)
# An exception added here must name its reason; test_known_exceptions_still_exist drops it once it is gone.
KNOWN_COMPILER_IMPORTS: set[tuple[str, str]] = set()
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


def test_layers_kernels_and_specs_never_import_the_compiler():
    bad = [
        f"{m} imports {t} (line {ln})"
        for m, found in IMPORTS.items()
        if _inside(m, "hybriddsl.layers", "hybriddsl.kernels", "hybriddsl.specs")
        for t, ln, _ in found
        if _inside(t, *COMPILER) and (m, t) not in KNOWN_COMPILER_IMPORTS
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    g = nx.DiGraph()
    g.add_nodes_from(MODULES)
    for m, found in IMPORTS.items():
        g.add_edges_from((m, t) for t, _, display in found if not display and (m, t) not in KNOWN_CYCLE_EDGES)
    cycles = sorted((" -> ".join([*c, c[0]]) for c in nx.simple_cycles(g)), key=len)
    assert not cycles, f"{len(cycles)} import cycles, e.g.\n" + "\n".join(cycles[:10])


def test_known_exceptions_still_exist():  # a fixed exception must leave the lists above
    edges = {(m, t) for m, found in IMPORTS.items() for t, _, _ in found}
    stale = (KNOWN_COMPILER_IMPORTS | KNOWN_CYCLE_EDGES | {(m, "hybriddsl.cli") for m in CLI_ENTRY}) - edges
    assert not stale, f"no longer imported, remove from the known exceptions: {sorted(stale)}"


def test_the_former_exceptions_are_gone():
    """Issue 13: parallel built its branches through lower and costed them through count; the specs registered
    themselves with the registry that imports them."""
    targets = lambda m: {t for t, _, _ in IMPORTS[m]}  # noqa: E731
    assert not targets("hybriddsl.layers.parallel") & {"hybriddsl.lower", "hybriddsl.registry"}
    assert not any(_inside(t, "hybriddsl.passes") for t in targets("hybriddsl.specs.parallel"))
    specs = [m for m in MODULES if _inside(m, "hybriddsl.specs")]
    assert len(specs) > 10 and not [m for m in specs if "hybriddsl.registry" in targets(m)]


def test_a_spec_importing_the_registry_breaks_the_rules(monkeypatch):
    v = _Imports("hybriddsl.specs.ffn", False)
    v.visit(ast.parse("from hybriddsl.registry import register\n"))
    monkeypatch.setitem(IMPORTS, "hybriddsl.specs.ffn", IMPORTS["hybriddsl.specs.ffn"] + v.found)
    with pytest.raises(AssertionError):
        test_layers_kernels_and_specs_never_import_the_compiler()
    with pytest.raises(AssertionError):  # registry -> specs -> specs.ffn -> registry
        test_no_import_cycles()


@pytest.mark.parametrize(
    "src, rule",
    [
        ("from hybriddsl.cli.compile import table\n", test_the_core_never_imports_the_cli),
        (
            "def f():\n    from hybriddsl.passes.count import layer_cost\n",
            test_layers_kernels_and_specs_never_import_the_compiler,
        ),
        ("def f():\n    from hybriddsl import api\n", test_no_import_cycles),
    ],
)
def test_each_rule_can_fail(src, rule, monkeypatch):
    """A planted import in a layer module (which api imports through the registry) breaks each rule."""
    v = _Imports("hybriddsl.layers.ffn", False)
    v.visit(ast.parse(src))
    monkeypatch.setitem(IMPORTS, "hybriddsl.layers.ffn", IMPORTS["hybriddsl.layers.ffn"] + v.found)
    with pytest.raises(AssertionError):
        rule()
