#!/usr/bin/env bash
# Installs what js-redact needs: @bytecodealliance/componentize-js (npm, pinned with
# toolchain/package-lock.json) in .peers/js. Needs Node >= 20 and npm.
# Idempotent: does nothing when .peers/js already holds exactly the locked packages.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DEST=$ROOT/.peers/js

command -v node >/dev/null || { echo "js-redact: node (>= 20) is required" >&2; exit 1; }
if [ -f "$DEST/node_modules/.kedge-lock" ] && cmp -s "$HERE/toolchain/package-lock.json" "$DEST/node_modules/.kedge-lock"; then
    exit 0
fi

mkdir -p "$DEST"
cp "$HERE/toolchain/package.json" "$HERE/toolchain/package-lock.json" "$DEST/"
# `npm ci` trips over optional per-platform packages missing from the lock (an npm bug);
# `npm install` with the lock present installs the locked versions all the same.
(cd "$DEST" && npm install --no-audit --no-fund --loglevel=error)
cp "$HERE/toolchain/package-lock.json" "$DEST/node_modules/.kedge-lock"
echo "js-redact: componentize-js installed in $DEST"
