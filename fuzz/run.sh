#!/usr/bin/env bash
# Runs every fuzz target for a bounded time with cargo-fuzz and libFuzzer, on stable Rust.
#
#   bash fuzz/run.sh             # 60 s per target
#   FUZZ_SECONDS=10 bash fuzz/run.sh
#
# libFuzzer's coverage instrumentation needs no sanitizer, and `--sanitizer none` builds on
# stable (the crate has no unsafe code for a sanitizer to watch). When the fuzzer cannot be
# installed or built here, this says why and exits 0: the seed corpus still runs as ordinary
# tests (tests/fuzz_corpus.rs). A crash or a failed check exits 1, naming the input.
set -uo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
targets=(parser event_roundtrip)
build_flags=(--sanitizer none --debug-assertions)

skip() {
  echo "fuzz: not run: $*"
  echo "fuzz: the seed corpus is still checked by cargo test (tests/fuzz_corpus.rs)"
  exit 0
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  started=$SECONDS
  cargo install cargo-fuzz --locked || skip "cargo install cargo-fuzz --locked failed"
  echo "fuzz: cargo-fuzz installed in $((SECONDS - started)) s"
fi
cargo fuzz --version

if ! cargo fuzz build "${build_flags[@]}"; then
  echo "fuzz: the stable build failed; retrying with RUSTC_BOOTSTRAP=1 for nightly flags"
  export RUSTC_BOOTSTRAP=1
  cargo fuzz build "${build_flags[@]}" || skip "the fuzz targets do not build with this toolchain"
fi

failed=()
for target in "${targets[@]}"; do
  echo "fuzz: $target for $seconds s"
  mkdir -p "corpus/$target"
  # New inputs go to corpus/ (not committed); seeds/ is read only.
  if ! cargo fuzz run "${build_flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=1024 \
    -print_final_stats=1; then
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}; the inputs are in fuzz/artifacts/<target>/"
  echo "fuzz: add each one to fuzz/seeds/<target>/ once fixed, so cargo test keeps it covered"
  exit 1
fi
echo "fuzz: no failure in ${targets[*]} ($seconds s each)"
