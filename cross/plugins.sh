#!/usr/bin/env bash
# Plugins on an ARM device binary: compiles the Rust and C example plugins and the hostile
# fixture ahead of time for TARGET with the host's kedge (`kedge plugin compile --target`), then
# runs them with the device kedge (built without Cranelift) under qemu:
#   - each example's `kedge plugin test` output must equal its expected.jsonl;
#   - the hostile plugin's infinite loop, memory bomb and trap must fail only their events;
#   - the device kedge must refuse a plain .wasm and an artifact compiled for another target.
# On armv7 the artifacts are Pulley bytecode, interpreted; on aarch64, native code.
#
#   cross/plugins.sh aarch64-unknown-linux-musl
#   cross/plugins.sh armv7-unknown-linux-musleabihf
#
# Builds the device binary with cross/build.sh unless KEDGE_BIN names one, the host kedge with
# `cargo build` unless KEDGE_HOST_BIN names one, and the plugins with scripts/build-plugins.sh.
set -euo pipefail
target=${1:?usage: cross/plugins.sh TARGET}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/env.sh
. "$here/env.sh"
cd "$KEDGE_ROOT"
ensure_device_bin "$target"
if [ -z "${KEDGE_HOST_BIN:-}" ]; then
  cargo build --locked -p kedge --bin kedge
  KEDGE_HOST_BIN=$CARGO_TARGET_DIR/debug/kedge
fi
ensure_qemu
scripts/build-plugins.sh
qemu=$(qemu_for "$target")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

compile() { "$KEDGE_HOST_BIN" plugin compile "target/plugins/$1.wasm" --target "$target" -o "$work/$1.cwasm" >/dev/null; }
device_test() { "$qemu" "$KEDGE_BIN" plugin test "$@"; }

for example in rust-units rust-downsample c-filter; do
  compile "$example"
  # test.args is written for a POSIX shell (quotes): eval splits it the same way.
  eval "args=($(cat "plugins/$example/test.args"))"
  device_test "$work/$example.cwasm" --input "plugins/$example/input.jsonl" "${args[@]}" \
    >"$work/$example.out" 2>"$work/$example.err"
  python3 - "$work/$example.out" "plugins/$example/expected.jsonl" "$example" <<'PY'
import json, sys
got = [json.loads(line) for line in open(sys.argv[1])]
want = [json.loads(line) for line in open(sys.argv[2])]
if got != want:
    sys.exit(f"{sys.argv[3]}: output differs from expected.jsonl:\n" + "\n".join(map(json.dumps, got)))
PY
  log "$example on $target: expected.jsonl matched ($(tail -1 "$work/$example.err"))"
done

compile hostile
printf '{"subject":"s/a","value":"a"}\n{"subject":"s/a","value":"boom"}\n{"subject":"s/a","value":"c"}\n' >"$work/h.jsonl"
for mode in "loop --timeout 100ms:timeout timeout timeout" "memory --memory 4MiB:memory memory memory" \
            "trap-on --config poison=boom:- trap -"; do
  read -r -a args <<<"${mode%%:*}"
  want=${mode##*:}
  got=$(device_test "$work/hostile.cwasm" --input "$work/h.jsonl" --config "mode=${args[0]}" "${args[@]:1}" 2>/dev/null \
    | python3 -c 'import json,sys; print(" ".join(json.loads(l).get("fault", "-") for l in sys.stdin))')
  [ "$got" = "$want" ] || { log "FAIL: hostile ${args[0]}: faults '$got', expected '$want'"; exit 1; }
  log "hostile ${args[0]} on $target: contained ($got)"
done

if device_test target/plugins/rust-units.wasm --input plugins/rust-units/input.jsonl >/dev/null 2>"$work/refused"; then
  log "FAIL: the device kedge ran a plain .wasm"; exit 1
fi
grep -q "built without the plugin compiler" "$work/refused" || { cat "$work/refused"; exit 1; }
"$KEDGE_HOST_BIN" plugin compile target/plugins/rust-units.wasm --target x86_64-unknown-linux-gnu -o "$work/x86.cwasm" >/dev/null
if device_test "$work/x86.cwasm" --input plugins/rust-units/input.jsonl >/dev/null 2>"$work/refused"; then
  log "FAIL: the device kedge ran an x86_64 artifact"; exit 1
fi
grep -q "compiled for other settings" "$work/refused" || { cat "$work/refused"; exit 1; }
log "plugins on $target: ok (a plain .wasm and an x86_64 artifact refused)"
