#!/usr/bin/env bash
# The Windows installer checked under Wine, the check to run on every change to installer/phoenix.nsi
# (not in CI: a fresh machine spends ~6 minutes building the chroot):
#   sudo bash installer/check_wine.sh
# The real phoenix.nsi is compiled by makensis for two versions ($V1 and a pre-release $V2) around a
# stand-in app (installer/standin: a console program that logs its arguments, cross-compiled with
# mingw-w64, in PyInstaller's Phoenix.exe + _internal layout), then installed, upgraded, uninstalled
# (also while the app runs, and into a path with spaces and non-ASCII) silently under Wine with Xvfb
# (installer/wine_scenarios.sh). It prints "installer checks N | passed M".
# The NSIS stub is 32-bit, so Wine needs i386 packages; those rarely install beside a host's own
# (version skew with the security archive), so everything runs in a Debian 12 chroot made with
# debootstrap and cached in ~/.cache/phoenix/wine-bookworm (about 1.4 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap and chroot)" >&2; exit 2; }
V1=${V1:-0.1.0}
V2=${V2:-0.2.0rc1}
PY=$(command -v python3)
FV1=$("$PY" installer/file_version.py "$V1")
FV2=$("$PY" installer/file_version.py "$V2")
MIRROR=${MIRROR:-$( (grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) | head -1 | tr -d ' ')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${PHOENIX_CACHE:-$HOME/.cache/phoenix}
ROOT=$CACHE/wine-bookworm
in_root() {  # private mounts: they vanish with the command
  unshare -m sh -c "mount -t proc proc '$1/proc' && mount --rbind /dev '$1/dev' && mount --make-rslave '$1/dev' \
    && cp /etc/resolv.conf '$1/etc/resolv.conf' && chroot '$1' env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin $2"
}
if [ ! -e "$ROOT/.phoenix-ready" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  rm -rf "$ROOT.tmp" && mkdir -p "$CACHE"
  echo "building the Wine chroot in $ROOT (once)"
  debootstrap --variant=minbase bookworm "$ROOT.tmp" "$MIRROR" >/dev/null
  in_root "$ROOT.tmp" "sh -c 'dpkg --add-architecture i386 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends wine wine32 wine64 xvfb xauth nsis gcc-mingw-w64-x86-64 procps >/dev/null'"
  touch "$ROOT.tmp/.phoenix-ready"
  rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
fi
rm -rf "$ROOT/work"
mkdir -p "$ROOT/work/installer/standin" "$ROOT/work/phoenix_gui/data/icons"
cp installer/phoenix.nsi installer/wine_scenarios.sh "$ROOT/work/installer/"
cp installer/standin/phoenix_standin.c "$ROOT/work/installer/standin/"
cp phoenix_gui/data/icons/phoenix.ico "$ROOT/work/phoenix_gui/data/icons/"
in_root "$ROOT" "V1=$V1 V2=$V2 FV1=$FV1 FV2=$FV2 bash /work/installer/wine_scenarios.sh"
