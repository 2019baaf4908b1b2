"""The package's layers point one way (docs/architecture.md): no import circle, no import from a
lower layer to a higher one, no package-internal import hidden inside a function."""

import ast
import os
from typing import Dict, List, Set, Tuple

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recbole_mm")

# layer of each top-level part of the package, bottom (0) to top
LAYERS = {
    "fileio": 0, "curves": 0, "enum_type": 0, "resources": 0, "checkpoint": 0, "utils": 0, "config": 0,
    "data": 1, "model": 2, "trainer": 3, "runner": 4, "cli": 5, "__main__": 5, "bench": 5,
}
# preprocess/ writes the files data/ reads: it may import data/ formats, fileio and itself only
PREPROCESS_MAY_IMPORT = {"data", "fileio", "preprocess"}


def _modules(package_dir: str = PACKAGE_DIR) -> Dict[str, str]:
    modules = {}
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(package_dir))[:-3].replace(os.sep, ".")
                modules[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return modules


def _imports(modules: Dict[str, str]) -> Tuple[Dict[str, Set[str]], List[Tuple[str, str, int]]]:
    """Package-internal imports per module, and those that sit inside a function."""
    edges, inner = {}, []
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
        tree = ast.parse(open(path, encoding="utf-8").read())

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    if isinstance(child, ast.ImportFrom):
                        base = child.module or ""
                        if child.level:
                            parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                            base = ".".join(parts + ([base] if base else []))
                        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names]
                    else:
                        names = [a.name for a in child.names]
                    for name in names:
                        if name.split(".")[0] != "recbole_mm":
                            continue
                        while name not in modules and "." in name:
                            name = name.rsplit(".", 1)[0]
                        edges.setdefault(module, set()).add(name)
                        if in_function:
                            inner.append((module, name, child.lineno))
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

        visit(tree, False)
    return edges, inner


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circle():
    edges, _ = _imports(_modules())
    assert _circles(edges) == []


def _circles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def connect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in list(edges):
        if module not in index:
            connect(module)
    return circles


def test_imports_point_down_the_layers():
    modules = _modules()
    edges, _ = _imports(modules)
    upward = []
    for module, targets in edges.items():
        source = _part(module)
        for target in targets:
            part = _part(target)
            if source == "preprocess":
                if part not in PREPROCESS_MAY_IMPORT:
                    upward.append(f"{module} -> {target}")
            elif part == "preprocess" or (source in LAYERS and part in LAYERS and LAYERS[part] > LAYERS[source]):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_package_import_inside_a_function():
    _, inner = _imports(_modules())
    assert [f"{m} -> {t} (line {line})" for m, t, line in inner] == []


def test_the_checker_sees_a_planted_violation(tmp_path):
    """The checks above can fail: in a small package laid out like this one, a data module that
    imports the runner inside a function is reported as inner, upward and circular."""
    package = tmp_path / "recbole_mm"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "loader.py").write_text("def f():\n    from recbole_mm.runner import run\n    return run\n")
    (package / "runner.py").write_text("from recbole_mm.data.loader import f\n\ndef run():\n    return f\n")
    edges, inner = _imports(_modules(str(package)))
    assert inner == [("recbole_mm.data.loader", "recbole_mm.runner", 2)]
    assert edges["recbole_mm.data.loader"] == {"recbole_mm.runner"}
    assert edges["recbole_mm.runner"] == {"recbole_mm.data.loader"}
    assert _circles(edges) == [["recbole_mm.data.loader", "recbole_mm.runner"]]
    assert LAYERS[_part("recbole_mm.runner")] > LAYERS[_part("recbole_mm.data.loader")]
