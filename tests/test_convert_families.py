"""The converter on qwen3, gemma3 and llama rope-scaling checkpoints, without torch.

What llama.cpp's converter writes for them: qwen3's q_norm/k_norm as blk.N.attn_{q,k}_norm.weight
(NEOX layout, no permutation), linear scaling as {arch}.rope.scaling.type/.factor, llama3 scaling
as the rope_freqs.weight tensor; gemma3's norms shifted by +1 with its post-norms under their own
names; and the rope settings of transformers >= 5's `rope_parameters`.
tests/test_oracle.py proves the converted models against transformers where torch is installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict

import gguf
import hf_fixtures as hf
import numpy as np
import pytest
from ffnskip_native import _core
from ffnskip_native import convert as cv
from ffnskip_native.errors import Error
from test_families import llama3_factors

HEAD_DIM = hf.TINY["hidden"] // hf.TINY["heads"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.tiny_llama_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-llama")


def variant(src: Path, dst: Path, config: Dict[str, Any], extra: Dict[str, np.ndarray]) -> Path:
    """A copy of the checkpoint dir with config.json keys replaced and F32 tensors added."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for key, value in config.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    if extra:
        weights = hf.hf_weights(src)
        weights.update(extra)
        hf.write_safetensors(
            dst / "model.safetensors",
            [(n, "F32", a.shape, a.astype(np.float32)) for n, a in weights.items()],
        )
    return dst


def field(path: Path, key: str) -> Any:
    f = gguf.GGUFReader(path).fields.get(key)
    return None if f is None else f.contents()


def tensors(path: Path) -> Dict[str, np.ndarray]:
    r = gguf.GGUFReader(path)
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in r.tensors}


def test_qwen3_norms_mapped_and_runs(tmp_path: Path, tiny_llama: Path) -> None:
    rng = np.random.default_rng(0)
    norms = {
        f"model.layers.{i}.self_attn.{w}_norm.weight": (
            1 + 0.1 * rng.standard_normal(HEAD_DIM)
        ).astype(np.float32)
        for i in range(hf.TINY["layers"])
        for w in ("q", "k")
    }
    src = variant(tiny_llama, tmp_path / "q3", {"architectures": ["Qwen3ForCausalLM"]}, norms)
    out = cv.convert(src, tmp_path / "q3.gguf", "f32")
    assert field(out, "general.architecture") == "qwen3"
    got = tensors(out)
    w = hf.hf_weights(src)
    np.testing.assert_array_equal(got["blk.1.attn_k_norm.weight"], norms[list(norms)[3]])
    # NEOX rope: q/k rows stay in HF's order (llama's would be permuted).
    np.testing.assert_array_equal(
        got["blk.0.attn_q.weight"], w["model.layers.0.self_attn.q_proj.weight"]
    )
    eng = _core.Engine(str(out), backend="cpu", n_ctx=16)
    assert np.isfinite(eng.logits([1, 2, 3], all_positions=True)).all()


def test_qwen3_without_norms_is_refused(tmp_path: Path, tiny_llama: Path) -> None:
    src = variant(tiny_llama, tmp_path / "q3", {"architectures": ["Qwen3ForCausalLM"]}, {})
    with pytest.raises(Error, match=r"q_norm"):
        cv.convert(src, tmp_path / "q3.gguf", "f32")


def test_llama3_rope_scaling_becomes_rope_freqs(tmp_path: Path, tiny_llama: Path) -> None:
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256,
    }
    src = variant(tiny_llama, tmp_path / "l3", {"rope_scaling": scaling}, {})
    out = cv.convert(src, tmp_path / "l3.gguf", "f32")
    expected = llama3_factors(HEAD_DIM, 10000.0, 8.0, 1.0, 4.0, 256)
    np.testing.assert_allclose(tensors(out)["rope_freqs.weight"], expected, rtol=1e-6)
    assert field(out, "llama.rope.scaling.type") is None  # llama.cpp writes no type for llama3


@pytest.mark.parametrize(
    "extra, keys",
    [
        ({}, {}),
        (
            {"beta_fast": 16, "beta_slow": 2, "attention_factor": 1.25},
            {"yarn_beta_fast": 16.0, "yarn_beta_slow": 2.0, "yarn_attn_factor": 1.25},
        ),
    ],
)
def test_yarn_scaling_metadata(
    tmp_path: Path, tiny_llama: Path, extra: Dict[str, Any], keys: Dict[str, float]
) -> None:
    # Qwen2.5's rope_scaling; the optional keys only when the config has them (llama.cpp's).
    scaling = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128} | extra
    src = variant(tiny_llama, tmp_path / "y", {"rope_scaling": scaling}, {})
    out = cv.convert(src, tmp_path / "y.gguf", "f32")
    assert field(out, "llama.rope.scaling.type") == "yarn"
    assert field(out, "llama.rope.scaling.factor") == pytest.approx(4.0)
    assert field(out, "llama.rope.scaling.original_context_length") == 128
    for key in ("yarn_beta_fast", "yarn_beta_slow", "yarn_attn_factor"):
        got = field(out, f"llama.rope.scaling.{key}")
        assert got == (pytest.approx(keys[key]) if key in keys else None)
    eng = _core.Engine(str(out), backend="cpu", n_ctx=16)
    assert np.isfinite(eng.logits([1, 2, 3], all_positions=True)).all()


def test_linear_scaling_from_rope_parameters(tmp_path: Path, tiny_llama: Path) -> None:
    # transformers >= 5 layout: theta and scaling in one object, no top-level rope_theta.
    params = {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}
    src = variant(tiny_llama, tmp_path / "lin", {"rope_parameters": params, "rope_theta": None}, {})
    out = cv.convert(src, tmp_path / "lin.gguf", "f32")
    assert field(out, "llama.rope.freq_base") == pytest.approx(500000.0)
    assert field(out, "llama.rope.scaling.type") == "linear"
    assert field(out, "llama.rope.scaling.factor") == pytest.approx(2.0)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}, "'dynamic' is not supported"),
        (
            {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
            "original_max_position_embeddings",
        ),
        (
            {
                "rope_scaling": {
                    "rope_type": "yarn",
                    "factor": 4.0,
                    "mscale": 1.0,
                    "mscale_all_dim": 1.0,
                }
            },
            "mscale",
        ),
        (
            {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "truncate": False}},
            "truncate",
        ),
        ({"rope_parameters": {"full_attention": {"rope_theta": 1e4}}}, "per-layer-type"),
        (
            {"rope_scaling": {"rope_type": "llama3", "low_freq_factor": 4, "high_freq_factor": 1}},
            "high_freq_factor must exceed",
        ),
        ({"architectures": ["Qwen3ForCausalLM"], "attention_bias": True}, "attention_bias"),
    ],
)
def test_unsupported_rope_configs_are_refused(
    tmp_path: Path, tiny_llama: Path, config: Dict[str, Any], message: str
) -> None:
    src = variant(tiny_llama, tmp_path / "bad", config, {})
    with pytest.raises(Error, match=message):
        cv.convert(src, tmp_path / "bad.gguf", "f32")


GEMMA3_CONFIG: Dict[str, Any] = {
    "architectures": ["Gemma3ForCausalLM"],
    "sliding_window": 8,
    "query_pre_attn_scalar": HEAD_DIM,
    "hidden_activation": "gelu_pytorch_tanh",
}


def gemma3_variant(tiny_llama: Path, dst: Path, config: Dict[str, Any]) -> Path:
    """tiny_llama as a Gemma3ForCausalLM: q/k norms and the FFN's pre/post norms added."""
    rng = np.random.default_rng(1)
    e = hf.TINY["hidden"]
    norms = {}
    for i in range(hf.TINY["layers"]):
        p = f"model.layers.{i}."
        for name, n in (
            ("self_attn.q_norm", HEAD_DIM),
            ("self_attn.k_norm", HEAD_DIM),
            ("pre_feedforward_layernorm", e),
            ("post_feedforward_layernorm", e),
        ):
            norms[p + name + ".weight"] = (0.1 * rng.standard_normal(n)).astype(np.float32)
    return variant(tiny_llama, dst, GEMMA3_CONFIG | config, norms)


def test_gemma3_tensors_metadata_and_norm_shift(tmp_path: Path, tiny_llama: Path) -> None:
    src = gemma3_variant(tiny_llama, tmp_path / "g3", {})
    out = cv.convert(src, tmp_path / "g3.gguf", "f32")
    assert field(out, "general.architecture") == "gemma3"
    assert field(out, "gemma3.attention.sliding_window") == 8
    assert field(out, "gemma3.attention.key_length") == HEAD_DIM
    got, w = tensors(out), hf.hf_weights(src)
    p = "model.layers.1."
    # Gemma's RMSNorm scales by 1 + w: llama.cpp's converter stores 1 + w for every norm.
    for gguf_name, hf_name in (
        ("blk.1.attn_norm.weight", p + "input_layernorm.weight"),
        ("blk.1.post_attention_norm.weight", p + "post_attention_layernorm.weight"),
        ("blk.1.ffn_norm.weight", p + "pre_feedforward_layernorm.weight"),
        ("blk.1.post_ffw_norm.weight", p + "post_feedforward_layernorm.weight"),
        ("blk.1.attn_q_norm.weight", p + "self_attn.q_norm.weight"),
        ("output_norm.weight", "model.norm.weight"),
    ):
        np.testing.assert_array_equal(got[gguf_name], w[hf_name] + np.float32(1))
    # NEOX rope: q/k rows stay in HF's order.
    np.testing.assert_array_equal(
        got["blk.0.attn_k.weight"], w[p[:-2] + "0.self_attn.k_proj.weight"]
    )
    eng = _core.Engine(str(out), backend="cpu", n_ctx=16)
    assert eng.hparams["sliding_window"] == 8
    assert np.isfinite(eng.logits([1, 2, 3], all_positions=True)).all()


@pytest.mark.parametrize(
    "config, message",
    [
        ({"final_logit_softcapping": 30.0}, "final_logit_softcapping"),
        ({"query_pre_attn_scalar": 2 * HEAD_DIM}, "query_pre_attn_scalar must be 16"),
        ({"hidden_activation": "gelu"}, "hidden_activation 'gelu'"),
        ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
        ({"rope_local_base_freq": 20000.0}, "base 10000"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "linear rope scaling only"),
        ({"sliding_window": None}, "sliding_window is missing"),
    ],
)
def test_unsupported_gemma3_configs_are_refused(
    tmp_path: Path, tiny_llama: Path, config: Dict[str, Any], message: str
) -> None:
    src = gemma3_variant(tiny_llama, tmp_path / "bad", config)
    with pytest.raises(Error, match=message):
        cv.convert(src, tmp_path / "bad.gguf", "f32")


def phi3_variant(tiny_llama: Path, dst: Path, config: Dict[str, Any]) -> Path:
    """tiny_llama as a Phi3ForCausalLM: q/k/v stacked in qkv_proj, gate/up in gate_up_proj."""
    shutil.copytree(tiny_llama, dst)
    w = hf.hf_weights(tiny_llama)
    for i in range(hf.TINY["layers"]):
        p = f"model.layers.{i}."
        qkv = [w.pop(p + f"self_attn.{x}_proj.weight") for x in "qkv"]
        w[p + "self_attn.qkv_proj.weight"] = np.concatenate(qkv)
        gate_up = [w.pop(p + f"mlp.{x}_proj.weight") for x in ("gate", "up")]
        w[p + "mlp.gate_up_proj.weight"] = np.concatenate(gate_up)
    hf.write_safetensors(
        dst / "model.safetensors", [(n, "F32", a.shape, a.astype(np.float32)) for n, a in w.items()]
    )
    cfg = json.loads((dst / "config.json").read_text())
    cfg |= {"architectures": ["Phi3ForCausalLM"]} | config
    (dst / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    return dst


PHI3_LONGROPE: Dict[str, Any] = {
    "max_position_embeddings": 512,
    "original_max_position_embeddings": 32,
    "partial_rotary_factor": 0.75,
    "rope_scaling": {
        "rope_type": "longrope",
        "long_factor": [1.0 + i for i in range(6)],
        "short_factor": [1.0 + 0.1 * i for i in range(6)],
    },
}


def test_phi3_fused_tensors_and_longrope_metadata(tmp_path: Path, tiny_llama: Path) -> None:
    src = phi3_variant(tiny_llama, tmp_path / "p3", PHI3_LONGROPE)
    out = cv.convert(src, tmp_path / "p3.gguf", "f32")
    assert field(out, "general.architecture") == "phi3"
    # llama.cpp's: int(0.75 * 64) // 4 rotated dims, the original context, sliding window 0 (none)
    # and the attention factor sqrt(1 + ln(512 / 32) / ln(32)).
    assert field(out, "phi3.rope.dimension_count") == 12
    assert field(out, "phi3.rope.scaling.original_context_length") == 32
    assert field(out, "phi3.attention.sliding_window") == 0
    want = np.sqrt(1 + np.log(16) / np.log(32))
    assert field(out, "phi3.rope.scaling.attn_factor") == pytest.approx(want, rel=1e-6)
    got, w = tensors(out), hf.hf_weights(src)
    # Stored as the checkpoint holds them: q/k/v rows, then the gate's rows before up's; no
    # permutation (NEOX rope).
    np.testing.assert_array_equal(
        got["blk.1.attn_qkv.weight"], w["model.layers.1.self_attn.qkv_proj.weight"]
    )
    np.testing.assert_array_equal(
        got["blk.0.ffn_up.weight"], w["model.layers.0.mlp.gate_up_proj.weight"]
    )
    np.testing.assert_array_equal(got["rope_factors_long.weight"], [1, 2, 3, 4, 5, 6])
    assert "blk.0.ffn_gate.weight" not in got
    # Loads and runs, partial rotary with the attn_factor (on the rotated dimensions) included.
    eng = _core.Engine(str(out), backend="cpu")
    assert eng.hparams["n_rot"] == 12
    assert np.isfinite(eng.logits([1, 2, 3], all_positions=True)).all()


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"rope_scaling": {"rope_type": "longrope", "long_factor": [1.0], "short_factor": []}},
            r"long_factor must be 8 positive numbers",
        ),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, r"phi3 rope_scaling type"),
        ({"partial_rotary_factor": 0.01}, r"partial_rotary_factor"),
        ({"attention_bias": True}, "attention_bias"),
    ],
)
def test_unsupported_phi3_configs_are_refused(
    tmp_path: Path, tiny_llama: Path, config: Dict[str, Any], message: str
) -> None:
    src = phi3_variant(tiny_llama, tmp_path / "bad", config)
    with pytest.raises(Error, match=message):
        cv.convert(src, tmp_path / "bad.gguf", "f32")


@pytest.mark.parametrize("window, stored", [(4096, 4096), (None, None)])
def test_mistral_sliding_window_is_written(
    tmp_path: Path, tiny_llama: Path, window: Any, stored: Any
) -> None:
    # Mistral 7B v0.1 slides over 4096 positions on every layer; v0.2+ give null (no window).
    config = {"architectures": ["MistralForCausalLM"], "sliding_window": window}
    src = variant(tiny_llama, tmp_path / "m", config, {})
    out = cv.convert(src, tmp_path / "m.gguf", "f32")
    assert field(out, "general.architecture") == "llama"
    assert field(out, "llama.attention.sliding_window") == stored
    eng = _core.Engine(str(out), backend="cpu", n_ctx=16)
    assert eng.hparams["sliding_window"] == (stored or 0)
