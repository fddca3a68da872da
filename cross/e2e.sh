#!/usr/bin/env bash
# The MQTT → Kafka walking-path end-to-end test (tests/e2e/walking_path.rs: 20,000 QoS 1
# messages, each exactly once, keyed and partitioned) with the brokers and the test harness on
# this x86_64 host and an ARM kedge binary run under qemu user-mode emulation.
#
#   cross/e2e.sh aarch64-unknown-linux-musl
#   cross/e2e.sh armv7-unknown-linux-musleabihf
#
# Builds the binary with cross/build.sh unless KEDGE_BIN names one. Prints the records/s and the
# peak RSS the test measures: both are of the *emulated* binary (RSS includes qemu itself).
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
started=$(date +%s)
KEDGE_BIN="$KEDGE_BIN" KEDGE_RUNNER=$(qemu_for "$target") \
  cargo test --locked -p kedge --test e2e walking_path -- --nocapture --test-threads=1
log "walking path with $target kedge under $(qemu_for "$target"): $(( $(date +%s) - started )) s (including the host test build)"
