#!/usr/bin/env bash
# Short fuzzing smoke run of the codec on stable Rust: smoke.sh [SECONDS] (default 30).
# Installs cargo-fuzz when missing. RUSTC_BOOTSTRAP=1 lets stable rustc take the nightly flags
# that cargo-fuzz passes.
set -euo pipefail

seconds="${1:-30}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p corpus/codec
RUSTC_BOOTSTRAP=1 cargo fuzz run codec corpus/codec -- -max_total_time="$seconds"
