#!/usr/bin/env bash
# Installs kedge on a device (run as root there), or into a staging dir for packaging/testing:
#
#   ./install.sh [--prefix /usr/local] [--destdir DIR] [--bin PATH] [--no-systemctl]
#
# It installs
#   $DESTDIR$PREFIX/bin/kedge                     the binary (default: ./kedge next to this script)
#   $DESTDIR/etc/systemd/system/kedge.service     the unit (ExecStart adjusted to $PREFIX)
#   $DESTDIR/etc/kedge/kedge.toml                 the default config, ONLY if none exists there
# and checks the config with the installed binary when it can run it. With an empty DESTDIR and
# systemctl present, it runs `systemctl daemon-reload` and says how to start kedge; it never
# starts or restarts the service itself. DESTDIR can also come from the environment.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
destdir=${DESTDIR:-}
bin=""
systemctl=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --bin) bin=$2; shift 2 ;;
    --bin=*) bin=${1#*=}; shift ;;
    --no-systemctl) systemctl=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# In a package the files sit next to this script; in the source tree they are elsewhere.
if [ -z "$bin" ]; then bin="$here/kedge"; fi
unit="$here/kedge.service"
config="$here/kedge.toml"
[ -f "$config" ] || config="$here/../config/kedge.toml"
for f in "$bin" "$unit" "$config"; do
  [ -f "$f" ] || { echo "install.sh: missing $f (use --bin PATH for the binary)" >&2; exit 1; }
done

install -d -m 0755 "$destdir$prefix/bin" "$destdir/etc/systemd/system" "$destdir/etc/kedge"
install -m 0755 "$bin" "$destdir$prefix/bin/kedge"
sed "s#/usr/local/bin/kedge#$prefix/bin/kedge#g" "$unit" >"$destdir/etc/systemd/system/kedge.service"
chmod 0644 "$destdir/etc/systemd/system/kedge.service"
echo "installed $destdir$prefix/bin/kedge and $destdir/etc/systemd/system/kedge.service"

# Never overwrite an existing config: it holds the device's settings (and maybe secrets).
if [ -e "$destdir/etc/kedge/kedge.toml" ]; then
  install -m 0644 "$config" "$destdir/etc/kedge/kedge.toml.default"
  echo "kept existing $destdir/etc/kedge/kedge.toml (new default: kedge.toml.default)"
else
  install -m 0644 "$config" "$destdir/etc/kedge/kedge.toml"
  echo "installed $destdir/etc/kedge/kedge.toml: edit mqtt and kafka, then check it"
fi

# Check the config if the binary runs here (it does not, e.g., when staging an ARM build on x86).
if "$destdir$prefix/bin/kedge" --version >/dev/null 2>&1; then
  "$destdir$prefix/bin/kedge" check --config "$destdir/etc/kedge/kedge.toml" >/dev/null \
    && echo "kedge check: $destdir/etc/kedge/kedge.toml is valid" \
    || echo "kedge check: $destdir/etc/kedge/kedge.toml has a problem (see above)" >&2
fi

if [ -z "$destdir" ] && [ "$systemctl" = 1 ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  echo "next: systemctl enable --now kedge && journalctl -u kedge -f"
fi
