"""_core.Sampler against a numpy reference of the same filter chain (cpp/src/sampler.h)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ffnskip_native import InvalidArgumentError, _core


def reference_probs(
    logits,
    temperature=0.8,
    top_k=40,
    top_p=0.95,
    min_p=0.05,
    repetition_penalty=1.0,
    recent=(),
):
    """The distribution the sampler must draw from, computed in float64."""
    x = np.asarray(logits, dtype=np.float64).copy()
    for i in set(recent):
        x[i] = x[i] / repetition_penalty if x[i] > 0 else x[i] * repetition_penalty
    n = len(x)
    ids = np.arange(n)
    keep = np.isfinite(x)
    order = np.lexsort((ids, -x))  # by logit desc, then id asc
    order = order[keep[order]]
    if top_k > 0:
        order = order[:top_k]
    w = np.exp((x[order] - x[order].max()) / temperature)
    p = w / w.sum()
    if top_p < 1.0:
        cut = int(np.searchsorted(np.cumsum(p), top_p)) + 1
        order, p = order[:cut], p[:cut]
    if min_p > 0.0:
        sel = p >= min_p * p.max()
        order, p = order[sel], p[sel]
    out = np.zeros(n)
    out[order] = p / p.sum()
    return out


def draw(sampler, logits, n, **kw):
    counts = np.zeros(len(logits), dtype=np.int64)
    for _ in range(n):
        counts[sampler.sample(logits, **kw)] += 1
    return counts


def assert_matches(counts, probs):
    """Pearson chi-square over the tokens the reference allows; none outside its support."""
    n = counts.sum()
    support = probs > 0
    assert counts[~support].sum() == 0, (
        f"sampled outside the support: {np.nonzero(counts * ~support)}"
    )
    expected = probs[support] * n
    chi2 = float(((counts[support] - expected) ** 2 / expected).sum())
    df = max(int(support.sum()) - 1, 1)
    # About a 1e-6 false-alarm rate (normal approximation of chi2 with df degrees of freedom).
    bound = df + 5.0 * math.sqrt(2.0 * df) + 10.0
    assert chi2 < bound, f"chi2 {chi2:.1f} >= {bound:.1f} (df {df})"


@pytest.fixture
def logits():
    rng = np.random.default_rng(1234)
    return (rng.standard_normal(48) * 1.5).astype(np.float32)


def test_greedy_is_argmax_and_ties_go_to_lowest_id(logits):
    s = _core.Sampler(0)
    assert s.sample(logits, temperature=0.0) == int(np.argmax(logits))
    tied = np.array([0.0, 3.0, 1.0, 3.0, 3.0], dtype=np.float32)
    assert s.sample(tied, temperature=0.0) == 1
    # Greedy ignores the filters but not the repetition penalty.
    assert s.sample(tied, temperature=0.0, repetition_penalty=2.0, recent=[1]) == 3


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
        dict(temperature=0.7, top_k=0, top_p=1.0, min_p=0.0),
        dict(temperature=1.3, top_k=10, top_p=1.0, min_p=0.0),
        dict(temperature=1.0, top_k=0, top_p=0.7, min_p=0.0),
        dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2),
        dict(temperature=0.9, top_k=20, top_p=0.9, min_p=0.05),
        dict(
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            repetition_penalty=1.5,
            recent=[3, 5, 5, 7, 11],
        ),
    ],
)
def test_frequencies_match_reference(logits, kw):
    counts = draw(_core.Sampler(7), logits, 12000, **kw)
    assert_matches(counts, reference_probs(logits, **kw))


def test_each_filter_restricts_the_support_like_numpy(logits):
    s = _core.Sampler(3)
    cases = [
        dict(temperature=1.0, top_k=5, top_p=1.0, min_p=0.0),
        dict(temperature=1.0, top_k=0, top_p=0.5, min_p=0.0),
        dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.3),
    ]
    full = reference_probs(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    for kw in cases:
        ref = reference_probs(logits, **kw)
        seen = set(np.nonzero(draw(s, logits, 3000, **kw))[0].tolist())
        allowed = set(np.nonzero(ref)[0].tolist())
        assert seen == allowed, kw  # every kept token is likely enough to show up in 3000
        assert 0 < len(allowed) < (full > 0).sum(), kw  # the filter did cut something


def test_repetition_penalty_convention():
    s = _core.Sampler(0)
    pos = np.array([2.0, 1.9], dtype=np.float32)
    assert s.sample(pos, temperature=0, repetition_penalty=1.1, recent=[0]) == 1  # 2/1.1 < 1.9
    neg = np.array([-1.0, -1.05], dtype=np.float32)
    assert s.sample(neg, temperature=0, repetition_penalty=1.1, recent=[0]) == 1  # -1.1 < -1.05
    # Applied once per distinct id, however often it occurs.
    assert s.sample(pos, temperature=0, repetition_penalty=1.02, recent=[0] * 10) == 0


def test_masked_tokens_and_top_k_ties():
    s = _core.Sampler(5)
    x = np.array([1.0, -np.inf, 1.0, -np.inf], dtype=np.float32)
    seen = {s.sample(x, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) for _ in range(200)}
    assert seen == {0, 2}
    flat = np.zeros(10, dtype=np.float32)
    seen = {s.sample(flat, temperature=1.0, top_k=3, top_p=1.0, min_p=0.0) for _ in range(300)}
    assert seen == {0, 1, 2}


def test_same_seed_same_sequence(logits):
    a, b, c = _core.Sampler(42), _core.Sampler(42), _core.Sampler(43)
    kw = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    seq_a = [a.sample(logits, **kw) for _ in range(64)]
    assert seq_a == [b.sample(logits, **kw) for _ in range(64)]
    assert seq_a != [c.sample(logits, **kw) for _ in range(64)]
    a.reseed(42)
    assert seq_a == [a.sample(logits, **kw) for _ in range(64)]
    _core.Sampler(-1).sample(logits)  # any Python int seeds (reduced modulo 2**64)
    _core.Sampler(2**70).sample(logits)


def test_large_vocab_top_k_and_top_p():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(150_000) * 3).astype(np.float32)
    s = _core.Sampler(9)
    top40 = set(np.argsort(-x)[:40].tolist())
    got = {s.sample(x, temperature=1.0, top_k=40, top_p=1.0, min_p=0.0) for _ in range(300)}
    assert got <= top40 and len(got) > 10
    ref = reference_probs(x, temperature=1.0, top_k=0, top_p=0.3, min_p=0.0)
    allowed = set(np.nonzero(ref)[0].tolist())
    got = {s.sample(x, temperature=1.0, top_k=0, top_p=0.3, min_p=0.0) for _ in range(300)}
    assert got <= allowed


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(min_p=-0.1), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(recent=[48]), "recent"),
        (dict(recent=[-1]), "recent"),
    ],
)
def test_invalid_arguments(logits, kw, match):
    with pytest.raises(InvalidArgumentError, match=match):
        _core.Sampler(0).sample(logits, **kw)


def test_invalid_logits():
    s = _core.Sampler(0)
    bad = np.zeros(8, dtype=np.float32)
    bad[5] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"logits\[5\] is NaN"):
        s.sample(bad)
    bad[5] = np.inf
    with pytest.raises(InvalidArgumentError, match=r"\+inf"):
        s.sample(bad, temperature=0)
    with pytest.raises(InvalidArgumentError, match="-inf"):
        s.sample(np.full(4, -np.inf, dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="1-D"):
        s.sample(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="empty"):
        s.sample(np.zeros(0, dtype=np.float32))
    # float64 input is converted, not rejected.
    assert s.sample(np.array([0.0, 5.0]), temperature=0) == 1
