#!/usr/bin/env bash
# Fails when an AVX-512 kernel file defines a weak (shared) symbol. Such a symbol (a std::vector
# member function, an inline function used elsewhere) is merged with the other files' copies at
# link time, and the linker may keep the one built with AVX-512 for every caller: the library
# then faults on a CPU without AVX-512 even though it dispatches at run time. Compiles each
# cpp/src/cpu/*_avx512.cpp, *_avx512vnni.cpp and *_amx.cpp with the flags CMakeLists.txt gives it
# and lists its weak symbols.
#
#   bash tools/check_isa_objects.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
for src in cpp/src/cpu/*_avx512.cpp cpp/src/cpu/*_avx512vnni.cpp cpp/src/cpu/*_amx.cpp; do
    obj="$out/$(basename "$src" .cpp).o"
    extra=()
    [[ $src == *_avx512vnni.cpp ]] && extra=(-mavx512vnni)
    [[ $src == *_amx.cpp ]] && extra=(-mamx-tile -mamx-bf16 -mavx512bf16)
    "${CXX:-g++}" -std=c++17 -O3 -DFFNSKIP_X86=1 -Icpp/include -Icpp/src \
        -mavx512f -mavx512bw -mavx512vl -mavx512dq "${extra[@]}" -mavx2 -mfma -mf16c -mbmi2 \
        -c "$src" -o "$obj"
    weak="$(nm -C --defined-only "$obj" | awk '$2 ~ /^[WVuw]$/ {$1 = ""; $2 = ""; print}')"
    if [ -n "$weak" ]; then
        echo "$src defines weak symbols the linker may share with non-AVX-512 code:" >&2
        echo "$weak" >&2
        status=1
    fi
done
exit "$status"
