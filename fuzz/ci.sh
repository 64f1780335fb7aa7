#!/usr/bin/env bash
# Fuzzing in CI: install clang + libFuzzer if missing (Debian 12, root), build the three targets,
# regenerate the seed corpus, run each target for a bounded time and fail on any crash, sanitizer
# report, leak, timeout or out-of-memory; then the Python chat-template fuzzer (atheris, or its
# plain mutation loop where atheris does not install) for as long. ~5 minutes on 2 cores with the
# default 60 s per target.
#
#   fuzz/ci.sh                     # FUZZ_SECONDS=60 per target
#   FUZZ_SECONDS=600 fuzz/ci.sh    # longer local run; corpora persist in build/fuzz-runs/
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
build=build/fuzz
runs=build/fuzz-runs

if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
    >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libfuzzer-14-dev >/dev/null
fi

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DFFNSKIP_FUZZ=ON -DFFNSKIP_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >/dev/null
ninja -C "$build" -j"${JOBS:-2}" fuzz_all

rm -rf "$runs/seeds"
python fuzz/make_corpus.py --out "$runs/seeds"

# SmolLM2's vocabulary joins the tokenizer target when the test dependency is installed.
vocabs="$PWD/tests/data/qwen2.5-vocab.gguf"
smol="$(PYTHONPATH=python python -c 'from ffnskip_native.hub import default_model_path as p; print(p() or "")' 2>/dev/null || true)"
[ -n "$smol" ] && [ -f "$smol" ] && vocabs="$vocabs:$smol"
export FFNSKIP_FUZZ_VOCABS="$vocabs"
# Reports must stop the run: UBSan aborts (the build uses -fno-sanitize-recover), ASan checks
# leaks at exit of every input it reports on.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

status=0
for target in gguf_load tokenizer tiny_model; do
    dir="$runs/$target"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    extra=()
    # Model-sized inputs: header and metadata mutations matter, weight bytes mostly do not.
    [ "$target" = gguf_load ] && extra=(-max_len=65536)
    echo "== fuzz_$target for ${seconds}s"
    if ! "$build/fuzz/fuzz_$target" -dict=fuzz/gguf.dict -max_total_time="$seconds" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" "${extra[@]}" "$dir/corpus" "$runs/seeds/$target" \
        >"$dir/ci.log" 2>&1; then
        status=1
    fi
    grep -E "INITED|DONE|stat::number_of_executed_units|stat::average_exec_per_sec" "$dir/ci.log" || true
    if grep -qE "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error:" "$dir/ci.log" ||
        ls "$dir/artifacts"/* >/dev/null 2>&1; then
        echo "!! fuzz_$target found a bug: $(ls "$dir/artifacts")" >&2
        grep -E -A30 "ERROR|runtime error" "$dir/ci.log" | head -60 >&2
        status=1
    fi
done

# Chat templates come from model files: random structured templates must stay within the
# sandbox's time and memory bounds (fuzz/py/fuzz_chat_template.py). Pure Python, so it runs
# from the source tree. An input that hangs past -timeout or exceeds -rss_limit_mb is a bug too.
python -m pip install -q atheris >/dev/null 2>&1 || echo "atheris does not install: plain mutation loop"
dir="$runs/chat_template"
mkdir -p "$dir/corpus" "$dir/artifacts"
echo "== fuzz_chat_template for ${seconds}s"
if python -c "import atheris" 2>/dev/null; then
    chat_fuzz=(-max_total_time="$seconds" -max_len=512 -timeout=20 -rss_limit_mb=3072
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/")
else
    chat_fuzz=(--plain --seconds "$seconds")
fi
if ! PYTHONPATH=python python fuzz/py/fuzz_chat_template.py "$dir/corpus" "${chat_fuzz[@]}" \
    >"$dir/ci.log" 2>&1; then
    echo "!! fuzz_chat_template found a bug: $(ls "$dir/artifacts")" >&2
    grep -E -B5 -A30 "Traceback|ERROR" "$dir/ci.log" | head -80 >&2
    status=1
fi
grep -E "INITED|DONE|stat::number_of_executed_units|stat::average_exec_per_sec|^done:" \
    "$dir/ci.log" || true
exit "$status"
