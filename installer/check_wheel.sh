#!/usr/bin/env bash
# Packaging check (run by .ci/run after the tests): what `pip install phoenix-gui` gets from an index.
# Builds the sdist and, from that sdist, the wheel (python -m build does it in that order, so a file
# missing from the sdist breaks the wheel too), installs the wheel into a fresh virtualenv outside the
# checkout, and runs the demo plan and the self-test from a folder where the checkout is not importable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/phoenix-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
SDIST=$(ls "$WORK"/dist/*.tar.gz)
WHEEL=$(ls "$WORK"/dist/*.whl)
tar tzf "$SDIST" >"$WORK/sdist.txt"
"$PY" -m zipfile -l "$WHEEL" >"$WORK/wheel.txt"
for f in gpu-specs.csv speed-model.json speed-calibration.jsonl quant-quality.jsonl rigs/phoenix-cluster.toml models/qwen2.5-32b-instruct-q4_k_m.toml icons/phoenix.png; do
  grep -q "/phoenix_gui/data/$f\$" "$WORK/sdist.txt" || { echo "the sdist lacks phoenix_gui/data/$f" >&2; exit 1; }
  grep -q "^phoenix_gui/data/$f " "$WORK/wheel.txt" || { echo "the wheel lacks phoenix_gui/data/$f" >&2; exit 1; }
done

python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$WHEEL"
cd "$WORK"  # not the checkout: only the installed copy can be imported from here
where=$("$WORK/venv/bin/python" -c "import phoenix_gui; print(phoenix_gui.__file__)")
case "$where" in "$WORK/venv/"*) ;; *) echo "phoenix_gui was imported from $where, not the fresh venv" >&2; exit 1;; esac
"$WORK/venv/bin/phoenix" plan --demo --auto fastest | tail -1
# the advisor's quality figures come from the shipped data: an installed copy must still find them
"$WORK/venv/bin/phoenix" advise --demo --ctx 4096 --kv f16 --quant Q4_K_M Q3_K_S --json >"$WORK/advise.json"
grep -q '"source": "https://' "$WORK/advise.json" || { echo "phoenix advise found no published quality figure" >&2; exit 1; }
env -u DISPLAY -u WAYLAND_DISPLAY "$WORK/venv/bin/phoenix" --self-test
echo "wheel check OK: $(basename "$SDIST") and $(basename "$WHEEL") carry the data; installed outside the checkout, demo plan and self-test pass"
