#!/usr/bin/env bash
# The C API in CI (issue 19), in the active environment where `pip install .` ran:
# 1. examples/c/generate.c, compiled by the C compiler against the header and library installed
#    inside the Python package, streams SmolLM2's greedy continuation of a prompt;
# 2. libffnskip and the C tests built with -fsanitize=address,undefined (build/ci-asan), run by
#    pytest; any sanitizer report or leak fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# shellcheck disable=SC2046  # the flags are meant to split
cc -std=c11 -Wall -Wextra -Werror examples/c/generate.c \
    $(python -m ffnskip_native.capi --cflags --libs) -o "$out/generate"
model="$(python -c "from ffnskip_native.hub import default_model_path as d; print(d())")"
"$out/generate" "$model" "The capital of France is" | tee "$out/generate.txt"
grep -q "Paris" "$out/generate.txt"

cmake -S . -B build/ci-asan -G Ninja -DFFNSKIP_CUDA=OFF -DFFNSKIP_SANITIZE=ON \
    -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >/dev/null
ninja -C build/ci-asan -j2 ffnskip_capi_test
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
    FFNSKIP_CAPI_TEST_BIN="$PWD/build/ci-asan/ffnskip_capi_test" \
    python -m pytest -q -p no:cacheprovider tests/test_capi.py -k c_api
