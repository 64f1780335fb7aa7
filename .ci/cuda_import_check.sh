#!/usr/bin/env bash
# A CUDA build made with the pip toolkit (tools/cuda_env.sh) must import without LD_LIBRARY_PATH:
# from its build tree (absolute RPATH to the nvidia wheels' lib folder) and installed into a
# site-packages layout beside those wheels (RPATH relative to $ORIGIN; cmake/packaging.cmake).
# On a machine without a GPU it must then refuse backend="cuda" with BackendUnavailableError and
# run backend="auto" on the CPU; the C library must load the same way.
#
#   .ci/cuda_import_check.sh BUILD_DIR     (configured with -DFFNSKIP_CUDA=ON)
set -euo pipefail
cd "$(dirname "$0")/.."
build="$1"
ninja -C "$build" -j2 _core ffnskip
unset LD_LIBRARY_PATH

purelib="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
site="$scratch/site-packages"
mkdir -p "$site"
cp -r python/ffnskip_native "$site/"
cmake --install "$build" --prefix "$site" >/dev/null
ln -s "$purelib/nvidia" "$site/nvidia"
# The installed modules must find cuBLAS through the relative path alone ($ORIGIN is literal).
core_path="$(readelf -d "$site"/ffnskip_native/_core*.so | grep -E 'R(UN)?PATH')"
lib_path="$(readelf -d "$site/ffnskip_native/lib/libffnskip.so" | grep -E 'R(UN)?PATH')"
echo "installed _core: $core_path"
echo "installed libffnskip: $lib_path"
# shellcheck disable=SC2016
grep -q '\[\$ORIGIN/\.\./nvidia/[^:]*\]$' <<<"$core_path"
# shellcheck disable=SC2016
grep -q '\[\$ORIGIN/\.\./\.\./nvidia/[^:]*\]$' <<<"$lib_path"

check='
import ctypes, sys
import ffnskip_native as fn
from ffnskip_native import _core, capi
from ffnskip_native.hub import default_model_path

where = sys.argv[1]
reason = _core.cuda_unavailable_reason()
assert "compiled without" not in reason, f"{where}: not a CUDA build ({reason})"
model = default_model_path()
if not _core.cuda_available():
    try:
        fn.Generator(model, backend="cuda", n_ctx=64)
    except fn.BackendUnavailableError as exc:
        print(f"{where}: backend=cuda -> BackendUnavailableError: {exc}")
    else:
        sys.exit(f"{where}: backend=cuda did not raise BackendUnavailableError")
with fn.Generator(model, backend="auto", n_ctx=64) as g:
    text = "".join(g.generate("The capital of France is", 8, temperature=0))
    print(f"{where}: backend=auto -> {g.backend}: {text!r}")
    assert _core.cuda_available() or g.backend == "cpu"
lib = ctypes.CDLL(str(capi.library_path()))
assert lib.ffnskip_abi_version() == 1, "libffnskip did not load"
print(f"{where}: {capi.library_path()} loads")
'
PYTHONPATH=python FFNSKIP_CORE_DIR="$PWD/$build" python -c "$check" "build tree"
PYTHONPATH="$site" python -c "$check" "installed"
