#!/usr/bin/env bash
# The installer scenarios, run by installer/check_wine.sh inside its Debian chroot (Wine, makensis,
# mingw-w64, Xvfb): builds the stand-in app and the real installer for two versions ($V1, $V2 with
# their file versions $FV1, $FV2), then installs, upgrades, uninstalls (also while the app runs and
# into odd paths) silently, checking files, registry values and shortcuts. Prints
# "installer checks N | passed M"; exits non-zero when any check failed.
set -u
cd /work
export LANG=C.UTF-8 LC_ALL=C.UTF-8 WINEDEBUG=-all WINEPREFIX=/root/wp DISPLAY=:7 USER=root
export WINEDLLOVERRIDES="winemenubuilder.exe=d;mscoree=d;mshtml=d"  # no menu files, no Mono/Gecko prompts
B=/work/build
rm -rf "$B" "$WINEPREFIX"
mkdir -p "$B"

N=0 M=0
check() {  # check DESCRIPTION COMMAND [ARGS...]: runs the command, counts and prints the outcome
  local what=$1; shift
  N=$((N + 1))
  if "$@"; then M=$((M + 1)); echo "ok   $what"; else echo "FAIL $what"; fi
}
eq() { [ "$1" = "$2" ] || { echo "     got [$1], expected [$2]"; return 1; }; }
no() { ! "$@"; }
reg_value() {  # reg_value KEY NAME (NAME "" for the default value); reg prints in the console's codepage 437
  if [ -z "$2" ]; then wine reg query "$1" /ve; else wine reg query "$1" /v "$2"; fi 2>/dev/null | iconv -f CP437 -t UTF-8 | tr -d '\r' |
    sed -n "s/^ *${2:-(Default)} *REG_[A-Z_]* *//p" | head -1
}
reg_key() { wine reg query "$1" >/dev/null 2>&1; }
has() { [ -e "$1" ]; }
lnk_has() { tr -d '\000' <"$1" | grep -qF -- "$2"; }  # .lnk strings are UTF-16: drop the NULs
log_last() { tail -n 1 "$WINEPREFIX/drive_c/standin.log" 2>/dev/null | tr -d '\r\357\273\277'; }
version_of() {  # the version the installed Phoenix.exe reports
  rm -f "$WINEPREFIX/drive_c/standin.log"
  PHOENIX_STANDIN_LOG='C:\standin.log' wine "$1/Phoenix.exe" --version >/dev/null 2>&1
  log_last | cut -f1
}
size_kb() { du -sk --apparent-size "$1" | cut -f1; }
about() { [ "$1" -ge "$2" ] && [ "$1" -le "$(($2 + $3))" ] || { echo "     $1 KB not within $2..$(($2 + $3)) KB"; return 1; }; }

# --- build: the stand-in app in PyInstaller's one-folder layout, and the real installer, twice ---
for v in "$V1:$FV1" "$V2:$FV2"; do
  ver=${v%%:*} fv=${v#*:} d=$B/dist-${v%%:*}
  mkdir -p "$d/_internal"
  touch "$d/_internal/only_in_$ver.txt"
  x86_64-w64-mingw32-gcc -municode -O2 -s -DSTANDIN_VERSION="L\"$ver\"" -o "$d/Phoenix.exe" installer/standin/phoenix_standin.c
  head -c 3000000 /dev/zero >"$d/_internal/python311.dll"  # a real app's folder is mostly DLLs
  echo "$ver" >"$d/_internal/version.txt"
  check "installer $ver (file version $fv) compiles" \
    makensis -V2 -DVERSION="$ver" -DFILEVERSION="$fv" -DDIST="$d" -DOUTFILE="$B/Phoenix-Setup-$ver.exe" installer/phoenix.nsi
done
DIST_KB=$(size_kb "$B/dist-$V2")

Xvfb :7 -screen 0 1024x768x24 -nolisten tcp >/dev/null 2>&1 &
XVFB=$!
trap 'wineserver -k 2>/dev/null; kill $XVFB 2>/dev/null' EXIT
wineboot -i >/dev/null 2>&1
wineserver -w

U=$WINEPREFIX/drive_c/users/root
WU='C:\users\root'
DIR=$U/AppData/Local/Programs/Phoenix
WDIR="$WU"'\AppData\Local\Programs\Phoenix'
SM="$U/AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Phoenix"
UNINST='HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\Phoenix'
CLS='HKCU\Software\Classes'
mkdir -p "$U/AppData/Local/phoenix"
echo '{"kept": true}' >"$U/AppData/Local/phoenix/settings.json"
setup() { wine "$B/Phoenix-Setup-$1.exe" /S "${@:2}" >/dev/null 2>&1; }

start_app() {  # the installed app runs (holding its files) until stop_app
  rm -f "$WINEPREFIX/drive_c/stop" "$WINEPREFIX/drive_c/standin.log"
  PHOENIX_STANDIN_LOG='C:\standin.log' wine "$1/Phoenix.exe" --wait-file 'C:\stop' >/dev/null 2>&1 &
  APP=$!
  for _ in $(seq 100); do [ -s "$WINEPREFIX/drive_c/standin.log" ] && return 0; sleep 0.2; done
  echo "     the stand-in did not start"; return 1
}
stop_app() { touch "$WINEPREFIX/drive_c/stop"; wait "$APP"; wineserver -w; }

echo "== install $V1"
setup "$V1"; check "silent install exits 0" eq "$?" 0
check "Phoenix.exe, _internal and Uninstall.exe are in place" test -e "$DIR/Phoenix.exe" -a -e "$DIR/_internal/version.txt" -a -e "$DIR/Uninstall.exe"
check "the installed app is $V1" eq "$(version_of "$DIR")" "$V1"
check "Apps & features: DisplayVersion" eq "$(reg_value "$UNINST" DisplayVersion)" "$V1"
check "Apps & features: InstallLocation" eq "$(reg_value "$UNINST" InstallLocation)" "$WDIR"
check "Apps & features: UninstallString is quoted" eq "$(reg_value "$UNINST" UninstallString)" "\"$WDIR\\Uninstall.exe\""
check "Apps & features: QuietUninstallString" eq "$(reg_value "$UNINST" QuietUninstallString)" "\"$WDIR\\Uninstall.exe\" /S"
check "Apps & features: DisplayIcon and Publisher" eq "$(reg_value "$UNINST" DisplayIcon)|$(reg_value "$UNINST" Publisher)" "$WDIR\\Phoenix.exe|Phoenix contributors"
EST=$(( $(reg_value "$UNINST" EstimatedSize) ))
check "EstimatedSize counts the installed files" about "$EST" "$(size_kb "$B/dist-$V1")" 200
check "Start menu: Phoenix.lnk points at the app" lnk_has "$SM/Phoenix.lnk" 'Phoenix.exe'
check "Start menu: Phoenix (demo).lnk passes --demo" lnk_has "$SM/Phoenix (demo).lnk" '--demo'
check "desktop shortcut" has "$U/Desktop/Phoenix.lnk"
check "Open with .gguf: the command quotes the app and the file" eq "$(reg_value "$CLS\\Phoenix.gguf\\shell\\open\\command" "")" "\"$WDIR\\Phoenix.exe\" \"%1\""
check "Open with .kcpps: the command quotes the app and the file" eq "$(reg_value "$CLS\\Phoenix.kcpps\\shell\\open\\command" "")" "\"$WDIR\\Phoenix.exe\" \"%1\""
check "Open with: listed in .gguf's and .kcpps's OpenWithProgids" eval 'wine reg query "$CLS\\.gguf\\OpenWithProgids" /v Phoenix.gguf >/dev/null 2>&1 && wine reg query "$CLS\\.kcpps\\OpenWithProgids" /v Phoenix.kcpps >/dev/null 2>&1'

echo "== upgrade to $V2"
setup "$V2"; check "silent upgrade exits 0" eq "$?" 0
check "the installed app is $V2" eq "$(version_of "$DIR")" "$V2"
check "the old version's files are gone, the new ones there" test -e "$DIR/_internal/only_in_$V2.txt" -a ! -e "$DIR/_internal/only_in_$V1.txt"
check "DisplayVersion is $V2" eq "$(reg_value "$UNINST" DisplayVersion)" "$V2"
check "settings kept" has "$U/AppData/Local/phoenix/settings.json"

echo "== upgrade while Phoenix runs"
start_app "$DIR"
setup "$V1"; RC=$?
stop_app
check "silent install over a running Phoenix fails (exit 2)" eq "$RC" 2
check "nothing was touched: the app is still $V2, whole" eq "$(version_of "$DIR")|$(cat "$DIR/_internal/version.txt")" "$V2|$V2"
check "DisplayVersion still $V2" eq "$(reg_value "$UNINST" DisplayVersion)" "$V2"

echo "== uninstall while Phoenix runs"
start_app "$DIR"
wine "$DIR/Uninstall.exe" /S "_?=$WDIR" >/dev/null 2>&1; RC=$?  # _?= runs it in place, so its exit code is seen
stop_app
check "silent uninstall of a running Phoenix fails (exit 2)" eq "$RC" 2
check "the program and its Apps & features entry stay" eval 'has "$DIR/Phoenix.exe" && has "$DIR/_internal/version.txt" && reg_key "$UNINST"'
check "the Start menu shortcuts stay" has "$SM/Phoenix.lnk"

echo "== uninstall"
wine reg add "$CLS\\.kcpps\\OpenWithProgids" /v Other.kcpps /d "" /f >/dev/null 2>&1  # another program's entry
wine "$DIR/Uninstall.exe" /S >/dev/null 2>&1; check "silent uninstall exits 0" eq "$?" 0
wineserver -w  # the uninstaller runs on from a copy in %TEMP%
check "the program folder is gone" no has "$DIR"
check "Apps & features entry and Software\\Phoenix are gone" eval '! reg_key "$UNINST" && ! reg_key "HKCU\\Software\\Phoenix"'
check "the Phoenix.gguf and Phoenix.kcpps classes are gone" eval '! reg_key "$CLS\\Phoenix.gguf" && ! reg_key "$CLS\\Phoenix.kcpps" && ! reg_key "$CLS\\Applications\\Phoenix.exe"'
check "no empty .gguf\\OpenWithProgids (nor .gguf) key is left" eval '! reg_key "$CLS\\.gguf\\OpenWithProgids" && ! reg_key "$CLS\\.gguf"'
check "another program's .kcpps Open-with entry is kept" eval 'wine reg query "$CLS\\.kcpps\\OpenWithProgids" /v Other.kcpps >/dev/null 2>&1 && ! wine reg query "$CLS\\.kcpps\\OpenWithProgids" /v Phoenix.kcpps >/dev/null 2>&1'
check "Start menu folder and desktop shortcut are gone" eval '! has "$SM" && ! has "$U/Desktop/Phoenix.lnk"'
check "settings kept after uninstall" has "$U/AppData/Local/phoenix/settings.json"

echo "== odd path: spaces and non-ASCII, into a folder holding the user's own files"
ODD="$U/Mes modèles Ü/Phoenix ä"
WODD="$WU"'\Mes modèles Ü\Phoenix ä'
mkdir -p "$ODD"
head -c 5000000 /dev/zero >"$ODD/my-own-model.bin"
# /D= must come last and unquoted, as typed in cmd: wine would quote an argument holding spaces
cp "$B/Phoenix-Setup-$V2.exe" "$WINEPREFIX/drive_c/setup.exe"
wine cmd /c "C:\setup.exe /S /D=$WODD" >/dev/null 2>&1; check "silent install into '$WODD' exits 0" eq "$?" 0
check "the app is installed there and runs" eq "$(version_of "$ODD")" "$V2"
check "InstallLocation keeps the non-ASCII path" eq "$(reg_value "$UNINST" InstallLocation)" "$WODD"
EST=$(( $(reg_value "$UNINST" EstimatedSize) ))
check "EstimatedSize leaves out the user's 4.8 MiB file" about "$EST" "$DIST_KB" 200
check "Open with .gguf: the odd path is quoted" eq "$(reg_value "$CLS\\Phoenix.gguf\\shell\\open\\command" "")" "\"$WODD\\Phoenix.exe\" \"%1\""
rm -f "$WINEPREFIX/drive_c/standin.log"
PHOENIX_STANDIN_LOG='C:\standin.log' wine start /wait "$WU"'\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Phoenix\Phoenix (demo).lnk' >/dev/null 2>&1
wineserver -w
check "the demo shortcut starts the app with --demo" eq "$(log_last)" "$V2	--demo"
check "the odd-path uninstaller is there" has "$ODD/Uninstall.exe"
wine "$ODD/Uninstall.exe" /S >/dev/null 2>&1; wineserver -w
check "uninstall removes the program, keeps the user's file" eval '! has "$ODD/Phoenix.exe" && ! has "$ODD/_internal" && ! has "$ODD/Uninstall.exe" && has "$ODD/my-own-model.bin"'

echo "installer checks $N | passed $M"
[ "$N" = "$M" ]
