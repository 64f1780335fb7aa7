"""cpu::matmul_each_token, the serving step's matmul: several tokens, each bitwise what the
one-token matmul gives it over the same rows (batch invariance), at every SIMD level. On AVX2 the
quantized types (grouped or not) take tiles that decode each weight block once for up to 4
tokens; the float types (and every type on the scalar level) loop the one-token kernel."""

from __future__ import annotations

import numpy as np
import pytest
from _quant_blocks import WEIGHT_TYPES, block_size, random_blocks
from ffnskip_native import InvalidArgumentError, _core
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

T = _core._testing
# 23 rows; ranges whose 4-row tiles start off the multiples of 4, leave 0-3 rows after the last
# tile, or hold no full tile at all.
RANGES = [(0, 23), (3, 22), (4, 20), (21, 23)]


@pytest.fixture(params=["scalar", "avx2"])
def level(request):
    if not T.set_simd_level(request.param):
        pytest.skip(f"CPU cannot run {request.param}")
    yield request.param
    T.set_simd_level("auto")


def check(qtype: Q, cols: int, n_tok: int, grouped: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = 23
    w = random_blocks(qtype, rows, cols, rng).tobytes()
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    want64 = (
        x.astype(np.float64)
        @ dequantize(np.frombuffer(w, np.uint8).reshape(rows, -1), qtype).astype(np.float64).T
    )
    for r0, r1 in RANGES:
        args = (int(qtype), w, rows, cols, x, r0, r1)
        got = T.matmul_each_token(*args, grouped=grouped)
        one = T.matmul_each_token(*args, grouped=grouped, one_by_one=True)
        assert np.array_equal(got, one), (r0, r1)
        assert not got[:, :r0].any() and not got[:, r1:].any()
        # Independently right, not just equal: test_kernels.py's tolerance against float64.
        part = got[:, r0:r1].astype(np.float64)
        ref = want64[:, r0:r1]
        assert np.linalg.norm(part - ref) <= 1e-4 * np.linalg.norm(ref)


@pytest.mark.parametrize("n_tok", [2, 4, 9])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_each_token_equals_one_token_calls(qtype, n_tok, level):
    cols = 2 * max(block_size(qtype), 256)
    check(qtype, cols, n_tok, False, n_tok * 100 + int(qtype))


@pytest.mark.parametrize("n_tok", [2, 3, 4, 5, 9])
@pytest.mark.parametrize("n_blocks", [8, 18, 48, 7, 75])  # full groups, tails, no full group
@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1], ids=lambda q: q.name)
def test_each_token_grouped_equals_one_token_calls(qtype, n_blocks, n_tok, level):
    check(qtype, 32 * n_blocks, n_tok, True, n_blocks * 10 + n_tok + int(qtype))


@pytest.mark.parametrize("n_tok", [2, 5])
def test_each_token_grouped_q4k_equals_one_token_calls(n_tok, level):
    check(Q.Q4_K, 512, n_tok, True, n_tok)


def test_each_token_rejects_bad_rows():
    w = np.zeros(20 * 4, dtype=np.uint8).tobytes()  # 4 rows of one Q4_1 block
    x = np.zeros((2, 32), np.float32)
    with pytest.raises(InvalidArgumentError, match="row range"):
        T.matmul_each_token(int(Q.Q4_1), w, 4, 32, x, 2, 5)
    with pytest.raises(InvalidArgumentError, match="row range"):
        T.matmul_each_token(int(Q.Q4_1), w, 4, 32, x, 3, 1, grouped=True)
