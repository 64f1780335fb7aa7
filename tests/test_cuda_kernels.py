"""Each CUDA kernel family launched alone (``_core._cuda_testing``, cpp/src/cuda/kernel_harness.h)
on random inputs and compared with the CPU scalar reference (``_core._testing`` at level
"scalar"), llm.c style: a wrong kernel fails its own test instead of a whole forward pass.

Tolerances (relative L2 error over the output unless stated), and why:
- dequantization (embedding rows, blocks decoded on the host): exact; both sides decode the same
  bits with the same float operations. The f16 staging for the GEMM: within f16 rounding (2^-11).
- GEMV: the GPU multiplies fp32 activations with weights decoded in registers; the CPU scalar
  path quantizes activations to 16-bit blocks for quantized weights (~1e-5): QUANT_TOL 1e-4,
  FLOAT_TOL 1e-5 (summation order only).
- GEMM: weights and activations rounded to f16, fp32 accumulation (cuBLAS): GEMM_TOL 2e-3.
- RMSNorm, RoPE, SwiGLU: fp32 with fast-math intrinsics on the device: 1e-5 element-wise
  relative to the output's scale. The f16 cache writes: within one f16 rounding.
- Attention: the f16 cache is shared, scores and softmax in fp32 on both sides: 1e-5.
- Skip gate: decisions identical; gate values (fp64 sums on the device) to 1e-6.

The harness needs a CUDA build; everything but the host-side block decoding needs a device
(marked ``gpu``; conftest skips those without one).
"""

from __future__ import annotations

import numpy as np
import pytest
from _quant_blocks import WEIGHT_TYPES, block_size, random_blocks
from ffnskip_native import InvalidArgumentError, _core
from gguf import GGMLQuantizationType as Q

C = getattr(_core, "_cuda_testing", None)
T = _core._testing
pytestmark = pytest.mark.skipif(C is None, reason="built without the CUDA backend")

FLOAT_TYPES = {Q.F32, Q.F16, Q.BF16}
QUANT_TOL = 1e-4
FLOAT_TOL = 1e-5
GEMM_TOL = 2e-3
ELEM_TOL = 1e-5
GATE_TOL = 1e-6


@pytest.fixture(autouse=True)
def scalar_reference():
    assert T.set_simd_level("scalar")
    yield
    T.set_simd_level("auto")


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def cols_for(qtype: Q) -> int:
    # Two blocks of the widest kind, plus an odd tail of 8-wide blocks for the float types.
    return 2 * max(block_size(qtype), 256) + (8 if qtype in FLOAT_TYPES else 0)


def weights(qtype: Q, rows: int, seed: int) -> tuple[np.ndarray, int]:
    cols = cols_for(qtype)
    return random_blocks(qtype, rows, cols, np.random.default_rng(seed)), cols


def dequant_ref(qtype: Q, w: np.ndarray, cols: int) -> np.ndarray:
    return np.stack([T.dequantize_ref(int(qtype), row.tobytes(), cols) for row in w])


def f16_to_f32(bits: np.ndarray) -> np.ndarray:
    return np.asarray(bits, np.uint16).view(np.float16).astype(np.float32)


# ---- dequantization (blocks.cuh, dequant.cuh) ---------------------------------------------------


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_block_decoders_on_the_host_match_the_reference(qtype):
    """No device needed: the decoders are __host__ __device__."""
    w, cols = weights(qtype, 3, seed=int(qtype))
    want = dequant_ref(qtype, w, cols)
    for r in range(3):
        got = C.decode_row_host(int(qtype), w, 3, cols, r)
        np.testing.assert_array_equal(got, want[r])


@pytest.mark.gpu
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_embed_rows(qtype):
    rows = 11
    w, cols = weights(qtype, rows, seed=10 + int(qtype))
    tokens = np.array([3, 0, 10, 3, 7], np.int32)
    got = C.embed_rows(int(qtype), w, rows, cols, tokens)
    np.testing.assert_array_equal(got, dequant_ref(qtype, w, cols)[tokens])


@pytest.mark.gpu
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_dequant_rows_f16(qtype):
    rows = 9
    w, cols = weights(qtype, rows, seed=20 + int(qtype))
    got = f16_to_f32(C.dequant_rows_f16(int(qtype), w, rows, cols, 2, 7))
    want = dequant_ref(qtype, w, cols)[2:7]
    np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))


# ---- GEMV (gemv.cuh) ----------------------------------------------------------------------------


def gemv_tol(qtype: Q) -> float:
    return FLOAT_TOL if qtype in FLOAT_TYPES else QUANT_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_gemv_per_weight_type(qtype):
    rows = 37  # not a multiple of the rows per CTA
    w, cols = weights(qtype, rows, seed=30 + int(qtype))
    x = np.random.default_rng(1).standard_normal(cols).astype(np.float32)
    got, _ = C.gemv(int(qtype), w, rows, cols, x)
    want = T.matmul(int(qtype), w.tobytes(), rows, cols, x[None, :])[0]
    assert rel_l2(got, want) <= gemv_tol(qtype)


@pytest.mark.gpu
@pytest.mark.parametrize("qtype", [Q.F16, Q.Q4_K], ids=lambda q: q.name)
def test_gemv_bias_and_residual_epilogues(qtype):
    rows = 21
    w, cols = weights(qtype, rows, seed=40)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(cols).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    y0 = rng.standard_normal(rows).astype(np.float32)
    wx = T.matmul(int(qtype), w.tobytes(), rows, cols, x[None, :])[0].astype(np.float64)
    got, _ = C.gemv(int(qtype), w, rows, cols, x, bias=bias)
    assert rel_l2(got, wx + bias) <= gemv_tol(qtype)
    got, (ab, aa, bb) = C.gemv(int(qtype), w, rows, cols, x, y0=y0)
    assert rel_l2(got, y0 + wx) <= gemv_tol(qtype)
    # The gate sums are over the values the kernel wrote (h = y0, h' = y).
    h, h2 = y0.astype(np.float64), got.astype(np.float64)
    np.testing.assert_allclose([ab, aa, bb], [h @ h2, h @ h, h2 @ h2], rtol=1e-9)


@pytest.mark.gpu
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_gemv_swiglu(qtype):
    rows = 19
    wg, cols = weights(qtype, rows, seed=50 + int(qtype))
    wu, _ = weights(qtype, rows, seed=60 + int(qtype))
    x = np.random.default_rng(3).standard_normal(cols).astype(np.float32)
    g = T.matmul(int(qtype), wg.tobytes(), rows, cols, x[None, :])[0]
    u = T.matmul(int(qtype), wu.tobytes(), rows, cols, x[None, :])[0]
    got = C.gemv_swiglu(int(qtype), wg, wu, rows, cols, x)
    assert rel_l2(got, T.swiglu(g, u)) <= 2 * gemv_tol(qtype)


# ---- GEMM (gemm.cuh) ----------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_gemm_in_several_slabs(qtype):
    rows, n_tok = 45, 7
    w, cols = weights(qtype, rows, seed=70 + int(qtype))
    x = np.random.default_rng(4).standard_normal((n_tok, cols)).astype(np.float32)
    got = C.gemm(int(qtype), w, rows, cols, x, slab_elems=16 * cols)  # 3 slabs: 16 + 16 + 13
    want = T.matmul(int(qtype), w.tobytes(), rows, cols, x)
    assert got.shape == (n_tok, rows)
    assert rel_l2(got, want) <= GEMM_TOL


# ---- RMSNorm, RoPE (norm_rope.cuh) --------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dim", [64, 576, 1000])
def test_rmsnorm(dim):
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((5, dim)).astype(np.float32)
    w = rng.standard_normal(dim).astype(np.float32)
    got = C.rmsnorm(x, w, 1e-5)
    want = np.stack([T.rmsnorm(row, w, 1e-5) for row in x])
    assert np.max(np.abs(got - want)) <= ELEM_TOL * np.max(np.abs(want))


@pytest.mark.gpu
@pytest.mark.parametrize("neox", [False, True], ids=["norm", "neox"])
@pytest.mark.parametrize("n_rot", [64, 32], ids=["full", "partial"])
def test_rope_and_kv_store(neox, n_rot):
    n_tok, n_head, n_head_kv, hd, pos0, n_ctx = 3, 4, 2, 64, 1000, 1010
    rng = np.random.default_rng(n_rot + neox)
    q = rng.standard_normal((n_tok, n_head * hd)).astype(np.float32)
    k = rng.standard_normal((n_tok, n_head_kv * hd)).astype(np.float32)
    v = rng.standard_normal((n_tok, n_head_kv * hd)).astype(np.float32)
    gq, kc, vc = C.rope_store_kv(q, k, v, n_head, n_head_kv, n_rot, neox, 10000.0, pos0, n_ctx)
    for t in range(n_tok):
        pos = pos0 + t
        want_q = T.rope(q[t].reshape(n_head, hd), n_rot, pos, 10000.0, neox).reshape(-1)
        want_k = T.rope(k[t].reshape(n_head_kv, hd), n_rot, pos, 10000.0, neox).reshape(-1)
        assert np.max(np.abs(gq[t] - want_q)) <= ELEM_TOL * np.max(np.abs(want_q))
        # One f16 rounding of values within a few units: 2^-11 relative, plus the fp32 error.
        np.testing.assert_allclose(f16_to_f32(kc[pos]), want_k, rtol=2**-10, atol=1e-4)
        np.testing.assert_array_equal(f16_to_f32(vc[pos]), v[t].astype(np.float16))
    untouched = [p for p in range(n_ctx) if not pos0 <= p < pos0 + n_tok]
    assert not kc[untouched].any() and not vc[untouched].any()


# ---- attention (attention.cuh) ------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize(
    "n_tok,pos0,split_len",
    [(1, 0, 64), (1, 300, 64), (1, 300, 1024), (5, 130, 64), (17, 0, 256)],
    ids=["first", "decode-splits", "decode-one-split", "prompt-chunk", "prompt-start"],
)
def test_attention(n_tok, pos0, split_len):
    n_head, n_head_kv, hd = 6, 2, 64
    n_ctx = pos0 + n_tok + 40  # cache rows past the last position must be ignored
    rng = np.random.default_rng(pos0 + n_tok)
    q = rng.standard_normal((n_tok, n_head * hd)).astype(np.float32)
    k = rng.standard_normal((n_ctx, n_head_kv * hd)).astype(np.float16).view(np.uint16)
    v = rng.standard_normal((n_ctx, n_head_kv * hd)).astype(np.float16).view(np.uint16)
    got = C.attention(q, k, v, n_head, n_head_kv, pos0, split_len)
    want = T.attention(q, k, v, pos0, n_head, n_head_kv, key_splits=1)
    assert np.max(np.abs(got - want)) <= ELEM_TOL * max(1.0, float(np.max(np.abs(want))))


# ---- SwiGLU (swiglu.cuh) and the skip gate (skip_gate.cuh) --------------------------------------


@pytest.mark.gpu
def test_swiglu_and_its_skip_flag():
    rng = np.random.default_rng(5)
    g = (4 * rng.standard_normal(3001)).astype(np.float32)
    g[:3] = [-100.0, 100.0, 0.0]  # exp overflow must give 0, not NaN
    u = rng.standard_normal(3001).astype(np.float32)
    want = T.swiglu(g, u)
    got = C.swiglu(g, u)
    assert np.all(np.isfinite(got))
    assert np.max(np.abs(got - want)) <= ELEM_TOL * np.max(np.abs(want))
    assert not C.swiglu(g, u, skip=True).any()


def skip_gate_reference(mode, hot, thr, grant, h0, norm_w, f, comp, eps):
    """The block-skip rule of cpp/src/ffn_rules.h, written independently in numpy/float64."""
    h = h0.astype(np.float32).copy()
    budget = 0
    skipped, gates, hn = [], [], np.zeros_like(f)
    past_warmup = mode == 2
    for layer in range(len(hot)):
        skip = past_warmup and bool(hot[layer]) and budget > 0
        if skip:
            budget -= 1
            h = h + comp[layer]
            skipped.append(1)
            gates.append(np.nan)
            continue
        skipped.append(0)
        hn[layer] = T.rmsnorm(h, norm_w, eps)
        h2 = h + f[layer]
        if mode == 0:
            gates.append(np.nan)
        else:
            a, b = h.astype(np.float64), h2.astype(np.float64)
            g = float(a @ b / np.sqrt((a @ a) * (b @ b)))
            gates.append(g)
            if past_warmup and hot[layer] and g >= thr[layer]:
                budget = grant[layer]
        h = h2
    return np.array(skipped), np.array(gates), hn, h


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["dense", "observe", "active"])
def test_skip_gate_walk_matches_the_rule(mode):
    n_layer, dim, eps = 8, 320, 1e-5
    rng = np.random.default_rng(mode)
    h0 = rng.standard_normal(dim).astype(np.float32)
    norm_w = rng.standard_normal(dim).astype(np.float32)
    # Small FFN updates (cos near 1) on most layers, a large one on layer 4.
    f = (0.05 * rng.standard_normal((n_layer, dim))).astype(np.float32)
    f[4] *= 40
    comp = (0.01 * rng.standard_normal((n_layer, dim))).astype(np.float32)
    hot = np.array([0, 1, 1, 1, 1, 1, 1, 0], np.int32)
    thr = np.full(n_layer, 0.99, np.float32)
    grant = np.full(n_layer, 2, np.int32)
    got = C.skip_gate_walk(mode, hot, thr, grant, h0, norm_w, f, comp, eps)
    skipped, gates, hn, h = skip_gate_reference(mode, hot, thr, grant, h0, norm_w, f, comp, eps)
    np.testing.assert_array_equal(got["skipped"], skipped)
    if mode == 2:
        assert 0 < skipped.sum() < n_layer  # the case exercises both branches
    np.testing.assert_allclose(got["gate"], gates, atol=GATE_TOL, equal_nan=True)
    ran = skipped == 0
    assert np.max(np.abs(got["hn"][ran] - hn[ran])) <= ELEM_TOL * np.max(np.abs(hn))
    np.testing.assert_allclose(got["h"], h, rtol=0, atol=1e-5 * np.max(np.abs(h)))


# ---- misuse ------------------------------------------------------------------------------------


def test_shapes_are_checked_before_any_launch():
    w, cols = weights(Q.Q8_0, 4, seed=0)
    with pytest.raises(InvalidArgumentError, match="matrix"):
        C.gemv(int(Q.Q8_0), w, 5, cols, np.zeros(cols, np.float32))
    with pytest.raises(InvalidArgumentError, match="x must"):
        C.gemv(int(Q.Q8_0), w, 4, cols, np.zeros(cols - 1, np.float32))
    with pytest.raises(InvalidArgumentError, match="mode"):
        z = np.zeros(1, np.float32)
        C.skip_gate_walk(
            3, np.zeros(1, np.int32), z, np.zeros(1, np.int32), z, z, z[None], z[None], 1e-5
        )
