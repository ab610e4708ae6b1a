#!/usr/bin/env bash
# Packaging check on Linux (run by .ci/run after the tests): build the PyInstaller spec, run the
# frozen app's --self-test, and compile the NSIS installer script with Debian's makensis, so a broken
# spec or script fails CI. The Windows build itself: installer/build_windows.ps1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m pip install -q "pyinstaller>=6.3"
rm -rf build/pyi
"$PY" -m PyInstaller installer/phoenix.spec --noconfirm --log-level WARN --distpath build/pyi/dist --workpath build/pyi/work
QT_QPA_PLATFORM=offscreen build/pyi/dist/Phoenix/phoenix --self-test
if ! command -v makensis >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nsis) >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nsis >/dev/null
  fi
fi
VERSION=$("$PY" -c "import phoenix_gui; print(phoenix_gui.__version__)")
FILEVERSION=$("$PY" installer/file_version.py "$VERSION")
makensis -V2 -DFAST -DVERSION="$VERSION" -DFILEVERSION="$FILEVERSION" -DDIST="$PWD/build/pyi/dist/Phoenix" \
  -DOUTFILE="$PWD/build/pyi/Phoenix-Setup-$VERSION-linuxcheck.exe" installer/phoenix.nsi
echo "packaging check OK: frozen self-test passed, installer script compiled"
