#!/usr/bin/env bash
# The C++ core under AddressSanitizer + UndefinedBehaviorSanitizer (gcc), driven by a fast subset
# of the Python test suite. The interpreter is not instrumented, so libasan is preloaded, and leak
# detection is off (CPython keeps allocations alive at exit by design). Any ASan or UBSan report
# aborts the test process, which fails the run.
#
#   tools/sanitize_tests.sh              # build into build/asan, run the subset
#   tools/sanitize_tests.sh -k tokenizer # extra pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/asan

cmake -S . -B "$build" -G Ninja -DFFNSKIP_CUDA=OFF -DFFNSKIP_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >/dev/null
ninja -C "$build" -j"${JOBS:-2}" _core

libasan="$(${CXX:-g++} -print-file-name=libasan.so)"
[ -f "$libasan" ] || { echo "libasan not found ($libasan)" >&2; exit 1; }
# libstdc++ must resolve its operator new/delete through ASan too: preload it second.
libstdcxx="$(${CXX:-g++} -print-file-name=libstdc++.so)"

export LD_PRELOAD="$libasan:$libstdcxx"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH=python FFNSKIP_CORE_DIR="$PWD/$build"
# test_forward.py: only the tiny-model tests (-k matches module names too). The RSS leak check is
# left out: ASan's quarantine holds freed memory on purpose.
exec python -m pytest -q -p no:cacheprovider \
    tests/test_gguf.py tests/test_tokenizer.py tests/test_skip.py tests/test_fuzz_regressions.py \
    tests/test_forward.py -k "(not test_forward or tiny) and not cycles" "$@"
