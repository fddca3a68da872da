#!/usr/bin/env bash
# Builds OUT_DIR/js-redact.wasm with componentize-js; skips when it is newer than the sources.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NAME=$(basename "$HERE")
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)/$NAME.wasm

if [ -f "$OUT" ] && [ -z "$(find "$HERE/redact.js" "$HERE/componentize.mjs" "$HERE/build.sh" "$HERE/install-toolchain.sh" "$HERE/toolchain" "$ROOT/wit" -newer "$OUT" -print -quit)" ]; then
    echo "$NAME: up to date ($OUT)"
    exit 0
fi

"$HERE/install-toolchain.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
node "$HERE/componentize.mjs" "$ROOT/.peers/js" "$ROOT/wit" "$TMP/$NAME.wasm"
mv "$TMP/$NAME.wasm" "$OUT"
echo "$NAME: built $OUT ($(stat -c %s "$OUT") bytes)"
