#!/usr/bin/env bash
# Fuzzes the REST body decoder (fuzz/fuzz_targets/rest_body.rs: JSON, the binary tensor extension's framing and
# Triton's raw request) with cargo-fuzz (libFuzzer, AddressSanitizer). Needs a nightly toolchain; cargo-fuzz is
# installed from crates.io when missing. FUZZ_SECONDS (default 60) bounds the run. Not part of CI: a finding is a
# crash file under fuzz/artifacts/, to be turned into a unit test in gateway/src/routes/json/tests.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup toolchain list | grep -q '^nightly' || { echo "needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
seconds=${FUZZ_SECONDS:-60}
# A copy of the seed corpus, so the run's findings do not churn the committed seeds.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp fuzz/corpus/rest_body/* "$work/"
cargo +nightly fuzz run --fuzz-dir fuzz rest_body "$work" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -n 15
