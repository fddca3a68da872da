#!/usr/bin/env bash
# Builds tansu 0.6.0 with its persistent (sqlite/libsql) storage engine once and caches it outside
# the repository, for the tests that restart a broker with its data and for SASL logins against
# stored users. The build takes 35-70 minutes on a 2-core machine, so CI does not run it: tests
# that need it skip loudly when KEDGE_TANSU_SQLITE is unset (scripts/test sets it when the cached
# binary exists).
#
#   scripts/build-tansu-sqlite.sh          build if absent; print the binary's path
#   scripts/build-tansu-sqlite.sh --path   print the path only (exit 1 when not built)
set -euo pipefail
version=0.6.0
cache=${KEDGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kedge}
root="$cache/tansu-$version-libsql"
bin="$root/bin/tansu"
if [ "${1:-}" = "--path" ]; then
  [ -x "$bin" ] && echo "$bin" && exit 0
  exit 1
fi
if [ ! -x "$bin" ]; then
  echo "build-tansu-sqlite: cargo install tansu $version --features dynostore,libsql into $root (35-70 min) ..." >&2
  started=$(date +%s)
  # Its own target directory: nothing in it is shared with kedge's build.
  CARGO_TARGET_DIR="$cache/tansu-build-target" nice -n 19 \
    cargo install --locked tansu --version "$version" --features dynostore,libsql --root "$root" >&2
  rm -rf "$cache/tansu-build-target"
  echo "build-tansu-sqlite: built in $(( $(date +%s) - started )) s" >&2
fi
"$bin" --version >&2
echo "$bin"
