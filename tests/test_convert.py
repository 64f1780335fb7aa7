"""tools/convert.py (ffnskip_native.convert): Hugging Face checkpoints -> GGUF.

The checkpoints come from tests/hf_fixtures.py: SmolLM2-135M dequantized back into an HF dir, a
tiny random llama with a trained SentencePiece tokenizer, a tiny random qwen2 (biases, sharded)
with a trained byte-level BPE tokenizer. Converted files are checked against independent
references: the original GGUF's dequantized tensors and tokenizer metadata, the sentencepiece and
tokenizers packages, a float64 forward pass written here in the HF convention (rotate-half rope on
the HF weights) compared with tests/reference.py on the converted file (adjacent-pair rope), and
the engine's logits on the original file.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import gguf
import hf_fixtures as hf
import numpy as np
import pytest
from ffnskip_native import convert as cv
from ffnskip_native.convert import write as cv_write
from ffnskip_native.errors import Error

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "convert.py"


# ---- helpers -----------------------------------------------------------------------------------


def field(reader: gguf.GGUFReader, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def tensors_f32(path: Path) -> Dict[str, np.ndarray]:
    r = gguf.GGUFReader(path)
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in r.tensors}


def tensor_types(path: Path) -> Dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, timeout=120
    )


def hf_forward(w: Dict[str, np.ndarray], cfg: Dict[str, Any], ids: List[int]) -> np.ndarray:
    """Float64 logits of an HF llama/qwen2 checkpoint, in the HF convention (rotate-half rope)."""
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // n_head
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    g = {k: v.astype(np.float64) for k, v in w.items()}
    x = g["model.embed_tokens.weight"][ids]
    n = len(ids)
    ang = np.arange(n)[:, None] * theta ** (-np.arange(0, hd, 2) / hd)[None]
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))

    def rope(t: np.ndarray) -> np.ndarray:  # (n, heads, hd); pairs (i, i + hd/2)
        rot = np.concatenate([-t[..., hd // 2 :], t[..., : hd // 2]], -1)
        return t * cos[:, None] + rot * sin[:, None]

    def norm(t: np.ndarray, gain: np.ndarray) -> np.ndarray:
        return t / np.sqrt((t * t).mean(-1, keepdims=True) + eps) * gain

    mask = np.triu(np.full((n, n), -np.inf), 1)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = norm(x, g[p + "input_layernorm.weight"])
        qkv = []
        for proj, heads in (("q", n_head), ("k", n_kv), ("v", n_kv)):
            t = h @ g[p + f"self_attn.{proj}_proj.weight"].T
            t = t + g.get(p + f"self_attn.{proj}_proj.bias", 0.0)
            qkv.append(t.reshape(n, heads, hd))
        q, k, v = rope(qkv[0]), rope(qkv[1]), qkv[2]
        out = np.empty((n, n_head, hd))
        for hh in range(n_head):
            kv = hh // (n_head // n_kv)
            s = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
            pr = np.exp(s - s.max(1, keepdims=True))
            out[:, hh] = (pr / pr.sum(1, keepdims=True)) @ v[:, kv]
        x = x + out.reshape(n, -1) @ g[p + "self_attn.o_proj.weight"].T
        h = norm(x, g[p + "post_attention_layernorm.weight"])
        gate, up = h @ g[p + "mlp.gate_proj.weight"].T, h @ g[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ g[p + "mlp.down_proj.weight"].T
    x = norm(x, g["model.norm.weight"])
    return x @ g.get("lm_head.weight", g["model.embed_tokens.weight"]).T


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.tiny_llama_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.tiny_qwen2_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-qwen2")


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Dict[str, Any]:
    """SmolLM2: original path and reader, its dequantized tensors, the rebuilt HF dir, the f32
    conversion and its reader (readers are shared: opening one parses 100k vocab strings)."""
    orig_reader = gguf.GGUFReader(smollm2_path)
    tensors = hf.gguf_dequantized(orig_reader)
    hf_dir = hf.smollm2_hf_dir(
        smollm2_path, tmp_path_factory.mktemp("hf") / "smollm2", tensors, orig_reader
    )
    out = cv.convert(hf_dir, hf_dir.parent / "smollm2-f32.gguf", "f32")
    return {
        "orig": smollm2_path,
        "orig_reader": orig_reader,
        "tensors": tensors,
        "dir": hf_dir,
        "f32": out,
        "f32_reader": gguf.GGUFReader(out),
    }


# ---- SmolLM2 round trip ------------------------------------------------------------------------


def test_smollm2_f32_reproduces_every_tensor_exactly(smol: Dict[str, Any]) -> None:
    got = {t.name: t for t in smol["f32_reader"].tensors}
    assert set(got) == set(smol["tensors"])  # incl. no output.weight: the embedding is tied
    for name, want in smol["tensors"].items():
        t = got[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
        np.testing.assert_array_equal(np.asarray(t.data).reshape(want.shape), want, err_msg=name)


def test_smollm2_metadata_and_tokenizer_exact(smol: Dict[str, Any]) -> None:
    a, b = smol["orig_reader"], smol["f32_reader"]
    same = [
        "general.architecture",
        "llama.block_count",
        "llama.context_length",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.freq_base",
        "llama.rope.dimension_count",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.vocab_size",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
    ]
    for key in same:
        assert field(b, key) == field(a, key), key
    assert field(b, "tokenizer.ggml.pre") == "smollm"
    assert field(b, "general.file_type") == 0  # ALL_F32


def test_smollm2_rebuilt_tokenizer_json_is_valid(smol: Dict[str, Any]) -> None:
    """The fixture's tokenizer.json loads in `tokenizers` and keeps the GGUF ids (sanity)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(smol["dir"] / "tokenizer.json"))
    vocab = field(smol["orig_reader"], "tokenizer.ggml.tokens")
    ids = tok.encode("<|im_start|>user\nHello world 123<|im_end|>").ids
    assert ids[0] == 1 and ids[-1] == 2
    assert [vocab[i] for i in ids[3:5]] == ["Hello", "Ġworld"]


def test_smollm2_reference_logits_match_original(smol: Dict[str, Any]) -> None:
    import reference

    ids = [1, 4093, 198, 19556, 905, 28, 2]
    want = reference.load(smol["orig"], cache_bytes=300 << 20).forward(ids)
    got = reference.load(smol["f32"], cache_bytes=300 << 20).forward(ids)
    # Same f32 weights, float64 arithmetic: only summation order could differ.
    assert np.abs(got - want).max() <= 1e-9 * np.abs(want).max()


def test_smollm2_engine_logits_match_original(smol: Dict[str, Any]) -> None:
    _core = _engine_or_skip()
    ids = [1, 4093, 198, 19556, 905, 28, 2, 1, 520, 9531, 198]
    a = _core.Engine(str(smol["orig"]), backend="cpu", n_ctx=256).logits(ids, all_positions=True)
    b = _core.Engine(str(smol["f32"]), backend="cpu", n_ctx=256).logits(ids, all_positions=True)
    assert a.shape == b.shape == (len(ids), 49152)
    # The original runs the Q4_1/Q8_0 kernels (16-bit activations), the converted file the f32
    # kernels on the same weight values: the forward tolerance of the core tests applies.
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    assert rel.max() <= 1e-2
    assert np.array_equal(a.argmax(1), b.argmax(1))


# ---- tiny llama (SentencePiece, bf16) and qwen2 (BPE, biases, shards) ---------------------------


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "MistralForCausalLM"])
def test_tiny_llama_bf16_auto_and_f32(tmp_path: Path, arch: str) -> None:
    src = hf.tiny_llama_hf_dir(tmp_path / "hf", arch=arch)
    w = hf.hf_weights(src)
    auto = cv.convert(src, tmp_path / "auto.gguf", "auto")
    f32 = cv.convert(src, tmp_path / "f32.gguf", "f32")
    r = gguf.GGUFReader(auto)
    assert field(r, "general.architecture") == "llama"
    assert field(r, "general.file_type") == 32  # MOSTLY_BF16
    types = tensor_types(auto)
    assert types["blk.0.attn_q.weight"] == "BF16" and types["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" in types  # untied lm_head kept
    # bf16 source -> bf16 (bits untouched) and -> f32 (exact widening) give the same values.
    a, b = tensors_f32(auto), tensors_f32(f32)
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(b["token_embd.weight"], w["model.embed_tokens.weight"])
    np.testing.assert_array_equal(
        b["blk.1.ffn_down.weight"], w["model.layers.1.mlp.down_proj.weight"]
    )
    # q/k were permuted (not identical to HF rows) but are the same multiset of rows.
    q_hf, q_gg = w["model.layers.0.self_attn.q_proj.weight"], b["blk.0.attn_q.weight"]
    assert not np.array_equal(q_hf, q_gg)
    np.testing.assert_array_equal(np.sort(q_hf, axis=0), np.sort(q_gg, axis=0))


def test_tiny_llama_logits_match_hf_convention(tmp_path: Path, tiny_llama: Path) -> None:
    """Proves the q/k permutation: HF rotate-half rope on HF weights == pair rope on GGUF."""
    import reference

    out = cv.convert(tiny_llama, tmp_path / "f32.gguf", "f32")
    cfg = json.loads((tiny_llama / "config.json").read_text())
    ids = [1, 17, 250, 3, 99, 310, 42, 7, 8, 200]
    want = hf_forward(hf.hf_weights(tiny_llama), cfg, ids)
    got = reference.load(out).forward(ids)
    assert np.abs(got - want).max() <= 1e-9 * np.abs(want).max()


def test_tiny_llama_sentencepiece_vocab(tmp_path: Path, tiny_llama: Path) -> None:
    import sentencepiece as spm

    out = cv.convert(tiny_llama, tmp_path / "o.gguf", "f16")
    r = gguf.GGUFReader(out)
    sp = spm.SentencePieceProcessor(model_file=str(tiny_llama / "tokenizer.model"))
    n = sp.get_piece_size()
    tokens = field(r, "tokenizer.ggml.tokens")
    scores = field(r, "tokenizer.ggml.scores")
    types = field(r, "tokenizer.ggml.token_type")
    assert field(r, "tokenizer.ggml.model") == "llama"
    assert len(tokens) == len(types) == len(scores) == 320  # padded to the embedding rows
    assert tokens[:n] == [sp.id_to_piece(i) for i in range(n)]
    np.testing.assert_array_equal(np.float32(scores[:n]), [sp.get_score(i) for i in range(n)])

    def sp_type(i: int) -> int:
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        if sp.is_byte(i):
            return 6
        if sp.is_unused(i):
            return 5
        return 4 if sp.id_to_piece(i) == "<tool>" else 1

    assert types[:n] == [sp_type(i) for i in range(n)]
    assert types.count(6) == 256 and types[n:] == [5] * (320 - n)
    assert field(r, "tokenizer.ggml.bos_token_id") == sp.bos_id()
    assert field(r, "tokenizer.ggml.eos_token_id") == sp.eos_id()
    assert field(r, "tokenizer.ggml.unknown_token_id") == sp.unk_id()
    assert field(r, "tokenizer.ggml.add_bos_token") is True
    assert field(r, "tokenizer.ggml.add_eos_token") is False
    assert field(r, "tokenizer.ggml.add_space_prefix") is True
    assert "[INST]" in field(r, "tokenizer.chat_template")
    assert tensor_types(out)["blk.0.ffn_up.weight"] == "F16"
    assert field(r, "general.file_type") == 1


def test_tiny_qwen2_sharded_biases_tied(tmp_path: Path, tiny_qwen2: Path) -> None:
    import reference

    out = cv.convert(tiny_qwen2, tmp_path / "auto.gguf")
    r = gguf.GGUFReader(out)
    types = tensor_types(out)
    assert field(r, "general.architecture") == "qwen2"
    assert "output.weight" not in types  # tie_word_embeddings
    assert types["blk.1.attn_q.bias"] == "F32" and types["blk.1.attn_v.weight"] == "F16"
    assert field(r, "general.file_type") == 1
    w, got = hf.hf_weights(tiny_qwen2), tensors_f32(out)
    # qwen2 keeps HF's NEOX layout: no permutation, f16 values and f32 biases exact.
    np.testing.assert_array_equal(
        got["blk.0.attn_q.weight"], w["model.layers.0.self_attn.q_proj.weight"]
    )
    np.testing.assert_array_equal(
        got["blk.0.attn_k.bias"], w["model.layers.0.self_attn.k_proj.bias"]
    )
    cfg = json.loads((tiny_qwen2 / "config.json").read_text())
    ids = [0, 5, 300, 77, 1, 2, 3, 401, 12]
    want = hf_forward(w, cfg, ids)
    assert np.abs(reference.load(out).forward(ids) - want).max() <= 1e-9 * np.abs(want).max()


def test_tiny_qwen2_bpe_vocab(tmp_path: Path, tiny_qwen2: Path) -> None:
    from tokenizers import Tokenizer

    out = cv.convert(tiny_qwen2, tmp_path / "o.gguf", "f32")
    r = gguf.GGUFReader(out)
    tok = Tokenizer.from_file(str(tiny_qwen2 / "tokenizer.json"))
    tj = json.loads((tiny_qwen2 / "tokenizer.json").read_text())
    n = tok.get_vocab_size()
    tokens, types = field(r, "tokenizer.ggml.tokens"), field(r, "tokenizer.ggml.token_type")
    assert field(r, "tokenizer.ggml.model") == "gpt2"
    assert field(r, "tokenizer.ggml.pre") == "qwen2"
    assert len(tokens) == 448 and tokens[:n] == [tok.id_to_token(i) for i in range(n)]
    added = tok.get_added_tokens_decoder()
    want_types = [
        3 if i in added and added[i].special else 4 if i in added else 1 for i in range(n)
    ]
    assert types[:n] == want_types and 4 in want_types and types[n:] == [5] * (448 - n)
    merges = tj["model"]["merges"]
    assert isinstance(merges[0], list)  # this fixture exercises the [a, b] form
    assert field(r, "tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    assert field(r, "tokenizer.ggml.eos_token_id") == tok.token_to_id("<|im_end|>")
    assert field(r, "tokenizer.ggml.padding_token_id") == tok.token_to_id("<|endoftext|>")
    assert field(r, "tokenizer.ggml.bos_token_id") is None
    assert field(r, "tokenizer.ggml.add_bos_token") is False


def _engine_or_skip() -> Any:
    from ffnskip_native import _core

    if not hasattr(_core, "Engine"):
        pytest.skip("ffnskip_native._core has no Engine yet (engine not built into this _core)")
    return _core


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_qwen2"])
def test_engine_runs_converted_tiny_models(
    tmp_path: Path, which: str, request: pytest.FixtureRequest
) -> None:
    """End to end: the engine's logits and tokenizer on converted files match HF-side math and
    the sentencepiece / tokenizers packages."""
    core = _engine_or_skip()
    src = request.getfixturevalue(which)
    out = cv.convert(src, tmp_path / "m.gguf", "auto")
    cfg = json.loads((src / "config.json").read_text())
    ids = [1, 17, 250, 3, 99, 310, 42, 7, 8, 200]
    want = hf_forward(hf.hf_weights(src), cfg, ids)
    got = core.Engine(str(out), backend="cpu", n_ctx=64).logits(ids, all_positions=True)
    # Measured ~1.7e-4 (the engine keeps its KV cache in f16).
    assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max()
    texts = ["the quick brown fox 42", "numpy  matrix\nvector 2024 <tool> done."]
    tok = core.Tokenizer(str(out))
    if which == "tiny_llama":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
        # (sentencepiece's normalizer also collapses repeated spaces and maps newlines, which
        # GGUF SentencePiece tokenizers do not: compare on text where that does not matter.)
        for t in [texts[0], "vector 2024 done. matrix"]:
            assert tok.encode(t, add_special=False) == sp.encode(t), t
    else:
        from tokenizers import Tokenizer

        ref = Tokenizer.from_file(str(src / "tokenizer.json"))
        for t in texts:
            assert tok.encode(t, add_special=False) == ref.encode(t).ids, t


# ---- quantized outputs -------------------------------------------------------------------------


def _block_bound(ref: np.ndarray, qtype: str) -> np.ndarray:
    """Per-element error bound of one quantization (blocks of 32 along rows).

    Q8_0: scale d = amax/127, round to nearest -> |err| <= d/2, plus d stored as f16
          (relative 2^-11, times |q| <= 127) -> 0.6 d.
    Q4_0: d = |max|/8 with the extreme value at -8 -> |err| <= d/2 except the opposite-sign
          extreme clamped at +7 -> |err| <= d (+ f16 rounding) -> 1.01 d.
    Q4_1: d = (max - min)/15, offset min -> |err| <= d/2, plus f16 d and min
          -> 0.51 d + |min| 2^-10.
    """
    b = ref.reshape(-1, 32)
    amax = np.abs(b).max(1, keepdims=True)
    if qtype == "Q8_0":
        bound = 0.6 * amax / 127
    elif qtype == "Q4_0":
        bound = 1.01 * amax / 8
    else:
        lo, hi = b.min(1, keepdims=True), b.max(1, keepdims=True)
        bound = 0.51 * (hi - lo) / 15 + np.abs(lo) / 1024
    return np.broadcast_to(bound + 1e-12, b.shape).reshape(ref.shape)


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("which", ["tiny_llama", "tiny_qwen2"])
def test_quantized_within_bound(
    tmp_path: Path, outtype: str, which: str, request: pytest.FixtureRequest
) -> None:
    src = request.getfixturevalue(which)
    exact = tensors_f32(cv.convert(src, tmp_path / "f32.gguf", "f32"))
    out = cv.convert(src, tmp_path / "q.gguf", outtype)
    qtype = outtype.upper()
    types, got = tensor_types(out), tensors_f32(out)
    assert field(gguf.GGUFReader(out), "general.file_type") == cv.OUTTYPES[outtype][1]
    for name, ref in exact.items():
        if ref.ndim == 1:
            assert types[name] == "F32"
            np.testing.assert_array_equal(got[name], ref)
            continue
        assert types[name] == qtype, name
        err = np.abs(got[name] - ref)
        assert (err <= _block_bound(ref, qtype)).all(), name
        rel = np.sqrt((err**2).mean() / (ref**2).mean())
        assert rel < {"Q8_0": 0.01, "Q4_0": 0.15, "Q4_1": 0.12}[qtype], (name, rel)


# ---- pre-tokenizer recognition -----------------------------------------------------------------

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
_DEEPSEEK_LLM = [
    "[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕ]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}+",
]


def _split(regex: str) -> Dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


@pytest.mark.parametrize(
    ("pre_tokenizer", "name"),
    [
        ({**_BYTE_LEVEL, "use_regex": True}, "gpt2"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [_split(hf.LLAMA3_SPLIT), {**_BYTE_LEVEL, "use_regex": False}],
            },
            "llama-bpe",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [_split(hf.QWEN2_SPLIT), {**_BYTE_LEVEL, "use_regex": False}],
            },
            "qwen2",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": True},
                    {**_BYTE_LEVEL, "use_regex": True},
                ],
            },
            "smollm",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [_split(r) for r in _DEEPSEEK_LLM]
                + [{**_BYTE_LEVEL, "use_regex": False}],
            },
            "deepseek-llm",
        ),
    ],
)
def test_detect_pre(pre_tokenizer: Dict[str, Any], name: str) -> None:
    from ffnskip_native.convert.bpe_json import detect_pre

    assert detect_pre(pre_tokenizer) == name


def test_detect_pre_unknown_is_an_error() -> None:
    from ffnskip_native.convert.bpe_json import detect_pre

    with pytest.raises(cv.ConvertError, match="--vocab-pre"):
        detect_pre({"type": "Sequence", "pretokenizers": [_split("\\w+"), _BYTE_LEVEL]})


# ---- CLI and bad input -------------------------------------------------------------------------


def test_cli_success_with_progress(tmp_path: Path, tiny_qwen2: Path) -> None:
    out = tmp_path / "m.gguf"
    res = run_cli(str(tiny_qwen2), "--outfile", str(out), "--outtype", "q8_0", "--progress")
    assert res.returncode == 0, res.stderr
    assert "100%" in res.stderr
    assert field(gguf.GGUFReader(out), "general.file_type") == 7
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_convert_error_is_an_ffnskip_error() -> None:
    assert issubclass(cv.ConvertError, Error)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _edit_json(path: Path, **changes: Any) -> None:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj))


def _bad_missing_config(d: Path) -> None:
    (d / "config.json").unlink()


def _bad_arch(d: Path) -> None:
    _edit_json(d / "config.json", architectures=["GPT2LMHeadModel"])


def _bad_shape(d: Path) -> None:
    _edit_json(d / "config.json", intermediate_size=160)


def _bad_missing_shard(d: Path) -> None:
    (d / "model-00002-of-00002.safetensors").unlink()


def _bad_dtype(d: Path) -> None:
    p = d / "model-00001-of-00002.safetensors"
    data = p.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F16")
    a, b = header[name]["data_offsets"]
    header[name] = {"dtype": "I16", "shape": header[name]["shape"], "data_offsets": [a, b]}
    blob = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n :])


def _bad_truncated(d: Path) -> None:
    p = d / "model-00002-of-00002.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def _bad_no_tokenizer(d: Path) -> None:
    (d / "tokenizer.json").unlink()


def _bad_not_json(d: Path) -> None:
    (d / "config.json").write_text("{ nope")


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_bad_missing_config, "config.json not found"),
        (_bad_arch, "unsupported architecture GPT2LMHeadModel"),
        (_bad_shape, "shape mismatch"),
        (_bad_missing_shard, "missing"),
        (_bad_dtype, "unsupported dtype I16"),
        (_bad_truncated, "outside the file"),
        (_bad_no_tokenizer, "no tokenizer"),
        (_bad_not_json, "cannot read JSON"),
    ],
)
def test_cli_bad_input(tmp_path: Path, tiny_qwen2: Path, breaker: Any, message: str) -> None:
    src = _copy(tiny_qwen2, tmp_path / "hf")
    breaker(src)
    outdir = tmp_path / "out"
    outdir.mkdir()
    res = run_cli(str(src), "--outfile", str(outdir / "m.gguf"), "--outtype", "f16")
    assert res.returncode == 1
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert list(outdir.iterdir()) == []


def test_cli_missing_dir(tmp_path: Path) -> None:
    res = run_cli(str(tmp_path / "nope"), "--outfile", str(tmp_path / "m.gguf"))
    assert res.returncode == 1 and "not a directory" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = cv_write._encode, []

    def failing(item: Any) -> np.ndarray:
        calls.append(item.gguf_name)
        if len(calls) == 5:
            raise cv.ConvertError("injected failure")
        return real(item)

    monkeypatch.setattr(cv_write, "_encode", failing)
    with pytest.raises(cv.ConvertError, match="injected"):
        cv.convert(tiny_llama, tmp_path / "m.gguf", "f32")
    assert list(tmp_path.iterdir()) == []


def test_eos_from_generation_config(tmp_path: Path, tiny_qwen2: Path) -> None:
    src = _copy(tiny_qwen2, tmp_path / "hf")
    _edit_json(src / "tokenizer_config.json", eos_token=None)
    (src / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2]}))
    r = gguf.GGUFReader(cv.convert(src, tmp_path / "m.gguf", "f16"))
    assert field(r, "tokenizer.ggml.eos_token_id") == 1


def test_tied_config_drops_lm_head(tmp_path: Path, tiny_llama: Path) -> None:
    src = _copy(tiny_llama, tmp_path / "hf")
    _edit_json(src / "config.json", tie_word_embeddings=True)
    out = cv.convert(src, tmp_path / "m.gguf", "f32")
    assert "output.weight" not in tensor_types(out)


# ---- bounded memory on a > 1 GB model ----------------------------------------------------------


@pytest.mark.slow
def test_peak_memory_stays_near_largest_tensor(tmp_path: Path, tiny_llama: Path) -> None:
    src = hf.big_llama_hf_dir(tmp_path / "big", tokenizer_from=tiny_llama)
    size = (src / "model.safetensors").stat().st_size
    assert size > 1_100_000_000
    largest = 8192 * 2048 * 4  # embedding / lm_head, f32
    worker = textwrap.dedent(
        f"""
        import resource, sys, types
        pkg = types.ModuleType("ffnskip_native")  # only the pure-Python converter, no _core
        pkg.__path__ = [{str(REPO / "python" / "ffnskip_native")!r}]
        sys.modules["ffnskip_native"] = pkg
        from ffnskip_native.convert import convert
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        convert({str(src)!r}, {str(tmp_path / "big.gguf")!r}, "f16")
        print(base * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        """
    )
    # Linux keeps ru_maxrss across fork + exec, so a child of this (big) pytest process would
    # report pytest's peak: run the worker from a small launcher process instead.
    launcher = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    res = subprocess.run(
        [sys.executable, "-c", launcher, sys.executable, "-c", worker],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    base, peak = (int(v) for v in res.stdout.split())
    print(
        f"model {size / 2**20:.0f} MiB, largest tensor {largest / 2**20:.0f} MiB, "
        f"peak RSS {peak / 2**20:.0f} MiB (after imports {base / 2**20:.0f} MiB)"
    )
    assert peak - base < 3 * largest
    assert peak < size / 4
    r = gguf.GGUFReader(tmp_path / "big.gguf")
    assert len(r.tensors) == 2 + 6 * 9 + 1


# ---- hostile input: the converter's own inputs, lying sizes, malformed JSON (issue 16) ---------


def _shard_header(path: Path) -> Any:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _write_shard(path: Path, header: Any, body: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + body)


def _link_outside(src: Path, tmp: Path, kind: str) -> Path:
    """An output path outside the checkpoint dir that reaches src's config.json."""
    if kind == "symlink":
        (tmp / "out.gguf").symlink_to(src / "config.json")
        return tmp / "out.gguf"
    if kind == "hardlink":
        os.link(src / "config.json", tmp / "out.gguf")
        return tmp / "out.gguf"
    (tmp / "dirlink").symlink_to(src, target_is_directory=True)  # a symlinked directory
    return tmp / "dirlink" / "config.json"


@pytest.mark.parametrize(
    "target",
    [
        "config.json",
        "model-00002-of-00002.safetensors",
        "tokenizer.json",
        "model.safetensors.index.json",
        "symlink",
        "hardlink",
        "dirlink",
    ],
)
def test_outfile_naming_an_input_is_refused(tmp_path: Path, tiny_qwen2: Path, target: str) -> None:
    src = _copy(tiny_qwen2, tmp_path / "hf")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    if target.endswith("link"):
        out = _link_outside(src, tmp_path, target)
    else:
        out = src / target
    with pytest.raises(cv.ConvertError, match="refusing to replace it"):
        cv.convert(src, out, "f16")
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_cli_outfile_naming_an_input_exits_1(tmp_path: Path, tiny_qwen2: Path) -> None:
    src = _copy(tiny_qwen2, tmp_path / "hf")
    shard = src / "model-00001-of-00002.safetensors"
    before = shard.read_bytes()
    res = run_cli(str(src), "--outfile", str(shard))
    assert res.returncode == 1 and "refusing to replace it" in res.stderr, res.stderr
    assert shard.read_bytes() == before


def test_default_outfile_is_replaced_on_a_rerun(tmp_path: Path, tiny_qwen2: Path) -> None:
    """Earlier .gguf outputs in the checkpoint dir are not inputs: a rerun replaces them."""
    src = _copy(tiny_qwen2, tmp_path / "hf")
    first = cv.convert(src, None, "f16")
    second = cv.convert(src, None, "f32")
    assert first.parent == second.parent == src
    third = cv.convert(src, first, "f32")
    assert third == first and tensor_types(first)["blk.0.attn_q.weight"] == "F32"


def _added_token_id_1e10(d: Path) -> None:
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["added_tokens"][0]["id"] = 10**10
    (d / "tokenizer.json").write_text(json.dumps(tj))


def _decoder_token_id_1e10(d: Path) -> None:
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["added_tokens_decoder"] = {str(10**10): {"content": "<x>", "special": True}}
    (d / "tokenizer_config.json").write_text(json.dumps(tc))


def _layers_1e9(d: Path) -> None:
    _edit_json(d / "config.json", num_hidden_layers=10**9)


def _layers_1e9_last_one_named(d: Path) -> None:
    """num_hidden_layers agrees with the highest layer number present, but layers are missing."""
    _edit_json(d / "config.json", num_hidden_layers=10**9)
    p = d / "model.safetensors"
    header, body = _shard_header(p)
    old = next(k for k in header if k.startswith("model.layers.1."))
    header[old.replace("layers.1.", f"layers.{10**9 - 1}.")] = header.pop(old)
    _write_shard(p, header, body)


@pytest.mark.parametrize(
    ("which", "breaker", "message"),
    [
        ("tiny_qwen2", _layers_1e9, "num_hidden_layers is 1000000000 but the checkpoint has"),
        ("tiny_llama", _layers_1e9_last_one_named, "for 3 layer(s) numbered 0..999999999"),
        ("tiny_qwen2", _added_token_id_1e10, "id must be an integer in [0, 447]"),
        ("tiny_llama", _decoder_token_id_1e10, "is not a token id in [0, 319]"),
    ],
)
def test_lying_sizes_fail_before_allocating(
    tmp_path: Path, which: str, breaker: Any, message: str, request: pytest.FixtureRequest
) -> None:
    """Sizes taken from metadata are checked against the tensors before anything is sized from
    them. Run in a child under a 512 MiB address-space limit (a conversion of these tiny models
    peaks well below it; the unchecked code exhausts it) and a time bound, so a regression can
    neither take the test machine's memory nor hang the suite."""
    src = _copy(request.getfixturevalue(which), tmp_path / "hf")
    breaker(src)
    res = _run_cli_bounded(str(src), "--outfile", str(tmp_path / "m.gguf"))
    assert res.returncode == 1 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr


def _run_cli_bounded(*args: str) -> subprocess.CompletedProcess:
    """tools/convert.py in a child under a 512 MiB address-space limit and a 90 s time limit
    (a failure, not a hang, when exceeded)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, str(TOOL), *args]
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=90, preexec_fn=limit
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the conversion did not end within 90 s")


def test_fifo_shard_is_refused_without_blocking(tmp_path: Path, tiny_llama: Path) -> None:
    src = _copy(tiny_llama, tmp_path / "hf")
    (src / "model.safetensors").unlink()
    os.mkfifo(src / "model.safetensors")
    res = _run_cli_bounded(str(src), "--outfile", str(tmp_path / "m.gguf"))
    assert res.returncode == 1 and "not a regular file" in res.stderr, res.stderr


def test_non_utf8_directory_name_converts(tmp_path: Path, tiny_qwen2: Path) -> None:
    src = _copy(tiny_qwen2, tmp_path / os.fsdecode(b"model-\xff"))
    out = cv.convert(src, tmp_path / "m.gguf", "f16")
    assert field(gguf.GGUFReader(out), "general.name") == "model-?"


def _set_shard_tensor(d: Path, **changes: Any) -> None:
    """Edit the first tensor entry of the first shard's header."""
    p = d / "model-00001-of-00002.safetensors"
    header, body = _shard_header(p)
    name = next(k for k in header if k != "__metadata__")
    header[name].update(changes)
    _write_shard(p, header, body)


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


# (file, value written at key, message). Each of these raised a raw exception (or, for a
# string num_key_value_heads and a NaN epsilon, converted silently) before issue 16.
_MALFORMED: List[Any] = [
    ("config.json", {"head_dim": "16"}, "head_dim must be an integer"),
    ("config.json", {"num_key_value_heads": "2"}, "num_key_value_heads must be an integer"),
    ("config.json", {"rope_theta": "1e6"}, "rope_theta must be a finite number"),
    ("config.json", {"rope_scaling": "linear"}, "rope_scaling must be an object"),
    ("config.json", {"rope_scaling": {"type": "linear", "factor": "2"}}, "factor must be"),
    ("config.json", {"max_position_embeddings": 2**40}, "max_position_embeddings must be"),
    ("config.json", {"rms_norm_eps": float("nan")}, "rms_norm_eps must be a finite number"),
    ("config.json", {"rms_norm_eps": 0.0}, "rms_norm_eps must be a finite number"),
    ("config.json", {"rope_theta": float("inf")}, "rope_theta must be a finite number"),
    ("config.json", {"hidden_size": 64.0}, "hidden_size must be an integer"),
    ("config.json", {"num_attention_heads": True}, "num_attention_heads must be an integer"),
    ("config.json", {"architectures": "Qwen2ForCausalLM"}, "architectures must be an array"),
    ("config.json", {"architectures": [{"a": 1}]}, "architectures must be an array of strings"),
    ("config.json", {"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
    ("config.json", {"bos_token_id": ["2"]}, "bos_token_id must be a token id"),
    ("tokenizer_config.json", {"chat_template": 5}, "chat_template must be a string or"),
    ("tokenizer_config.json", {"chat_template": [{"name": "x"}]}, "template is missing"),
    ("tokenizer_config.json", {"add_bos_token": "no"}, "add_bos_token must be true or false"),
    ("tokenizer_config.json", {"eos_token": 5}, "eos_token must be a token string"),
    ("model.safetensors.index.json", {"weight_map": 5}, "weight_map must be an object"),
    ("model.safetensors.index.json", {"weight_map": {"x": 5}}, "must be file names"),
    ("generation_config.json", {"bos_token_id": {"a": 1}}, "bos_token_id must be a token id"),
]


def _malformed_id(case: Any) -> str:
    return f"{case[0]}:{next(iter(case[1]))}={json.dumps(next(iter(case[1].values())))[:20]}"


@pytest.mark.parametrize("case", _MALFORMED, ids=_malformed_id)
def test_malformed_config_values_exit_1(
    tmp_path: Path, tiny_qwen2: Path, case: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fname, changes, message = case
    src = _copy(tiny_qwen2, tmp_path / "hf")
    _edit_json(src / fname, **changes)
    out = tmp_path / "m.gguf"
    assert cv.main([str(src), "--outfile", str(out), "--outtype", "f16"]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


def _whole_file(fname: str, text: str) -> Any:
    def breaker(d: Path) -> None:
        (d / fname).write_text(text)

    return breaker


def _vocab_id_string(d: Path) -> None:
    tj = json.loads((d / "tokenizer.json").read_text())
    tok = next(iter(tj["model"]["vocab"]))
    tj["model"]["vocab"][tok] = "x"
    (d / "tokenizer.json").write_text(json.dumps(tj))


def _merge_of_ints(d: Path) -> None:
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["model"]["merges"][0] = [1, 2]
    (d / "tokenizer.json").write_text(json.dumps(tj))


def _split_pattern_string(d: Path) -> None:
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"] = "x"
    (d / "tokenizer.json").write_text(json.dumps(tj))


def _template_piece_not_object(d: Path) -> None:
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["post_processor"] = {"type": "TemplateProcessing", "single": ["$A"]}
    (d / "tokenizer.json").write_text(json.dumps(tj))


def _shape_of_strings(d: Path) -> None:
    _set_shard_tensor(d, shape=["64"])


def _lone_surrogate_token(d: Path) -> None:
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["added_tokens"][-1]["content"] = "<\ud800>"
    (d / "tokenizer.json").write_text(json.dumps(tj))


def _lone_surrogate_template(d: Path) -> None:
    _edit_json(d / "tokenizer_config.json", chat_template="{{ '\udcff' }}")


def _overlapping_offsets(d: Path) -> None:
    """Point one tensor at another's bytes (same size, so every other check passes)."""
    p = d / "model-00001-of-00002.safetensors"
    header, body = _shard_header(p)
    a = header["model.layers.0.mlp.gate_proj.weight"]
    b = header["model.layers.0.mlp.up_proj.weight"]
    assert a["shape"] == b["shape"] and a["data_offsets"] != b["data_offsets"]
    b["data_offsets"] = a["data_offsets"]
    _write_shard(p, header, body)


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_whole_file("config.json", _nested(100_000)), "JSON nested too deeply"),
        (_whole_file("tokenizer.json", _nested(100_000)), "JSON nested too deeply"),
        (_whole_file("tokenizer.json", "[]"), "tokenizer.json: expected a JSON object"),
        (_whole_file("tokenizer_config.json", "[1]"), "tokenizer_config.json: expected a JSON"),
        (_whole_file("generation_config.json", '"x"'), "generation_config.json: expected a JSON"),
        (_vocab_id_string, "must be an integer in [0, 447], found the string 'x'"),
        (_merge_of_ints, "malformed merge entry"),
        (_split_pattern_string, "unrecognised pre-tokenizer"),
        (_template_piece_not_object, "single entry: expected a JSON object"),
        (_shape_of_strings, "malformed header entry"),
        (_overlapping_offsets, "overlap"),
        (_lone_surrogate_token, "token 374 ('<\\ud800>') is not valid Unicode"),
        (_lone_surrogate_template, "chat template 0"),
    ],
)
def test_malformed_files_exit_1(
    tmp_path: Path,
    tiny_qwen2: Path,
    breaker: Any,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = _copy(tiny_qwen2, tmp_path / "hf")
    breaker(src)
    out = tmp_path / "m.gguf"
    assert cv.main([str(src), "--outfile", str(out), "--outtype", "f16"]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


def _corrupt_piece(d: Path, new_piece: bytes) -> None:
    """Replace the first SentencePiece entry (field 1 of the ModelProto) by new_piece."""
    buf = (d / "tokenizer.model").read_bytes()
    assert buf[0] == 0x0A  # field 1, length-delimited
    n, pos = 0, 1
    shift = 0
    while True:
        b = buf[pos]
        n |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if not b & 0x80:
            break
    rest = buf[pos + n :]
    (d / "tokenizer.model").write_bytes(bytes([0x0A, len(new_piece)]) + new_piece + rest)


@pytest.mark.parametrize(
    ("piece", "message"),
    [
        (b"\x0a\x02\xff\xfe", "not UTF-8"),  # piece text: invalid UTF-8
        (b"\x0a\x01a\x10\x05", "score is not a float"),  # score as a varint
        (b"\x0a\x01a\x18\x09", "unknown type 9"),
        (b"\x0a\x01a\x1a\x01x", "wrong protobuf wire type"),  # type as bytes
    ],
)
def test_malformed_sentencepiece_model_exit_1(
    tmp_path: Path,
    tiny_llama: Path,
    piece: bytes,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = _copy(tiny_llama, tmp_path / "hf")
    _corrupt_piece(src, piece)
    assert cv.main([str(src), "--outfile", str(tmp_path / "m.gguf"), "--outtype", "f16"]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("entry", ["../outside.safetensors", "ABS", "../../../../etc/passwd"])
def test_index_cannot_name_files_outside_the_checkpoint(
    tmp_path: Path, tiny_qwen2: Path, entry: str
) -> None:
    """A shard moved out of the directory and named by ../ or an absolute path is not read
    (before, the first two converted and the third opened /etc/passwd)."""
    src = _copy(tiny_qwen2, tmp_path / "hf")
    shard = "model-00002-of-00002.safetensors"
    outside = tmp_path / "outside.safetensors"
    (src / shard).rename(outside)
    name = str(outside) if entry == "ABS" else entry
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: name if v == shard else v for k, v in index["weight_map"].items()}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(cv.ConvertError, match="outside the checkpoint directory"):
        cv.convert(src, tmp_path / "m.gguf", "f16")


def test_index_shard_symlinked_elsewhere_still_converts(tmp_path: Path, tiny_qwen2: Path) -> None:
    """Hugging Face's cache keeps shards as symlinks into ../../blobs: the name is checked, not
    the link's target."""
    src = _copy(tiny_qwen2, tmp_path / "hf")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for p in src.glob("*.safetensors"):
        p.rename(blobs / p.name)
        p.symlink_to(Path("..") / "blobs" / p.name)
    out = cv.convert(src, tmp_path / "m.gguf", "f16")
    want = tensors_f32(cv.convert(tiny_qwen2, tmp_path / "ref.gguf", "f16"))
    got = tensors_f32(out)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_bf16_declared_for_f16_data_is_refused(tmp_path: Path, tiny_qwen2: Path) -> None:
    src = _copy(tiny_qwen2, tmp_path / "hf")
    for p in src.glob("*.safetensors"):
        header, body = _shard_header(p)
        for name, info in header.items():
            if name != "__metadata__":
                assert info["dtype"] == "F16"
                info["dtype"] = "BF16"
        _write_shard(p, header, body)
    with pytest.raises(cv.ConvertError, match="declared BF16 but its median"):
        cv.convert(src, tmp_path / "m.gguf", "f16")
    assert not (tmp_path / "m.gguf").exists()


def test_bf16_scale_check_separates_real_weights_from_misread_f16(smol: Dict[str, Any]) -> None:
    """On trained weights (SmolLM2's matrices): their bf16 rounding passes, the same values
    stored as F16 and read as BF16 are refused."""
    from ffnskip_native.convert.tensors import TensorRef, check_bf16_scale

    n = 0
    for name, w in smol["tensors"].items():
        if w.ndim != 2:
            continue
        ref = TensorRef(name, Path("m.safetensors"), "BF16", w.shape, 0, w.size * 2)
        check_bf16_scale(ref, hf.f32_to_bf16_bits(w))
        with pytest.raises(cv.ConvertError, match="declared BF16"):
            check_bf16_scale(ref, w.astype(np.float16).view(np.uint16))
        n += 1
    assert n == 30 * 7 + 1
