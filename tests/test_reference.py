"""Checks that make tests/reference.py and tools/make_test_model.py trustworthy on their own,
independently of the C++ engine: rope algebra, a real model speaking English, the skip rule on
hand-checkable cases, and well-formed random models for every weight type."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import reference as ref

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
import make_test_model as mtm  # noqa: E402

# ---- (a) rope -----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["norm", "neox"])
@pytest.mark.parametrize("n_rot", [16, 8])
def test_rope_dot_products_depend_only_on_relative_position(style: str, n_rot: int) -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 16))
    k = rng.standard_normal((1, 2, 16))

    def score(pq: int, pk: int) -> np.ndarray:
        rq = ref.rope(q, np.array([pq]), n_rot, 10000.0, style)
        rk = ref.rope(k, np.array([pk]), n_rot, 10000.0, style)
        return np.sum(rq * rk, axis=-1)

    base = score(7, 3)
    for shift in (1, 10, 500):
        np.testing.assert_allclose(score(7 + shift, 3 + shift), base, rtol=1e-10, atol=1e-10)
    assert not np.allclose(score(8, 3), base), "a different relative position must change q.k"
    # Rotations preserve norms; unrotated dims (>= n_rot) pass through.
    r = ref.rope(q, np.array([123]), n_rot, 10000.0, style)
    np.testing.assert_allclose(np.linalg.norm(r, axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-12)
    np.testing.assert_array_equal(r[..., n_rot:], q[..., n_rot:])


def test_rope_pairing_norm_adjacent_neox_halves() -> None:
    n_rot, pos = 8, 0.7
    e0 = np.zeros((1, 1, n_rot))
    e0[..., 0] = 1.0
    norm = ref.rope(e0, np.array([pos]), n_rot, 10000.0, "norm")[0, 0]
    neox = ref.rope(e0, np.array([pos]), n_rot, 10000.0, "neox")[0, 0]
    # Pair 0 has theta = pos * base^0 = pos; NORM pairs (0, 1), NEOX pairs (0, n_rot/2).
    want_norm = np.zeros(n_rot)
    want_norm[[0, 1]] = math.cos(pos), math.sin(pos)
    want_neox = np.zeros(n_rot)
    want_neox[[0, n_rot // 2]] = math.cos(pos), math.sin(pos)
    np.testing.assert_allclose(norm, want_norm, atol=1e-15)
    np.testing.assert_allclose(neox, want_neox, atol=1e-15)
    # Pair i turns at pos * base^(-2i/n_rot): check pair 1 in NORM layout (dims 2, 3).
    e2 = np.zeros((1, 1, n_rot))
    e2[..., 2] = 1.0
    r = ref.rope(e2, np.array([5.0]), n_rot, 100.0, "norm")[0, 0]
    ang = 5.0 * 100.0 ** (-2.0 / n_rot)
    np.testing.assert_allclose(r[[2, 3]], [math.cos(ang), math.sin(ang)], atol=1e-15)


# ---- (b) a real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm(smollm2_path: Path) -> ref.RefModel:
    return ref.load(smollm2_path)


def test_smollm2_knows_the_capital_of_france(smollm: ref.RefModel, smollm2_path: Path) -> None:
    assert smollm.hp.arch == "llama" and smollm.hp.n_layer == 30 and smollm.hp.n_vocab == 49152
    assert smollm.output_name == "token_embd.weight"  # SmolLM2 ties the output to the embedding
    tok = ref.hf_tokenizer(smollm2_path)
    vocab = ref.gguf_vocab(smollm2_path)
    ids = tok.encode("The capital of France is").ids
    assert [vocab[i] for i in ids] == ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]
    logits = smollm.forward(ids)
    assert logits.shape == (len(ids), 49152) and np.isfinite(logits).all()
    assert vocab[int(np.argmax(logits[-1]))] == "ĠParis"
    assert tok.decode([int(np.argmax(logits[-1]))]) == " Paris"


PASSAGE = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital and most populous city of"
    " France, with an estimated population of two million residents."
)


def test_smollm2_predicts_natural_text_well(smollm: ref.RefModel, smollm2_path: Path) -> None:
    # A short prompt hardly depends on position; over 30 tokens the mean next-token loss does:
    # correct 2.88 nats, NEOX rope instead of NORM 4.1, wrong GQA head mapping 12.6.
    ids = ref.hf_tokenizer(smollm2_path).encode(PASSAGE).ids
    logits = smollm.forward(ids)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    nll = -np.mean(logp[np.arange(len(ids) - 1), ids[1:]])
    assert nll < 3.3


# ---- tiny random models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> ref.RefModel:
    path = tmp_path_factory.mktemp("ref") / "tiny.gguf"
    mtm.make_model(path, arch="llama", wtype="F32", n_layer=6, n_embd=64, n_ff=128, seed=3)
    return ref.load(path)


TOKENS = [5, 77, 260, 12, 9, 150, 42, 42, 280, 3, 17, 99]


def test_forward_is_causal_and_batch_equals_incremental(tiny: ref.RefModel) -> None:
    assert max(TOKENS) < tiny.hp.n_vocab
    full = tiny.forward(TOKENS)
    np.testing.assert_allclose(tiny.forward(TOKENS[:5]), full[:5], rtol=1e-10, atol=1e-10)
    cache = tiny.new_cache()
    steps = [tiny.eval([t], cache)[0][0] for t in TOKENS]
    np.testing.assert_allclose(np.stack(steps), full, rtol=1e-10, atol=1e-10)
    greedy = tiny.greedy(TOKENS[:3], 3)
    assert greedy[0] == int(np.argmax(full[2]))
    np.testing.assert_array_equal(np.argmax(tiny.forward(TOKENS[:3] + greedy)[2:5], axis=1), greedy)


@pytest.mark.parametrize(
    "cfg",
    [
        ref.SkipCfg(enabled=False, threshold=-1.0),
        ref.SkipCfg(warmup=0, cold_start=0, cold_end=0, threshold=1.5),
        ref.SkipCfg(warmup=0, threshold=math.nan),
    ],
)
def test_inactive_skip_reproduces_dense(tiny: ref.RefModel, cfg: ref.SkipCfg) -> None:
    logits, skipped, gates = tiny.forward_with_skip(TOKENS, 4, cfg)
    np.testing.assert_allclose(logits, tiny.forward(TOKENS), rtol=1e-10, atol=1e-10)
    assert not skipped.any()
    assert np.isnan(gates[:4]).all(), "prompt tokens record no gate"
    assert np.isfinite(gates[4:]).all() and (np.abs(gates[4:]) <= 1 + 1e-12).all()


def _dense_run(m: ref.RefModel, prompt_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return m.forward_with_skip(TOKENS, prompt_len, ref.SkipCfg(enabled=False))


@pytest.mark.parametrize(
    ("span", "want"),
    [
        (2, [0, 0, 1, 1, 0, 0]),  # hot = 1..4: layer 1 fires, skips 2 and 3, 4 runs and fires
        (1, [0, 0, 1, 0, 1, 0]),  # fire, skip, fire, skip
        (0, [0, 0, 1, 1, 1, 0]),  # span 0: every hot layer after 1
    ],
)
def test_always_firing_gate_follows_the_budget_rule(
    tiny: ref.RefModel, span: int, want: list[int]
) -> None:
    cfg = ref.SkipCfg(warmup=3, cold_start=1, cold_end=1, threshold=-1.0, span=span)
    prompt_len = 4
    logits, skipped, gates = tiny.forward_with_skip(TOKENS, prompt_len, cfg)
    dense_logits, _, dense_gates = _dense_run(tiny, prompt_len)
    first_past_warmup = prompt_len + cfg.warmup
    assert not skipped[:first_past_warmup].any(), "prompt and warm-up tokens are dense"
    np.testing.assert_array_equal(logits[:first_past_warmup], dense_logits[:first_past_warmup])
    np.testing.assert_array_equal(gates[:first_past_warmup], dense_gates[:first_past_warmup])
    for row in range(first_past_warmup, len(TOKENS)):
        np.testing.assert_array_equal(skipped[row], np.array(want, dtype=bool))
    assert (
        np.isnan(gates[skipped]).all()
        and np.isfinite(gates[prompt_len:][~skipped[prompt_len:]]).all()
    )
    # Skipped FFNs must change every first_past_warmup token's logits.
    diff = np.abs(logits[first_past_warmup:] - dense_logits[first_past_warmup:]).max(axis=1)
    assert (diff > 1e-3).all()
    batched = tiny.forward_with_skip(TOKENS, prompt_len, cfg, incremental=False)
    np.testing.assert_allclose(batched[0], logits, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(batched[1], skipped)


def test_threshold_is_inclusive_and_per_layer(tiny: ref.RefModel) -> None:
    # Only the last token is gated; until its layer-2 FFN it computes exactly what the dense run
    # does, so its dense gate at layer 2 is the value the policy compares.
    prompt_len = len(TOKENS) - 1
    _, _, dense_gates = _dense_run(tiny, prompt_len)
    g2 = float(dense_gates[-1, 2])

    def run(thr: list[float]) -> tuple[np.ndarray, np.ndarray]:
        cfg = ref.SkipCfg(warmup=0, cold_start=1, cold_end=1, threshold=thr, span=1)
        _, skipped, gates = tiny.forward_with_skip(TOKENS, prompt_len, cfg)
        assert not skipped[:-1].any()
        return skipped[-1], gates[-1]

    nan = math.nan
    skipped, gates = run([nan, nan, g2, nan, nan, nan])
    assert gates[2] == g2
    np.testing.assert_array_equal(skipped, [0, 0, 0, 1, 0, 0], err_msg="g >= threshold fires")
    skipped, _ = run([nan, nan, float(np.nextafter(g2, 2.0)), nan, nan, nan])
    assert not skipped.any(), "a gate just below its threshold must not fire"
    # Cold layers (0 and 5) never fire even at threshold -1; layer 1 fires and skips layer 2;
    # NaN thresholds on layers 3 and 4 never fire.
    skipped, gates = run([-1.0, -1.0, g2, nan, nan, -1.0])
    np.testing.assert_array_equal(skipped, [0, 0, 1, 0, 0, 0])
    assert np.isnan(gates[2]) and np.isfinite(np.delete(gates, 2)).all()


def test_budget_does_not_carry_across_tokens(tiny: ref.RefModel) -> None:
    # Layer 4 (last hot layer) fires with a long span; the next token must still run layer 1.
    thr = [math.nan] * 4 + [-1.0, math.nan]
    cfg = ref.SkipCfg(warmup=0, cold_start=1, cold_end=1, threshold=thr, span=5)
    _, skipped, _ = tiny.forward_with_skip(TOKENS, 4, cfg)
    assert not skipped.any()


def test_skip_config_may_be_a_dict_and_is_validated(tiny: ref.RefModel) -> None:
    cfg = {
        "enabled": True,
        "warmup": 0,
        "cold_start": 1,
        "cold_end": 1,
        "threshold": -1.0,
        "span": 1,
    }
    _, skipped, _ = tiny.forward_with_skip(TOKENS, 4, cfg)
    assert skipped[4:].any()
    with pytest.raises(ValueError, match="threshold"):
        tiny.forward_with_skip(TOKENS, 4, ref.SkipCfg(threshold=[0.5, 0.5]))


# ---- (d) make_test_model ------------------------------------------------------------------------


def _expected_tensors(
    arch: str, n_layer: int, tied: bool, e: int, ff: int, kv: int, v: int, hd: int = 0
) -> dict[str, tuple[int, ...]]:
    """GGUF ne order (input dim first); hd: head size (qwen3's and gemma3's q/k norms)."""
    want = {"token_embd.weight": (e, v), "output_norm.weight": (e,)}
    if not tied:
        want["output.weight"] = (e, v)
    for i in range(n_layer):
        p = f"blk.{i}."
        want |= {
            p + "attn_norm.weight": (e,),
            p + "ffn_norm.weight": (e,),
            p + "attn_q.weight": (e, e),
            p + "attn_k.weight": (e, kv),
            p + "attn_v.weight": (e, kv),
            p + "attn_output.weight": (e, e),
            p + "ffn_gate.weight": (e, ff),
            p + "ffn_up.weight": (e, ff),
            p + "ffn_down.weight": (ff, e),
        }
        if arch == "qwen2":
            want |= {p + "attn_q.bias": (e,), p + "attn_k.bias": (kv,), p + "attn_v.bias": (kv,)}
        if arch in ("qwen3", "gemma3"):
            want |= {p + "attn_q_norm.weight": (hd,), p + "attn_k_norm.weight": (hd,)}
        if arch == "gemma3":
            want |= {p + "post_attention_norm.weight": (e,), p + "post_ffw_norm.weight": (e,)}
        if arch == "phi3":  # q/k/v and gate/up stacked, as llama.cpp stores them
            for name in ("attn_q", "attn_k", "attn_v", "ffn_gate"):
                del want[p + name + ".weight"]
            want |= {p + "attn_qkv.weight": (e, e + 2 * kv), p + "ffn_up.weight": (e, 2 * ff)}
    return want


@pytest.mark.parametrize("arch", mtm.ARCHS)
@pytest.mark.parametrize("wtype", mtm.WEIGHT_TYPES)
def test_random_models_are_well_formed(tmp_path: Path, arch: str, wtype: str) -> None:
    kq = wtype.endswith("_K")
    e, ff, n_head, n_head_kv = (256, 512, 4, 2) if kq else (64, 128, 4, 2)
    tied = wtype in ("Q8_0", "Q5_K")
    path = mtm.make_model(
        tmp_path / "m.gguf",
        arch=arch,
        wtype=wtype,
        n_layer=2,
        n_embd=e,
        n_ff=ff,
        n_head=n_head,
        n_head_kv=n_head_kv,
        tied=tied,
        seed=1,
    )
    reader = gguf.GGUFReader(str(path))
    got = {t.name: (tuple(int(d) for d in t.shape), t.tensor_type.name) for t in reader.tensors}
    want = _expected_tensors(arch, 2, tied, e, ff, n_head_kv * e // n_head, 288, e // n_head)
    assert {k: s for k, (s, _) in got.items()} == want
    for name, (shape, ttype) in got.items():
        assert ttype == (wtype if len(shape) == 2 else "F32"), name
    assert reader.fields["general.architecture"].contents() == arch

    m = ref.load(path)
    logits = m.forward([1, 200, 45, 45, 7, 280, 99, 13])
    assert np.isfinite(logits).all()
    # Random Q4_K/Q5_K blocks carry a shared offset per row (row mean ~0.2 std, others ~0.1),
    # which gemma3's post-norms pass on at unit scale into the residual: logits std 5.0 and 5.7
    # measured for those two, 1.9-2.2 for every other (arch, type).
    top = 8.0 if arch == "gemma3" and wtype in ("Q4_K", "Q5_K") else 5.0
    assert 0.5 < logits.std() < top
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert np.median(top2[:, 1] - top2[:, 0]) > 0.1, "argmax should be stable on random models"
    w = m.weight("blk.0.ffn_up.weight")
    assert abs(w.mean()) < 0.1 * w.std()


@pytest.mark.parametrize("wtype", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_random_block_path_of_legacy_types(monkeypatch: pytest.MonkeyPatch, wtype: str) -> None:
    monkeypatch.setattr(mtm, "_QUANTIZE_MAX_ELEMS", 0)
    data = mtm._tensor_bytes(np.random.default_rng(0), (64, 256), wtype, 0.05, is_norm=False)
    w = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[wtype])
    assert w.shape == (64, 256) and np.isfinite(w).all()
    assert 0.5 * 0.05 < w.std() < 2 * 0.05
    assert abs(w.mean()) < 0.15 * w.std()  # Q4_0/Q5_0 are centred at q - 8 (-16): a half-step bias


def test_kquant_shape_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 256"):
        mtm.make_model(tmp_path / "bad.gguf", wtype="Q4_K", n_embd=64)


def test_vocab_only_cli_and_tokenizer_roundtrip(tmp_path: Path) -> None:
    out = tmp_path / "vocab.gguf"
    subprocess.run(
        [
            sys.executable,
            str(TOOLS / "make_test_model.py"),
            "--vocab-only",
            "--vocab",
            "400",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    reader = gguf.GGUFReader(str(out))
    assert len(reader.tensors) == 0
    f = reader.fields
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "default"
    tokens = f["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == 400 == len(f["tokenizer.ggml.token_type"].contents())
    assert len(f["tokenizer.ggml.merges"].contents()) == 400 - 258
    assert tokens[f["tokenizer.ggml.bos_token_id"].contents()] == "<s>"
    assert tokens[f["tokenizer.ggml.eos_token_id"].contents()] == "</s>"
    tok = ref.hf_tokenizer(out)
    text = "the tea is hot, naïve café ✓"
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode()), "merges must apply"
