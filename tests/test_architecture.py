"""Import contract: the domain stays Qt-free; data flows hardware + model -> planner -> backends."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "phoenix_gui"
QT = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6")
# what each layer may import from the package (besides itself and the small shared modules)
ALLOWED = {
    "model": set(),
    "hardware": set(),
    "planner": {"model", "hardware"},
    "backends": {"model", "hardware", "planner"},
    "monitor": {"model", "hardware", "planner", "backends"},
}
SHARED = {"resources", "tomlcompat", "__init__"}


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg_parts[: len(pkg_parts) - node.level + 1])
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module or ""


def test_nothing_outside_ui_imports_qt():
    bad = []
    for f in PKG.rglob("*.py"):
        if "ui" in f.relative_to(PKG).parts:
            continue
        for name in _imports(f):
            if name.split(".")[0] in QT:
                bad.append(f"{f.relative_to(PKG)} imports {name}")
    assert not bad, bad


def test_layers_import_only_downstream():
    bad = []
    for layer, allowed in ALLOWED.items():
        for f in (PKG / layer).rglob("*.py") if (PKG / layer).exists() else []:
            for name in _imports(f):
                parts = name.split(".")
                if parts[0] != "phoenix_gui" or len(parts) < 2:
                    continue
                target = parts[1]
                if target not in allowed | {layer} | SHARED:
                    bad.append(f"{f.relative_to(PKG)} imports {name}")
    assert not bad, bad
