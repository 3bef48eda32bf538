#!/usr/bin/env bash
# Builds the JavaScript greylist example into <repo>/target/examples/greylist-javascript.wasm.
#
#   examples/greylist/javascript/build.sh        (from any directory)
#
# Needs Node.js >= 18 and npm. The toolchain (componentize-js, with the StarlingMonkey engine
# and Wizer) is installed by `npm ci` from package-lock.json the first time; later runs skip it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="$repo/target/examples/greylist-javascript.wasm"
start=$(date +%s.%N)

command -v node >/dev/null || { echo "build.sh: node is required (Node.js >= 18)" >&2; exit 1; }
command -v npm >/dev/null || { echo "build.sh: npm is required" >&2; exit 1; }

cd "$here"
# `npm ci` installs exactly the locked versions; skip it when they are already installed
# (npm writes node_modules/.package-lock.json on every install, newer than package-lock.json).
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "build.sh: installing the toolchain (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
fi

mkdir -p "$(dirname "$out")"
# Run from this folder: componentize-js maps the current directory into the build sandbox, so
# `greylist.js` can import `./corvid.js`.
#
# `-d` removes WASI features the plugin does not use, and the imports that come with them:
#   http, fetch-event  the host links no wasi:http (a component importing it would not load);
#   stdio              console.log would go to the host's empty stdout anyway: use `log`;
#   random             Math.random/crypto.getRandomValues are not needed here;
#   clocks             Date.now()/setTimeout: the plugin uses the host's `clock.nowMs()`.
# A plugin that needs one of them can drop it from the list; the host's WASI context provides
# clocks, random and (discarded) stdio.
npx --no-install componentize-js greylist.js \
    --wit "$repo/wit" --world-name plugin \
    -d http fetch-event stdio random clocks \
    -o "$out"

end=$(date +%s.%N)
size=$(stat -c %s "$out")
awk -v f="${out#"$repo"/}" -v s="$size" -v a="$start" -v b="$end" \
    'BEGIN { printf "built %s: %d bytes (%.1f MiB) in %.1f s\n", f, s, s / 1048576, b - a }'
