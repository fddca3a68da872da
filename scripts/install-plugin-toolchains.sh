#!/usr/bin/env bash
# Installs, on a fresh Debian 12 machine, what the Rust and C plugins need (see plugins/README.md):
#   - the wasm32-wasip2 Rust target;
#   - clang, lld, compiler-rt builtins and wasi-libc for wasm32 (Debian packages);
#   - wit-bindgen (C bindings) and wasm-tools (core module -> component), built with only the
#     features the plugin builds use, into .peers/bin;
#   - the wasi_snapshot_preview1 reactor adapter, into .peers/.
# With --all it then runs plugins/*/install-toolchain.sh (the Python, JavaScript and Go examples).
# Idempotent: a second run only checks what is there. Prints how long each install took.
set -euo pipefail

# wit-bindgen-cli follows the guest crate wit-bindgen (plugins/sdk); the adapter follows the host's
# wasmtime (agent/Cargo.toml), whose WASI it adapts preview1 calls to.
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.263.0
ADAPTER_VERSION=48.0.8
LLVM_VERSION=16

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=$ROOT/.peers
ADAPTER=$PEERS/wasi_snapshot_preview1.reactor.wasm

all=false
case "${1:-}" in
    --all) all=true ;;
    "") ;;
    *) echo "usage: $0 [--all]" >&2; exit 2 ;;
esac

# Runs "$@" and reports its wall time, so CI logs show what a from-nothing install costs.
timed() {
    local what=$1 start=$SECONDS
    shift
    echo "install-plugin-toolchains: $what ..."
    "$@"
    echo "install-plugin-toolchains: $what took $((SECONDS - start)) s"
}

mkdir -p "$PEERS/bin"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    timed "rustup target add wasm32-wasip2" rustup target add wasm32-wasip2
fi

apt_packages=("clang-$LLVM_VERSION" "lld-$LLVM_VERSION" "libclang-rt-$LLVM_VERSION-dev-wasm32" wasi-libc)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    apt_install() {
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    }
    timed "apt-get install ${missing[*]}" apt_install "${missing[@]}"
fi

# `cargo install` rebuilds when the feature set differs from the installed one, so every script
# that installs these binaries must ask for the same features: c for plugins/c-filter, go for
# plugins/go-route.
if ! "$PEERS/bin/wit-bindgen" --version 2>/dev/null | grep -q "^wit-bindgen-cli $WIT_BINDGEN_VERSION\b"; then
    timed "cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION" \
        cargo install --quiet --locked --root "$PEERS" "wit-bindgen-cli@$WIT_BINDGEN_VERSION" \
        --no-default-features --features c,go
fi
if ! "$PEERS/bin/wasm-tools" --version 2>/dev/null | grep -q "^wasm-tools $WASM_TOOLS_VERSION\b"; then
    timed "cargo install wasm-tools $WASM_TOOLS_VERSION" \
        cargo install --quiet --locked --root "$PEERS" "wasm-tools@$WASM_TOOLS_VERSION" \
        --no-default-features --features component
fi

# The adapter ships inside a crates.io crate; `cargo vendor` fetches and unpacks it without
# building anything.
if [ ! -f "$ADAPTER" ] || [ "$(cat "$ADAPTER.version" 2>/dev/null)" != "$ADAPTER_VERSION" ]; then
    fetch_adapter() (
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        cat >"$tmp/Cargo.toml" <<EOF
[package]
name = "fetch-adapter"
version = "0.0.0"
edition = "2024"

[lib]
path = "lib.rs"

[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"
EOF
        : >"$tmp/lib.rs"
        cargo vendor --quiet --manifest-path "$tmp/Cargo.toml" "$tmp/vendor" >/dev/null
        install -m644 "$tmp/vendor/wasi-preview1-component-adapter-provider/artefacts/wasi_snapshot_preview1.reactor.wasm" "$ADAPTER"
        echo "$ADAPTER_VERSION" >"$ADAPTER.version"
    )
    timed "wasi_snapshot_preview1 reactor adapter $ADAPTER_VERSION" fetch_adapter
fi

if $all; then
    for script in "$ROOT"/plugins/*/install-toolchain.sh; do
        [ -x "$script" ] || continue
        timed "$(basename "$(dirname "$script")")/install-toolchain.sh" "$script"
    done
fi

echo "install-plugin-toolchains: ok (wasm32-wasip2, clang-$LLVM_VERSION" \
    "$(dpkg-query -W -f='${Version}' "clang-$LLVM_VERSION"), wasi-libc $(dpkg-query -W -f='${Version}' wasi-libc)," \
    "$("$PEERS/bin/wit-bindgen" --version), $("$PEERS/bin/wasm-tools" --version | cut -d' ' -f1-2)," \
    "adapter $ADAPTER_VERSION)"
