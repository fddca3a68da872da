#!/usr/bin/env bash
# kedge on aarch64, tested on this x86_64 machine under qemu-aarch64-static:
#   1. the libraries' unit tests (every crate of the agent), cross-compiled (debug), under qemu;
#   2. the device build (cross/build.sh: static, stripped, --version and check under qemu);
#   3. cross/e2e.sh with that binary under qemu: the MQTT → Kafka walking path, then the same
#      pipeline through the rust-units plugin (compiled ahead of time for aarch64).
# Run by .ci/run after scripts/test; cross/README.md gives how long it takes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=aarch64-unknown-linux-musl
# shellcheck source=cross/env.sh
. "$here/env.sh"
cd "$KEDGE_ROOT"
ensure_all "$target"
t0=$(date +%s)

CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static \
  cargo-zigbuild test --locked --target "$target" --lib \
    -p kedge-base -p kedge-wire -p kedge-queue -p kedge-plugin-host -p kedge
t1=$(date +%s)

"$here/build.sh" "$target"
t2=$(date +%s)

KEDGE_BIN=$(kedge_out "$target") "$here/e2e.sh" "$target"
t3=$(date +%s)
log "test-aarch64: unit tests $((t1 - t0)) s, device build $((t2 - t1)) s, e2e $((t3 - t2)) s, total $((t3 - t0)) s"
