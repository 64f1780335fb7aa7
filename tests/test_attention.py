"""The batched CPU attention kernel vs a float64 numpy reference, at every SIMD level.

The kernel reads an f16 KV cache and computes, for query token t at position pos0 + t and query
head h (kv head h // group), softmax(q . k_j / sqrt(head_dim)) over keys j <= pos0 + t, times V.
The reference uses the same f16 K/V values in float64, so the error is the kernel's own float32
arithmetic (accumulation order, the vector 2^x polynomial, online-softmax rescaling): measured
up to 2.4e-6 relative per output row on these cases; tested at 1e-5. Scores of magnitude S carry
an absolute float32 rounding error of about S * 1e-7 that exp() turns into a relative one, so the
sharply peaked case (scores up to ~200) measures 1.5e-5..2.1e-5 and is tested at 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
from ffnskip_native import InvalidArgumentError, _core

T = _core._testing
TOL = 1e-5


def make_case(n_tok, pos0, n_head, n_head_kv, head_dim, seed, q_scale=2.0):
    rng = np.random.default_rng(seed)
    n_pos = pos0 + n_tok + 3  # cache rows past the last position must not be read
    q = (q_scale * rng.standard_normal((n_tok, n_head * head_dim))).astype(np.float32)
    k = rng.standard_normal((n_pos, n_head_kv * head_dim)).astype(np.float16)
    v = rng.standard_normal((n_pos, n_head_kv * head_dim)).astype(np.float16)
    k[pos0 + n_tok :] = np.inf  # poison: any read of a future position shows up as inf/NaN
    return q, k, v


def reference(q, k, v, pos0, n_head, n_head_kv):
    n_tok = q.shape[0]
    hd = q.shape[1] // n_head
    group = n_head // n_head_kv
    out = np.zeros(q.shape, np.float64)
    for t in range(n_tok):
        n = pos0 + t + 1
        for h in range(n_head):
            g = h // group
            qh = q[t, h * hd : (h + 1) * hd].astype(np.float64)
            kh = k[:n, g * hd : (g + 1) * hd].astype(np.float64)
            vh = v[:n, g * hd : (g + 1) * hd].astype(np.float64)
            s = kh @ qh / np.sqrt(hd)
            p = np.exp(s - s.max())
            out[t, h * hd : (h + 1) * hd] = p @ vh / p.sum()
    return out


def max_row_error(got, want, n_head):
    got = got.reshape(got.shape[0], n_head, -1)
    want = want.reshape(want.shape[0], n_head, -1)
    err = np.linalg.norm(got - want, axis=-1) / np.linalg.norm(want, axis=-1)
    return float(err.max())


# (n_tok, pos0, n_head, n_head_kv, head_dim): SmolLM2 (9/3, 64), Qwen2.5-0.5B (14/2, 64) and
# 1.5B (12/2, 128) shapes; decode (n_tok 1) and prompts that start at 0 or after cached tokens,
# with key counts on and off the 64-key chunk boundaries; plain multi-head (group 1); head_dim
# 40 (not a multiple of 16) and 20 (not a multiple of 8: the scalar kernel at every level).
CASES = [
    (1, 0, 9, 3, 64),
    (1, 500, 9, 3, 64),
    (37, 0, 9, 3, 64),
    (37, 101, 9, 3, 64),
    (16, 48, 14, 2, 64),
    (1, 127, 14, 2, 64),
    (37, 70, 12, 2, 128),
    (1, 300, 12, 2, 128),
    (5, 63, 4, 4, 64),
    (19, 13, 6, 2, 40),
    (3, 9, 2, 1, 20),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-pos{}-h{}-kv{}-d{}".format(*c))
def test_attention_matches_float64(case, level):
    n_tok, pos0, n_head, n_head_kv, hd = case
    q, k, v = make_case(n_tok, pos0, n_head, n_head_kv, hd, seed=sum(case))
    got = T.attention(q, k.view(np.uint16), v.view(np.uint16), pos0, n_head, n_head_kv)
    assert got.shape == q.shape and got.dtype == np.float32
    want = reference(q, k, v, pos0, n_head, n_head_kv)
    assert max_row_error(got, want, n_head) <= TOL


@pytest.mark.parametrize("key_splits", [0, 2, 3, 7])
@pytest.mark.parametrize("n_tok,pos0", [(1, 450), (37, 200)])
def test_key_range_splits_merge(n_tok, pos0, key_splits, level):
    # Key ranges merged by log-sum-exp, including ranges that lie past some queries' last key.
    # key_splits=0: what the engine picks (decode: ranges of ~256 keys; prompt: none).
    q, k, v = make_case(n_tok, pos0, 9, 3, 64, seed=pos0 + key_splits)
    got = T.attention(
        q, k.view(np.uint16), v.view(np.uint16), pos0, 9, 3, key_splits=key_splits, n_threads=2
    )
    want = reference(q, k, v, pos0, 9, 3)
    assert max_row_error(got, want, 9) <= TOL


@pytest.mark.parametrize("n_tok,pos0", [(1, 700), (37, 300)])
def test_same_result_for_any_thread_count(n_tok, pos0, level):
    # How the work is split depends on the shapes only, so results are bitwise the same.
    q, k, v = make_case(n_tok, pos0, 9, 3, 64, seed=11)
    k16, v16 = k.view(np.uint16), v.view(np.uint16)
    one = T.attention(q, k16, v16, pos0, 9, 3, n_threads=1)
    three = T.attention(q, k16, v16, pos0, 9, 3, n_threads=3)
    np.testing.assert_array_equal(one, three)


def test_peaked_scores_do_not_overflow(level):
    # Large scores (a sharply peaked softmax) stay finite: the running max is subtracted.
    q, k, v = make_case(20, 80, 9, 3, 64, seed=5, q_scale=60.0)
    got = T.attention(q, k.view(np.uint16), v.view(np.uint16), 80, 9, 3)
    assert np.isfinite(got).all()
    assert max_row_error(got, reference(q, k, v, 80, 9, 3), 9) <= 1e-4


def test_attention_rejects_bad_shapes():
    q, k, v = make_case(4, 10, 9, 3, 64, seed=1)
    k16, v16 = k.view(np.uint16), v.view(np.uint16)
    with pytest.raises(InvalidArgumentError, match="multiple"):
        T.attention(q, k16, v16, 10, 9, 2)
    with pytest.raises(InvalidArgumentError, match="positions"):
        T.attention(q, k16, v16, 14, 9, 3)
    with pytest.raises(InvalidArgumentError, match="one shape"):
        T.attention(q, k16, v16[:-1], 10, 9, 3)
