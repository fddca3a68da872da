#!/usr/bin/env bash
# Builds the example plugins into target/plugins/<dir>.wasm:
#   - the Rust ones, members of the plugins/ cargo workspace (cargo decides what to rebuild);
#   - the C ones, directories holding *.c files (rebuilt when a source, the WIT or this script is
#     newer than the component);
#   - with --all, also every plugins/<dir>/build.sh (Python, JavaScript, Go), called as
#     `build.sh target/plugins`.
# Installs missing toolchains first (scripts/install-plugin-toolchains.sh [--all]). CARGO_TARGET_DIR
# defaults to the repository's target/, shared with the agent's build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=$ROOT/.peers
OUT=$ROOT/target/plugins
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

all=()
case "${1:-}" in
    --all) all=(--all) ;;
    "") ;;
    *) echo "usage: $0 [--all]" >&2; exit 2 ;;
esac

start=$SECONDS
"$ROOT/scripts/install-plugin-toolchains.sh" "${all[@]}" >/dev/null
mkdir -p "$OUT"

# Copies $1 to $2 unless identical, so that an unchanged plugin keeps its mtime.
install_if_changed() {
    cmp -s "$1" "$2" || install -m644 "$1" "$2"
}

cargo build --release --target wasm32-wasip2 --manifest-path "$ROOT/plugins/Cargo.toml"
for manifest in "$ROOT"/plugins/*/Cargo.toml; do
    grep -q cdylib "$manifest" || continue
    name=$(basename "$(dirname "$manifest")")
    # The package is named after its directory; cargo writes the library with underscores.
    install_if_changed "$CARGO_TARGET_DIR/wasm32-wasip2/release/${name//-/_}.wasm" "$OUT/$name.wasm"
done

# build_c DIR [WIT NAME]: the C plugin in DIR, against the contract in WIT (default wit/), as
# NAME.wasm (default DIR's name).
build_c() (
    dir=$1
    wit=${2:-$ROOT/wit}
    name=${3:-$(basename "$dir")}
    out=$OUT/$name.wasm
    if [ -f "$out" ] && [ -z "$(find "$dir" "$wit" "${BASH_SOURCE[0]}" -newer "$out" -print -quit)" ]; then
        exit 0
    fi
    echo "build-plugins: $name (C)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # wit-bindgen reports each file it writes; show that only when it fails.
    if ! log=$("$PEERS/bin/wit-bindgen" c --world transform --out-dir "$tmp/gen" "$wit" 2>&1); then
        echo "$log" >&2
        exit 1
    fi
    # --strip-all drops the name section and the debug info of Debian's wasi-libc (46 of c-filter's
    # 63 KB); wasm-ld keeps the component-type section the bindings added.
    clang-16 --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Wall -Wextra -Werror \
        -Wl,--strip-all -I "$tmp/gen" -o "$tmp/core.wasm" \
        "$dir"/*.c "$tmp/gen/transform.c" "$tmp/gen/transform_component_type.o"
    "$PEERS/bin/wasm-tools" component new "$tmp/core.wasm" \
        --adapt "wasi_snapshot_preview1=$PEERS/wasi_snapshot_preview1.reactor.wasm" -o "$tmp/$name.wasm"
    mv "$tmp/$name.wasm" "$out"
)
for dir in "$ROOT"/plugins/*/; do
    if compgen -G "$dir*.c" >/dev/null; then
        build_c "${dir%/}"
    fi
done
# The same C plugin built against the previous contract, kedge:transform@0.1.0, which kedge
# keeps running: the tests hold it to the same results as the current build.
build_c "$ROOT/plugins/c-filter" "$ROOT/wit/v0.1" c-filter-v0.1

if [ ${#all[@]} -gt 0 ]; then
    for script in "$ROOT"/plugins/*/build.sh; do
        if [ -x "$script" ]; then
            "$script" "$OUT"
        fi
    done
fi

echo "build-plugins: components in ${OUT#"$ROOT"/} ($((SECONDS - start)) s):"
for f in "$OUT"/*.wasm; do
    printf '  %-24s %9d bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"
done
