#!/usr/bin/env bash
# Builds OUT_DIR/python-enrich.wasm with componentize-py; skips when it is newer than the sources.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NAME=$(basename "$HERE")
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)/$NAME.wasm

if [ -f "$OUT" ] && [ -z "$(find "$HERE/app.py" "$HERE/build.sh" "$HERE/install-toolchain.sh" "$ROOT/wit" -newer "$OUT" -print -quit)" ]; then
    echo "$NAME: up to date ($OUT)"
    exit 0
fi

"$HERE/install-toolchain.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# Build from a copy, so that nothing (__pycache__) is written into the source tree.
mkdir "$TMP/src"
cp "$HERE/app.py" "$TMP/src/"
cd "$TMP"
"$ROOT/.peers/plugin-venv/bin/componentize-py" -q -d "$ROOT/wit" -w transform \
    componentize app -p "$TMP/src" -o "$TMP/$NAME.wasm"
mv "$TMP/$NAME.wasm" "$OUT"
echo "$NAME: built $OUT ($(stat -c %s "$OUT") bytes)"
