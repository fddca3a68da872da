#!/usr/bin/env bash
# End-to-end tests with the brokers and the test harness on this x86_64 host and an ARM kedge
# binary run under qemu user-mode emulation:
#   1. the MQTT → Kafka walking path (tests/e2e/walking_path.rs: 20,000 QoS 1 messages, each
#      exactly once, keyed and partitioned);
#   2. the same pipeline through the rust-units plugin (tests/e2e/plugin_pipeline.rs), compiled
#      ahead of time for TARGET by the host's kedge (KEDGE_TARGET): Pulley bytecode on armv7.
#
#   cross/e2e.sh aarch64-unknown-linux-musl
#   cross/e2e.sh armv7-unknown-linux-musleabihf
#
# Builds the binary with cross/build.sh unless KEDGE_BIN names one, and the plugins with
# scripts/build-plugins.sh. Prints the records/s and the peak RSS the tests measure: both are of
# the *emulated* binary (RSS includes qemu itself).
set -euo pipefail
target=${1:?usage: cross/e2e.sh TARGET}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cross/env.sh
. "$here/env.sh"
cd "$KEDGE_ROOT"
ensure_device_bin "$target"
ensure_qemu
# mosquitto, tansu and confluent-kafka (skipped when KEDGE_PEERS_DIR points at installed peers).
[ -n "${KEDGE_PEERS_DIR:-}" ] || scripts/install-peers.sh
scripts/build-plugins.sh
qemu=$(qemu_for "$target")
for test in walking_path plugin_pipeline; do
  started=$(date +%s)
  KEDGE_BIN="$KEDGE_BIN" KEDGE_RUNNER=$qemu KEDGE_TARGET=$target \
    cargo test --locked -p kedge --test e2e "$test" -- --nocapture --test-threads=1
  log "$test with $target kedge under $qemu: $(( $(date +%s) - started )) s (including the host test build)"
done
