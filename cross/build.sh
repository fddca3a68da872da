#!/usr/bin/env bash
# Static, stripped kedge for an ARM board, built on this x86_64 machine with zig as the linker.
#
#   cross/build.sh aarch64-unknown-linux-musl        # Raspberry Pi 3/4/5 with a 64-bit OS
#   cross/build.sh armv7-unknown-linux-musleabihf    # 32-bit Raspberry Pi OS, other ARMv7 boards
#
# Output: $CARGO_TARGET_DIR/<target>/<profile>/kedge (default target/, profile `device`;
# PROFILE=release for the CI profile). Installs its tools first (cross/env.sh), then checks the
# binary: `file` must say statically linked, and `--version` and `check` must run under qemu.
# Extra arguments make a second cargo build with them (e.g. `-p kedge-bench`: the queue benchmark).
set -euo pipefail
target=${1:?usage: cross/build.sh TARGET [cargo args...]}
shift
# shellcheck source=cross/env.sh
. "$(dirname "$0")/env.sh"
cd "$KEDGE_ROOT"
ensure_all "$target"

# Device builds leave out the Cranelift compiler (the `compiler` feature): they run plugins
# compiled ahead of time with `kedge plugin compile --target TARGET` on a build machine, and
# stay within the 12 MiB budget. KEDGE_COMPILER=1 keeps it (aarch64 only: Cranelift has no
# 32-bit ARM backend, so armv7 always runs Pulley bytecode).
# Without Cranelift unless asked; with kedge's own lowering of plugin events (the default's).
features=(--no-default-features --features hand-lowering)
if [ "${KEDGE_COMPILER:-0}" = 1 ]; then features=(); fi

started=$(date +%s)
if [ "$BUILD_STD" = 1 ]; then
  # No prebuilt std for this target: build it (stable toolchain, hence RUSTC_BOOTSTRAP), and let
  # zig supply musl's crt objects instead of rustc's self-contained ones (which come with the
  # missing rust-std). `cargo-zigbuild rustc` takes one binary at a time.
  RUSTC_BOOTSTRAP=1 cargo-zigbuild rustc --locked --profile "$KEDGE_PROFILE" --target "$target" \
    -Zbuild-std=std,panic_abort "${features[@]}" -p kedge --bin kedge -- -C link-self-contained=no
  if [ "$*" = "-p kedge-bench" ]; then
    RUSTC_BOOTSTRAP=1 cargo-zigbuild rustc --locked --profile "$KEDGE_PROFILE" --target "$target" \
      -Zbuild-std=std,panic_abort -p kedge-bench --bin queue-bench -- -C link-self-contained=no
  elif [ $# -gt 0 ]; then
    log "with -Zbuild-std only '-p kedge-bench' is supported as extra arguments, not: $*"
    exit 2
  fi
else
  cargo-zigbuild build --locked --profile "$KEDGE_PROFILE" --target "$target" "${features[@]}" -p kedge --bin kedge
  if [ $# -gt 0 ]; then
    cargo-zigbuild build --locked --profile "$KEDGE_PROFILE" --target "$target" "$@"
  fi
fi
bin=$(kedge_out "$target")
log "built $bin in $(( $(date +%s) - started )) s"

info=$(file -b "$bin")
echo "$info"
case "$info" in
  *"statically linked"*|*"static-pie linked"*) ;;
  *) log "FAIL: $bin is not statically linked"; exit 1 ;;
esac
# The profiles set strip = "symbols".
case "$info" in *", stripped"*) ;; *) log "FAIL: $bin is not stripped"; exit 1 ;; esac
size=$(stat -c %s "$bin")
awk -v t="$target" -v p="$KEDGE_PROFILE" -v s="$size" 'BEGIN { printf "cross: %s (%s): %d bytes (%.2f MiB)\n", t, p, s, s / 1048576 }'
budget=$((12 * 1024 * 1024))
[ "$size" -le "$budget" ] || { log "FAIL: over the 12 MiB budget"; exit 1; }

qemu=$(qemu_for "$target")
"$qemu" "$bin" --version
"$qemu" "$bin" check --config config/kedge.toml >/dev/null
log "$qemu: --version and check --config config/kedge.toml ok"
