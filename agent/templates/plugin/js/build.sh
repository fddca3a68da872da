#!/bin/sh
# Builds {{name}}.wasm, a WebAssembly component kedge can run, from plugin.js. Needs Node 20 or
# later and npm: the first build installs componentize-js 0.23 into node_modules (package.json;
# preview2-shim is there because componentize-js needs it at run time). To use an existing
# installation, set COMPONENTIZE_JS_DIR to the directory holding its node_modules. The component
# bundles a JavaScript engine: about 12 MB; give the plugin `memory = "64MiB"` in kedge.toml.
set -eu
cd "$(dirname "$0")"
modules=${COMPONENTIZE_JS_DIR:-.}
if [ ! -d "$modules/node_modules/@bytecodealliance/componentize-js" ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
node componentize.mjs "$modules"
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
