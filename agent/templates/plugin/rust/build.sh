#!/bin/sh
# Builds {{name}}.wasm, a WebAssembly component kedge can run. Needs Rust (rustup) with the
# wasm32-wasip2 target: `rustup target add wasm32-wasip2`. Set CARGO_TARGET_DIR to share one
# target directory between plugins: each would otherwise compile wit-bindgen again (~40 s).
set -eu
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
