#!/usr/bin/env bash
# Builds the C greylist example into target/examples/greylist-c.wasm.
#
# Toolchain, installed here when missing (registries only):
#   - Debian packages clang, lld, wasi-libc, libclang-rt-14-dev-wasm32 (apt-get)
#   - wit-bindgen-cli (crates.io) into target/toolchains/wit-bindgen
#   - rustc's wasm-component-ld (ships with the Rust toolchain; nothing to install)
#
# Pipeline: wit-bindgen c (bindings into target/examples/c-bindings) -> clang for wasm32-wasi
# (preview1, reactor: no main) -> wasm-component-ld, which runs wasm-ld, then turns the core
# module into a component using the world embedded by plugin_component_type.o and the WASI
# preview1 -> preview2 reactor adapter it carries.
set -euo pipefail

start=$(date +%s.%N)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

WIT_BINDGEN_VERSION="0.46.0"   # the version plugins/sdk uses (same wit-component encoding)
APT_PACKAGES=(clang lld wasi-libc libclang-rt-14-dev-wasm32)

tools="$repo/target/toolchains/wit-bindgen"
bindings="$repo/target/examples/c-bindings"
objdir="$repo/target/examples/c-obj"
out="$repo/target/examples/greylist-c.wasm"

# --- Debian packages --------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    apt_get=(apt-get)
    [ "$(id -u)" -eq 0 ] || apt_get=(sudo apt-get)
    "${apt_get[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq "${missing[@]}"
fi

# --- wit-bindgen-cli --------------------------------------------------------------------
wit_bindgen="$tools/bin/wit-bindgen"
if ! [ -x "$wit_bindgen" ] || ! "$wit_bindgen" --version | grep -qF " $WIT_BINDGEN_VERSION"; then
    echo "installing wit-bindgen-cli $WIT_BINDGEN_VERSION into $tools"
    # CARGO_BUILD_JOBS=1 in the environment keeps it to one job on a busy machine.
    # Only the C generator: the default features build seven languages we do not use.
    # --debug: an optimised build took 9 minutes of a cold CI run, for a tool that runs for
    # milliseconds once per build.
    cargo install wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --locked --root "$tools" \
      --no-default-features --features c --debug
fi

# --- wasm-component-ld from the Rust toolchain ---------------------------------------
component_ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld"
[ -x "$component_ld" ] || { echo "error: $component_ld not found (needs Rust >= 1.82)" >&2; exit 1; }
wasm_ld="$(command -v wasm-ld)" || { echo "error: wasm-ld not found (Debian package lld)" >&2; exit 1; }

# --- bindings ----------------------------------------------------------------------------
# Regenerated every time (it takes milliseconds), so a WIT change can never leave stale
# bindings behind. The folder is under target/, which git ignores.
rm -rf "$bindings"
mkdir -p "$bindings" "$objdir" "$(dirname "$out")"
if ! gen_log=$("$wit_bindgen" c "$repo/wit" --world plugin --out-dir "$bindings" 2>&1); then
    echo "$gen_log" >&2
    exit 1
fi

# --- compile -----------------------------------------------------------------------------
cflags=(--target=wasm32-wasi -O2 -std=c11
        -Wall -Wextra -Werror -Wno-unused-parameter -I "$bindings")
clang "${cflags[@]}" -c "$here/greylist.c" -o "$objdir/greylist.o"
# The generated code is not ours to warn about; only errors matter there.
clang --target=wasm32-wasi -O2 -std=c11 -w -I "$bindings" \
    -c "$bindings/plugin.c" -o "$objdir/plugin.o"

# --- link into a component ---------------------------------------------------------------
# clang drives the link (crt1-reactor.o, -lc, compiler-rt builtins, --entry _initialize);
# -fuse-ld swaps wasm-ld for wasm-component-ld, which calls wasm-ld itself.
clang --target=wasm32-wasi -mexec-model=reactor -O2 -fuse-ld="$component_ld" \
    -Wl,--wasm-ld-path="$wasm_ld" -Wl,--wasi-adapter=reactor -Wl,--strip-all \
    "$objdir/greylist.o" "$objdir/plugin.o" "$bindings/plugin_component_type.o" \
    -o "$out"

end=$(date +%s.%N)
size=$(stat -c %s "$out")
awk -v f="${out#"$repo"/}" -v n="$size" -v a="$start" -v b="$end" \
    'BEGIN { printf "%s: %d bytes (%.1f KiB), built in %.1f s\n", f, n, n / 1024, b - a }'
