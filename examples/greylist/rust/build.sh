#!/usr/bin/env bash
# Builds the Rust example into target/examples/greylist-rust.wasm (run from anywhere).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="$repo/target/examples"
mkdir -p "$out"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
start=$(date +%s%N)
# The plugins' shared target dir: the SDK and wit-bindgen are built once for all of them.
cargo build --quiet --manifest-path "$here/Cargo.toml" --target wasm32-wasip2 --release \
  --target-dir "$repo/target/plugins"
cp "$repo/target/plugins/wasm32-wasip2/release/greylist.wasm" "$out/greylist-rust.wasm"
ms=$((($(date +%s%N) - start) / 1000000))
echo "built $out/greylist-rust.wasm ($(stat -c %s "$out/greylist-rust.wasm") bytes) in ${ms} ms"
