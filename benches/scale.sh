#!/usr/bin/env bash
# Runs the scale benchmark (benches/scale/main.rs) with the open-files soft limit raised to the hard
# one, which the servers and clients it starts inherit. Sizes come from the SCALE_* variables
# described at the top of benches/scale/main.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
exec cargo bench --bench scale
