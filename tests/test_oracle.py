"""The independent forward: Hugging Face `transformers` (CPU torch) against converted models.

Small random-weight configs of each family (realistic head dims and GQA ratios) are saved as
safetensors, converted by the project's converter at f32, and run by the engine; every position's
logits must match transformers' float32 forward to rel. L2 <= 1e-3 over 64 tokens. The llama3
config's original context (16) puts positions 16..63 past its rope-scaling boundary; the gemma3
configs' sliding window (8) puts positions 8..63 of their local layers past it, mistral's (16)
positions 16..63 of every layer; the phi3 longrope
config's original context (32) makes both sides take its long factors.

The new families (yarn, mistral, phi3) also run converted at q8_0 and q4_0 against transformers
loaded with the dequantized weights of the file, at the forward tests' tolerance (1e-2) with the
same top-1.

torch and transformers come from the optional `oracle` extra (`pip install .[oracle]`); without
them these tests skip with that reason. Marked `oracle` so a run can select them (`-m oracle`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict

import hf_fixtures as hf
import numpy as np
import pytest
from ffnskip_native import _core
from ffnskip_native import convert as cv

torch = pytest.importorskip("torch", reason="needs torch: pip install .[oracle]")
transformers = pytest.importorskip("transformers", reason="needs transformers: .[oracle]")

pytestmark = pytest.mark.oracle

REL_TOL = 1e-3
N_TOKENS = 64
N_VOCAB = 448  # hf_fixtures' qwen2 tokenizer fits in it

COMMON: Dict[str, Any] = dict(
    vocab_size=N_VOCAB,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    initializer_range=0.06,  # ~1/sqrt(hidden): attention that is neither uniform nor one-hot
)

GEMMA3: Dict[str, Any] = dict(
    COMMON,
    num_hidden_layers=7,
    num_key_value_heads=1,
    head_dim=128,
    query_pre_attn_scalar=128,
    sliding_window=8,
    tie_word_embeddings=True,
)

# Phi-3-mini's layout (fused qkv and gate_up), no bos/eos/pad ids in the tiny vocabulary.
PHI3: Dict[str, Any] = dict(COMMON, pad_token_id=None, bos_token_id=None, eos_token_id=None)
HEAD_DIM = COMMON["hidden_size"] // COMMON["num_attention_heads"]

CONFIGS: Dict[str, Any] = {
    # Qwen3-0.6B's head_dim 128 with fewer heads than hidden/head_dim: key_length != n_embd/n_head.
    "qwen3": lambda: transformers.Qwen3Config(
        **COMMON, head_dim=128, rope_theta=1000000.0, attention_bias=False
    ),
    "llama-linear": lambda: transformers.LlamaConfig(
        **COMMON, rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 4.0}
    ),
    "llama3": lambda: transformers.LlamaConfig(
        **COMMON,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    # Gemma 3 270M's shape scaled down: one KV head, head_dim > n_embd / n_head, 7 layers so that
    # local layers come both before and after the global layer 5.
    "gemma3": lambda: transformers.Gemma3TextConfig(**GEMMA3),
    # Gemma 3 4B's linear rope scaling, which applies to the global layers only.
    "gemma3-linear": lambda: transformers.Gemma3TextConfig(
        **GEMMA3,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    ),
    # YaRN (Qwen2.5's long-context scaling) with an original context of 1024: over head_dim 64
    # pairs 0-4 keep their frequency, 5-18 blend, 19-31 are interpolated; magnitude 1 + 0.1 ln 4.
    "llama-yarn": lambda: transformers.LlamaConfig(
        **COMMON,
        rope_theta=10000.0,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024},
    ),
    # The optional yarn keys: beta_fast/beta_slow move the blend, attention_factor replaces the
    # default magnitude.
    "qwen2-yarn": lambda: transformers.Qwen2Config(
        **COMMON,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "yarn",
            "factor": 8.0,
            "original_max_position_embeddings": 512,
            "beta_fast": 16.0,
            "beta_slow": 2.0,
            "attention_factor": 1.1,
        },
    ),
    # Mistral 7B v0.1's window on every layer, scaled down: positions 16..63 drop keys.
    "mistral": lambda: transformers.MistralConfig(**COMMON, sliding_window=16),
    # Phi-4-mini's partial rotary: 3/4 of each head rotated.
    "phi3": lambda: transformers.Phi3Config(**PHI3, partial_rotary_factor=0.75),
    # Phi-3-mini-128k's longrope with an original context of 32: all 64 positions take the long
    # factors (transformers: sequence > 32; the engine: n_ctx 64 > 32) and the magnitude
    # sqrt(1 + ln(128/32) / ln(32)) = 1.18 on cos and sin (Phi-3-mini-128k's: 1.19).
    "phi3-longrope": lambda: transformers.Phi3Config(
        **(PHI3 | {"max_position_embeddings": 128}),
        original_max_position_embeddings=32,
        rope_scaling={
            "rope_type": "longrope",
            "long_factor": [1.0 + 0.3 * i for i in range(HEAD_DIM // 2)],
            "short_factor": [1.0 + 0.01 * i for i in range(HEAD_DIM // 2)],
        },
    ),
    # Phi-4-mini's whole rope: partial rotary (3/4) with longrope, whose magnitude scales the
    # rotated dimensions only.
    "phi4-mini": lambda: transformers.Phi3Config(
        **(PHI3 | {"max_position_embeddings": 128}),
        partial_rotary_factor=0.75,
        original_max_position_embeddings=32,
        rope_scaling={
            "rope_type": "longrope",
            "long_factor": [1.0 + 0.3 * i for i in range(3 * HEAD_DIM // 8)],
            "short_factor": [1.0 + 0.01 * i for i in range(3 * HEAD_DIM // 8)],
        },
    ),
}
CLASSES = {
    "qwen3": "Qwen3ForCausalLM",
    "llama-linear": "LlamaForCausalLM",
    "llama3": "LlamaForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "gemma3-linear": "Gemma3ForCausalLM",
    "llama-yarn": "LlamaForCausalLM",
    "qwen2-yarn": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "phi3-longrope": "Phi3ForCausalLM",
    "phi4-mini": "Phi3ForCausalLM",
}


def hf_model(family: str, out: Path) -> Any:
    """A seeded random model of the family, saved with a tokenizer as a checkpoint dir at out."""
    torch.manual_seed(0)
    model = getattr(transformers, CLASSES[family])(CONFIGS[family]()).float().eval()
    # Norm scales around 1 that matter: gemma's RMSNorm scales by 1 + w (w initialized to 0).
    centre = 0.0 if family.startswith("gemma") else 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(centre + 0.2 * torch.randn_like(p))
    tok_dir = hf.tiny_qwen2_hf_dir(out.parent / "tok")
    out.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / name, out / name)
    model.save_pretrained(out, safe_serialization=True)
    return model


@pytest.mark.parametrize("family", list(CONFIGS))
def test_converted_logits_match_transformers(tmp_path: Path, family: str) -> None:
    model = hf_model(family, tmp_path / "hf")
    gguf_path = cv.convert(tmp_path / "hf", tmp_path / "m.gguf", "f32")
    tokens = [int(t) for t in np.random.default_rng(4).integers(0, N_VOCAB, N_TOKENS)]
    with torch.no_grad():
        expected = model(torch.tensor([tokens])).logits[0].double().numpy()
    eng = _core.Engine(str(gguf_path), backend="cpu", n_ctx=N_TOKENS, n_threads=2)
    got = eng.logits(tokens, all_positions=True)
    err = np.linalg.norm(got - expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert err.max() <= REL_TOL, f"{family}: max rel err {err.max():.3g} at {err.argmax()}"
    print(f"{family}: max rel err {err.max():.3g}, mean {err.mean():.3g}")
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def miss_against(tmp_path: Path, family: str, make_other: Any) -> tuple[Path, np.ndarray]:
    """(converted file, per-position rel L2 of the engine on it against `make_other(model)`): a
    transformers model without the feature under test, given `family`'s weights. Where it misses,
    the match above proves the feature."""
    model = hf_model(family, tmp_path / "hf")
    path = cv.convert(tmp_path / "hf", tmp_path / "m.gguf", "f32")
    tokens = [int(t) for t in np.random.default_rng(4).integers(0, N_VOCAB, N_TOKENS)]
    other = make_other(model).float().eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        want = other(torch.tensor([tokens])).logits[0].double().numpy()
    got = _core.Engine(str(path), backend="cpu", n_ctx=N_TOKENS).logits(tokens, all_positions=True)
    return path, np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)


def test_llama3_scaling_is_reached(tmp_path: Path) -> None:
    # Without the rope_freqs tensor the same weights must miss transformers' logits: the test
    # above then proves the scaling, not just the unscaled rope.
    import gguf

    path, err = miss_against(
        tmp_path,
        "llama3",
        lambda _: transformers.LlamaForCausalLM(
            transformers.LlamaConfig(**COMMON, rope_theta=500000.0)
        ),
    )
    assert "rope_freqs.weight" in {t.name for t in gguf.GGUFReader(path).tensors}
    assert err[20:].min() > 10 * REL_TOL


@pytest.mark.parametrize(
    "family, change",
    [
        ("gemma3", {"sliding_window": N_TOKENS}),
        ("gemma3-linear", {}),  # GEMMA3 as is: no rope scaling
    ],
)
def test_gemma3_window_and_scaling_are_reached(tmp_path: Path, family: str, change: Any) -> None:
    # The same weights without the sliding window (or without the global layers' rope scaling)
    # must miss transformers' logits past the window: the match above then proves them.
    _, err = miss_against(
        tmp_path,
        family,
        lambda _: transformers.Gemma3ForCausalLM(
            transformers.Gemma3TextConfig(**(GEMMA3 | change))
        ),
    )
    assert err[16:].min() > 10 * REL_TOL


def test_phi3_longrope_is_reached(tmp_path: Path) -> None:
    # The same weights without longrope must miss transformers' logits: the match above then
    # proves the long factors and the magnitude, not just the plain rope.
    _, err = miss_against(
        tmp_path,
        "phi3-longrope",
        lambda _: transformers.Phi3ForCausalLM(transformers.Phi3Config(**PHI3)),
    )
    assert err[1:].min() > 10 * REL_TOL


def test_mistral_window_is_reached(tmp_path: Path) -> None:
    # The same weights without the window must miss transformers' logits past it.
    _, err = miss_against(
        tmp_path,
        "mistral",
        lambda _: transformers.MistralForCausalLM(
            transformers.MistralConfig(**COMMON, sliding_window=None)
        ),
    )
    assert err[:16].max() <= REL_TOL
    assert err[24:].min() > 10 * REL_TOL


@pytest.mark.parametrize("family", ["llama-yarn", "qwen2-yarn"])
def test_yarn_is_reached(tmp_path: Path, family: str) -> None:
    # The same weights without yarn must miss transformers' logits.
    _, err = miss_against(
        tmp_path,
        family,
        lambda model: type(model)(type(model.config)(**COMMON, rope_theta=10000.0)),
    )
    assert err[1:].min() > 10 * REL_TOL


# ---- quantized files ---------------------------------------------------------------------------

NEW_FAMILIES = ["llama-yarn", "qwen2-yarn", "mistral", "phi3", "phi3-longrope"]
QUANT_TOL = 1e-2  # the forward tests' tolerance (test_forward.py); measured: <= 9.5e-4


def dequantized_state(model: Any, hf_dir: Path, gguf_path: Path) -> Dict[str, Any]:
    """model's state with every matrix replaced by its dequantized value in the GGUF file (q/k
    rows of llama files returned to transformers' layout), to run transformers on the weights the
    engine reads."""
    import gguf
    from ffnskip_native.convert.config import HParams, load_config
    from ffnskip_native.convert.plan import plan
    from ffnskip_native.convert.tensors import open_checkpoint

    items, _ = plan(HParams.from_config(load_config(hf_dir)), open_checkpoint(hf_dir), "f32")
    stored = {t.name: t for t in gguf.GGUFReader(gguf_path).tensors}
    state = model.state_dict()
    for item in items:
        if item.ref.name not in state or len(item.ref.shape) != 2:
            continue
        t = stored[item.gguf_name]
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(item.ref.shape)
        if item.permute_heads:
            w = hf.unpermute_qk(w, item.permute_heads)
        state[item.ref.name] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    return state


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0"])
@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_quantized_logits_match_transformers(tmp_path: Path, family: str, outtype: str) -> None:
    # transformers runs the weights the file holds, so the comparison measures the engine's
    # quantized kernels, not the quantization itself.
    model = hf_model(family, tmp_path / "hf")
    path = cv.convert(tmp_path / "hf", tmp_path / "m.gguf", outtype)
    model.load_state_dict(dequantized_state(model, tmp_path / "hf", path))
    tokens = [int(t) for t in np.random.default_rng(4).integers(0, N_VOCAB, N_TOKENS)]
    with torch.no_grad():
        expected = model(torch.tensor([tokens])).logits[0].double().numpy()
    eng = _core.Engine(str(path), backend="cpu", n_ctx=N_TOKENS, n_threads=2)
    got = eng.logits(tokens, all_positions=True)
    err = np.linalg.norm(got - expected, axis=1) / np.linalg.norm(expected, axis=1)
    print(f"{family}/{outtype}: max rel err {err.max():.3g}, mean {err.mean():.3g}")
    assert err.max() <= QUANT_TOL, f"{family}/{outtype}: max rel err {err.max():.3g}"
    assert np.array_equal(got.argmax(1), expected.argmax(1))
