#!/usr/bin/env bash
# The Python half of the interop suite: the official `openai` and `anthropic` packages from
# PyPI (pinned in requirements.txt) against both examples, with pytest.
#
#   bash interop/python/run.sh [pytest args]
#
# Builds the examples unless EXAMPLES_DIR points at built ones (interop/run.sh sets it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

bash "$here/setup.sh"
if [ -z "${EXAMPLES_DIR:-}" ]; then
  (cd "$root" && cargo build --all-features --example gpt_stream_axum --example gpt_stream_hyper)
  export EXAMPLES_DIR="${CARGO_TARGET_DIR:-$root/target}/debug/examples"
fi
cd "$here"
exec "$here/../.venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
