#!/usr/bin/env bash
# A release tarball for a target: cross/dist/kedge-<version>-<target>.tar.gz and its .sha256.
#
#   cross/package.sh aarch64-unknown-linux-musl
#
# Builds with cross/build.sh (profile `device` unless PROFILE is set), then packs
#   kedge-<version>-<target>/{kedge, kedge.service, kedge.toml, install.sh, README.md}
# Untar it on the device and run ./install.sh as root.
set -euo pipefail
target=${1:?usage: cross/package.sh TARGET}
here=$(cd "$(dirname "$0")" && pwd)
"$here/build.sh" "$target"
# shellcheck source=cross/env.sh
. "$here/env.sh"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$KEDGE_ROOT/Cargo.toml")
name="kedge-$version-$target"
dist="$here/dist"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name" "$dist"
install -m 0755 "$(kedge_out "$target")" "$stage/$name/kedge"
install -m 0644 "$here/kedge.service" "$KEDGE_ROOT/config/kedge.toml" "$here/README.md" "$stage/$name/"
install -m 0755 "$here/install.sh" "$stage/$name/"
# Reproducible-ish: fixed owner, order and mtime (the last commit's).
mtime=$(git -C "$KEDGE_ROOT" log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$mtime" \
  -C "$stage" -czf "$dist/$name.tar.gz" "$name"
(cd "$dist" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
ls -l "$dist/$name.tar.gz"
cat "$dist/$name.tar.gz.sha256"
