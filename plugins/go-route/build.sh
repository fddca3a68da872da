#!/usr/bin/env bash
# Builds OUT_DIR/go-route.wasm: `wit-bindgen go` bindings + export_wit_world/ -> Go (wasip1,
# c-shared) core module -> `wasm-tools component embed` + `component new` with the
# wasi_snapshot_preview1 reactor adapter. Skips when the output is newer than the sources.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PEERS=$ROOT/.peers
NAME=$(basename "$HERE")
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)/$NAME.wasm

if [ -f "$OUT" ] && [ -z "$(find "$HERE/export_wit_world" "$HERE/build.sh" "$HERE/install-toolchain.sh" "$ROOT/wit" -newer "$OUT" -print -quit)" ]; then
    echo "$NAME: up to date ($OUT)"
    exit 0
fi

"$HERE/install-toolchain.sh"
GO_PKG=$(ls -d "$PEERS"/go/pkg-v* | sort -V | tail -n1)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Go without network, module proxy or toolchain switching; caches inside .peers.
export PATH=$PEERS/go/bin:$PATH GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOWORK=off \
    GOFLAGS=-mod=mod GOCACHE=$PEERS/go/cache GOPATH=$PEERS/go/gopath GOENV=off

"$PEERS/bin/wit-bindgen" go -w transform --out-dir "$TMP/src" "$ROOT/wit" >"$TMP/wit-bindgen.log" 2>&1 ||
    { cat "$TMP/wit-bindgen.log" >&2; exit 1; }
cp -r "$HERE/export_wit_world" "$TMP/src/"
cd "$TMP/src"
# go.bytecodealliance.org/pkg can't be fetched here: use the copy from the wit-bindgen-go crate.
go mod edit -replace "go.bytecodealliance.org/pkg=$GO_PKG"
go mod tidy
GOOS=wasip1 GOARCH=wasm go build -trimpath -buildmode=c-shared \
    -ldflags="-s -w -checklinkname=0" -o "$TMP/core.wasm" .
"$PEERS/bin/wasm-tools" component embed -w transform "$ROOT/wit" "$TMP/core.wasm" -o "$TMP/embedded.wasm"
"$PEERS/bin/wasm-tools" component new "$TMP/embedded.wasm" \
    --adapt "wasi_snapshot_preview1=$PEERS/wasi_snapshot_preview1.reactor.wasm" -o "$TMP/$NAME.wasm"
mv "$TMP/$NAME.wasm" "$OUT"
echo "$NAME: built $OUT ($(stat -c %s "$OUT") bytes)"
