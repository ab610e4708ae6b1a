"""Can Qt's desktop platform plugin load here? Asked in a child process, before the wizard opens.

When the xcb plugin cannot load its system libraries, Qt aborts the whole process (exit 134) and
names `xcb-cursor0` whatever is actually missing. A child process takes that abort instead; its
plugin log (QT_DEBUG_PLUGINS=1) and `ldd` on the plugin name the libraries really missing, and
the user gets one sentence with the apt and dnf commands that install them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys

# soname -> (Debian/Ubuntu package, Fedora package), for what Qt 6's xcb and wayland plugins load
# beyond a minimal system. Anything else falls back to a guess from the soname (see _packages).
PACKAGES = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
}

_DLOPEN = re.compile(r"([\w.+-]+\.so(?:\.\d+)*): cannot open shared object file")
_LDD = re.compile(r"^\s*([\w.+-]+\.so(?:\.\d+)*) => not found", re.M)
_PLUGIN = re.compile(r"Cannot load library (/.+?\.so): ")
_QPA_MESSAGE = re.compile(r"^qt\.qpa\.\w+: (.+)$", re.M)


def missing_libraries(log: str) -> list[str]:
    """Libraries named missing by the dynamic linker, in dlopen's or ldd's wording, first seen first."""
    found = _DLOPEN.findall(log) + _LDD.findall(log)
    return list(dict.fromkeys(found))


def _packages(libs: list[str]) -> tuple[list[str], list[str]]:
    deb, rpm = [], []
    for lib in libs:
        if lib in PACKAGES:
            d, f = PACKAGES[lib]
        else:
            # Debian names a library package after its soname (libfoo.so.3 -> libfoo3, libfoo1.2.so.0
            # -> libfoo1.2-0); dnf installs whatever provides the soname itself.
            stem, _, ver = lib.partition(".so")
            ver = ver.lstrip(".").split(".")[0]
            d = f"{stem}{'-' if stem[-1:].isdigit() else ''}{ver}".lower() if ver else stem.lower()
            f = f"'{lib}()(64bit)'"
        deb.append(d)
        rpm.append(f)
    return list(dict.fromkeys(deb)), list(dict.fromkeys(rpm))


def install_hint(libs: list[str]) -> str:
    """One sentence: which libraries are missing and the commands that install them."""
    deb, rpm = _packages(libs)
    return (f"The desktop window cannot open because these system libraries are missing: {', '.join(libs)}; "
            f"install them with `sudo apt install {' '.join(deb)}` (Debian/Ubuntu) or "
            f"`sudo dnf install {' '.join(rpm)}` (Fedora), then start Phoenix again "
            "(the command line works without them: phoenix plan --demo).")


def _ldd_missing(plugin: str) -> list[str]:
    # dlopen names only the first missing library; ldd lists every one the plugin would need.
    ldd = shutil.which("ldd")
    if not ldd or not os.path.isfile(plugin):
        return []
    try:
        r = subprocess.run([ldd, plugin], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return _LDD.findall(r.stdout)


def xcb_plugin() -> str | None:
    """Qt's xcb plugin in the installed PySide6 (found without loading Qt)."""
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    for where in (spec.submodule_search_locations or []) if spec else []:
        plugin = os.path.join(where, "Qt", "plugins", "platforms", "libqxcb.so")
        if os.path.isfile(plugin):
            return plugin
    return None


def explain(log: str) -> str:
    """The sentence for a probe that failed, from its plugin log."""
    libs = missing_libraries(log)
    # The linker names one library at a time (and a Qt library missing its own dependencies fails
    # at import, naming no plugin); ldd on the plugins lists every one, Qt's own dependencies included.
    for plugin in dict.fromkeys(_PLUGIN.findall(log) + [xcb_plugin() or ""]) if libs else ():
        libs += _ldd_missing(plugin)
    if libs:
        return install_hint(list(dict.fromkeys(libs)))
    # Qt 6.5+ blames xcb-cursor0 on any xcb failure: that line is no reason
    reasons = [m for m in _QPA_MESSAGE.findall(log) if "xcb-cursor0" not in m]
    reason = reasons[0].strip().rstrip(".") if reasons else "Qt stopped before the window opened"
    return (f"The desktop window cannot open ({reason}); the command line works without it: "
            "phoenix plan --demo.")


def display_present() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def needs_probe() -> bool:
    """Linux with a display, and Qt about to use a real desktop plugin (not offscreen or minimal)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    return (sys.platform.startswith("linux") and display_present()
            and not platform.startswith(("offscreen", "minimal", "vnc")))


PROBE_ENV = "PHOENIX_DESKTOP_PROBE"  # the frozen app runs probe_main() when it sees this


def probe(timeout: float = 30) -> str | None:
    """None when the desktop plugin loads (or no check applies); otherwise the sentence to show."""
    if not needs_probe():
        return None
    env = dict(os.environ, QT_DEBUG_PLUGINS="1", **{PROBE_ENV: "1"})
    cmd = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "phoenix_gui.ui.desktop_check"]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return None  # a slow display is not a missing library: let the real start decide
    if r.returncode == 0:
        return None
    return explain(r.stdout + r.stderr)


def probe_main() -> int:
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication([sys.argv[0]])  # aborts here when the platform plugin cannot load
    print(f"desktop platform plugin: {app.platformName()}")
    return 0


if __name__ == "__main__":
    sys.exit(probe_main())
