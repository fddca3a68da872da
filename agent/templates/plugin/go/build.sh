#!/bin/sh
# Builds {{name}}.wasm, a WebAssembly component kedge can run, from export_wit_world/. Needs:
#   go            1.25 or newer (the module wit-bindgen 0.63.0 writes asks for 1.25; the wasip1
#                 port builds the c-shared reactor a component needs)
#   wit-bindgen   cargo install wit-bindgen-cli --version 0.63.0 --no-default-features --features go
#   wasm-tools    cargo install wasm-tools
#   the WASI preview1 reactor adapter, wasi_snapshot_preview1.reactor.wasm, from a wasmtime
#                 release or the crates.io crate wasi-preview1-component-adapter-provider
#   the Go module go.bytecodealliance.org/pkg that the generated code imports: `go mod tidy`
#                 fetches it; without a module proxy, set GO_PKG to a copy of it (the
#                 wit-bindgen-go crate's src/pkg, v0.4.0 for wit-bindgen 0.63.0)
# Set GO, WIT_BINDGEN, WASM_TOOLS and ADAPTER to their paths where they are not on PATH
# (ADAPTER has no default).
set -eu
cd "$(dirname "$0")"
: "${ADAPTER:?set ADAPTER to the path of wasi_snapshot_preview1.reactor.wasm}"
go=${GO:-go}
wasm_tools=${WASM_TOOLS:-wasm-tools}
here=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# wit-bindgen names each file it writes: show that only when it fails.
log=$("${WIT_BINDGEN:-wit-bindgen}" go --world transform --out-dir "$tmp/src" wit 2>&1) ||
    { echo "$log" >&2; exit 1; }
cp -r export_wit_world "$tmp/src/"
cd "$tmp/src"
if [ -n "${GO_PKG:-}" ]; then
    "$go" mod edit -replace "go.bytecodealliance.org/pkg=$GO_PKG"
fi
"$go" mod tidy
# -checklinkname=0: go.bytecodealliance.org/pkg reaches into the runtime with go:linkname.
GOOS=wasip1 GOARCH=wasm "$go" build -trimpath -buildmode=c-shared \
    -ldflags="-s -w -checklinkname=0" -o "$tmp/core.wasm" .
"$wasm_tools" component embed --world transform "$here/wit" "$tmp/core.wasm" -o "$tmp/embedded.wasm"
"$wasm_tools" component new "$tmp/embedded.wasm" \
    --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$here/{{name}}.wasm"
cd "$here"
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
