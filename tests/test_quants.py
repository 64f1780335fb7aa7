"""Scalar reference dequantization (quants.cpp) and the dispatched fast path vs the gguf package.

Every type's formula (d * q, d * q + m, (d * sc) * q - dmin * m, ...) is evaluated in float32 in
the same order as gguf-py/ggml, so the comparison is exact (bit for bit), not within a tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from _quant_blocks import WEIGHT_TYPES, block_size, can_quantize, random_blocks
from ffnskip_native import InvalidArgumentError, _core
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

T = _core._testing
LEVELS = ["scalar", "avx2"]


@pytest.fixture(params=LEVELS)
def level(request):
    if not T.set_simd_level(request.param):
        pytest.skip(f"CPU cannot run {request.param}")
    yield request.param
    T.set_simd_level("auto")


def assert_same_floats(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_random_blocks_match_gguf(qtype, level):
    rng = np.random.default_rng(int(qtype))
    cols = 4 * max(block_size(qtype), 32)
    data = random_blocks(qtype, 6, cols, rng)
    want = dequantize(data, qtype)
    for r in range(data.shape[0]):
        raw = data[r].tobytes()
        assert T.row_bytes(int(qtype), cols) == len(raw)
        assert_same_floats(T.dequantize_ref(int(qtype), raw, cols), want[r])
        assert_same_floats(T.dequantize(int(qtype), data[r], cols), want[r])


@pytest.mark.parametrize(
    "qtype", [q for q in WEIGHT_TYPES if can_quantize(q)], ids=lambda q: q.name
)
def test_gguf_quantized_blocks_match(qtype, level):
    rng = np.random.default_rng(100 + int(qtype))
    w = (rng.standard_normal((3, 512)) * rng.uniform(0.01, 3.0, (3, 1))).astype(np.float32)
    w[1, :40] = 0.0  # an all-zero block (scale 0)
    data = quantize(w, qtype)
    want = dequantize(data, qtype)
    for r in range(3):
        assert_same_floats(T.dequantize_ref(int(qtype), data[r].tobytes(), 512), want[r])
        assert_same_floats(T.dequantize(int(qtype), data[r], 512), want[r])


def test_f16_specials_are_exact(level):
    h = np.array(
        [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x3C00], np.uint16
    )
    got = T.dequantize(int(Q.F16), h, len(h))
    np.testing.assert_array_equal(got, h.view(np.float16).astype(np.float32))
    assert_same_floats(
        T.dequantize_ref(int(Q.F16), h.tobytes(), len(h)), h.view(np.float16).astype(np.float32)
    )


def test_bad_arguments_raise():
    with pytest.raises(InvalidArgumentError, match="block size"):
        T.dequantize_ref(int(Q.Q4_0), b"\0" * 18, 31)
    with pytest.raises(InvalidArgumentError, match="need 18 bytes"):
        T.dequantize_ref(int(Q.Q4_0), b"\0" * 17, 32)
    with pytest.raises(InvalidArgumentError, match="Q2_K"):
        T.dequantize(int(Q.Q2_K), b"\0" * 84, 256)
    with pytest.raises(InvalidArgumentError):
        T.row_bytes(9999, 32)
    assert T.row_bytes(int(Q.Q6_K), 512) == 420
