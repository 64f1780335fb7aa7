"""Skip compensation (a skipped FFN block adds a calibrated vector instead of nothing) and FFN
output recording (the calibration tool's input), against the numpy reference (tests/reference.py).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import reference
from ffnskip_native import Generator, InvalidArgumentError, SkipConfig, _core
from ffnskip_native.calibrate.search import GateSet, fit_compensation, simulate
from ffnskip_native.profile_gguf import read_profile_gguf, same_profile, write_profile_gguf
from test_skip import check_policy, median_gate, run_engine


def random_comp(path: Path, scale: float, seed: int = 0) -> np.ndarray:
    eng = _core.Engine(str(path), backend="cpu", n_ctx=16, n_threads=1)
    shape = (eng.n_layer, eng.hparams["n_embd"])
    eng.close()
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("span", [1, 0])
def test_compensation_matches_reference(model6, span):
    """Decisions, gates and logits with compensation agree with the reference, which adds the
    layer's row to the residual of every skipped token. The rows are large enough that the
    logits differ clearly from the uncompensated run (so the test sees the feature)."""
    th = median_gate(model6)
    comp = random_comp(model6, 0.5)
    skip = SkipConfig(
        threshold=th, span=span, warmup=4, cold_start=1, cold_end=1, compensation=comp
    )
    stats, skipped = check_policy(model6, skip)
    assert stats["skip_ratio"] > 0
    eng = _core.Engine(str(model6), backend="cpu", n_ctx=128, n_threads=2)
    tokens = [int(x) for x in np.random.default_rng(11).integers(0, eng.n_vocab, 40)]
    with_comp, _ = run_engine(eng, tokens, 8, skip)
    without, _ = run_engine(eng, tokens, 8, dataclasses.replace(skip, compensation=None))
    assert not np.allclose(with_comp, without, rtol=1e-3, atol=1e-3)


def test_compensation_matches_reference_qwen2(model6_qwen):
    th = median_gate(model6_qwen)
    skip = SkipConfig(threshold=th, span=2, warmup=2, compensation=random_comp(model6_qwen, 0.3))
    stats, _ = check_policy(model6_qwen, skip)
    assert stats["skip_ratio"] > 0


def test_zero_compensation_is_no_compensation(model6):
    th = median_gate(model6)
    base = SkipConfig(threshold=th, span=1, warmup=0, cold_start=0, cold_end=0)
    zeros = dataclasses.replace(base, compensation=np.zeros_like(random_comp(model6, 1.0)))
    eng = _core.Engine(str(model6), backend="cpu", n_ctx=128, n_threads=2)
    tokens = [int(x) for x in np.random.default_rng(5).integers(0, eng.n_vocab, 40)]
    a, sa = run_engine(eng, tokens, 8, base)
    b, sb = run_engine(eng, tokens, 8, zeros)
    assert sa["skip_ratio"] > 0 and sa["skipped"] == sb["skipped"]
    assert np.array_equal(a, b)


def test_decode_applies_compensation_like_teacher_forcing(model6):
    """Token-by-token decoding (eval_generated) and the batched teacher-forced path agree."""
    th = median_gate(model6)
    skip = SkipConfig(threshold=th, span=1, warmup=0, cold_start=0, cold_end=0)
    skip = dataclasses.replace(skip, compensation=random_comp(model6, 0.5, seed=2))
    eng = _core.Engine(str(model6), backend="cpu", n_ctx=128, n_threads=2)
    tokens = [int(x) for x in np.random.default_rng(6).integers(0, eng.n_vocab, 30)]
    batched, _ = run_engine(eng, tokens, 8, skip)
    eng.reset()
    eng.set_skip(skip.to_core())
    eng.eval(tokens[:8])
    rows = [np.array(eng.eval_generated(t, i)) for i, t in enumerate(tokens[8:])]
    err = np.abs(np.stack(rows) - batched[8:]).max() / np.abs(batched[8:]).max()
    assert err <= 1e-4


def test_record_ffn_matches_reference(model6):
    """record_ffn returns h' - h of every evaluated FFN (NaN where skipped), as the reference."""
    th = median_gate(model6)
    skip = SkipConfig(
        threshold=th, span=1, warmup=2, cold_start=1, cold_end=0, record_gates=True, record_ffn=True
    )
    ref = reference.load(model6)
    tokens = [int(x) for x in np.random.default_rng(11).integers(0, ref.hp.n_vocab, 24)]
    ref.forward_with_skip(tokens, 8, skip, incremental=False)
    exp = np.concatenate(ref.ffn_trace)
    eng = _core.Engine(str(model6), backend="cpu", n_ctx=128, n_threads=2)
    eng.logits(tokens, all_positions=True, skip=skip.to_core(), prompt_len=8)
    got = eng.skip_stats()["ffn_out"]
    assert got.shape == (16, ref.hp.n_layer, ref.hp.n_embd)
    skipped = np.isnan(eng.skip_stats()["gates"])
    assert skipped.any()
    assert np.isnan(got[skipped]).all() and not np.isnan(got[~skipped]).any()
    # Compare where both ran the FFN (decisions may part ways at gates within 1e-4, see
    # test_skip.py; the tiny model's first tokens agree).
    both = ~skipped & ~np.isnan(exp[:, :, 0])
    rel = np.linalg.norm(got[both] - exp[both], axis=1) / np.linalg.norm(exp[both], axis=1)
    assert rel.max() <= 1e-2


def test_fit_compensation_is_the_mean_update_of_skipped_tokens():
    rng = np.random.default_rng(0)
    gates = rng.uniform(0.9, 1.0, (50, 4)).astype(np.float32)
    gs = GateSet(gates, np.arange(50) >= 10)
    ffn = rng.standard_normal((50, 4, 3)).astype(np.float32)
    cfg = SkipConfig(threshold=0.95, span=1, warmup=10, cold_start=0, cold_end=0)
    comp = fit_compensation(gs, ffn, cfg)
    mask = simulate(gs, np.full(4, 0.95), 1, 0, 0)
    rows = np.flatnonzero(gs.past_warmup)
    for layer in range(4):
        sel = rows[mask[:, layer]]
        want = ffn[sel, layer].mean(0) if sel.size else np.zeros(3)
        assert np.allclose(comp[layer], want, atol=1e-6)
    assert not comp[0].any()  # layer 0 has no trigger before it: never skipped


def test_compensation_validation(model6):
    with pytest.raises(InvalidArgumentError, match="compensation"):
        SkipConfig(compensation=np.zeros(5))  # not 2-D
    with pytest.raises(InvalidArgumentError, match="non-finite"):
        SkipConfig(compensation=np.full((6, 4), np.nan))
    eng = _core.Engine(str(model6), backend="cpu", n_ctx=16, n_threads=1)
    wrong = SkipConfig(compensation=np.zeros((6, eng.hparams["n_embd"] + 1), np.float32))
    with pytest.raises(InvalidArgumentError, match="n_layer x n_embd"):
        eng.set_skip(wrong.to_core())
    core = SkipConfig().to_core()
    core.compensation = np.array([1.0, math.inf] * (3 * eng.hparams["n_embd"]), np.float32)
    with pytest.raises(InvalidArgumentError, match="not finite"):
        eng.set_skip(core)


def test_profile_with_compensation_round_trips_through_gguf(model6, tmp_path):
    th = median_gate(model6)
    comp = random_comp(model6, 0.5, seed=4)
    cfg = SkipConfig(threshold=th, span=1, warmup=0, cold_start=1, cold_end=1, compensation=comp)
    out = write_profile_gguf(model6, tmp_path / "with-comp.gguf", cfg)
    back = read_profile_gguf(out)
    assert back is not None and same_profile(back, cfg)
    assert np.array_equal(back.compensation, comp)
    assert not same_profile(back, dataclasses.replace(cfg, compensation=comp + 1))
    # JSON round trip keeps it too.
    assert same_profile(SkipConfig.from_json(cfg.to_json()), cfg)
    # The stored profile decodes exactly like the explicit config (and differs from none).
    kw = dict(max_new_tokens=24, temperature=0.0, seed=0)
    with Generator(str(out), backend="cpu", n_ctx=128, n_threads=1) as g:
        assert g.skip is not None and same_profile(g.skip, cfg)
        stored = "".join(g.generate("hello there", **kw))
        stored_stats = g.stats["skip"]
    with Generator(str(model6), backend="cpu", n_ctx=128, n_threads=1, skip=cfg) as g:
        explicit = "".join(g.generate("hello there", **kw))
        explicit_stats = g.stats["skip"]
    assert stored == explicit and stored_stats["skipped"] == explicit_stats["skipped"]
    e1 = _core.Engine(str(out), backend="cpu", n_ctx=64, n_threads=1)
    tokens = list(range(3, 23))
    stored_logits = e1.logits(tokens, all_positions=True, skip=e1.skip_profile, prompt_len=5)
    explicit_logits = e1.logits(tokens, all_positions=True, skip=cfg.to_core(), prompt_len=5)
    assert np.array_equal(stored_logits, explicit_logits)
