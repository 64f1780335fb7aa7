"""The per-token CPU ops (rmsnorm, RoPE, SwiGLU, GeGLU) vs float64 numpy, at every SIMD level.

Float32 arithmetic against float64: rmsnorm and RoPE are within a few float32 ulps (tested at
1e-6 relative). SwiGLU's vector 2^x polynomial adds ~2e-7, and for very negative g (silu(g) ~
g e^g) rounding g * log2(e) adds |g| * 6e-8: measured up to 1.2e-6 with |g| < 30; tested at 3e-6.
GeGLU's exponent grows as g^3, so for g < -3 (gelu(g) ~ g e^(-1.6 (g + 0.045 g^3))) its float32
rounding moves the tiny result by up to ~1e-5 relative; tested at 3e-6 relative plus 1e-6 of
the largest |result| (the entries that matter downstream).
"""

from __future__ import annotations

import numpy as np
import pytest
from ffnskip_native import _core

T = _core._testing


@pytest.mark.parametrize("n", [1, 13, 576, 1000])
def test_rmsnorm(n, level):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 5).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    got = T.rmsnorm(x, w, 1e-5)
    x64 = x.astype(np.float64)
    want = x64 / np.sqrt(np.mean(x64 * x64) + 1e-5) * w
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("n", [1, 7, 8, 100, 1536 * 3])
def test_swiglu(n, level):
    rng = np.random.default_rng(n)
    g = (rng.standard_normal(n) * 6).astype(np.float32)
    g[:3] = [-100.0, 100.0, 0.0][: min(3, n)]
    u = rng.standard_normal(n).astype(np.float32)
    g64 = g.astype(np.float64)
    want = g64 / (1 + np.exp(-g64)) * u
    got = T.swiglu(g, u)
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-30)
    # An element's value does not depend on where it sits (vector body or tail).
    np.testing.assert_array_equal(T.swiglu(g[1:], u[1:]), got[1:])


@pytest.mark.parametrize("n", [1, 7, 8, 100, 2048 * 3])
def test_geglu(n, level):
    rng = np.random.default_rng(n)
    g = (rng.standard_normal(n) * 3).astype(np.float32)
    g[:3] = [-100.0, 100.0, 0.0][: min(3, n)]
    u = rng.standard_normal(n).astype(np.float32)
    g64 = g.astype(np.float64)
    want = 0.5 * g64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (g64 + 0.044715 * g64**3))) * u
    got = T.geglu(g, u)
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=max(1e-30, 1e-6 * np.abs(want).max()))
    np.testing.assert_array_equal(T.geglu(g[1:], u[1:]), got[1:])


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("head_dim,n_rot", [(64, 64), (128, 128), (64, 32), (24, 12)])
def test_rope(head_dim, n_rot, neox, level):
    rng = np.random.default_rng(head_dim + n_rot)
    x = rng.standard_normal((5, head_dim)).astype(np.float32)
    pos, base = 777, 10000.0
    got = T.rope(x, n_rot, pos, base, neox)
    half = n_rot // 2
    theta = pos * base ** (-2.0 * np.arange(half) / n_rot)
    c, s = np.cos(theta), np.sin(theta)
    want = x.astype(np.float64)
    a = np.arange(half) if neox else 2 * np.arange(half)
    b = a + half if neox else a + 1
    x0, x1 = want[:, a].copy(), want[:, b].copy()
    want[:, a] = x0 * c - x1 * s
    want[:, b] = x0 * s + x1 * c
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
