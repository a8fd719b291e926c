"""The package's layout, checked by walking the source with ``ast`` (nothing is imported):

- the import graph between the package's parts (``fastvdm.ops``, ``fastvdm.models``, ..., ``fastvdm.cli``;
  every import counts, also one inside a function) has no cycle: data flows one way (DESIGN.md);
- ``kernels/`` (installed as ``fastvdm.kernels``) are leaves: no import of ``fastvdm`` other than each other;
- the modules' eager (module-level) imports have no cycle either;
- the library holds no argparse: only ``fastvdm.cli`` parses command lines.
"""

from __future__ import annotations

import ast
import os
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_name(path: str) -> str:
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if parts[0] == "kernels":
        parts = ["fastvdm", "kernels"] + parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, str]:
    out = {}
    for base in ("fastvdm", "kernels"):
        for folder, _, files in os.walk(os.path.join(ROOT, base)):
            for f in files:
                if f.endswith(".py"):
                    out[_module_name(os.path.join(folder, f))] = os.path.join(folder, f)
    return out


SOURCES = _sources()


def _imports(module: str, path: str, eager_only: bool = False) -> set[str]:
    """The fastvdm modules ``module`` imports (``from X import name`` counts as X.name when that is a module)."""
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    nodes = tree.body if eager_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in SOURCES else target for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in SOURCES and "." in name:  # fastvdm.ops.reference.X -> the module
                name = name.rsplit(".", 1)[0]
            if name.split(".")[0] == "fastvdm" and name in SOURCES:
                found.add(name)
    return found


# Modules that are one part with another: densify.py is the pipeline's densify (DESIGN.md: "pipeline.py ...
# densify"), kept in its own module; NVSPipeline.densify and densify_scene call each other's side lazily.
SAME_PART = {"fastvdm.densify": "fastvdm.pipeline"}


def _part(module: str) -> str:
    """The part of the package a module belongs to: fastvdm.ops.cpu.attention -> fastvdm.ops."""
    part = ".".join(module.split(".")[:2])
    return SAME_PART.get(part, part)


def _find_cycle(graph: dict[str, set[str]]):
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                cycle = visit(m)
                if cycle:
                    return cycle
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = visit(n)
            if cycle:
                return cycle
    return None


def test_the_walker_sees_the_imports_it_must_judge():
    """The test can fail: the walker finds known arrows (absolute, relative, lazy) and a planted cycle."""
    assert "fastvdm.ops.triton.group_norm" in SOURCES and "fastvdm.kernels.attention" in SOURCES
    assert "fastvdm.kernels.group_norm" in _imports("fastvdm.ops.triton.group_norm",
                                                    SOURCES["fastvdm.ops.triton.group_norm"])
    assert "fastvdm.kernels.flash_attention" in _imports("fastvdm.kernels.attention", SOURCES["fastvdm.kernels.attention"])
    assert "fastvdm.pipeline" in _imports("fastvdm", SOURCES["fastvdm"])  # lazy, inside __getattr__
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_parts_of_the_package_form_no_cycle():
    graph = defaultdict(set)
    for module, path in SOURCES.items():
        for imported in _imports(module, path):
            a, b = _part(module), _part(imported)
            if a != b and b != "fastvdm":  # the root package's __version__ / lazy names are not a part
                graph[a].add(b)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle between parts of fastvdm: " + " -> ".join(cycle)


def test_modules_have_no_eager_import_cycle():
    graph = {m: _imports(m, p, eager_only=True) - {m} for m, p in SOURCES.items()}
    cycle = _find_cycle(graph)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_kernels_are_leaves():
    for module, path in SOURCES.items():
        if module.startswith("fastvdm.kernels"):
            outside = {m for m in _imports(module, path) if not m.startswith("fastvdm.kernels")}
            assert not outside, f"{path} imports {sorted(outside)}: kernels/ must not import fastvdm"


def test_only_the_cli_parses_command_lines():
    for module, path in SOURCES.items():
        if module.startswith("fastvdm.cli"):
            continue
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert "argparse" not in names, f"{path} imports argparse: commands belong in fastvdm/cli/"
