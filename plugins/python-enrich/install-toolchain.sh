#!/usr/bin/env bash
# Installs what python-enrich needs: componentize-py (PyPI) in .peers/plugin-venv.
# Idempotent: does nothing when the pinned version is already there.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/.peers/plugin-venv
PYTHON=${PYTHON:-python3}

installed=$("$VENV/bin/componentize-py" --version 2>/dev/null || true)
if [ "$installed" = "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    exit 0
fi

mkdir -p "$ROOT/.peers"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
echo "python-enrich: componentize-py $COMPONENTIZE_PY_VERSION installed in $VENV"
