#!/bin/sh
# Builds {{name}}.wasm, a WebAssembly component kedge can run, from app.py. Needs
# componentize-py 0.25 (`pip install componentize-py==0.25.1`); set COMPONENTIZE_PY to its path
# where it is not on PATH. The component bundles CPython: about 18 MB; give the plugin
# `memory = "64MiB"` in kedge.toml.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Build from a copy, so that nothing (__pycache__) is written here.
mkdir "$tmp/src"
cp app.py kedge.py "$tmp/src/"
"${COMPONENTIZE_PY:-componentize-py}" -q -d wit -w transform componentize app -p "$tmp/src" \
    -o {{name}}.wasm
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
