#!/usr/bin/env bash
# The ollama interop suite: the official `ollama` Python client and the `jsonlines` reader
# against both examples' POST /api/chat and POST /stream/... routes.
#
#   bash interop/ollama/run.sh
#
# Needs python3 (with venv; installed with apt-get when missing and run as root) and cargo.
# Creates interop/ollama/.venv and installs the pinned requirements into it. The npm side
# (interop/test/ollama.test.js) runs with the rest of interop/run.sh.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv; then
    rm -rf .venv
    if [ "$(id -u)" = 0 ]; then
      apt-get update
      DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
      python3 -m venv .venv
    else
      echo "interop/ollama: python3 -m venv failed: install python3-venv" >&2
      exit 1
    fi
  fi
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt

(cd "$root" && cargo build --all-features --example gpt_stream_axum --example gpt_stream_hyper)
export EXAMPLES_DIR="${CARGO_TARGET_DIR:-$root/target}/debug/examples"

.venv/bin/python -m pytest -q -p no:cacheprovider .
