#!/usr/bin/env bash
# The interop suite: the examples against clients we did not write,
# @microsoft/fetch-event-source under Node and the example page in headless Chromium, the
# official OpenAI and Anthropic SDKs (npm and PyPI) on the /v1 routes, and /api/chat and
# /stream/... against the `ollama`, `ndjson` and `json-text-sequence` packages.
#
#   bash interop/run.sh
#
# Needs Node 20+, npm, python3 and cargo. Installs Chromium with apt-get when /usr/bin/chromium is
# missing and this runs in CI or as root; set CHROMIUM to use another binary.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd .. && pwd)"

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  elif [ "${CI:-}" = true ] && command -v sudo >/dev/null; then
    sudo apt-get update
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    echo "interop: $chromium is missing: install Chromium (apt-get install chromium) or set CHROMIUM" >&2
    exit 1
  fi
fi

npm ci --no-audit --no-fund

# Build the examples once; the tests start the binaries on free ports.
(cd "$root" && cargo build --all-features --example gpt_stream_axum --example gpt_stream_hyper)
export EXAMPLES_DIR="${CARGO_TARGET_DIR:-$root/target}/debug/examples"

# One file at a time, so that the timing checks do not compete with each other for the CPU.
node --test --test-concurrency=1 test/*.test.js

# The official Python SDKs (openai, anthropic) against the /v1 routes, in a pinned venv.
bash python/run.sh
