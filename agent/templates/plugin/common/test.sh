#!/bin/sh
# Runs {{name}}.wasm on the sample events in input.jsonl (with the arguments in test.args) and
# compares what it decides with expected.jsonl. KEDGE names the kedge binary (default: kedge).
set -eu
cd "$(dirname "$0")"
# shellcheck disable=SC2046 # test.args holds separate words
"${KEDGE:-kedge}" plugin test {{name}}.wasm --input input.jsonl $(cat test.args) > actual.jsonl
diff -u expected.jsonl actual.jsonl
echo "{{name}}: every verdict as expected"
