#!/usr/bin/env bash
# AArch64 check under emulation: cross-builds the C++ core and its C++ tests into build/arm64/ and
# runs them under qemu-user on an emulated Cortex-A53 (plain ARMv8.0-A: NEON, nothing newer):
#   - tests/cpp/simd_kernels_test: every NEON kernel family against the scalar reference;
#   - tests/cpp/forward_test: tiny random models through the real loader and CPU backend against
#     logits of the numpy reference (tests/reference.py), computed here on the host.
# Prints one line per kernel family and model; exits 0 only if every test passes. Installs the
# cross compiler and qemu with apt-get when they are missing (it runs as root in CI). The host
# needs python3 with numpy and gguf (the [test] extra); set PYTHON to pick another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/arm64
python=${PYTHON:-python3}

need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
if ((${#need[@]})); then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== cross-build for aarch64 (aarch64-linux-gnu-g++) into $build"
cmake -S . -B "$build" -G Ninja -DCMAKE_TOOLCHAIN_FILE=tools/aarch64-linux-gnu.cmake \
    -DCMAKE_BUILD_TYPE=Release -DFFNSKIP_PYTHON=OFF -DFFNSKIP_CUDA=OFF -DFFNSKIP_CPP_TESTS=ON >/dev/null
ninja -C "$build" simd_kernels_test forward_test | tail -n 1

echo "== tiny models and their reference logits (numpy, on the host)"
rm -rf "$build/forward"
"$python" tests/cpp/make_forward_cases.py "$build/forward" >/dev/null

run() { qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu "$@"; }
status=0
echo "== NEON kernels vs scalar (qemu-aarch64)"
run "$build/tests/cpp/simd_kernels_test" neon || status=1
echo "== tiny-model forward vs the numpy reference (qemu-aarch64)"
models=()
for m in "$build"/forward/*.gguf; do models+=("$m" "${m%.gguf}.ref"); done
run "$build/tests/cpp/forward_test" "${models[@]}" || status=1
exit "$status"
