#!/usr/bin/env bash
# Instruction counts per operation of the hot paths (benches/callgrind.rs) under valgrind's
# callgrind, checked against benches/callgrind/baseline.txt.
#
#   bash benches/callgrind/run.sh            # fails if a case costs more than the tolerance over its baseline
#   bash benches/callgrind/run.sh --update   # rewrites the baseline (commit it, saying why)
#
# Each case runs twice, with N and 2N iterations, counting only inside `measured`; the
# difference divided by the operations in between is the count per operation, free of start-up
# and warm-up. Counts depend on the binary (rustc version, crate code) and on the CPU features
# glibc picks its string functions by, not on load: the same binary on the same machine gives
# the same numbers. CALLGRIND_TOLERANCE (percent, default 5) and CALLGRIND_ITERATIONS (N,
# default 1000) change the defaults.
set -euo pipefail
cd "$(dirname "$0")/../.."

baseline=benches/callgrind/baseline.txt
tolerance=${CALLGRIND_TOLERANCE:-5}
iterations=${CALLGRIND_ITERATIONS:-1000}
update=false
case "${1:-}" in
  --update) update=true ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

if ! command -v valgrind >/dev/null; then
  echo "valgrind is not installed (Debian: apt-get install -y valgrind)" >&2
  exit 1
fi

exe=$(cargo bench --all-features --bench callgrind --no-run --message-format=json \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
  echo "could not find the callgrind bench program" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Instructions counted inside `measured` for one case and iteration count.
count() {
  local out="$work/$1.$2"
  valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
    --toggle-collect='callgrind::measured' "$exe" "$1" "$2" >/dev/null 2>"$out.log" || {
    cat "$out.log" >&2
    echo "callgrind failed on $1" >&2
    exit 1
  }
  sed -n 's/^summary: *//p' "$out"
}

toolchain="$(rustc --version | cut -d' ' -f1-2), $(valgrind --version)"
measured="$work/measured.txt"
while read -r name operations; do
  one=$(count "$name" "$iterations")
  two=$(count "$name" "$((2 * iterations))")
  echo "$name $(( (two - one + iterations * operations / 2) / (iterations * operations) ))" >>"$measured"
done < <("$exe" --list)

# The same work through axum's Sse, in instructions: a ratio no load can move.
ratio() {
  awk -v ours="$1" -v theirs="$2" '$1 == ours { a = $2 } $1 == theirs { b = $2 }
    END { if (a > 0) printf "%.2fx", b / a }' "$measured"
}
echo "axum's Sse / tower-sse, instructions per event through the body:" \
  "token $(ratio body_token axum_body_token), tiny $(ratio body_tiny axum_body_tiny)"

if $update; then
  {
    echo "# Instructions per operation (callgrind Ir) of benches/callgrind.rs, taken with $toolchain."
    echo "# Regenerate with: bash benches/callgrind/run.sh --update (and say why in the commit)."
    cat "$measured"
  } >"$baseline"
  echo "updated $baseline:"
  cat "$measured"
  exit 0
fi

if [ ! -f "$baseline" ]; then
  echo "no baseline at $baseline: run with --update" >&2
  exit 1
fi
taken_with=$(sed -n 's/^# .*taken with \(.*\)\.$/\1/p' "$baseline")
strict=true
if [ "$taken_with" != "$toolchain" ]; then
  echo "note: the baseline was taken with $taken_with, this is $toolchain;"
  echo "      counts are compared but do not fail the check: re-baseline with --update."
  strict=false
fi

failed=0
printf '%-14s %10s %10s %8s\n' case baseline now change
while read -r name now; do
  base=$(awk -v n="$name" '$1 == n { print $2 }' "$baseline")
  if [ -z "$base" ]; then
    printf '%-14s %10s %10s %8s  no baseline: run with --update\n' "$name" - "$now" -
    failed=1
    continue
  fi
  change=$(awk -v a="$base" -v b="$now" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }')
  verdict=""
  if awk -v a="$base" -v b="$now" -v t="$tolerance" 'BEGIN { exit !(b > a * (1 + t / 100)) }'; then
    verdict="  slower than the baseline by more than $tolerance %"
    failed=1
  elif awk -v a="$base" -v b="$now" -v t="$tolerance" 'BEGIN { exit !(b < a * (1 - t / 100)) }'; then
    verdict="  faster: consider --update"
  fi
  printf '%-14s %10s %10s %8s%s\n' "$name" "$base" "$now" "$change" "$verdict"
done <"$measured"

if [ "$failed" -ne 0 ]; then
  if $strict; then
    echo "instruction counts regressed (tolerance $tolerance %)" >&2
    exit 1
  fi
  echo "(not failing: other toolchain)"
fi
