"""Channel-sparse FFN (kind 2) against independent float64 references.

Kernels (weights laid out by input channel, cpu/transposed.h), at both SIMD levels:
- the sparse product equals W[:, active] @ x[active] in float64 within 1e-2 relative L2 for the
  quantized types (8-bit terms, a second one on the blocks with most of the first's rounding
  error, cpu/transposed.h SparseInput: measured 4.9e-4 to 2.6e-3 on Gaussian inputs, 1.7e-5 to
  2.9e-5 with second terms everywhere) and 1e-5 for the float types (f32 accumulation: measured
  2e-7 to 6e-7);
- scalar and AVX2 compute the same integer sums and differ only in float summation order: 1e-6;
- the listed-rows product (gate-first W_up) equals the dense rows: 1e-4 to float64.
Models (tests/reference.py extended with the channel rule), logits within REL_TOL = 1e-2 relative
L2 (the forward tests' tolerance; entries within rounding of a threshold may be kept by one side
and dropped by the other: compare_to_reference says how much that may move).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import reference
from _quant_blocks import WEIGHT_TYPES, random_blocks
from ffnskip_native import InvalidArgumentError, SkipConfig, _core
from ffnskip_native.channel_stats import channel_thresholds
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

T = _core._testing
# Kernel levels; the x86 sparse product at both lane widths (cpu::sparse_lanes: 512 bits where the
# CPU has AVX-512).
LEVELS = ["scalar", "avx2-256", "avx2-512"]
FLOAT_TYPES = {Q.F32, Q.F16, Q.BF16}
K_TYPES = {Q.Q4_K, Q.Q5_K, Q.Q6_K}
REL_TOL = 1e-2
# The engine's rounding on the channel path before any decision flips: its sparse products take
# 8-bit input terms (cpu/transposed.h SparseInput), measured up to 4.2e-3 of the logits on these
# random-weight models (16-bit inputs: below 2e-3).
ROUNDING = 6e-3
SHIFT = 2e-3
NAN = float("nan")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_test_model import make_model  # noqa: E402


def set_level(level: str) -> bool:
    name, _, lanes = level.partition("-")
    return T.set_simd_level(name) and (not lanes or T.set_sparse_lanes(int(lanes)))


DEFAULT_LANES = _core.sparse_lanes()


def reset_level() -> None:
    T.set_simd_level("auto")
    if DEFAULT_LANES:
        T.set_sparse_lanes(DEFAULT_LANES)


@pytest.fixture(params=LEVELS)
def level(request):
    if not set_level(request.param):
        reset_level()
        pytest.skip(f"CPU cannot run {request.param}")
    yield request.param
    reset_level()


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def kernel_case(qtype: Q, rows: int, cols: int, density: float, seed: int):
    rng = np.random.default_rng(seed)
    w = random_blocks(qtype, rows, cols, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    active = np.sort(rng.choice(cols, int(round(cols * density)), replace=False)).astype(np.int32)
    full = dequantize(w, qtype).astype(np.float64).reshape(rows, cols)
    return w, x, active, full


# ---- kernels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_sparse_matvec_matches_float64(qtype, density, level):
    # 70 outputs: a full group of 64 and a padded one; 1024 inputs: 4 super-blocks.
    rows, cols = 70, 1024
    w, x, active, full = kernel_case(
        qtype, rows, cols, density, seed=int(qtype) + int(100 * density)
    )
    y, _, _ = T.sparse_matvec(int(qtype), w.tobytes(), rows, cols, x, active, n_threads=2)
    want = full[:, active] @ x[active].astype(np.float64)
    assert rel_l2(y, want) <= (1e-5 if qtype in FLOAT_TYPES else 1e-2)
    # The dense kernel on x with the dropped channels zeroed: the same product.
    xz = np.zeros_like(x)
    xz[active] = x[active]
    dense = T.matmul(int(qtype), w.tobytes(), rows, cols, xz[None])[0]
    assert rel_l2(y, dense) <= (2e-5 if qtype in FLOAT_TYPES else 1e-2)


def test_sparse_lanes_setting():
    # x86: 256 always settable, 512 only with AVX-512; other hosts have neither.
    assert DEFAULT_LANES in (0, 256, 512)
    assert not T.set_sparse_lanes(128)
    try:
        assert T.set_sparse_lanes(256) == (DEFAULT_LANES != 0)
        assert T.set_sparse_lanes(512) == (DEFAULT_LANES == 512)
    finally:
        reset_level()
    assert _core.sparse_lanes() == DEFAULT_LANES


@pytest.mark.parametrize("lanes", [256, 512])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_sparse_scalar_and_avx2_agree(qtype, lanes):
    # 150 outputs: three groups of 64, so 512-bit lanes also take their half-vector tail.
    if not set_level(f"avx2-{lanes}"):
        reset_level()
        pytest.skip(f"CPU cannot run avx2-{lanes}")
    try:
        w, x, active, _ = kernel_case(qtype, 150, 512, 0.6, seed=5)
        fast, _, _ = T.sparse_matvec(int(qtype), w.tobytes(), 150, 512, x, active)
        T.set_simd_level("scalar")
        slow, _, _ = T.sparse_matvec(int(qtype), w.tobytes(), 150, 512, x, active)
    finally:
        reset_level()
    assert rel_l2(fast, slow.astype(np.float64)) <= 1e-6


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q4_K, Q.Q6_K, Q.F16], ids=lambda q: q.name)
def test_sparse_thread_parts_agree(qtype, level):
    # Threads split a product by input blocks and add their outputs (cpu/channel_ffn.h: W_down
    # has too few outputs to split): the same integer sums, folded and added in another order.
    w, x, active, _ = kernel_case(qtype, 200, 512, 0.5, seed=8)
    one, _, _ = T.sparse_matvec(int(qtype), w.tobytes(), 200, 512, x, active, n_threads=1)
    for n in (2, 3, 7):
        part, _, _ = T.sparse_matvec(int(qtype), w.tobytes(), 200, 512, x, active, n_threads=n)
        assert rel_l2(part, one.astype(np.float64)) <= 1e-6


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.Q4_K, Q.Q6_K], ids=lambda q: q.name)
def test_sparse_edge_inputs(qtype, level):
    rows, cols = 64, 512
    w, x, _, full = kernel_case(qtype, rows, cols, 0.5, seed=2)
    for active in ([], [0], [cols - 1], [3, 4, 5], list(range(0, cols, 37))):
        a = np.asarray(active, dtype=np.int32)
        y, read, _ = T.sparse_matvec(int(qtype), w.tobytes(), rows, cols, x, a)
        want = full[:, a] @ x[a].astype(np.float64)
        if len(a) == 0:
            assert read == 0 and np.all(y == 0)
        else:
            assert rel_l2(y, want) <= 1e-2
    # A NaN input value makes its block's contribution NaN (a broken model shows up), never UB.
    xn = x.copy()
    xn[7] = np.nan
    y, _, _ = T.sparse_matvec(
        int(qtype), w.tobytes(), rows, cols, xn, np.arange(16, dtype=np.int32)
    )
    assert np.isnan(y).all()
    with pytest.raises(InvalidArgumentError):
        T.sparse_matvec(int(qtype), w.tobytes(), rows, cols, x, np.array([5, 3], dtype=np.int32))


def python_bytes(shape: dict, active: np.ndarray) -> int:
    """Bytes a product reads: the active channels' code rows, and the scale rows of the blocks
    (and super-blocks) holding an active channel."""
    n = shape["code_row"] * len(active)
    if shape["blk"] > 1:
        n += shape["scale_row"] * len(np.unique(active // shape["blk"]))
    if shape["super"] > 0:
        n += shape["super_row"] * len(np.unique(active // shape["super"]))
    return n


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_layout_and_read_bytes(qtype):
    rows, cols = 64, 1024
    w, x, active, _ = kernel_case(qtype, rows, cols, 0.3, seed=11)
    shape = T.transposed_shape(int(qtype), rows, cols)
    _, read, layout = T.sparse_matvec(int(qtype), w.tobytes(), rows, cols, x, active)
    assert read == python_bytes(shape, active)
    # Lossless layout: the file's bytes, plus for Q4_K/Q5_K the 6-bit scales and mins unpacked
    # to bytes (4 more bytes per super-block and output).
    extra = rows * (cols // 256) * 4 if qtype in (Q.Q4_K, Q.Q5_K) else 0
    assert layout == w.nbytes + extra
    _, all_read, _ = T.sparse_matvec(
        int(qtype), w.tobytes(), rows, cols, x, np.arange(cols, dtype=np.int32)
    )
    assert all_read == layout


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_matvec_rows(qtype, grouped, level):
    if grouped and qtype not in (Q.Q4_0, Q.Q4_1):
        pytest.skip("only Q4_0 / Q4_1 have a grouped layout")
    rows, cols = 53, 512
    w, x, _, full = kernel_case(qtype, rows, cols, 1.0, seed=int(qtype) + 40)
    listed = np.sort(np.random.default_rng(1).choice(rows, 30, replace=False)).astype(np.int32)
    y = T.matvec_rows(int(qtype), w.tobytes(), rows, cols, x, listed, grouped=grouped)
    assert rel_l2(y[listed], full[listed] @ x.astype(np.float64)) <= (
        1e-5 if qtype in FLOAT_TYPES else 1e-4
    )
    assert np.isnan(np.delete(y, listed)).all()  # unlisted rows are not written


# ---- models --------------------------------------------------------------------------------------


def tiny_model(tmp_path_factory, arch: str, qtype: Q) -> Path:
    big = qtype in K_TYPES  # K-quants need multiples of 256
    return make_model(
        tmp_path_factory.mktemp("chan") / f"{arch}-{qtype.name}.gguf",
        arch=arch,
        wtype=qtype.name,
        n_layer=2,
        n_embd=256 if big else 96,
        n_ff=512 if big else 160,
        seed=int(qtype) + 7,
    )


def recorded_thresholds(eng, tokens, prompt_len, fractions=(0.4, 0.3, 0.3)):
    """Per-layer thresholds at these fractions of the engine's own |h|, |g|, |m| histograms."""
    rec = SkipConfig(threshold=NAN, warmup=0, record_channels=True)
    eng.logits(tokens, all_positions=True, skip=rec.to_core(), prompt_len=prompt_len)
    st = eng.skip_stats()
    return [
        [float(t) for t in channel_thresholds(st[key], f)]
        for key, f in zip(("hist_h", "hist_g", "hist_m"), fractions)
    ]


def scaled(cfg: SkipConfig, factor: float) -> SkipConfig:
    return dataclasses.replace(
        cfg,
        **{k: [t * factor for t in cfg.channel_list(k)] for k in ("t_in", "t_gate", "t_mid")},
    )


def compare_to_reference(path: Path, cfg: SkipConfig, tokens, prompt_len):
    """Engine vs reference under cfg: block-skip decisions, per-token dropped counts, logits.

    A value within the engine's rounding of a threshold may be kept by one side and dropped by
    the other (the engine's values differ from float64 by ~5e-4 of their vector's scale: f16 KV
    cache, 16-bit activations whose step grows with a block's outlier). A flip moves the other
    values of its layer, and later tokens through the KV cache, so such a model is sensitive to
    where exactly its thresholds sit: the reference itself, with every threshold moved by
    SHIFT, flips as many entries and moves SmolLM2's logits by ~10%. So the engine is held to
    the reference's own sensitivity: per token, flips and logit error within twice those of
    the reference against itself with thresholds moved down or up (medians and maxima), and
    before the first flip to rounding (ROUNDING). The same (token, layer)s must run the channel FFN.
    REL_TOL is checked where no flip can happen (thresholds of 0, in the every-type test).
    """
    eng = _core.Engine(str(path), backend="cpu", n_ctx=128, n_threads=2)
    core = dataclasses.replace(cfg, record_gates=True).to_core()
    logits = eng.logits(tokens, all_positions=True, skip=core, prompt_len=prompt_len)
    stats = eng.skip_stats()
    ref = reference.load(path)
    shifted = []
    for factor in (1 - SHIFT, 1 + SHIFT):
        out, _, _ = ref.forward_with_skip(tokens, prompt_len, scaled(cfg, factor))
        shifted.append((out, np.concatenate(ref.channel_trace)))
    want, skipped, _ = ref.forward_with_skip(tokens, prompt_len, cfg)
    drops = np.concatenate(ref.channel_trace)  # (n_gen, n_layer, 3), -1: no channel FFN
    assert stats["skipped"] == skipped[prompt_len:].sum(0).tolist()
    got = stats["drops"]
    assert np.array_equal(got < 0, drops < 0)
    ran = drops[..., 0] >= 0
    assert stats["channel_runs"] == ran.sum(0).tolist()
    for k, key in enumerate(("dropped_in", "dropped_gate", "dropped_mid")):
        assert stats[key] == np.where(ran, got[..., k], 0).sum(0).tolist()
    flips = np.abs(got - drops).sum(axis=(1, 2))
    ref_flips = [np.abs(d - drops).sum(axis=(1, 2)) for _, d in shifted]
    assert np.median(flips) <= 2 * max(np.median(f) for f in ref_flips) + 2
    assert flips.max() <= 2 * max(f.max() for f in ref_flips) + 8

    def rel(a: np.ndarray) -> np.ndarray:
        return np.linalg.norm(a - want, axis=1) / np.linalg.norm(want, axis=1)

    err, ref_err = rel(logits), [rel(out) for out, _ in shifted]
    first = prompt_len + (np.flatnonzero(flips)[0] if flips.any() else len(flips))
    assert err[:first].max() <= ROUNDING
    assert np.median(err) <= 2 * max(np.median(e) for e in ref_err) + ROUNDING
    assert err.max() <= 2 * max(e.max() for e in ref_err) + REL_TOL
    return stats


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda q: q.name)
def test_matches_reference_every_type(tmp_path_factory, arch, qtype):
    path = tiny_model(tmp_path_factory, arch, qtype)
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 288, 20)]
    eng = _core.Engine(str(path), backend="cpu", n_ctx=128, n_threads=2)
    # Thresholds of 0 keep everything (no flip possible) yet run every matrix by input channel:
    # decisions exact and logits within the forward tests' tolerance.
    keep_all = SkipConfig(threshold=NAN, warmup=2, t_in=0.0, t_gate=0.0, t_mid=0.0)
    logits = eng.logits(tokens, all_positions=True, skip=keep_all.to_core(), prompt_len=6)
    assert eng.skip_stats()["channel_runs"] == [12, 12]
    want, _, _ = reference.load(path).forward_with_skip(tokens, 6, keep_all)
    assert (np.linalg.norm(logits - want, axis=1) / np.linalg.norm(want, axis=1)).max() <= REL_TOL
    t_in, t_gate, t_mid = recorded_thresholds(eng, tokens, 6)
    # Layer 0 the TEAL-like variant (t_in + t_mid), layer 1 all three filters.
    cfg = SkipConfig(threshold=NAN, warmup=2, t_in=t_in, t_gate=[NAN, t_gate[1]], t_mid=t_mid)
    stats = compare_to_reference(path, cfg, tokens, 6)
    assert 0.1 < stats["ffn_bytes_saved"] < 0.9
    assert all(d > 0 for d in stats["dropped_in"]) and stats["dropped_gate"][0] == 0


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q4_K], ids=lambda q: q.name)
def test_gate_first_and_block_skip_compose(tmp_path_factory, qtype):
    path = make_model(
        tmp_path_factory.mktemp("chan") / "six.gguf",
        wtype=qtype.name,
        n_layer=6,
        n_embd=256,
        n_ff=512,
        seed=21,
    )
    tokens = [int(t) for t in np.random.default_rng(4).integers(0, 288, 30)]
    eng = _core.Engine(str(path), backend="cpu", n_ctx=128, n_threads=2)
    _, t_gate, _ = recorded_thresholds(eng, tokens, 8)
    # The block gate's cosine is taken on the channel FFN's output; a forced threshold of -1
    # skips the span after every hot layer that runs.
    cfg = SkipConfig(threshold=-1.0, span=1, warmup=3, cold_start=1, cold_end=1, t_gate=t_gate)
    stats = compare_to_reference(path, cfg, tokens, 8)
    assert sum(stats["skipped"]) > 0 and sum(stats["dropped_gate"]) > 0
    # Skipped blocks read nothing, so they count as saved bytes too.
    assert stats["ffn_bytes_saved"] > sum(stats["skipped"]) / (6 * (len(tokens) - 8))


def test_all_nan_thresholds_are_bitwise_dense(smollm2_path):
    eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=128, n_threads=2)
    tokens = [int(t) for t in np.random.default_rng(5).integers(0, eng.n_vocab, 40)]
    # The same split into prompt (8) and generated tokens (32, one batch) as the runs below: a
    # prompt of 40 would reach the AMX kernels (32 tokens or more) for all of them.
    dense = eng.logits(tokens, all_positions=True, prompt_len=8)
    n = eng.n_layer
    for cfg in (
        SkipConfig(threshold=NAN, warmup=0, t_in=[NAN] * n, t_gate=NAN, t_mid=[NAN] * n),
        SkipConfig(threshold=NAN, warmup=0, t_in=NAN),
        SkipConfig(enabled=False, t_in=0.0, t_mid=0.0),
        SkipConfig(threshold=NAN, warmup=100, t_in=1.0, t_gate=1.0),
    ):
        got = eng.logits(tokens, all_positions=True, skip=cfg.to_core(), prompt_len=8)
        assert np.array_equal(got, dense), cfg
        assert eng.skip_stats()["ffn_bytes_saved"] == 0.0


def test_smollm2_matches_reference(smollm2_path):
    eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=128, n_threads=2)
    tokens = eng.tokenize(
        "The old lighthouse keeper climbed the stairs every evening to light the lamp, and "
        "from the top he could see the fishing boats coming home across the grey water.",
        False,
        False,
    )[:40]
    t_in, _, t_mid = recorded_thresholds(eng, tokens, 10, fractions=(0.3, 0.3, 0.3))
    cfg = SkipConfig(threshold=NAN, warmup=2, t_in=t_in, t_mid=t_mid)
    reference.limit_blas_threads(2)
    stats = compare_to_reference(smollm2_path, cfg, tokens, 10)
    assert stats["ffn_bytes_saved"] > 0.15


def forced_and_decoded(path: Path, cfg: SkipConfig, tokens, prompt_len):
    """(logits, stats) of teacher-forced logits() and of decoding token by token."""
    eng = _core.Engine(str(path), backend="cpu", n_ctx=128, n_threads=2)
    core = dataclasses.replace(cfg, record_gates=True).to_core()
    forced = eng.logits(tokens, all_positions=True, skip=core, prompt_len=prompt_len)
    forced_stats = eng.skip_stats()
    eng.reset()
    eng.set_skip(core)
    rows = [eng.eval(tokens[:prompt_len], all_logits=True)]
    rows += [eng.eval_generated(t, i)[None] for i, t in enumerate(tokens[prompt_len:])]
    return forced, forced_stats, np.concatenate(rows), eng.skip_stats()


@pytest.mark.parametrize(
    "channel",
    [dict(t_in=0.4, t_mid=0.08), dict(t_gate=0.15), dict(t_in=0.4, t_gate=0.15, t_mid=0.08)],
    ids=["in_mid", "gate", "all"],
)
def test_teacher_forced_equals_token_by_token_decoding(model6, channel):
    # The channel FFN runs one token at a time on both paths; only the dense parts (attention,
    # projections) batch differently, rounding apart by ~1e-7 of their scale. A value that close
    # to a threshold is too rare in this model (~10^4 filtered entries) to happen: the decisions
    # are identical, and with them the block gate's (cosines on the channel FFN's output).
    cfg = SkipConfig(threshold=0.995, span=1, warmup=3, cold_start=1, cold_end=1, **channel)
    tokens = [int(t) for t in np.random.default_rng(6).integers(0, 288, 30)]
    forced, want, decoded, got = forced_and_decoded(model6, cfg, tokens, 8)
    assert sum(got["channel_runs"]) > 0 and sum(got["dropped_in"] + got["dropped_gate"]) > 0
    np.testing.assert_array_equal(got["drops"], want["drops"])
    assert got["skipped"] == want["skipped"] and got["ffn_bytes_read"] == want["ffn_bytes_read"]
    assert np.nanmax(np.abs(got["gates"] - want["gates"])) <= 1e-5
    assert rel_l2(forced, decoded) <= 1e-4


def test_teacher_forced_decisions_smollm2(smollm2_path):
    """On SmolLM2 (~3 x 10^5 filtered entries per token) batched and one-token dense kernels
    round apart by ~3e-4 of the logits (the warm-up tokens below), enough to move a value across
    a threshold now and then; a flip moves the rest of its token's layers, so from the first one
    (here layer 2 of the first gated token) decisions agree only statistically."""
    cfg = SkipConfig(threshold=NAN, warmup=3, t_in=0.05, t_gate=0.1, t_mid=0.02)
    eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=128, n_threads=2)
    tokens = [int(t) for t in np.random.default_rng(6).integers(0, eng.n_vocab, 30)]
    forced, want, decoded, got = forced_and_decoded(smollm2_path, cfg, tokens, 8)
    assert got["channel_runs"] == want["channel_runs"]
    err = np.linalg.norm(forced - decoded, axis=1) / np.linalg.norm(decoded, axis=1)
    assert err[:11].max() <= 1e-3  # prompt and warm-up: dense
    flips = np.abs(got["drops"] - want["drops"]).sum(axis=(1, 2))
    filtered = eng.n_layer * (576 + 2 * 1536)
    assert flips.max() <= 0.01 * filtered
    for key in ("dropped_in", "dropped_gate", "dropped_mid"):
        assert abs(sum(got[key]) - sum(want[key])) <= 0.01 * sum(want[key])
    assert np.median(err) <= 0.1


def test_stats_bytes_for_known_masks(smollm2_path):
    """Byte counts against a Python count, with thresholds that keep all or nothing."""
    eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=64, n_threads=2)
    n = eng.n_layer
    dense = eng.layer_ffn_bytes()
    gate = [b // 3 for b in dense]  # SmolLM2: gate, up and down have the same size and type
    tokens = [int(t) for t in np.random.default_rng(7).integers(0, eng.n_vocab, 12)]
    shape_in = T.transposed_shape(3, 1536, 576)  # Q4_1 ffn_gate / ffn_up by input channel
    shape_mid = T.transposed_shape(3, 576, 1536)  # ffn_down
    all_in = python_bytes(shape_in, np.arange(576))
    all_mid = python_bytes(shape_mid, np.arange(1536))
    inf = float("inf")
    cases = [
        # t_in keeps all, t_mid drops all: gate and up fully by input channel, no down.
        (dict(t_in=0.0, t_mid=inf), [2 * all_in] * n),
        # gate-first dropping every neuron: dense gate only.
        (dict(t_gate=inf), gate),
        # t_mid keeping all in odd layers, off in even ones (dense FFN there).
        (
            dict(t_mid=[0.0 if i % 2 else NAN for i in range(n)]),
            [2 * gate[i] + all_mid if i % 2 else dense[i] for i in range(n)],
        ),
    ]
    for channel, per_token in cases:
        cfg = SkipConfig(threshold=NAN, warmup=0, **channel)
        eng.logits(tokens, all_positions=False, skip=cfg.to_core(), prompt_len=4)
        st = eng.skip_stats()
        assert st["ffn_bytes_read"] == [8 * b for b in per_token], channel
        assert st["ffn_bytes_dense"] == dense
        assert st["ffn_bytes_saved"] == pytest.approx(1 - sum(per_token) / sum(dense))


def test_recorded_histograms_match_reference(tmp_path_factory):
    path = tiny_model(tmp_path_factory, "llama", Q.F32)
    tokens = [int(t) for t in np.random.default_rng(8).integers(0, 288, 16)]
    eng = _core.Engine(str(path), backend="cpu", n_ctx=64, n_threads=2)
    cfg = SkipConfig(threshold=NAN, warmup=0, record_channels=True, t_mid=0.0)
    eng.logits(tokens, all_positions=True, skip=cfg.to_core(), prompt_len=4)
    st = eng.skip_stats()
    edges = _core.channel_hist_edges()
    assert st["hist_h"].shape == (2, edges.size)
    assert st["hist_h"].sum() == 12 * 2 * 96 and st["hist_m"].sum() == 12 * 2 * 160
    # The reference's |h| of the same tokens, binned by the same edges: a value within rounding
    # of an edge may land in the neighbouring bin.
    ref = reference.load(path)
    seen: list[np.ndarray] = []
    ffn = ref._ffn

    def spy(layer, h, channel=None):
        seen.append((layer, h.copy()))
        return ffn(layer, h, channel)

    ref._ffn = spy
    ref.forward_with_skip(tokens, 4, dataclasses.replace(cfg))
    for layer in range(2):
        hs = np.concatenate([h for lay, h in seen if lay == layer][1:])  # [0]: the prompt
        hn = reference.rms_norm(hs, ref.weight(f"blk.{layer}.ffn_norm.weight"), ref.hp.eps)
        want = np.bincount(
            np.searchsorted(edges, np.abs(hn).ravel(), side="right") - 1, minlength=edges.size
        )
        # A value within rounding (~5e-4 of the vector's scale) of a bin edge lands in the
        # neighbouring bin: the cumulative counts differ by the few values at any one edge.
        assert np.abs(np.cumsum(st["hist_h"][layer]) - np.cumsum(want)).max() <= 6


def test_channel_thresholds_quantiles():
    edges = _core.channel_hist_edges()
    rng = np.random.default_rng(9)
    v = np.abs(rng.standard_normal((3, 20000)) * np.array([[1e-3], [1.0], [50.0]]))
    hist = np.stack(
        [np.bincount(np.searchsorted(edges, r, side="right") - 1, minlength=edges.size) for r in v]
    )
    for f in (0.1, 0.4, 0.75):
        got = channel_thresholds(hist, f)
        want = np.quantile(v, f, axis=1)
        assert np.all(np.abs(got / want - 1) <= 0.025)
    assert np.isnan(channel_thresholds(np.zeros_like(hist), 0.5)).all()
    assert np.isnan(channel_thresholds(hist, [0.5, NAN, 0.5])[1])
    with pytest.raises(InvalidArgumentError):
        channel_thresholds(hist, 1.5)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(t_in=-0.5), "negative"),
        (dict(t_mid=[0.1, 0.2]), "t_mid"),
        (dict(t_gate=[0.1] * 3), "t_gate"),
    ],
)
def test_bad_channel_configs_are_rejected(smollm2_path, kw, message):
    eng = _core.Engine(str(smollm2_path), backend="cpu", n_ctx=16)
    with pytest.raises(InvalidArgumentError, match=message):
        eng.set_skip(SkipConfig(**kw).to_core())
    core = _core.SkipConfig()
    core.t_in = [-1.0]
    with pytest.raises(InvalidArgumentError, match="negative"):
        eng.set_skip(core)


def test_profile_round_trip(smollm2_path, tmp_path):
    from ffnskip_native.profile_gguf import read_profile_gguf, same_profile, write_profile_gguf

    n = 30
    cfg = SkipConfig(
        threshold=NAN, warmup=4, t_in=[0.05] * n, t_gate=NAN, t_mid=[NAN] + [0.02] * (n - 1)
    )
    out = write_profile_gguf(smollm2_path, tmp_path / "chan.gguf", cfg)
    back = read_profile_gguf(out)
    assert back is not None and same_profile(back, cfg)
    assert back.t_gate is not None and math.isnan(back.t_gate)
    # The stored profile is what the engine decodes with by default.
    eng = _core.Engine(str(out), backend="cpu", n_ctx=64, n_threads=2)
    eng.eval(eng.tokenize("Hello there", True, False))
    for i in range(3):
        eng.eval_generated(42 + i, 4 + i)
    st = eng.skip_stats()
    assert sum(st["channel_runs"]) == 3 * n and st["ffn_bytes_saved"] > 0
    # A kind-1-only profile still reads back without channel thresholds.
    out1 = write_profile_gguf(smollm2_path, tmp_path / "block.gguf", SkipConfig(threshold=0.97))
    back1 = read_profile_gguf(out1)
    assert back1 is not None and back1.t_in is None and back1.t_mid is None


def test_config_dict_round_trip():
    cfg = SkipConfig(threshold=NAN, t_in=[0.1, NAN], t_gate=0.2, record_channels=True)
    d = cfg.to_dict()
    assert d["t_in"] == [0.1, None] and d["t_gate"] == 0.2 and d["t_mid"] is None
    back = SkipConfig.from_json(cfg.to_json())
    assert back.channel_list("t_in")[0] == 0.1 and math.isnan(back.channel_list("t_in")[1])
    assert back.record_channels
    core = cfg.to_core()
    assert list(core.t_gate) == [pytest.approx(0.2)] and list(core.t_mid) == []
