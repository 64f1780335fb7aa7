"""Model families beyond llama/qwen2 on the CPU backend, against the numpy reference.

qwen3 (per-head q/k RMSNorm before NEOX rope, no q/k/v bias), llama rope scaling (linear by
`{arch}.rope.scaling.type`, llama3-style by the `rope_freqs.weight` divisors llama.cpp's converter
writes for Llama 3.1/3.2), mistral (llama with `attention.sliding_window` on every layer) and
phi3 (q/k/v stacked in attn_qkv, gate and up in ffn_up, NEOX rope; its longrope variant with
per-pair long/short factors and rope.scaling.attn_factor). Tolerances are those of
test_forward.py: rel. L2 <= 1e-2 and the same top-1 at every position. Each family also runs the
block-skip and channel-sparse paths under forced policies.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import reference
from ffnskip_native import BackendUnavailableError, ModelFormatError, SkipConfig, _core
from test_batch import check_serving_rows
from test_channel_sparse import compare_to_reference, recorded_thresholds
from test_forward import rel_err, rewrite, sample_tokens
from test_skip import check_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import WEIGHT_TYPES, make_model  # noqa: E402

REL_TOL = 1e-2
HEAD_DIM = 16  # make_model's default shape: n_embd 64 over 4 heads


def llama3_factors(
    head_dim: int, base: float, factor: float, low: float, high: float, original_ctx: int
) -> list[float]:
    """Per-pair angle divisors of Llama 3.1 rope scaling (Meta's published rule).

    Wavelengths shorter than original_ctx/high keep their frequency, longer than original_ctx/low
    are divided by `factor`, and those between are interpolated in 1/divisor.
    """
    out = []
    for i in range(head_dim // 2):
        wavelen = 2 * math.pi * base ** (2 * i / head_dim)
        if wavelen < original_ctx / high:
            out.append(1.0)
        elif wavelen > original_ctx / low:
            out.append(factor)
        else:
            smooth = (original_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


# A small original context puts the interpolated band inside head_dim 16's wavelengths
# (2*pi .. 2*pi*10000^(7/8)), so all three regimes of the rule occur.
LLAMA3 = llama3_factors(HEAD_DIM, 10000.0, factor=8.0, low=1.0, high=4.0, original_ctx=256)
LINEAR = {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}
# YaRN with an original context of 1024: over head_dim 16 (base 10000) pair 0 keeps its
# frequency, 1-5 blend, 6-7 are interpolated; q.k is scaled by (1 + 0.1 ln 4)^2.
YARN = {
    "llama.rope.scaling.type": "yarn",
    "llama.rope.scaling.factor": 4.0,
    "llama.rope.scaling.original_context_length": 1024,
}
# Qwen2.5's yarn keys with the optional ones llama.cpp's converter writes when a config has them.
QWEN2_YARN = {
    "qwen2.rope.scaling.type": "yarn",
    "qwen2.rope.scaling.factor": 8.0,
    "qwen2.rope.scaling.original_context_length": 1024,
    "qwen2.rope.scaling.yarn_beta_fast": 16.0,
    "qwen2.rope.scaling.yarn_beta_slow": 2.0,
    "qwen2.rope.scaling.yarn_attn_factor": 1.1,
}
# Mistral 7B v0.1's kind of window (4096 of 32768), scaled down: every layer sees the last 8
# positions, so 40 of the 48 tested positions drop keys.
WINDOW = 8
MISTRAL = {"llama.attention.sliding_window": WINDOW}
# Phi-3-mini-128k's kind of longrope: per-pair factors rising from 1 (long) or near 1 (short),
# original context 32 so that an engine with n_ctx 64 or 128 takes the long ones, and the
# attention factor llama.cpp's converter writes, sqrt(1 + ln(scale) / ln(original context)).
PHI3_ORIG_CTX = 32


def longrope_factors(n_pairs: int) -> tuple[list[float], list[float]]:
    """(long, short) per-pair divisors of the shape of Phi-3-mini-128k's."""
    return [1.0 + 0.5 * i for i in range(n_pairs)], [1.0 + 0.05 * i for i in range(n_pairs)]


LONGROPE_META = {
    "phi3.rope.scaling.original_context_length": PHI3_ORIG_CTX,
    "phi3.rope.scaling.attn_factor": math.sqrt(1 + math.log(16) / math.log(PHI3_ORIG_CTX)),
}


def family_model(path: Path, family: str, **kw) -> Path:
    """A random model of one family: qwen3, llama-linear (rope x1/4), llama3 (rope_freqs)."""
    if family == "qwen3":
        return make_model(path, arch="qwen3", **kw)
    if family == "llama-linear":
        return make_model(path, arch="llama", extra_metadata=LINEAR, **kw)
    if family == "llama3":
        return make_model(path, arch="llama", rope_freqs=LLAMA3, **kw)
    if family == "llama-yarn":
        return make_model(path, arch="llama", extra_metadata=YARN, **kw)
    if family == "qwen2-yarn":
        return make_model(path, arch="qwen2", extra_metadata=QWEN2_YARN, **kw)
    if family == "mistral":
        return make_model(path, arch="llama", extra_metadata=MISTRAL, **kw)
    if family == "phi3":
        return make_model(path, arch="phi3", **kw)
    if family == "phi3-longrope":
        factors = longrope_factors(kw.get("n_embd", 64) // kw.get("n_head", 4) // 2)
        return make_model(
            path, arch="phi3", rope_factors=factors, extra_metadata=LONGROPE_META, **kw
        )
    raise ValueError(family)


FAMILIES = [
    "qwen3",
    "llama-linear",
    "llama3",
    "llama-yarn",
    "qwen2-yarn",
    "mistral",
    "phi3",
    "phi3-longrope",
]


def test_llama3_factors_cover_all_three_regimes():
    assert LLAMA3[0] == 1.0 and LLAMA3[-1] == 8.0
    assert any(1.0 < f < 8.0 for f in LLAMA3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("wtype", ["F32", "Q8_0", "Q4_K"])
def test_family_matches_reference(tmp_path, family, wtype):
    shape = dict(n_embd=256, n_ff=512, n_head=16, n_head_kv=4) if wtype == "Q4_K" else {}
    path = family_model(tmp_path / "m.gguf", family, wtype=wtype, n_layer=2, seed=5, **shape)
    ref = reference.load(path, n_ctx=64)
    tokens = sample_tokens(48, ref.hp.n_vocab, seed=1)
    expected = ref.forward(tokens)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=2)
    got = eng.logits(tokens, all_positions=True)
    err = rel_err(got, expected)
    assert err.max() <= REL_TOL, f"{family}/{wtype}: max rel err {err.max():.3g}"
    assert np.array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("family", ["llama-linear", "llama3", "llama-yarn"])
def test_rope_scaling_changes_the_logits(tmp_path, family):
    # The reference agreeing means nothing if neither applied the scaling: the scaled model must
    # differ from the same weights without it, beyond the forward tolerance.
    plain = make_model(tmp_path / "plain.gguf", arch="llama", wtype="F32", seed=5)
    scaled = family_model(tmp_path / "scaled.gguf", family, wtype="F32", seed=5)
    tokens = sample_tokens(48, 288, seed=1)
    a = _core.Engine(str(plain), backend="cpu", n_ctx=64).logits(tokens, all_positions=True)
    b = _core.Engine(str(scaled), backend="cpu", n_ctx=64).logits(tokens, all_positions=True)
    assert np.array_equal(a[0], b[0])  # position 0 is never rotated
    assert rel_err(b[1:], a[1:]).max() > 10 * REL_TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_family_decode_reproduces_batched_prompt(tmp_path, family):
    path = family_model(tmp_path / "m.gguf", family, wtype="Q8_0", tied=True, seed=2)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=2)
    tokens = sample_tokens(40, eng.n_vocab, seed=3)
    batched = eng.logits(tokens, all_positions=True)
    eng.reset()
    stepwise = np.stack([eng.eval([t]) for t in tokens])
    assert rel_err(stepwise, batched).max() <= 2e-3
    assert np.array_equal(stepwise.argmax(1), batched.argmax(1))


@pytest.mark.parametrize("family", FAMILIES)
def test_family_forced_block_skip_matches_reference(tmp_path, family):
    # threshold -1 fires on every evaluated hot layer: with span 1 the hot layers alternate.
    path = family_model(tmp_path / "m.gguf", family, wtype="F16", n_layer=6, seed=3)
    skip = SkipConfig(threshold=-1.0, span=1, warmup=0, cold_start=1, cold_end=1)
    stats, _ = check_policy(path, skip)
    assert stats["skipped"] == [0, 0, 32, 0, 32, 0]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_channel_sparse_matches_reference(tmp_path, family):
    shape = dict(n_embd=96, n_ff=160, n_head=6)  # head_dim 16, as LLAMA3 expects
    # Seed 7: with seed 6, qwen2-yarn's gate values lie within 1.2e-4 (relative) of the threshold
    # in both layers of one token; two of them swapping sides between engine and reference
    # would leave the dropped counts that compare_to_reference compares unchanged, showing only
    # as a logit error (2.9% at that token, under no counted flip).
    path = family_model(tmp_path / "m.gguf", family, wtype="Q8_0", seed=7, **shape)
    tokens = sample_tokens(24, 288, seed=3)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=128, n_threads=2)
    # Thresholds of 0 keep every entry but run every matrix by input channel: exact decisions
    # and logits within the forward tolerance.
    keep_all = SkipConfig(threshold=math.nan, warmup=2, t_in=0.0, t_gate=0.0, t_mid=0.0)
    logits = eng.logits(tokens, all_positions=True, skip=keep_all.to_core(), prompt_len=6)
    assert eng.skip_stats()["channel_runs"] == [16] * 2
    want, _, _ = reference.load(path, n_ctx=128).forward_with_skip(tokens, 6, keep_all)
    assert rel_err(logits, want).max() <= REL_TOL
    # Real filters at 40/30/30% of the engine's own |h|, |act(gate)|, |m| histograms.
    t_in, t_gate, t_mid = recorded_thresholds(eng, tokens, 6)
    cfg = SkipConfig(threshold=math.nan, warmup=2, t_in=t_in, t_gate=t_gate, t_mid=t_mid)
    stats = compare_to_reference(path, cfg, tokens, 6)
    assert 0.1 < stats["ffn_bytes_saved"] < 0.9
    assert all(d > 0 for d in stats["dropped_gate"])


def test_qwen3_hparams(tmp_path):
    path = make_model(tmp_path / "q.gguf", arch="qwen3", wtype="F32", n_layer=1)
    hp = _core.Engine(str(path), backend="cpu", n_ctx=16).hparams
    assert (hp["arch"], hp["rope"]) == ("qwen3", "neox")


@pytest.mark.parametrize("name", ["blk.0.attn_q_norm.weight", "blk.1.attn_k_norm.weight"])
def test_qwen3_requires_qk_norms(tmp_path, name):
    src = make_model(tmp_path / "q.gguf", arch="qwen3", wtype="F32", n_layer=2)
    bad = rewrite(src, tmp_path / "bad.gguf", drop=name)
    with pytest.raises(ModelFormatError, match=name.replace(".", r"\.")):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def test_qwen3_qk_norm_of_wrong_size_is_rejected(tmp_path):
    src = make_model(tmp_path / "q.gguf", arch="qwen3", wtype="F32", n_layer=1)
    bad = rewrite(src, tmp_path / "bad.gguf", reshape=("blk.0.attn_k_norm.weight", [8]))
    with pytest.raises(ModelFormatError, match=r"attn_k_norm\.weight' has shape \[8\]"):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"llama.rope.scaling.type": "dynamic", "llama.rope.scaling.factor": 4.0}, r"'dynamic'"),
        ({"llama.rope.scaling.type": "longrope"}, r"'longrope'"),
        ({"llama.rope.scaling.type": "yarn"}, r"llama\.rope\.scaling\.factor"),
        (YARN | {"llama.rope.scaling.yarn_ext_factor": 0.5}, r"yarn_ext_factor"),
        (YARN | {"llama.rope.scaling.yarn_log_multiplier": 0.1}, r"yarn_log_multiplier"),
        (YARN | {"llama.rope.scaling.yarn_beta_fast": 0.0}, r"yarn_beta_fast = 0"),
        (YARN | {"llama.rope.scaling.attn_factor": -1.0}, r"attn_factor = -1"),
        ({"llama.rope.scaling.type": "linear"}, r"llama\.rope\.scaling\.factor"),
        ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 0.5}, r"factor"),
    ],
)
def test_unsupported_rope_scaling_is_an_error(tmp_path, meta, message):
    path = make_model(tmp_path / "m.gguf", wtype="F32", n_layer=1, extra_metadata=meta)
    with pytest.raises(ModelFormatError, match=message):
        _core.Engine(str(path), backend="cpu", n_ctx=16)


def test_yarn_keys_change_the_logits(tmp_path):
    # beta_fast/beta_slow move the blend and yarn_attn_factor replaces the default magnitude:
    # each key must reach the logits (and the reference agrees with all of them, above).
    tokens = sample_tokens(40, 288, seed=2)
    logits = []
    for extra in ({}, {"yarn_beta_fast": 8.0}, {"yarn_beta_slow": 8.0}, {"yarn_attn_factor": 1.0}):
        meta = YARN | {f"llama.rope.scaling.{k}": v for k, v in extra.items()}
        path = make_model(tmp_path / "y.gguf", wtype="F32", seed=3, extra_metadata=meta)
        eng = _core.Engine(str(path), backend="cpu", n_ctx=64)
        logits.append(eng.logits(tokens, all_positions=True))
        want = reference.load(path, n_ctx=64).forward(tokens)
        assert rel_err(logits[-1], want).max() <= REL_TOL
    for other in logits[1:]:
        assert rel_err(other[1:], logits[0][1:]).max() > 10 * REL_TOL


def test_yarn_with_partial_rotary_matches_reference(tmp_path):
    # Its magnitude scales only the rotated dimensions (in the cos/sin table, not on q.k), and it
    # is reached: the reference without it misses the engine.
    path = make_model(tmp_path / "y.gguf", wtype="F32", n_rot=8, seed=3, extra_metadata=YARN)
    tokens = sample_tokens(40, 288, seed=2)
    got = _core.Engine(str(path), backend="cpu", n_ctx=64).logits(tokens, all_positions=True)
    want = reference.load(path, n_ctx=64).forward(tokens)
    assert rel_err(got, want).max() <= REL_TOL
    ref = reference.load(path, n_ctx=64)
    ref.hp = dataclasses.replace(ref.hp, rope_mscale=1.0)
    assert rel_err(got[1:], ref.forward(tokens)[1:]).max() > 10 * REL_TOL


@pytest.mark.parametrize(
    "freqs, message", [([1.0] * 7, r"rope_freqs\.weight' has shape"), ([0.0] * 8, r"<= 0")]
)
def test_bad_rope_freqs_are_rejected(tmp_path, freqs, message):
    path = make_model(tmp_path / "m.gguf", wtype="F32", n_layer=1)
    bad = tmp_path / "bad.gguf"
    _with_rope_freqs(path, bad, freqs)
    with pytest.raises(ModelFormatError, match=message):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def _with_rope_freqs(src: Path, dst: Path, freqs: list[float]) -> None:
    """A copy of src with a rope_freqs.weight of any length (make_model checks the length)."""
    import gguf

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "llama")
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(key, field.contents())
        else:
            w.add_key_value(key, field.contents(), field.types[0])
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data))  # all F32 (make_model wtype="F32")
    w.add_tensor("rope_freqs.weight", np.asarray(freqs, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("family", ["qwen3", "llama3"])
def test_cuda_refuses_what_it_cannot_compute(tmp_path, family):
    if not _core.cuda_available():
        pytest.skip("no CUDA device")
    path = family_model(tmp_path / "m.gguf", family, wtype="F32", n_layer=1)
    word = "q/k norm" if family == "qwen3" else "rope_freqs"
    with pytest.raises(BackendUnavailableError, match=word):
        _core.Engine(str(path), backend="cuda", n_ctx=16)


# ---- phi3 -----------------------------------------------------------------------------------


def test_phi3_hparams(tmp_path):
    path = make_model(tmp_path / "p.gguf", arch="phi3", wtype="F32", n_layer=1)
    hp = _core.Engine(str(path), backend="cpu", n_ctx=16).hparams
    assert (hp["arch"], hp["rope"], hp["ffn_act"]) == ("phi3", "neox", "silu")


@pytest.mark.parametrize("wtype", WEIGHT_TYPES)
def test_phi3_fused_views_of_every_block_type(tmp_path, wtype):
    # The q/k/v and gate/up views start inside their fused tensors: a row range of any block
    # type (plain, or grouped by the AVX2 repack) must read as its own matrix.
    kq = wtype.endswith("_K")
    shape = dict(n_embd=256, n_ff=512, n_head=8, n_head_kv=2) if kq else {}
    path = make_model(tmp_path / "p.gguf", arch="phi3", wtype=wtype, seed=4, **shape)
    ref = reference.load(path, n_ctx=64)
    tokens = sample_tokens(32, ref.hp.n_vocab, seed=2)
    got = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=2).logits(
        tokens, all_positions=True
    )
    assert rel_err(got, ref.forward(tokens)).max() <= REL_TOL


def test_phi3_with_separate_q_k_v_tensors(tmp_path):
    # llama.cpp also loads phi3 files whose q, k and v are separate tensors: the same logits.
    import gguf

    fused = make_model(tmp_path / "p.gguf", arch="phi3", wtype="F32", seed=2)
    r = gguf.GGUFReader(fused)
    w = gguf.GGUFWriter(tmp_path / "split.gguf", "phi3")
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(key, field.contents())
        else:
            w.add_key_value(key, field.contents(), field.types[0])
    for t in r.tensors:
        data = np.array(t.data)
        if t.name.endswith("attn_qkv.weight"):  # 64 q rows, then 32 k and 32 v rows
            for name, rows in (
                ("attn_q", data[:64]),
                ("attn_k", data[64:96]),
                ("attn_v", data[96:]),
            ):
                w.add_tensor(t.name.replace("attn_qkv", name), np.ascontiguousarray(rows))
        else:
            w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tokens = sample_tokens(20, 288, seed=3)
    a = _core.Engine(str(fused), backend="cpu", n_ctx=32).logits(tokens, all_positions=True)
    b = _core.Engine(str(tmp_path / "split.gguf"), backend="cpu", n_ctx=32)
    assert np.array_equal(a, b.logits(tokens, all_positions=True))


def test_phi3_partial_rotary_matches_reference(tmp_path):
    # Phi-4-mini rotates 3/4 of each head: dimensions past n_rot pass through unrotated.
    path = make_model(tmp_path / "p.gguf", arch="phi3", wtype="F32", n_rot=12, seed=7)
    ref = reference.load(path, n_ctx=64)
    tokens = sample_tokens(40, ref.hp.n_vocab, seed=2)
    got = _core.Engine(str(path), backend="cpu", n_ctx=64).logits(tokens, all_positions=True)
    assert rel_err(got, ref.forward(tokens)).max() <= REL_TOL


def test_phi3_longrope_takes_long_factors_past_the_original_context(tmp_path):
    # llama.cpp's rule: the long factors when the context exceeds the original one, else the
    # short; the attention factor applies either way.
    path = family_model(tmp_path / "p.gguf", "phi3-longrope", wtype="F32", seed=3)
    tokens = sample_tokens(PHI3_ORIG_CTX, 288, seed=4)
    got = {}
    for n_ctx in (PHI3_ORIG_CTX, 2 * PHI3_ORIG_CTX):
        eng = _core.Engine(str(path), backend="cpu", n_ctx=n_ctx)
        got[n_ctx] = eng.logits(tokens, all_positions=True)
        want = reference.load(path, n_ctx=n_ctx).forward(tokens)
        assert rel_err(got[n_ctx], want).max() <= REL_TOL
    assert rel_err(got[PHI3_ORIG_CTX][1:], got[2 * PHI3_ORIG_CTX][1:]).max() > 10 * REL_TOL
    plain = make_model(tmp_path / "plain.gguf", arch="phi3", wtype="F32", seed=3)
    unscaled = _core.Engine(str(plain), backend="cpu", n_ctx=PHI3_ORIG_CTX)
    # Position 0 is not rotated, but the attention factor still scales q.k (one key: no effect).
    assert rel_err(
        got[PHI3_ORIG_CTX][1:], unscaled.logits(tokens, all_positions=True)[1:]
    ).max() > (10 * REL_TOL)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"drop": "blk.1.attn_qkv.weight"}, r"blk\.1\.attn_qkv\.weight"),
        ({"reshape": ("blk.0.ffn_up.weight", [128, 64])}, r"ffn_up\.weight' has shape \[64, 128\]"),
        ({"reshape": ("blk.0.attn_qkv.weight", [64, 96])}, r"attn_qkv\.weight' has shape"),
        ({"drop": "rope_factors_short.weight"}, r"rope_factors_short\.weight"),
        ({"reshape": ("rope_factors_long.weight", [4])}, r"rope_factors_long\.weight' has shape"),
    ],
)
def test_phi3_bad_tensors_are_rejected(tmp_path, change, message):
    src = family_model(tmp_path / "p.gguf", "phi3-longrope", wtype="F32", n_layer=2)
    bad = rewrite(src, tmp_path / "bad.gguf", **change)
    with pytest.raises(ModelFormatError, match=message):
        _core.Engine(str(bad), backend="cpu", n_ctx=16)


def test_phi3_attn_factor_with_partial_rotary_matches_reference(tmp_path):
    # Phi-4-mini: longrope's factor on the rotated 3/4 of each head only, past and within the
    # original context.
    factors = ([1.0 + 0.3 * i for i in range(6)], [1.0 + 0.01 * i for i in range(6)])
    path = make_model(
        tmp_path / "p.gguf",
        arch="phi3",
        wtype="F32",
        n_rot=12,
        seed=5,
        rope_factors=factors,
        extra_metadata=LONGROPE_META,
    )
    tokens = sample_tokens(PHI3_ORIG_CTX, 288, seed=4)
    for n_ctx in (PHI3_ORIG_CTX, 2 * PHI3_ORIG_CTX):
        got = _core.Engine(str(path), backend="cpu", n_ctx=n_ctx).logits(tokens, all_positions=True)
        assert rel_err(got, reference.load(path, n_ctx=n_ctx).forward(tokens)).max() <= REL_TOL


# ---- sliding window on every layer (mistral, phi3) -----------------------------------------


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_every_layer_window_drops_keys_past_it(tmp_path, arch):
    meta = {f"{arch}.attention.sliding_window": WINDOW}
    path = make_model(tmp_path / "w.gguf", arch=arch, wtype="F32", seed=8, extra_metadata=meta)
    plain = make_model(tmp_path / "p.gguf", arch=arch, wtype="F32", seed=8)
    tokens = sample_tokens(48, 288, seed=5)
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64)
    assert eng.hparams["sliding_window"] == WINDOW
    got = eng.logits(tokens, all_positions=True)
    assert rel_err(got, reference.load(path, n_ctx=64).forward(tokens)).max() <= REL_TOL
    full = _core.Engine(str(plain), backend="cpu", n_ctx=64).logits(tokens, all_positions=True)
    # The same up to the window, different once keys fall out of it.
    assert rel_err(got[:WINDOW], full[:WINDOW]).max() <= 1e-5
    assert rel_err(got[WINDOW + 4 :], full[WINDOW + 4 :]).min() > 10 * REL_TOL


def test_mistral_serving_rows_past_the_window(tmp_path):
    # Batched serving steps: sequences at different positions, each past the window for most of
    # its tokens, give bitwise the logits of decoding alone, and those match the reference.
    path = family_model(tmp_path / "m.gguf", "mistral", wtype="Q8_0", seed=7)
    check_serving_rows(path, reference.load(path, n_ctx=64).forward, REL_TOL)


def test_window_covering_the_context_is_dropped(tmp_path):
    # A window of at least n_ctx cannot drop a key: such an engine runs as if there were none,
    # which also lets rope scaling through (Phi-3-mini-128k: window 262144, longrope).
    meta = {"phi3.attention.sliding_window": 64} | LONGROPE_META
    path = make_model(
        tmp_path / "p.gguf",
        arch="phi3",
        wtype="F32",
        rope_factors=longrope_factors(8),
        extra_metadata=meta,
    )
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64)
    tokens = sample_tokens(40, 288, seed=1)
    want = reference.load(path, n_ctx=64).forward(tokens)
    assert rel_err(eng.logits(tokens, all_positions=True), want).max() <= REL_TOL
    # A window inside the context with rope scaling: not supported (the local rope is unscaled).
    with pytest.raises(ModelFormatError, match=r"sliding_window = 64 < n_ctx 65.*rope scaling"):
        _core.Engine(str(path), backend="cpu", n_ctx=65)


@pytest.mark.parametrize(
    "family, message", [("phi3-longrope", "rope"), ("mistral", "sliding-window")]
)
def test_cuda_refuses_what_its_attention_lacks(tmp_path, family, message):
    # CUDA attention has no rope magnitude and no every-layer window.
    if not _core.cuda_available():
        pytest.skip("no CUDA device")
    path = family_model(tmp_path / "m.gguf", family, wtype="F32", n_layer=1)
    with pytest.raises(BackendUnavailableError, match=message):
        _core.Engine(str(path), backend="cuda", n_ctx=16)
