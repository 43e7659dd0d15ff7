#!/usr/bin/env bash
# Builds the docs the way docs.rs does (every feature, `--cfg docsrs`, warnings denied) and checks
# that feature-gated items carry their feature's label.
#
# docs.rs uses nightly rustdoc for `#![feature(doc_cfg)]`; CI has only stable, so
# RUSTC_BOOTSTRAP=1 lets stable rustdoc accept the feature gate. That is as close to docs.rs as
# stable gets: same flags and features, a stable rather than a nightly rustdoc.
set -euo pipefail
cd "$(dirname "$0")/.."

RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS="--cfg docsrs -D warnings" cargo doc --all-features --no-deps

doc="${CARGO_TARGET_DIR:-target}/doc/tower_sse"
# The axum glue (IntoResponse for SseBody, which is a FramedBody) and `Event::json_data` must say
# which feature they need.
for check in "struct.FramedBody.html:axum" "struct.Event.html:json"; do
  page="$doc/${check%%:*}"
  feature="${check##*:}"
  if ! grep -q "Available on <strong>crate feature <code>$feature</code>" "$page"; then
    echo "docs: $page does not label the items of feature \`$feature\`" >&2
    exit 1
  fi
done
echo "docs: built as docs.rs does; feature-gated items are labelled"
