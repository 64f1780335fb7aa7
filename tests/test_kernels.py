"""CPU matmul and f16 kernels vs float64 numpy references, at every SIMD level.

Tolerances (relative L2 error over the whole (n_tok, rows) output, Gaussian x):
- F32/F16/BF16 weights use f32 activations: 1e-5 (float32 accumulation).
- Quantized weights run on 16-bit activations in blocks of 32 (d = max|x| / 32767): rounding
  gives about 2e-5 for every type (measured 2e-5..2.8e-5 on these cases, one Q5_K case 4.7e-5:
  random block scales of both signs cancel part of the signal); tested at 1e-4. 8-bit activations
  measured 4e-3..9e-3 here, so these tests fail with them.
- x with 30x / 100x outliers (as in real hidden states): only the scale groups holding an outlier
  get a coarser step. 32-value groups (the 32-block types) measured 4.3e-5..5.4e-5, tested at
  1e-4; the K-quants' 256-value groups (one scale per super-block, kernels_impl.h), with an
  outlier in every group here, 1.0e-4..1.4e-4, tested at 3e-4.
- Scalar vs AVX2 on identical 16-bit activations: the integer dot products are exact, only the
  float summation order differs: 1e-6.
- The AMX prompt path (32 tokens or more where the CPU has AMX BF16 tiles) splits weights and
  activations into two BF16 halves each (~16 significant bits, the lo*lo product dropped):
  measured 3.7e-6..4.5e-6 for every type with 100x outliers (each value has its own exponent),
  tested at 2e-5. Plain BF16 (one half) measured 2.2e-3..2.5e-3.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from _quant_blocks import WEIGHT_TYPES, block_size, can_quantize, random_blocks
from ffnskip_native import InvalidArgumentError, _core
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

T = _core._testing
LEVELS = ["scalar", "avx2"]
FLOAT_TYPES = {Q.F32, Q.F16, Q.BF16}
QUANT_TYPES = [q for q in WEIGHT_TYPES if q not in FLOAT_TYPES]


def tolerance(qtype: Q) -> float:
    if qtype in FLOAT_TYPES:
        return 1e-5
    return 1e-4


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(params=LEVELS)
def level(request):
    # The integer kernels of each level; the AMX prompt path (BF16, coarser) has its own tests.
    if not T.set_simd_level(request.param):
        pytest.skip(f"CPU cannot run {request.param}")
    amx = _core.gemm_amx()
    T.set_gemm_amx(False)
    yield request.param
    T.set_gemm_amx(amx)
    T.set_simd_level("auto")


@pytest.fixture
def amx():
    was = _core.gemm_amx()
    if not (T.set_simd_level("avx2") and T.set_gemm_amx(True)):
        T.set_simd_level("auto")
        pytest.skip("CPU (or OS) offers no AMX BF16 tiles")
    yield
    T.set_gemm_amx(was)
    T.set_simd_level("auto")


def case(qtype: Q, rows: int, n_tok: int, seed: int):
    rng = np.random.default_rng(seed)
    cols = 2 * max(block_size(qtype), 256) if qtype not in FLOAT_TYPES else 2 * 256 + 8
    w = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    want = x.astype(np.float64) @ dequantize(w, qtype).astype(np.float64).T
    return w, cols, x, want


@pytest.mark.parametrize("n_tok", [1, 3, 17, 64])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_matmul_matches_float64(qtype, n_tok, level):
    rows = 37  # odd: exercises the remainder rows of every tile shape
    w, cols, x, want = case(qtype, rows, n_tok, seed=n_tok * 100 + int(qtype))
    got = T.matmul(int(qtype), w.tobytes(), rows, cols, x)
    assert got.shape == (n_tok, rows) and got.dtype == np.float32
    assert rel_l2(got, want) <= tolerance(qtype)


@pytest.mark.parametrize("n_tok", [1, 2, 5])
@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
def test_matmul_long_rows(qtype, n_tok, level):
    # More blocks than one chunk of the kernels (64 blocks of 32), and for the 32-blocks a count
    # that is not a multiple of 8 (the vectorized scale and min loops have a scalar tail).
    rng = np.random.default_rng(int(qtype) + n_tok)
    rows, cols = 9, 32 * 75 if block_size(qtype) == 32 else 256 * 11
    w = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    want = x.astype(np.float64) @ dequantize(w, qtype).astype(np.float64).T
    got = T.matmul(int(qtype), w.tobytes(), rows, cols, x)
    assert rel_l2(got, want) <= tolerance(qtype)


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_row_ranges_split_over_threads(qtype, level):
    # 3 threads over 37 rows: ranges [0,12) [12,24) [24,37), none a multiple of a tile height.
    w, cols, x, want = case(qtype, 37, 5, seed=7)
    one = T.matmul(int(qtype), w.tobytes(), 37, cols, x, n_threads=1)
    three = T.matmul(int(qtype), w.tobytes(), 37, cols, x, n_threads=3)
    np.testing.assert_array_equal(one, three)  # each output is computed by exactly one tile
    assert rel_l2(three, want) <= tolerance(qtype)


@pytest.mark.parametrize("n_tok", [1, 17])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_scalar_and_avx2_agree(qtype, n_tok):
    if not T.set_simd_level("avx2"):
        pytest.skip("CPU has no AVX2")
    try:
        w, cols, x, _ = case(qtype, 21, n_tok, seed=3)
        fast = T.matmul(int(qtype), w.tobytes(), 21, cols, x)
        T.set_simd_level("scalar")
        slow = T.matmul(int(qtype), w.tobytes(), 21, cols, x)
    finally:
        T.set_simd_level("auto")
    assert rel_l2(fast, slow.astype(np.float64)) <= 1e-6


K_TYPES = [Q.Q4_K, Q.Q5_K, Q.Q6_K]


@pytest.mark.parametrize("n_tok", [4, 17, 70])
@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda q: q.name)
def test_k_prompt_tiles_agree_at_both_lane_widths(qtype, n_tok):
    # The K-quant prompt matmul at 512-bit lanes (AVX-512 VNNI: a super-block summed in integers
    # with the sub-block scales folded into the codes) and at 256 (AVX2: the same folded codes,
    # summed per half super-block) read the same activations, so only float rounding differs;
    # both match float64. 11 super-blocks per row: a partial chunk of 16 and an odd count for the
    # 16-block min loop.
    if not T.set_simd_level("avx2"):
        pytest.skip("CPU has no AVX2")
    before = _core.gemm_lanes()
    try:
        if not T.set_gemm_lanes(512):
            pytest.skip("CPU has no AVX-512 VNNI")
        rng = np.random.default_rng(int(qtype) + 1000 * n_tok)
        rows, cols = 11, 256 * 11
        w = random_blocks(qtype, rows, cols, rng)
        x = rng.standard_normal((n_tok, cols)).astype(np.float32)
        want = x.astype(np.float64) @ dequantize(w, qtype).astype(np.float64).T
        wide = T.matmul(int(qtype), w.tobytes(), rows, cols, x)
        assert T.set_gemm_lanes(256)
        narrow = T.matmul(int(qtype), w.tobytes(), rows, cols, x)
    finally:
        T.set_gemm_lanes(before)
        T.set_simd_level("auto")
    assert rel_l2(wide, narrow.astype(np.float64)) <= 1e-6
    assert rel_l2(wide, want) <= tolerance(qtype)


@pytest.mark.parametrize("lanes", [256, 512])
@pytest.mark.parametrize("qtype", K_TYPES + [Q.Q4_0], ids=lambda q: q.name)
def test_prompt_tiles_give_a_token_the_same_outputs_in_any_call(qtype, lanes):
    # A prompt read in pieces gives the logits of reading it whole (the engine's chunked prompts
    # and prefix reuse rely on it): from 4 tokens on, a token's outputs are bitwise the same
    # whatever other tokens share the call and wherever it sits among them (tiles of 3 or 4
    # tokens, chunks of 64 to 256). 70 tokens whole against pieces of 4, 29 and 37.
    if not T.set_simd_level("avx2"):
        pytest.skip("CPU has no AVX2")
    before, amx_before = _core.gemm_lanes(), _core.gemm_amx()
    try:
        if not T.set_gemm_lanes(lanes):
            pytest.skip(f"CPU has no {lanes}-bit prompt tiles")
        T.set_gemm_amx(False)
        rng = np.random.default_rng(int(qtype) + lanes)
        rows, cols = 11, 256 * 3
        w = random_blocks(qtype, rows, cols, rng).tobytes()
        x = rng.standard_normal((70, cols)).astype(np.float32)
        whole = T.matmul(int(qtype), w, rows, cols, x)
        pieces = [
            T.matmul(int(qtype), w, rows, cols, x[a:b]) for a, b in ((0, 4), (4, 33), (33, 70))
        ]
    finally:
        T.set_gemm_lanes(before)
        T.set_gemm_amx(amx_before)
        T.set_simd_level("auto")
    assert np.array_equal(whole, np.concatenate(pieces))


@pytest.mark.parametrize("n_tok", [32, 33, 70, 256])
@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
def test_amx_prompt_matmul(qtype, n_tok, amx):
    # 37 rows: a partial block of 32; 256 tokens x 2816 columns: three column chunks (the sums
    # carried between them); 33 and 70 tokens: partial token blocks. x has outliers.
    rng = np.random.default_rng(int(qtype) * 7 + n_tok)
    rows, cols = 37, 256 * 11
    w = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    x[:, 3::97] *= 100.0
    want = x.astype(np.float64) @ dequantize(w, qtype).astype(np.float64).T
    got = T.matmul(int(qtype), w.tobytes(), rows, cols, x)
    assert rel_l2(got, want) <= 2e-5
    # Each (row, token) sum runs over the columns in the same order whatever the row split.
    three = T.matmul(int(qtype), w.tobytes(), rows, cols, x, n_threads=3)
    np.testing.assert_array_equal(got, three)


@pytest.mark.parametrize("n_tok", [64, 256])
@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K, Q.Q8_0], ids=lambda q: q.name)
def test_amx_prompt_matmul_whole_blocks(qtype, n_tok, amx):
    # Rows and tokens in whole blocks of 32 (per thread too): the sums build up in the output
    # itself across column chunks instead of in scratch.
    rng = np.random.default_rng(int(qtype) + n_tok)
    rows, cols = 64, 256 * 11
    w = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    want = x.astype(np.float64) @ dequantize(w, qtype).astype(np.float64).T
    one = T.matmul(int(qtype), w.tobytes(), rows, cols, x)
    two = T.matmul(int(qtype), w.tobytes(), rows, cols, x, n_threads=2)
    assert rel_l2(one, want) <= 2e-5
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("n_tok", [40, 168])
@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q4_K], ids=lambda q: q.name)
def test_amx_prompt_matmul_grouped(qtype, n_tok, amx):
    # Grouped (re-packed) rows are ungrouped chunk by chunk before dequantization. 168 tokens x
    # 1536 columns (SmolLM2's down projection): two column chunks, which must start on a group of
    # 8 blocks (a chunk of 1344 columns read the group after it as plain blocks: NaN logits).
    rng = np.random.default_rng(int(qtype))
    rows, cols = 40, 1536
    w = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    want = x.astype(np.float64) @ dequantize(w, qtype).astype(np.float64).T
    got = T.matmul(int(qtype), w.tobytes(), rows, cols, x, grouped=True)
    assert rel_l2(got, want) <= 2e-5


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 lane widths")
def test_avx512_can_be_hidden_for_avx2_speed_checks():
    # FFNSKIP_AVX512=0: every x86 kernel as on a CPU (or VM) without AVX-512, AMX included.
    code = (
        "from ffnskip_native import _core as c\n"
        "print(c.gemm_amx(), c.gemm_lanes(), c.sparse_lanes())"
    )
    env = {**os.environ, "FFNSKIP_AVX512": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "256", "256"]


@pytest.mark.parametrize("outlier", [30.0, 100.0])
@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
def test_quantized_error_is_relative_to_signal(qtype, outlier, level):
    # x with outliers every 97 values, as in real hidden states (SmolLM2's reach ~100x the
    # median): each outlier only coarsens the activation step of its own scale group. Weights are
    # gguf-quantized Gaussians where gguf can quantize the type, random blocks otherwise.
    rng = np.random.default_rng(int(qtype) * 10 + int(outlier))
    rows, cols = 64, 1024
    if can_quantize(qtype):
        data = quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)
    else:
        data = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((5, cols)).astype(np.float32)
    x[:, 3::97] *= outlier
    want = x.astype(np.float64) @ dequantize(data, qtype).astype(np.float64).T
    got = T.matmul(int(qtype), data.tobytes(), rows, cols, x)
    assert rel_l2(got, want) <= (3e-4 if block_size(qtype) == 256 else 1e-4)


def test_matmul_rejects_bad_sizes():
    w = np.zeros(4 * 18, np.uint8)
    x = np.zeros((2, 32), np.float32)
    with pytest.raises(InvalidArgumentError, match="need 72 bytes"):
        T.matmul(int(Q.Q4_0), w[:-1], 4, 32, x)
    with pytest.raises(InvalidArgumentError, match="shape"):
        T.matmul(int(Q.Q4_0), w, 4, 32, np.zeros((2, 64), np.float32))
    with pytest.raises(InvalidArgumentError, match="block size"):
        T.matmul(int(Q.Q4_0), w, 4, 30, x)
    with pytest.raises(InvalidArgumentError, match="n_threads"):
        T.matmul(int(Q.Q4_0), w, 4, 32, x, n_threads=0)


def test_set_simd_level():
    # The fast level of this processor family; the other family's level is refused.
    native, foreign = (
        ("neon", "avx2") if platform.machine() in ("aarch64", "arm64") else ("avx2", "neon")
    )
    assert _core.simd_level() in ("scalar", native)
    assert T.set_simd_level("scalar") and _core.simd_level() == "scalar"
    assert not T.set_simd_level(foreign)
    assert _core.simd_level() == "scalar"
    assert T.set_simd_level("auto")


@pytest.mark.parametrize("n", [1, 7, 8, 64, 1000])
def test_f16_helpers(n, level):
    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(np.float16)
    b = rng.standard_normal(n).astype(np.float32)
    want = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    assert abs(T.dot_f16_f32(a.view(np.uint16), b) - want) <= 1e-5 * (1 + np.abs(b).sum())

    y = rng.standard_normal(n).astype(np.float32)
    got = T.axpy_f16(0.37, a.view(np.uint16), y)
    np.testing.assert_allclose(
        got, y + np.float32(0.37) * a.astype(np.float32), rtol=1e-6, atol=1e-6
    )

    # Round-to-nearest-even, overflow to inf, subnormals and NaN, exactly as numpy converts.
    x = np.concatenate(
        [rng.standard_normal(n) * 1e3, [65520.0, -7e4, 3e-6, 6e-8, 2.9e-8, np.nan, 0.0]]
    )
    x = x.astype(np.float32)
    h = T.f32_to_f16(x)
    with np.errstate(over="ignore"):
        want16 = x.astype(np.float16)
    nan = np.isnan(want16)
    np.testing.assert_array_equal(h[~nan], want16.view(np.uint16)[~nan])
    assert np.isnan(h[nan].view(np.float16)).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
def test_nonfinite_activations_give_nan_rows_only_for_their_token(qtype, bad, level):
    # A broken model can feed Inf/NaN activations: the token that holds one gets NaN outputs,
    # the other tokens of the batch are unaffected (and nothing casts NaN to an integer).
    w, cols, x, want = case(qtype, 9, 5, seed=7)
    x[2, 40] = bad
    got = T.matmul(int(qtype), w.tobytes(), 9, cols, x)
    assert np.isnan(got[2]).all()
    keep = [0, 1, 3, 4]
    assert rel_l2(got[keep], want[keep]) <= tolerance(qtype)


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
def test_subnormal_activation_block_is_finite(qtype, level):
    # Found by fuzz_tiny_model in CI: a block whose max |x| is subnormal made 32767 / max
    # overflow to inf and the int16 cast undefined. Such blocks now count as zeros.
    w, cols, x, want = case(qtype, 9, 3, seed=11)
    x[1, :32] = 1e-39
    got = T.matmul(int(qtype), w.tobytes(), 9, cols, x)
    assert np.isfinite(got).all()
    x[1, :32] = 0.0
    want = x.astype(np.float64) @ dequantize(w, qtype).astype(np.float64).T
    assert rel_l2(got, want) <= tolerance(qtype)


# ---- grouped rows (cpu/repack.h): Q4_0/Q4_1/Q4_K re-laid out at load for the AVX2 kernels -------
GROUPED_TYPES = [Q.Q4_0, Q.Q4_1]


@pytest.mark.parametrize("n_tok", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("n_blocks", [8, 18, 48, 7, 75])  # full groups, tails, no full group
@pytest.mark.parametrize("qtype", GROUPED_TYPES, ids=lambda q: q.name)
def test_grouped_matmul_matches_plain_and_float64(qtype, n_blocks, n_tok, level):
    rng = np.random.default_rng(n_blocks * 10 + n_tok + int(qtype))
    rows, cols = 23, 32 * n_blocks  # 23 rows: 5 decode tiles of 4 and 3 leftover rows
    w = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    want = x.astype(np.float64) @ dequantize(w, qtype).astype(np.float64).T
    plain = T.matmul(int(qtype), w.tobytes(), rows, cols, x)
    grouped = T.matmul(int(qtype), w.tobytes(), rows, cols, x, grouped=True)
    assert rel_l2(grouped, want) <= tolerance(qtype)
    # Same integer products and scales, only the float summation order differs.
    assert rel_l2(grouped, plain.astype(np.float64)) <= 1e-6
    # 3 threads split the rows at 7 and 15: the rows around the cuts leave the 4-row decode tile
    # for the decoded-row tile, which sums the Q4_1 min terms in another order.
    three = T.matmul(int(qtype), w.tobytes(), rows, cols, x, n_threads=3, grouped=True)
    assert rel_l2(three, grouped.astype(np.float64)) <= 1e-6


# Q4_K: only the packed 6-bit block scales and mins of each super-block are re-packed.
@pytest.mark.parametrize("n_tok", [1, 2, 3, 5, 64])
@pytest.mark.parametrize("n_super", [1, 2, 6])
def test_grouped_q4k_matches_plain_and_float64(n_super, n_tok, level):
    rng = np.random.default_rng(n_super * 10 + n_tok)
    rows, cols = 23, 256 * n_super
    w = random_blocks(Q.Q4_K, rows, cols, rng)
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    want = x.astype(np.float64) @ dequantize(w, Q.Q4_K).astype(np.float64).T
    plain = T.matmul(int(Q.Q4_K), w.tobytes(), rows, cols, x)
    grouped = T.matmul(int(Q.Q4_K), w.tobytes(), rows, cols, x, grouped=True)
    assert rel_l2(grouped, want) <= tolerance(Q.Q4_K)
    assert rel_l2(grouped, plain.astype(np.float64)) <= 1e-6
    three = T.matmul(int(Q.Q4_K), w.tobytes(), rows, cols, x, n_threads=3, grouped=True)
    assert rel_l2(three, grouped.astype(np.float64)) <= 1e-6


def test_grouping_other_types_is_refused():
    w = np.zeros(22 * 4, dtype=np.uint8).tobytes()  # 4 Q5_0 blocks
    with pytest.raises(InvalidArgumentError, match="not grouped"):
        T.matmul(int(Q.Q5_0), w, 1, 128, np.zeros((1, 128), np.float32), grouped=True)
