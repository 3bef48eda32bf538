#!/usr/bin/env bash
# Builds the example policy in the languages given (default: all four) into
# target/examples/greylist-<language>.wasm. Each language's build.sh installs its toolchain
# when it is missing (registries only) and prints the component's size and build time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(rust python javascript c)
for lang in "${langs[@]}"; do
  script="$here/greylist/$lang/build.sh"
  [ -x "$script" ] || { echo "examples/build.sh: no example for $lang" >&2; exit 2; }
  echo "== greylist ($lang)"
  "$script"
done
