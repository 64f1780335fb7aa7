#!/usr/bin/env bash
# Builds the llama.cpp peer used for side-by-side speed comparisons (issue 17):
# llama-bench and llama-cli from the llama.cpp copy vendored in the
# llama-cpp-python 0.3.36 sdist, tuned for this host (GGML_NATIVE=ON).
# Idempotent: the sdist, the source tree and the build are reused when present.
# Prints the directory holding the two binaries on its last line.
#
#   bench/build_llamacpp.sh            # cache in ~/.cache/ffnskip-peer
#   FFNSKIP_PEER_DIR=/some/dir bench/build_llamacpp.sh
#   FFNSKIP_PEER_ISA=avx2 bench/build_llamacpp.sh   # AVX2 + FMA + F16C only, for comparing with
#                                                   # our kernels under FFNSKIP_AVX512=0
set -euo pipefail

version=0.3.36
peer_dir=${FFNSKIP_PEER_DIR:-$HOME/.cache/ffnskip-peer}
src_root=$peer_dir/llama_cpp_python-$version
isa=${FFNSKIP_PEER_ISA:-native}
build_dir=$peer_dir/build-$version
isa_flags=(-DGGML_NATIVE=ON)
if [[ $isa == avx2 ]]; then
    # The ISA of an AVX2-only host (these VMs sometimes hide AVX-512): the reference level of
    # issue 17's speed claims, so both engines are held to it in the same run.
    build_dir=$peer_dir/build-$version-avx2
    isa_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
        -DGGML_BMI2=ON -DGGML_AVX512=OFF)
elif [[ $isa != native ]]; then
    echo "FFNSKIP_PEER_ISA must be native or avx2, got '$isa'" >&2
    exit 2
fi
jobs=${JOBS:-$(nproc)}

mkdir -p "$peer_dir"
sdist=$peer_dir/llama_cpp_python-$version.tar.gz
if [[ ! -f $sdist ]]; then
    python -m pip download --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$version" -d "$peer_dir" >&2
fi
if [[ ! -f $src_root/vendor/llama.cpp/CMakeLists.txt ]]; then
    tar -xzf "$sdist" -C "$peer_dir"
fi

# -march=native turns on AMX where the CPU lists it; on the KVM guests here the kernel does not
# grant AMX tile state, and llama-bench's prompt test segfaulted in the AMX matmul (tg was 2 tok/s).
# AVX-512 stays on: the peer keeps everything else the host has.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if [[ ! -f $build_dir/CMakeCache.txt ]]; then
    generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    cmake -S "$src_root/vendor/llama.cpp" -B "$build_dir" "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Release "${isa_flags[@]}" -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
        "-DCMAKE_C_FLAGS=$no_amx" "-DCMAKE_CXX_FLAGS=$no_amx" >&2
fi
cmake --build "$build_dir" --target llama-bench llama-cli -j "$jobs" >&2
echo "$build_dir/bin"
