#!/usr/bin/env bash
# Creates the Python venv of the interop suite at interop/.venv with the pinned official SDKs
# (requirements.txt). Idempotent: reinstalls only when requirements.txt changed.
#
#   bash interop/python/setup.sh
#
# Needs python3 with the venv module (Debian: apt-get install python3-venv, which this script
# installs itself when it runs as root).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../.venv"

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
  else
    echo "interop/python: python3 with venv is missing (apt-get install python3-venv)" >&2
    exit 1
  fi
fi

stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$here/requirements.txt" "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cp "$here/requirements.txt" "$stamp"
