"""FFN skipping on the CPU against the numpy reference of the policy (tests/reference.py).

Decisions must be identical, except that once a reference gate value lies within GATE_EPS of its
threshold the two may legitimately part ways for the rest of that token (the rule DESIGN.md gives
for comparing backends). Logits of tokens whose decisions agree are held to the forward tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import reference
from ffnskip_native import InvalidArgumentError, SkipConfig, _core

GATE_EPS = 1e-4
REL_TOL = 1e-2


def cfg(**kw) -> SkipConfig:
    return SkipConfig(**kw)


def run_engine(eng, tokens, prompt_len, skip: SkipConfig | None):
    core = None
    if skip is not None:
        skip = dataclasses.replace(skip, record_gates=True)
        core = skip.to_core()
    logits = eng.logits(tokens, all_positions=True, skip=core, prompt_len=prompt_len)
    return logits, eng.skip_stats()


def compare_decisions(ref_skipped, ref_gates, got_gates, thresholds, prompt_len):
    """Rows (absolute indices) whose decisions match the reference, up to the first divergence.

    A divergence is allowed only where a reference gate before the first differing layer lies
    within GATE_EPS of its threshold. After it, the two runs hold different keys/values for that
    token, so later tokens are no longer comparable and the walk stops.
    """
    got_skipped = np.isnan(got_gates)
    agree_rows = list(range(prompt_len))
    for t in range(got_gates.shape[0]):
        r = prompt_len + t
        diff = np.flatnonzero(got_skipped[t] != ref_skipped[r])
        if diff.size == 0:
            agree_rows.append(r)
            continue
        first = diff[0]
        near = [
            abs(ref_gates[r, layer] - thresholds[layer]) <= GATE_EPS
            for layer in range(first)
            if not math.isnan(ref_gates[r, layer]) and not math.isnan(thresholds[layer])
        ]
        assert any(near), f"token {t}: decisions differ at layer {first}, no gate near threshold"
        break
    return agree_rows


def check_policy(path: Path, skip: SkipConfig, n_tokens=40, prompt_len=8, min_agree=0.8):
    ref = reference.load(path)
    tokens = [int(x) for x in np.random.default_rng(11).integers(0, ref.hp.n_vocab, n_tokens)]
    exp_logits, exp_skipped, exp_gates = ref.forward_with_skip(tokens, prompt_len, skip)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=128, n_threads=2)
    logits, stats = run_engine(eng, tokens, prompt_len, skip)
    gates = stats["gates"]
    n_gen = n_tokens - prompt_len
    assert gates.shape == (n_gen, ref.hp.n_layer)
    assert stats["tokens"] == n_gen
    th = skip.threshold_list()
    th = th * ref.hp.n_layer if len(th) == 1 else th
    rows = compare_decisions(exp_skipped, exp_gates, gates, th, prompt_len)
    assert len(rows) - prompt_len >= min_agree * n_gen
    # Gate values where both evaluated the FFN.
    both = ~np.isnan(gates) & ~np.isnan(exp_gates[prompt_len:])
    for r in rows[prompt_len:]:
        t = r - prompt_len
        assert np.allclose(gates[t][both[t]], exp_gates[r][both[t]], atol=2e-3)
    err = np.linalg.norm(logits[rows] - exp_logits[rows], axis=1) / np.linalg.norm(
        exp_logits[rows], axis=1
    )
    assert err.max() <= REL_TOL
    # Stats agree with the per-token pattern.
    skipped = np.isnan(gates)
    assert stats["skipped"] == skipped.sum(0).tolist()
    assert stats["evaluated"] == (~skipped).sum(0).tolist()
    assert stats["skip_ratio"] == pytest.approx(skipped.sum() / (n_gen * ref.hp.n_layer))
    return stats, exp_skipped[prompt_len:]


def median_gate(path: Path) -> float:
    """A threshold that some gates reach and some do not: the median of dense gate values."""
    eng = _core.Engine(str(path), backend="cpu", n_ctx=128, n_threads=2)
    tokens = [int(x) for x in np.random.default_rng(11).integers(0, eng.n_vocab, 40)]
    _, stats = run_engine(
        eng, tokens, 8, cfg(threshold=float("nan"), warmup=0, cold_start=0, cold_end=0)
    )
    return float(np.nanmedian(stats["gates"]))


@pytest.mark.parametrize("span", [1, 2, 0, 10])
def test_policy_matches_reference(model6, span):
    th = median_gate(model6)
    stats, _ = check_policy(
        model6, cfg(threshold=th, span=span, warmup=4, cold_start=1, cold_end=1)
    )
    assert 0 < stats["skip_ratio"] < 1
    # Cold layers never skip.
    assert stats["skipped"][0] == 0 and stats["skipped"][-1] == 0


def test_policy_matches_reference_qwen2(model6_qwen):
    th = median_gate(model6_qwen)
    stats, _ = check_policy(model6_qwen, cfg(threshold=th, span=2, warmup=2))
    assert stats["skip_ratio"] > 0


def test_per_layer_thresholds_with_nan(model6):
    th = median_gate(model6)
    per_layer = [th, float("nan"), th - 0.05, float("nan"), th, th]
    stats, exp = check_policy(
        model6, cfg(threshold=per_layer, span=1, warmup=0, cold_start=0, cold_end=0)
    )
    # Layer 2 can only be skipped after layer 1 fires, which NaN forbids; same for layer 4.
    assert stats["skipped"][2] == 0 and stats["skipped"][4] == 0
    assert stats["skipped"][0] == 0


def test_cold_regions_covering_all_layers_never_skip(model6):
    stats, _ = check_policy(model6, cfg(threshold=-1.0, cold_start=3, cold_end=3, warmup=0))
    assert stats["skip_ratio"] == 0


def test_warmup_longer_than_generation_is_dense(model6):
    stats, _ = check_policy(model6, cfg(threshold=-1.0, warmup=100))
    assert stats["skip_ratio"] == 0
    assert stats["tokens"] == 32


def test_forced_skipping_pattern(model6):
    # threshold -1 fires on every evaluated hot layer: with span 1, hot layers alternate run/skip.
    stats, exp = check_policy(
        model6, cfg(threshold=-1.0, span=1, warmup=0, cold_start=1, cold_end=1)
    )
    assert stats["skipped"] == [0, 0, 32, 0, 32, 0]


def test_span_zero_skips_rest_of_token(model6):
    stats, _ = check_policy(model6, cfg(threshold=-1.0, span=0, warmup=0, cold_start=1, cold_end=1))
    assert stats["skipped"] == [0, 0, 32, 32, 32, 0]


def test_disabled_or_unreachable_is_bitwise_dense(model6):
    eng = _core.Engine(str(model6), backend="cpu", n_ctx=128, n_threads=2)
    tokens = [int(x) for x in np.random.default_rng(2).integers(0, eng.n_vocab, 30)]
    dense = eng.logits(tokens, all_positions=True, prompt_len=6)
    for skip in (cfg(enabled=False, threshold=-1.0), cfg(threshold=float("nan"), warmup=0)):
        got, _ = run_engine(eng, tokens, 6, skip)
        assert np.array_equal(got, dense)


def test_smollm2_policy_matches_reference(smollm2_path):
    eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=256, n_threads=2)
    tokens = eng.tokenize(
        "Once upon a time, in a land far away, there lived a king who had three daughters. "
        "The youngest was the fairest of them all, and every morning she walked to the well "
        "to draw water for the household, singing as she went.",
        False,
        False,
    )
    tokens = (tokens * 3)[:80]
    skip = cfg(threshold=0.95, span=2, warmup=4)
    reference.limit_blas_threads(2)
    ref = reference.load(smollm2_path)
    exp_logits, exp_skipped, exp_gates = ref.forward_with_skip(tokens, 12, skip)
    logits, stats = run_engine(eng, tokens, 12, skip)
    th = [0.95] * ref.hp.n_layer
    rows = compare_decisions(exp_skipped, exp_gates, stats["gates"], th, 12)
    assert len(rows) - 12 >= 0.8 * (len(tokens) - 12)
    assert stats["skip_ratio"] > 0.02
    err = np.linalg.norm(logits[rows] - exp_logits[rows], axis=1) / np.linalg.norm(
        exp_logits[rows], axis=1
    )
    assert err.max() <= REL_TOL
    assert np.array_equal(logits[rows].argmax(1), exp_logits[rows].argmax(1))


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(warmup=-1), "warmup"),
        (dict(span=-2), "span"),
        (dict(threshold=[0.9, 0.9]), "threshold"),
        (dict(threshold=1.5), "outside"),
        (dict(threshold=[]), "empty"),
    ],
)
def test_bad_configs_are_rejected(model6, kw, message):
    eng = _core.Engine(str(model6), backend="cpu", n_ctx=16)
    with pytest.raises(InvalidArgumentError, match=message):
        core = SkipConfig(**kw).to_core()
        eng.set_skip(core)


def test_teacher_forced_equals_token_by_token_decoding(model6):
    """logits(..., skip, prompt_len) (batched on the CPU) makes decoding's exact decisions."""
    th = median_gate(model6)
    skip = SkipConfig(threshold=th, span=2, warmup=3, cold_start=1, cold_end=1, record_gates=True)
    eng = _core.Engine(str(model6), backend="cpu", n_ctx=128, n_threads=2)
    tokens = [int(x) for x in np.random.default_rng(9).integers(0, eng.n_vocab, 36)]
    forced = eng.logits(tokens, all_positions=True, skip=skip.to_core(), prompt_len=10)
    forced_gates = eng.skip_stats()["gates"]
    eng.reset()
    eng.set_skip(skip.to_core())
    rows = [eng.eval(tokens[:10], all_logits=True)]
    rows += [eng.eval_generated(t, i)[None] for i, t in enumerate(tokens[10:])]
    decoded = np.concatenate(rows)
    decoded_gates = eng.skip_stats()["gates"]
    assert np.array_equal(np.isnan(forced_gates), np.isnan(decoded_gates))
    assert np.nanmax(np.abs(forced_gates - decoded_gates)) <= 1e-5
    assert np.linalg.norm(forced - decoded) / np.linalg.norm(decoded) <= 1e-4
