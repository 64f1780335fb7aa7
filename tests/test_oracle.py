"""The independent forward: Hugging Face `transformers` (CPU torch) against converted models.

Small random-weight configs of each family (realistic head dims and GQA ratios) are saved as
safetensors, converted by the project's converter at f32, and run by the engine; every position's
logits must match transformers' float32 forward to rel. L2 <= 1e-3 over 64 tokens. The llama3
config's original context (16) puts positions 16..63 past its rope-scaling boundary.

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
}
CLASSES = {
    "qwen3": "Qwen3ForCausalLM",
    "llama-linear": "LlamaForCausalLM",
    "llama3": "LlamaForCausalLM",
}


def hf_model(family: str, out: Path) -> Any:
    """A seeded random model of the family, saved with a tokenizer as a checkpoint dir at out."""
    torch.manual_seed(0)
    model = getattr(transformers, CLASSES[family])(CONFIGS[family]()).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # norms are initialized to 1: make them matter
                p.copy_(1 + 0.2 * torch.randn_like(p))
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


def test_llama3_scaling_is_reached(tmp_path: Path) -> None:
    # Without the rope_freqs tensor the same weights must miss transformers' logits: the test
    # above then proves the scaling, not just the unscaled rope.
    import gguf

    model = hf_model("llama3", tmp_path / "hf")
    path = cv.convert(tmp_path / "hf", tmp_path / "m.gguf", "f32")
    assert "rope_freqs.weight" in {t.name for t in gguf.GGUFReader(path).tensors}
    tokens = [int(t) for t in np.random.default_rng(4).integers(0, N_VOCAB, N_TOKENS)]
    unscaled_cfg = transformers.LlamaConfig(**COMMON, rope_theta=500000.0)
    plain = transformers.LlamaForCausalLM(unscaled_cfg).float().eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        unscaled = plain(torch.tensor([tokens])).logits[0].double().numpy()
    got = _core.Engine(str(path), backend="cpu", n_ctx=N_TOKENS).logits(tokens, all_positions=True)
    err = np.linalg.norm(got - unscaled, axis=1) / np.linalg.norm(unscaled, axis=1)
    assert err[20:].min() > 10 * REL_TOL
