# Source this file to compile the CUDA backend with the pip-packaged CUDA toolkit (no system
# CUDA needed, no GPU needed to compile):   source tools/cuda_env.sh
# Idempotent: installs the wheels only when nvcc is missing, creates the unversioned library
# links FindCUDAToolkit looks for, and exports CUDACXX, CUDAToolkit_ROOT and CMAKE_ARGS.
# PYTHON may name the interpreter whose site-packages receive the toolkit (default: python3).
# FFNSKIP_CUDA_ROOT=/usr/local/cuda (any toolkit with bin/nvcc) uses that toolkit instead: a
# machine whose driver is older than the pip toolkit's CUDA 13 needs its own matching toolkit
# (the static CUDA runtime refuses to start on an older driver).

_ffnskip_cuda_env() {
    local py="${PYTHON:-python3}"
    local pkgs="nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl nvidia-cuda-crt nvidia-cublas"
    local root=""
    if [ -n "${FFNSKIP_CUDA_ROOT:-}" ]; then
        if [ ! -x "$FFNSKIP_CUDA_ROOT/bin/nvcc" ]; then
            echo "cuda_env.sh: FFNSKIP_CUDA_ROOT=$FFNSKIP_CUDA_ROOT has no bin/nvcc" >&2
            return 1
        fi
        root="$FFNSKIP_CUDA_ROOT"
    else
        root="$("$py" - <<'EOF'
import pathlib, sysconfig
base = pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia"
# The wheels of CUDA 13 install under nvidia/cu13; earlier major versions under nvidia/cuda_*.
for cand in sorted(base.glob("cu*"), reverse=True):
    if (cand / "bin" / "nvcc").is_file():
        print(cand)
        break
EOF
)"
    fi
    if [ -z "$root" ]; then
        echo "cuda_env.sh: installing the CUDA toolkit wheels ($pkgs)" >&2
        # shellcheck disable=SC2086
        "$py" -m pip install --quiet $pkgs || {
            echo "cuda_env.sh: pip install failed" >&2
            return 1
        }
        root="$("$py" -c 'import pathlib, sysconfig
base = pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia"
c = [p for p in sorted(base.glob("cu*"), reverse=True) if (p / "bin" / "nvcc").is_file()]
print(c[0] if c else "")')"
    fi
    if [ -z "$root" ] || [ ! -x "$root/bin/nvcc" ]; then
        echo "cuda_env.sh: nvcc not found after installation" >&2
        return 1
    fi

    # FindCUDAToolkit locates libraries by their unversioned names, which the wheels omit.
    local lib name versioned
    for lib in cudart cublas cublasLt; do
        name="$root/lib/lib$lib.so"
        if [ ! -e "$name" ] && [ -d "$root/lib" ] && [ -w "$root/lib" ]; then
            versioned="$(find "$root/lib" -maxdepth 1 -name "lib$lib.so.[0-9]*" | sort | head -n 1)"
            [ -n "$versioned" ] && ln -sf "$(basename "$versioned")" "$name"
        fi
    done
    # Some CMake versions look for libraries under lib64.
    [ -e "$root/lib64" ] || [ ! -w "$root" ] || ln -s lib "$root/lib64"

    export CUDAToolkit_ROOT="$root"
    export CUDACXX="$root/bin/nvcc"
    export PATH="$root/bin:$PATH"
    case " ${CMAKE_ARGS:-} " in
        *" -DCUDAToolkit_ROOT="*) ;;
        *) export CMAKE_ARGS="${CMAKE_ARGS:+$CMAKE_ARGS }-DCUDAToolkit_ROOT=$root" ;;
    esac
    echo "cuda_env.sh: CUDA toolkit at $root ($("$CUDACXX" --version | tail -n 1))" >&2
}
_ffnskip_cuda_env
