#!/bin/sh
# Builds {{name}}.wasm, a WebAssembly component kedge can run, from export_wit_world/. Needs:
#   go            1.27.1 or newer (go.bytecodealliance.org/pkg v0.4.0, which the generated code
#                 imports, asks for it; the wasip1 port builds the c-shared reactor a component
#                 needs)
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
here=$(pwd)
# The build runs in a temporary directory: paths given relative to this one are made absolute.
absolute() {
    case $1 in
    */*) case $1 in /*) echo "$1" ;; *) echo "$here/$1" ;; esac ;;
    *) echo "$1" ;; # a command found on PATH
    esac
}
go=$(absolute "${GO:-go}")
wit_bindgen=$(absolute "${WIT_BINDGEN:-wit-bindgen}")
wasm_tools=$(absolute "${WASM_TOOLS:-wasm-tools}")
adapter=$(absolute "$ADAPTER")
case ${GO_PKG:-} in
"" | /*) go_pkg=${GO_PKG:-} ;;
*) go_pkg=$here/$GO_PKG ;;
esac
# No go.work of the user's applies to the generated module.
export GOWORK=off
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# wit-bindgen names each file it writes: show that only when it fails.
log=$("$wit_bindgen" go --world transform --out-dir "$tmp/src" wit 2>&1) ||
    { printf '%s\n' "$log" >&2; exit 1; }
cp -r export_wit_world "$tmp/src/"
cd "$tmp/src"
if [ -n "$go_pkg" ]; then
    "$go" mod edit -replace "go.bytecodealliance.org/pkg=$go_pkg"
fi
"$go" mod tidy
# -checklinkname=0: go.bytecodealliance.org/pkg reaches into the runtime with go:linkname.
GOOS=wasip1 GOARCH=wasm "$go" build -trimpath -buildmode=c-shared \
    -ldflags="-s -w -checklinkname=0" -o "$tmp/core.wasm" .
"$wasm_tools" component embed --world transform "$here/wit" "$tmp/core.wasm" -o "$tmp/embedded.wasm"
"$wasm_tools" component new "$tmp/embedded.wasm" \
    --adapt "wasi_snapshot_preview1=$adapter" -o "$here/{{name}}.wasm"
cd "$here"
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
