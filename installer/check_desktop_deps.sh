#!/usr/bin/env bash
# The Linux desktop on a minimal system, checked for real (run by hand on every change to the desktop
# check or the README's first command; not in CI: it needs root and ~5 minutes):
#   sudo bash installer/check_desktop_deps.sh [OUT_DIR]
# In a fresh Debian 12 "minbase" chroot (debootstrap, cached in ~/.cache/phoenix/bookworm-minbase) with
# only python3-venv and Xvfb added, it runs the README's first command on a copy of HEAD. Expected:
# Phoenix stops with one sentence naming the missing xcb libraries and the apt command (no Qt abort,
# exit 2), and --self-test fails the same way. Then it installs exactly the packages that sentence
# names, starts the wizard again, checks it stays up and writes a screenshot (OUT_DIR/desktop.png).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-build/desktop-check}")
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap and chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
MIRROR=${MIRROR:-$( (grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) | head -1 | tr -d ' ')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${PHOENIX_CACHE:-$HOME/.cache/phoenix}
BASE=$CACHE/bookworm-minbase
if [ ! -x "$BASE/usr/bin/apt-get" ]; then
  mkdir -p "$CACHE"
  debootstrap --variant=minbase bookworm "$BASE.tmp" "$MIRROR" >/dev/null && mv "$BASE.tmp" "$BASE"
fi
ROOT=$(mktemp -d "$CACHE/desktop-check.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
cp -a "$BASE/." "$ROOT/"
mkdir -p "$ROOT/src" "$ROOT/out" "$ROOT/root/.cache/pip" "$HOME/.cache/pip"
git archive HEAD | tar -x -C "$ROOT/src"
# pip inside trusts what the host trusts (a TLS-inspecting proxy's CA included)
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
[ -f "$HOST_CA" ] && cp "$HOST_CA" "$ROOT/host-ca.crt"

cat >"$ROOT/check.sh" <<'EOF'
set -u
export DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
[ -f /host-ca.crt ] && export PIP_CERT=/host-ca.crt
apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv xvfb >/dev/null || exit 10
Xvfb :5 -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
export DISPLAY=:5
sleep 2
cd /src
echo "== the README's first command on a minimal Debian 12 with Xvfb"
python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/phoenix --demo >/out/first.txt 2>&1
echo "exit $?"; cat /out/first.txt
.venv/bin/phoenix --self-test >/out/selftest.txt 2>&1
echo "== --self-test: exit $?"; cat /out/selftest.txt
PKGS=$(grep -o 'sudo apt install [^`]*' /out/first.txt | head -1 | sed 's/sudo apt install //')
[ -n "$PKGS" ] || { echo "no apt command in the sentence"; kill $XVFB; exit 11; }
echo "== apt-get install $PKGS"
apt-get install -y -qq --no-install-recommends $PKGS >/dev/null || exit 12
.venv/bin/phoenix --self-test; echo "== --self-test after the install: exit $?"
.venv/bin/phoenix --demo >/out/second.txt 2>&1 &
APP=$!
sleep 12
if kill -0 $APP 2>/dev/null; then
  .venv/bin/python -c "
from PySide6.QtGui import QGuiApplication
app = QGuiApplication([])
print('screenshot saved:', app.primaryScreen().grabWindow(0).save('/out/desktop.png'))"
  echo "== the wizard is up after 12 s"; RC=0
  kill $APP; wait $APP
else
  wait $APP; echo "== the wizard exited with $?"; cat /out/second.txt; RC=13
fi
kill $XVFB
exit $RC
EOF
set +e
unshare -m sh -c "mount -t proc proc '$ROOT/proc' && mount --rbind /dev '$ROOT/dev' && mount --make-rslave '$ROOT/dev' \
  && mount --bind '$HOME/.cache/pip' '$ROOT/root/.cache/pip' && cp /etc/resolv.conf '$ROOT/etc/resolv.conf' \
  && chroot '$ROOT' env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin bash /check.sh"
RC=$?
set -e
cp -a "$ROOT/out/." "$OUT/"
[ "$RC" = 0 ] && echo "desktop check OK: the missing libraries were named, installing them let the wizard start ($OUT/desktop.png)" \
  || echo "desktop check FAILED (code $RC); logs in $OUT"
exit "$RC"
