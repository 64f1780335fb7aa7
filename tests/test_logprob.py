"""Native log-softmax row statistics (_core.logsumexp_rows, _core.kl_rows) against float64
numpy, on both SIMD levels: the quality tools' perplexity, top-1 and KL all come from these."""

from __future__ import annotations

import numpy as np
import pytest
from ffnskip_native import InvalidArgumentError, _core


def np_log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 1031, 151936])
def test_logsumexp_matches_numpy(level, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((3, n)) * 4 + np.array([[0.0], [40.0], [-30.0]])).astype(np.float32)
    lse, top1 = _core.logsumexp_rows(x)
    x64 = x.astype(np.float64)
    m = x64.max(1)
    ref = m + np.log(np.exp(x64 - m[:, None]).sum(1))
    # 2^x on float lanes: relative error 2e-7 per term, so the sum is good to ~1e-6 relative.
    np.testing.assert_allclose(lse, ref, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(top1, x.argmax(1))


def test_argmax_is_the_first_maximum(level):
    x = np.zeros((1, 40), dtype=np.float32)
    x[0, [5, 17, 33]] = 3.0
    assert _core.logsumexp_rows(x)[1][0] == 5


def test_nan_row_gives_nan(level):
    x = np.ones((2, 33), dtype=np.float32)
    x[1, 31] = np.nan
    lse, _ = _core.logsumexp_rows(x)
    assert np.isfinite(lse[0]) and np.isnan(lse[1])


@pytest.mark.parametrize("n", [5, 64, 4099, 151936])
def test_kl_matches_numpy(level, n):
    rng = np.random.default_rng(7 + n)
    p = (rng.standard_normal((4, n)) * 3 + 12).astype(np.float32)
    q = (p + rng.standard_normal((4, n)).astype(np.float32) * np.float32(0.3)).astype(np.float32)
    lp, _ = _core.logsumexp_rows(p)
    lq, _ = _core.logsumexp_rows(q)
    kl = _core.kl_rows(p, lp, q, lq)
    a, b = np_log_softmax(p), np_log_softmax(q)
    ref = (np.exp(a) * (a - b)).sum(1)
    assert (ref > 1e-4).all()  # far from the trivial answer 0
    np.testing.assert_allclose(kl, ref, rtol=1e-5, atol=1e-7)


def test_kl_of_identical_rows_is_exactly_zero(level):
    p = np.random.default_rng(3).standard_normal((3, 5000)).astype(np.float32) * 5
    lp, _ = _core.logsumexp_rows(p)
    assert (_core.kl_rows(p, lp, p.copy(), lp) == 0.0).all()


def test_bad_shapes_are_clear_errors():
    x = np.zeros((2, 10), dtype=np.float32)
    lse = np.zeros(2)
    with pytest.raises(InvalidArgumentError, match="2-D"):
        _core.logsumexp_rows(np.zeros(10, dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="same shape"):
        _core.kl_rows(x, lse, np.zeros((2, 11), dtype=np.float32), lse)
    with pytest.raises(InvalidArgumentError, match="one value per row"):
        _core.kl_rows(x, lse, x, np.zeros(3))
