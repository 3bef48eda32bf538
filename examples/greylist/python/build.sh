#!/usr/bin/env bash
# Builds the Python greylist example into target/examples/greylist-python.wasm.
#
#   examples/greylist/python/build.sh            # toolchain if missing, then the component
#   examples/greylist/python/build.sh --stubs    # also write typed stubs to ./stubs (editor hints)
#   examples/greylist/python/build.sh --test     # also run test_app.py on the native Python
#
# The toolchain is componentize-py from PyPI, pinned below, installed into a venv under
# target/toolchains/python the first time. componentize-py generates the `wit_world` bindings
# from wit/ itself on every build, so nothing generated lives in this folder unless --stubs
# asks for it (and ./stubs is gitignored).
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
venv="$root/target/toolchains/python"
out="$root/target/examples/greylist-python.wasm"
stubs=""
test=""

while [ $# -gt 0 ]; do
    case "$1" in
        --stubs) stubs="$here/stubs" ;;
        --stubs=*) stubs="${1#--stubs=}" ;;
        --test) test=1 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

case "$stubs" in ""|/*) ;; *) stubs="$PWD/$stubs" ;; esac

start=$(date +%s.%N)

# --- toolchain (idempotent: one `--version` call when it is already there) ------------------
cpy="$venv/bin/componentize-py"
if [ "$("$cpy" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    echo "installing componentize-py $COMPONENTIZE_PY_VERSION into ${venv#"$root"/}"
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# componentize-py adds $VIRTUAL_ENV's site-packages to the component's Python path; the
# author's own venv (if one is active) has nothing the plugin needs.
unset VIRTUAL_ENV

# --- typed stubs for editors and the native tests --------------------------------------------
if [ -n "$test" ] && [ -z "$stubs" ]; then
    stubs="$here/stubs"
fi
if [ -n "$stubs" ]; then
    # Only what `bindings` writes is replaced: --stubs=DIR may name a folder with other files.
    rm -rf "$stubs/wit_world"
    "$cpy" -d "$root/wit" -w plugin bindings "$stubs" >/dev/null
    echo "stubs: ${stubs#"$root"/} (wit_world package, componentize_py_types)"
fi
if [ -n "$test" ]; then
    (cd "$here" && PYTHONPATH="$stubs" "${PYTHON:-python3}" -m unittest -q test_app)
fi

# --- the component ----------------------------------------------------------------------------
# Only app.py goes in: a staging folder keeps tests and stubs out of the component.
stage="$root/target/examples/greylist-python.src"
rm -rf "$stage"
mkdir -p "$stage"
cp "$here/app.py" "$stage/"
# Written next to the target and renamed, so a server watching the file never reads half of it.
"$cpy" --quiet -d "$root/wit" -w plugin componentize app -p "$stage" -o "$out.tmp"
mv -f "$out.tmp" "$out"

end=$(date +%s.%N)
size=$(stat -c %s "$out")
awk -v f="${out#"$root"/}" -v n="$size" -v t="$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" \
    'BEGIN { printf "%s: %d bytes (%.1f MiB), built in %.1f s\n", f, n, n / 1048576, t }'
