"""No import circle between phoenix_gui's modules.

import-linter's layers contract cannot see a circle inside one layer (backends/launch.py -> nodes.py
-> share.py -> launch.py lived there once). This test reads every module with ast, takes each
`import` and `from ... import` wherever it stands (module level, inside functions, under
TYPE_CHECKING), resolves relative imports, and fails on any strongly connected group of modules,
naming one circle through it.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_files(root: Path, package: str = "phoenix_gui") -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root/package (a package is its __init__)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The phoenix_gui modules `name` imports; `from pkg import sub` counts sub when it is a module."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` names a.b.c; the nearest module that exists is what it means here
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; groups of more than one module (a module never imports itself here)."""
    index, low, on_stack, stack, groups, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]; counter[0] += 1
        stack.append(start); on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]; counter[0] += 1
                    stack.append(child); on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop(); on_stack.discard(member); group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return groups


def _one_circle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    members, start = set(group), group[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    nxt.append(child)
        frontier = nxt
    return group


def circles(root: Path = ROOT) -> list[str]:
    graph = import_graph(root)
    return [" -> ".join(_one_circle(graph, group)) for group in _strongly_connected(graph)]


def test_the_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "phoenix_gui.backends.processes.process" in graph  # the walk found the package
    cli_imports = graph["phoenix_gui.cli"]
    assert any(m.startswith("phoenix_gui.backends") for m in cli_imports), cli_imports


def test_no_import_circle():
    found = circles()
    assert not found, "import circles between phoenix_gui's modules:\n" + "\n".join(found)


def test_a_planted_circle_is_named(tmp_path):
    pkg = tmp_path / "phoenix_gui"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..sub.c import x\n")
    (pkg / "sub" / "c.py").write_text("import phoenix_gui.sub.a\nx = 1\n")
    assert circles(tmp_path) == ["phoenix_gui.sub.a -> phoenix_gui.sub.b -> phoenix_gui.sub.c -> phoenix_gui.sub.a"]
