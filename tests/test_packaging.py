"""Packaging: the desktop-plugin check (real Qt linker errors, a real Xvfb where there is one), the
PEP 440 -> Windows file version mapping shared by the PyInstaller spec and the NSIS script, and
the data folder inside the package."""

import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phoenix_gui import cli
from phoenix_gui.resources import resource
from phoenix_gui.ui import desktop_check as dc

ROOT = Path(__file__).resolve().parents[1]

# What PySide6 6.11's probe printed on Debian 12 without libxcb-icccm4/libxcb-keysyms1 (QT_DEBUG_PLUGINS=1),
# the misleading xcb-cursor0 line included.
REAL_LOG = """\
qt.core.plugin.factoryloader: checking directory path "/home/u/.venv/lib/python3.11/site-packages/PySide6/Qt/plugins/platforms" ...
qt.core.library: "/home/u/my venv/PySide6/Qt/plugins/platforms/libqxcb.so" cannot load: Cannot load library /home/u/my venv/PySide6/Qt/plugins/platforms/libqxcb.so: libxcb-icccm.so.4: cannot open shared object file: No such file or directory
qt.core.plugin.loader: QLibraryPrivate::loadPlugin failed on "/home/u/my venv/PySide6/Qt/plugins/platforms/libqxcb.so" : "Cannot load library /home/u/my venv/PySide6/Qt/plugins/platforms/libqxcb.so: libxcb-icccm.so.4: cannot open shared object file: No such file or directory"
qt.qpa.plugin: From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load the Qt xcb platform plugin.
qt.qpa.plugin: Could not load the Qt platform plugin "xcb" in "" even though it was found.
This application failed to start because no Qt platform plugin could be initialized. Reinstalling the application may fix this problem.
"""

LDD_OUT = """\
\tlinux-vdso.so.1 (0x00007ffd6c5f2000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibQt6XcbQpa.so.6 => /v/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f0d0c800000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
"""


def test_missing_libraries_read_from_the_linker_errors():
    assert dc.missing_libraries(REAL_LOG) == ["libxcb-icccm.so.4"]
    assert dc.missing_libraries(LDD_OUT) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    assert dc.missing_libraries("qt.qpa.xcb: could not connect to display :9") == []


def test_the_plugin_path_with_spaces_is_found_for_ldd():
    assert set(dc._PLUGIN.findall(REAL_LOG)) == {"/home/u/my venv/PySide6/Qt/plugins/platforms/libqxcb.so"}


def test_hint_names_the_debian_and_fedora_packages():
    s = dc.install_hint(["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in s
    assert "sudo dnf install xcb-util-wm xcb-util-keysyms" in s
    assert "xcb-cursor" not in s and s.count(".") >= 1 and "\n" not in s


def test_unknown_libraries_get_the_soname_rule_and_a_dnf_provides():
    deb, rpm = dc._packages(["libfoo.so.3", "libbar2.1.so.0", "libxcb-shape.so.0", "libxcb-randr.so.0"])
    assert deb == ["libfoo3", "libbar2.1-0", "libxcb-shape0", "libxcb-randr0"]
    assert rpm == ["'libfoo.so.3()(64bit)'", "'libbar2.1.so.0()(64bit)'", "libxcb"]  # one Fedora package, once


def test_explain_without_missing_libraries_gives_qts_reason_not_the_xcb_cursor_line():
    log = ("qt.qpa.xcb: could not connect to display :9\n"
           "qt.qpa.plugin: From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load the Qt xcb platform plugin.\n"
           "qt.qpa.plugin: Could not load the Qt platform plugin \"xcb\" in \"\" even though it was found.\n")
    s = dc.explain(log)
    assert s.startswith("The desktop window cannot open (could not connect to display :9)")
    assert "xcb-cursor" not in s


def test_explain_adds_what_ldd_finds_missing_for_the_installed_plugin():
    expected = list(dict.fromkeys(["libxcb-icccm.so.4"] + _plugin_missing()))
    assert dc.explain(REAL_LOG) == dc.install_hint(expected)


def test_explain_a_qt_library_failing_at_import():
    # minimal Debian: PySide6.QtGui itself does not load, the log names no plugin
    log = "ImportError: libEGL.so.1: cannot open shared object file: No such file or directory\n"
    assert dc.explain(log) == dc.install_hint(list(dict.fromkeys(["libEGL.so.1"] + _plugin_missing())))


def test_no_probe_offscreen_or_without_a_display(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":9")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert not dc.needs_probe() and dc.probe() is None
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not dc.needs_probe() and dc.probe() is None


def _plugin_missing() -> list[str]:
    import PySide6

    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    assert dc.xcb_plugin() == str(plugin)
    return list(dict.fromkeys(dc._ldd_missing(str(plugin))))


@pytest.fixture
def xvfb(monkeypatch):
    if not sys.platform.startswith("linux") or not shutil.which("Xvfb"):
        pytest.skip("needs Xvfb (apt install xvfb)")
    num = 90 + os.getpid() % 400
    p = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = Path(f"/tmp/.X11-unix/X{num}")
    for _ in range(100):
        if sock.exists() or p.poll() is not None:
            break
        time.sleep(0.05)
    if not sock.exists():
        p.kill()
        p.wait()
        pytest.skip("Xvfb did not start")
    monkeypatch.setenv("DISPLAY", f":{num}")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    yield
    p.terminate()
    p.wait(timeout=10)


def test_real_probe_agrees_with_ldd_on_the_plugin(xvfb):
    missing = _plugin_missing()
    s = dc.probe()
    if missing:  # this machine lacks some of xcb's libraries: the sentence names exactly them
        assert s == dc.install_hint(missing)
    else:
        assert s is None


def test_self_test_and_wizard_start_name_the_missing_libraries(xvfb, capsys):
    missing = _plugin_missing()
    if not missing:
        pytest.skip("every library of the xcb plugin is installed here")
    assert cli.main(["--self-test"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("phoenix self-test FAILED: The desktop window cannot open") and missing[0] in err
    assert cli.main(["--demo"]) == 2  # before Qt could abort the process
    err = capsys.readouterr().err
    assert err.startswith("phoenix: The desktop window cannot open") and "sudo apt install" in err


# --- the Windows file version -------------------------------------------------------------------

def _file_version_module():
    spec = importlib.util.spec_from_file_location("file_version", ROOT / "installer" / "file_version.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("version, expected", [
    ("0.1.0", "0.1.0.40000"),
    ("0.2.0rc1", "0.2.0.30001"),
    ("0.2.0-RC.1", "0.2.0.30001"),
    ("1.2", "1.2.0.40000"),
    ("2", "2.0.0.40000"),
    ("1.0a2", "1.0.0.10002"),
    ("1.0b3", "1.0.0.20003"),
    ("1.0.0.dev4", "1.0.0.4"),
    ("1.0.post2", "1.0.0.40002"),
    ("1!3.1.4", "3.1.4.40000"),
    ("1.0.0+local.7", "1.0.0.40000"),
])
def test_file_version_of_pep440(version, expected):
    assert _file_version_module().file_version(version) == expected


def test_file_versions_keep_pep440_order():
    fv = _file_version_module().file_version
    order = ["0.9.9", "1.0.0.dev1", "1.0.0a1", "1.0.0a2", "1.0.0b1", "1.0.0rc1", "1.0.0rc2", "1.0.0",
             "1.0.0.post1", "1.0.1.dev0", "1.0.1"]
    nums = [tuple(int(x) for x in fv(v).split(".")) for v in order]
    assert all(a < b for a, b in itertools.pairwise(nums)), list(zip(order, nums))


@pytest.mark.parametrize("bad", ["", "banana", "1.0.0-final-final", "70000.0.0", "1.2.3.4"])
def test_file_version_refuses_what_it_cannot_map(bad):
    with pytest.raises(ValueError, match=r"Windows file version|PEP 440|above 9999"):
        _file_version_module().file_version(bad)


def test_the_version_script_prints_the_mapping():
    r = subprocess.run([sys.executable, str(ROOT / "installer" / "file_version.py"), "0.2.0rc1"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "0.2.0.30001")
    r = subprocess.run([sys.executable, str(ROOT / "installer" / "file_version.py"), "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


# --- the data -------------------------------------------------------------------------------------

def test_the_data_lives_inside_the_package():
    assert resource("rigs", "phoenix-cluster.toml").is_file()
    assert resource().parent == ROOT / "phoenix_gui"
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'phoenix_gui = \[.*"data/\*\*/\*"', text)


def test_self_test_in_process_runs_once_and_says_offscreen(monkeypatch, capsys, tmp_path, qapp):
    # importing phoenix_gui.__main__ used to run main() again: a self-test inside the self-test
    monkeypatch.setenv("PHOENIX_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli.main(["--self-test"]) == 0
    out = capsys.readouterr().out
    assert out.count("phoenix self-test OK") == 1 and out.rstrip().endswith("no display, offscreen only"), out
