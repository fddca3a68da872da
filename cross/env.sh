# Sourced by the cross/ scripts: installs, idempotently and project-locally, what an ARM build
# from an x86_64 Debian machine needs, and exports the paths the scripts use.
#   - zig (PyPI `ziglang`, in a venv under cross/.tools/venv) as the C compiler and linker
#   - cargo-zigbuild (crates.io, `cargo install --locked` into cross/.tools/cargo)
#   - the Rust target (or rust-src for -Zbuild-std when rustup has no rust-std for it)
#   - qemu-user-static (Debian apt) to run the ARM binaries here
# Nothing is installed system-wide except the apt package.
set -euo pipefail

KEDGE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CROSS_TOOLS="$KEDGE_ROOT/cross/.tools"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KEDGE_ROOT/target}"
# The size-tuned profile for devices (workspace Cargo.toml); PROFILE=release to compare.
KEDGE_PROFILE="${PROFILE:-device}"

log() { echo "cross: $*" >&2; }

# qemu user-mode emulator for a target triple.
qemu_for() {
  case "$1" in
    aarch64-*) echo qemu-aarch64-static ;;
    armv7-*|arm-*) echo qemu-arm-static ;;
    *) log "no qemu for $1"; return 1 ;;
  esac
}

ensure_qemu() {
  if ! command -v qemu-aarch64-static >/dev/null 2>&1 || ! command -v qemu-arm-static >/dev/null 2>&1; then
    log "apt-get install qemu-user-static"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-user-static >/dev/null
  fi
  command -v file >/dev/null 2>&1 || {
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq file >/dev/null
  }
}

ensure_zig() {
  local venv="$CROSS_TOOLS/venv"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    mkdir -p "$CROSS_TOOLS"
    python3 -m venv "$venv"
  fi
  # Pinned: zig's libc, malloc included, is linked into the device binaries, so a new zig is a
  # change to measure. 0.15 links musl's malloc; 0.17 links zig's own, under which kedge's memory
  # grew with the size of the backlog it drained, and whose calloc writes every page
  # (bench/README.md, "The device build's allocator").
  local version=0.15.2
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('ziglang') != '$version')" >/dev/null 2>&1; then
    log "pip install ziglang==$version (into $venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check "ziglang==$version"
  fi
  local zig
  zig=$("$venv/bin/python" -c 'import ziglang,os;print(os.path.join(os.path.dirname(ziglang.__file__),"zig"))')
  # cargo-zigbuild takes zig from here (or `python3 -m ziglang`, which the venv's PATH gives).
  export CARGO_ZIGBUILD_ZIG_PATH="$zig"
  export PATH="$venv/bin:$PATH"
}

ensure_zigbuild() {
  export PATH="$CROSS_TOOLS/cargo/bin:$PATH"
  if ! command -v cargo-zigbuild >/dev/null 2>&1; then
    log "cargo install cargo-zigbuild (into $CROSS_TOOLS/cargo, ~2 min)"
    cargo install -q cargo-zigbuild --locked --root "$CROSS_TOOLS/cargo"
  fi
}

# Sets BUILD_STD=1 when rustup has no prebuilt standard library for the target (armv7 musl here:
# its download 404s), so that it is built from rust-src with -Zbuild-std.
ensure_target() {
  local target=$1
  BUILD_STD=0
  if rustup target list --installed | grep -qx "$target"; then return; fi
  if rustup target add "$target" >/dev/null 2>&1; then return; fi
  log "no rust-std download for $target: building std from rust-src (-Zbuild-std)"
  rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
  BUILD_STD=1
}

ensure_all() {
  ensure_qemu
  ensure_zig
  ensure_zigbuild
  ensure_target "$1"
}

# A KEDGE_BIN given by the caller is relative to the caller's directory, but the e2e tests start
# kedge in temp dirs, where qemu (which opens the binary itself) would not find it.
if [ -n "${KEDGE_BIN:-}" ]; then KEDGE_BIN=$(realpath -- "$KEDGE_BIN"); fi

# Path of the kedge binary built for a target with KEDGE_PROFILE.
kedge_out() { echo "$CARGO_TARGET_DIR/$1/$KEDGE_PROFILE/kedge"; }
# Sets KEDGE_BIN to the device kedge for target $1: as given, or built with cross/build.sh.
ensure_device_bin() {
  if [ -z "${KEDGE_BIN:-}" ]; then
    "$KEDGE_ROOT/cross/build.sh" "$1"
    KEDGE_BIN=$(kedge_out "$1")
  fi
  [ -f "$KEDGE_BIN" ] || { log "KEDGE_BIN: no file $KEDGE_BIN"; exit 1; }
}
