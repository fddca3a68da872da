#!/bin/sh
# Builds {{name}}.wasm, a WebAssembly component kedge can run, from plugin.c. Needs:
#   wit-bindgen   cargo install wit-bindgen-cli --version 0.63.0 --no-default-features --features c
#   clang         with the wasm32-wasi target and wasi-libc (Debian: clang-16 lld-16
#                 libclang-rt-16-dev-wasm32 wasi-libc)
#   wasm-tools    cargo install wasm-tools
#   the WASI preview1 reactor adapter, wasi_snapshot_preview1.reactor.wasm, from a wasmtime
#                 release or the crates.io crate wasi-preview1-component-adapter-provider
# Set WIT_BINDGEN, CLANG, WASM_TOOLS and ADAPTER to their paths where they are not on PATH
# (ADAPTER has no default).
set -eu
cd "$(dirname "$0")"
: "${ADAPTER:?set ADAPTER to the path of wasi_snapshot_preview1.reactor.wasm}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# wit-bindgen names each file it writes: show that only when it fails.
log=$("${WIT_BINDGEN:-wit-bindgen}" c --world transform --out-dir "$tmp/gen" wit 2>&1) ||
    { printf '%s\n' "$log" >&2; exit 1; }
"${CLANG:-clang}" --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Wall -Wextra -Werror \
    -Wl,--strip-all -I "$tmp/gen" -o "$tmp/core.wasm" \
    plugin.c "$tmp/gen/transform.c" "$tmp/gen/transform_component_type.o"
"${WASM_TOOLS:-wasm-tools}" component new "$tmp/core.wasm" \
    --adapt "wasi_snapshot_preview1=$ADAPTER" -o {{name}}.wasm
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
