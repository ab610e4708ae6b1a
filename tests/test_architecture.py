"""The layering contracts of pyproject.toml ([tool.importlinter]), checked by import-linter.

Qt only under phoenix_gui.ui; imports go downward only: ui/cli > monitor > backends > planner >
model | hardware > config | resources | tomlcompat. import-linter follows every import,
including `from .. import ui`, imports inside functions and indirect chains.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phoenix_gui.tomlcompat import tomllib

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "phoenix_gui"
LINT = Path(sys.executable).with_name("lint-imports" + (".exe" if os.name == "nt" else ""))


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    assert LINT.exists(), f"{LINT} is missing: install the test extra (pip install -e '.[test]')"
    # the checkout under test first on the path, whatever is installed; no cache files left behind
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _contracts() -> list[dict]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def _top_level_modules() -> set[str]:
    return {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}


def test_import_contracts_hold():
    r = _lint(ROOT)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f"Contracts: {len(_contracts())} kept, 0 broken" in out, out


def test_contracts_cover_every_module():
    # a new top-level module must be placed in the layers and, outside ui/cli, in the Qt ban
    qt_free = {m.split(".")[1] for m in _contracts()[0]["source_modules"]}
    assert qt_free == _top_level_modules() - {"ui", "cli", "__main__"}
    layered = {m.strip().split(".")[1] for c in _contracts() if c["type"] == "layers" and not c.get("containers")
               for layer in c["layers"] for m in layer.replace(":", "|").split("|")}
    assert layered == _top_level_modules() - {"__main__"}


def test_backends_contract_covers_every_backends_module():
    # a layers contract constrains only the modules it names: a new backends module must be placed
    inside = next(c for c in _contracts() if c.get("containers") == ["phoenix_gui.backends"])
    named = {m.strip().strip("()") for layer in inside["layers"] for m in layer.replace(":", "|").split("|")}
    backends = PKG / "backends"
    present = {p.stem for p in backends.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in backends.iterdir() if (p / "__init__.py").exists()}
    assert present <= named, sorted(present - named)


def _copy_package(dst: Path) -> Path:
    shutil.copytree(ROOT / "phoenix_gui", dst / "phoenix_gui",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst / "phoenix_gui"


@pytest.mark.parametrize("where, code, broken", [
    ("planner/_bad.py", "from .. import ui\n", "Layers"),  # the form the old AST test missed
    ("planner/_bad.py", "def f():\n    from ..cli import main\n", "Layers"),
    ("backends/_bad.py", "import pyqtgraph\n", "Qt only in phoenix_gui.ui"),
    ("planner/_bad.py", "from ..ui import membar\n", "Qt only in phoenix_gui.ui"),  # indirect Qt
    ("model/_bad.py", "from ..hardware import rig\n", "Layers"),  # siblings stay independent
    ("resources.py", "from .planner import plan\n", "Layers"),  # shared modules stay at the bottom
    ("storage.py", "from . import config\n", "Layers"),  # storage knows no file's meaning (settings use it)
    ("engines/_bad.py", "from ..backends import launch\n", "Engines import nothing above them"),
    ("engines/koboldcpp/_bad.py", "from ..llama_server import profile\n", "Engine packages are independent"),
    ("engines/rpc_server/_bad.py", "from ..llama_server import server\n", "Engine packages are independent"),
    ("engines/llama_server/_bad.py", "def f():\n    from ..rpc_server import ENGINE\n", "Engine packages are independent"),
    ("engines/base.py", "def f():\n    from ..backends.processes import process\n", "Engines import nothing above them"),
    ("engines/rpc_server/_bad.py", "from ...planner import plan\n", "Engines import nothing above them"),
    ("engines/koboldcpp/_bad.py", "from ...session import WizardState\n", "Engines import nothing above them"),
    ("session/_bad.py", "def f():\n    from ..cli import main\n", "The session imports no ui, cli or Qt"),
    ("session/_bad.py", "import shiboken6\n", "The session imports no ui, cli or Qt"),
    ("monitor/_bad.py", "from ..session import WizardState\n", "Layers"),  # the session sits above the monitor
    ("backends/processes/_bad.py", "from .. import rpcwire\n", "Backends inside"),  # processes: no other backends
    ("backends/share.py", "from .lifecycle import LaunchMachine\n", "Backends inside"),  # engine side: no lifecycle/tune
])
def test_contracts_catch_a_wrong_import(tmp_path, where, code, broken):
    pkg = _copy_package(tmp_path)
    target = pkg / where
    target.write_text((target.read_text() if target.exists() else "") + code)
    r = _lint(tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "BROKEN" in out and broken in out.split("Broken contracts")[-1], out
