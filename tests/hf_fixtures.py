"""Builders of Hugging Face checkpoint directories for the converter tests.

- smollm2_hf_dir: the real SmolLM2-135M-Instruct GGUF dequantized back into an HF checkpoint
  (f32 safetensors, q/k rows returned to HF's rotate-half layout, tokenizer.json rebuilt from the
  GGUF vocab and merges, config / tokenizer_config / generation_config).
- tiny_llama_hf_dir: random bf16 llama with a SentencePiece tokenizer.model trained here.
- tiny_qwen2_hf_dir: random f16 qwen2 with q/k/v biases and a byte-level BPE tokenizer.json
  trained here (qwen2 Split regex), sharded into two safetensors files with an index.
- write_safetensors: a small streaming safetensors writer (tensors produced one at a time), also
  used to build a > 1 GB checkpoint without holding it in memory.

Everything here is written independently of ffnskip_native.convert (which it is meant to test).
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

# The Split regexes as they appear in the real Qwen2 / Llama-3 tokenizer.json files.
QWEN2_SPLIT = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
LLAMA3_SPLIT = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)

_ST_NAME = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<f8"): "F64"}

# A tensor to write: (name, safetensors dtype, shape, array or a function producing the array).
# "BF16" arrays are given as uint16 bit patterns.
Entry = Tuple[str, str, Tuple[int, ...], Union[np.ndarray, Callable[[], np.ndarray]]]
_ITEM = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1}


def write_safetensors(path: Path, entries: Sequence[Entry]) -> None:
    """Write a .safetensors file, materialising one tensor at a time (in `entries` order)."""
    header: Dict[str, Any] = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dtype, shape, _ in entries:
        n = int(np.prod(shape, dtype=np.int64)) * _ITEM[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, dtype, shape, data in entries:
            arr = data() if callable(data) else data
            assert tuple(arr.shape) == tuple(shape), name
            assert arr.dtype.itemsize == _ITEM[dtype], name
            np.ascontiguousarray(arr).tofile(f)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest even), returned as uint16 bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF llama (rope on adjacent pairs) q/k rows -> HF rotate-half rows, per head."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")


# ---- 1. SmolLM2 from its GGUF -------------------------------------------------------------------

_GGUF_TO_HF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def gguf_dequantized(reader: Any) -> Dict[str, np.ndarray]:
    """Every tensor of a gguf.GGUFReader, dequantized to float32 in numpy (out, in) orientation."""
    import gguf

    return {
        t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        for t in reader.tensors
    }


def smollm2_hf_dir(
    gguf_path: Path,
    out: Path,
    dequantized: Optional[Dict[str, np.ndarray]] = None,
    reader: Any = None,
) -> Path:
    """Rebuild an HF checkpoint dir (f32) of the SmolLM2 GGUF file.

    dequantized / reader: the file's tensors from gguf_dequantized() and its gguf.GGUFReader, if
    the caller already has them (opening the reader parses 100k vocab strings: seconds).
    """
    import gguf

    out.mkdir(parents=True, exist_ok=True)
    r = reader if reader is not None else gguf.GGUFReader(gguf_path)
    n_layer = _field(r, "llama.block_count")
    n_head = _field(r, "llama.attention.head_count")
    n_head_kv = _field(r, "llama.attention.head_count_kv")
    by_name = {t.name: t for t in r.tensors}

    def hf_tensor(gname: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            if dequantized is not None:
                w = dequantized[gname]
            else:
                t = by_name[gname]
                w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            if gname.endswith("attn_q.weight"):
                w = unpermute_qk(w, n_head)
            elif gname.endswith("attn_k.weight"):
                w = unpermute_qk(w, n_head_kv)
            return w

        return load

    def shape(gname: str) -> Tuple[int, ...]:
        return tuple(int(d) for d in reversed(by_name[gname].shape))

    entries: List[Entry] = [
        (
            "model.embed_tokens.weight",
            "F32",
            shape("token_embd.weight"),
            hf_tensor("token_embd.weight"),
        )
    ]
    for i in range(n_layer):
        for g, h in _GGUF_TO_HF_LAYER.items():
            entries.append(
                (f"model.layers.{i}.{h}", "F32", shape(f"blk.{i}.{g}"), hf_tensor(f"blk.{i}.{g}"))
            )
    entries.append(
        ("model.norm.weight", "F32", shape("output_norm.weight"), hf_tensor("output_norm.weight"))
    )
    assert "output.weight" not in by_name  # SmolLM2 ties its output to the embedding
    write_safetensors(out / "model.safetensors", entries)

    tokens: List[str] = _field(r, "tokenizer.ggml.tokens")
    types: List[int] = _field(r, "tokenizer.ggml.token_type")
    merges: List[str] = _field(r, "tokenizer.ggml.merges")
    added = [
        {
            "id": i,
            "content": tokens[i],
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": types[i] == 3,
        }
        for i in range(len(tokens))
        if types[i] in (3, 4)
    ]
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level],
        },
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,  # the "a b" string form
        },
    }
    _write_json(out / "tokenizer.json", tokenizer)
    bos, eos = _field(r, "tokenizer.ggml.bos_token_id"), _field(r, "tokenizer.ggml.eos_token_id")
    _write_json(
        out / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": _field(r, "llama.embedding_length"),
            "intermediate_size": _field(r, "llama.feed_forward_length"),
            "num_hidden_layers": n_layer,
            "num_attention_heads": n_head,
            "num_key_value_heads": n_head_kv,
            "max_position_embeddings": _field(r, "llama.context_length"),
            "rms_norm_eps": 1e-5,
            "rope_theta": _field(r, "llama.rope.freq_base"),
            "vocab_size": len(tokens),
            "tie_word_embeddings": True,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        },
    )
    _write_json(
        out / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "bos_token": tokens[bos],
            "eos_token": tokens[eos],
            "unk_token": tokens[_field(r, "tokenizer.ggml.unknown_token_id")],
            "pad_token": tokens[_field(r, "tokenizer.ggml.padding_token_id")],
            "chat_template": _field(r, "tokenizer.chat_template"),
            "model_max_length": 8192,
            "tokenizer_class": "GPT2Tokenizer",
        },
    )
    _write_json(out / "generation_config.json", {"bos_token_id": bos, "eos_token_id": eos})
    return out


# ---- 2. tiny llama with a SentencePiece tokenizer -----------------------------------------------

TINY = {"hidden": 64, "heads": 4, "kv_heads": 2, "ffn": 128, "layers": 2}


def _corpus() -> List[str]:
    rng = np.random.default_rng(7)
    words = (
        "the quick brown fox jumps over lazy dog model token layer weight rope head "
        "attention forward skip gate cache vector matrix numpy python convert 2024 42 and of to"
    ).split()
    return [" ".join(rng.choice(words, size=12)) + "." for _ in range(400)]


def _random_layers(
    rng: np.random.Generator,
    hidden: int,
    heads: int,
    kv_heads: int,
    ffn: int,
    layers: int,
    bias: bool,
) -> Dict[str, np.ndarray]:
    hd = hidden // heads
    w: Dict[str, np.ndarray] = {}

    def mat(o: int, i: int) -> np.ndarray:
        return (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)

    for i in range(layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        w[p + "self_attn.q_proj.weight"] = mat(heads * hd, hidden)
        w[p + "self_attn.k_proj.weight"] = mat(kv_heads * hd, hidden)
        w[p + "self_attn.v_proj.weight"] = mat(kv_heads * hd, hidden)
        if bias:
            w[p + "self_attn.q_proj.bias"] = (0.5 * rng.standard_normal(heads * hd)).astype(
                np.float32
            )
            w[p + "self_attn.k_proj.bias"] = (0.5 * rng.standard_normal(kv_heads * hd)).astype(
                np.float32
            )
            w[p + "self_attn.v_proj.bias"] = (0.5 * rng.standard_normal(kv_heads * hd)).astype(
                np.float32
            )
        w[p + "self_attn.o_proj.weight"] = mat(hidden, heads * hd)
        w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(
            np.float32
        )
        w[p + "mlp.gate_proj.weight"] = mat(ffn, hidden)
        w[p + "mlp.up_proj.weight"] = mat(ffn, hidden)
        w[p + "mlp.down_proj.weight"] = mat(hidden, ffn)
    w["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
    return w


def tiny_llama_hf_dir(out: Path, arch: str = "LlamaForCausalLM", n_vocab: int = 320) -> Path:
    """Random bf16 llama (untied lm_head) + SentencePiece tokenizer.model with 300 pieces."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=model,
        vocab_size=300,
        model_type="bpe",
        byte_fallback=True,
        user_defined_symbols=["<tool>"],
        character_coverage=1.0,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())

    t = TINY
    rng = np.random.default_rng(1)
    w = _random_layers(
        rng, t["hidden"], t["heads"], t["kv_heads"], t["ffn"], t["layers"], bias=False
    )
    w["model.embed_tokens.weight"] = rng.standard_normal((n_vocab, t["hidden"])).astype(np.float32)
    w["lm_head.weight"] = (rng.standard_normal((n_vocab, t["hidden"])) / 8).astype(np.float32)
    entries: List[Entry] = []
    for name, a in w.items():
        entries.append((name, "BF16", a.shape, f32_to_bf16_bits(a)))
    write_safetensors(out / "model.safetensors", entries)
    _write_json(
        out / "config.json",
        {
            "architectures": [arch],
            "hidden_size": t["hidden"],
            "intermediate_size": t["ffn"],
            "num_hidden_layers": t["layers"],
            "num_attention_heads": t["heads"],
            "num_key_value_heads": t["kv_heads"],
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "vocab_size": n_vocab,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        },
    )
    _write_json(
        out / "tokenizer_config.json",
        {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "chat_template": "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}",
        },
    )
    return out


# ---- 3. tiny qwen2 with a byte-level BPE tokenizer.json, sharded --------------------------------


def tiny_qwen2_hf_dir(out: Path, n_vocab: int = 448) -> Path:
    """Random f16 qwen2 (q/k/v biases, tied embeddings), two shards + index, BPE tokenizer.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    tok.add_tokens(["<tool_call>"])  # a non-special added token: USER_DEFINED
    tok.save(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() <= n_vocab

    t = TINY
    rng = np.random.default_rng(2)
    w = _random_layers(
        rng, t["hidden"], t["heads"], t["kv_heads"], t["ffn"], t["layers"], bias=True
    )
    w["model.embed_tokens.weight"] = rng.standard_normal((n_vocab, t["hidden"])).astype(np.float32)
    names = list(w)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    weight_map = {}
    for fname, part in shards.items():
        write_safetensors(
            out / fname, [(n, "F16", w[n].shape, w[n].astype(np.float16)) for n in part]
        )
        weight_map.update({n: fname for n in part})
    _write_json(out / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    _write_json(
        out / "config.json",
        {
            "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": t["hidden"],
            "intermediate_size": t["ffn"],
            "num_hidden_layers": t["layers"],
            "num_attention_heads": t["heads"],
            "num_key_value_heads": t["kv_heads"],
            "max_position_embeddings": 1024,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "vocab_size": n_vocab,
            "tie_word_embeddings": True,
            "torch_dtype": "float16",
        },
    )
    _write_json(
        out / "tokenizer_config.json",
        {
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "add_bos_token": False,
            "chat_template": (
                "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                "<|im_end|>\n{% endfor %}"
            ),
        },
    )
    _write_json(out / "generation_config.json", {"eos_token_id": [2, 0]})
    return out


def hf_weights(hf_dir: Path) -> Dict[str, np.ndarray]:
    """All tensors of a checkpoint dir as float32 (read with the safetensors package)."""
    from safetensors import safe_open

    out: Dict[str, np.ndarray] = {}
    for p in sorted(hf_dir.glob("*.safetensors")):
        header_len = struct.unpack("<Q", p.read_bytes()[:8])[0]
        header = json.loads(p.read_bytes()[8 : 8 + header_len])
        bf16 = [k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "BF16"]
        if bf16:  # numpy has no bfloat16: widen the raw bits by hand
            data = p.read_bytes()[8 + header_len :]
            for k in bf16:
                a, b = header[k]["data_offsets"]
                bits = np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16
                out[k] = bits.view(np.float32).reshape(header[k]["shape"])
            continue
        with safe_open(str(p), framework="numpy") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k).astype(np.float32)
    return out


def big_llama_entries(
    hidden: int = 2048, ffn: int = 5632, layers: int = 6, vocab: int = 8192
) -> Iterable[Entry]:
    """A ~1.2 GB f32 llama (6 layers of 2048/5632, 8192 vocab) produced tensor by tensor."""
    heads, kv_heads = 16, 4
    hd = hidden // heads
    rng = np.random.default_rng(3)

    def rand(*shape: int) -> Callable[[], np.ndarray]:
        return lambda: rng.standard_normal(shape, dtype=np.float32) * 0.02

    yield ("model.embed_tokens.weight", "F32", (vocab, hidden), rand(vocab, hidden))
    for i in range(layers):
        p = f"model.layers.{i}."
        yield (p + "input_layernorm.weight", "F32", (hidden,), rand(hidden))
        yield (p + "self_attn.q_proj.weight", "F32", (heads * hd, hidden), rand(heads * hd, hidden))
        yield (
            p + "self_attn.k_proj.weight",
            "F32",
            (kv_heads * hd, hidden),
            rand(kv_heads * hd, hidden),
        )
        yield (
            p + "self_attn.v_proj.weight",
            "F32",
            (kv_heads * hd, hidden),
            rand(kv_heads * hd, hidden),
        )
        yield (p + "self_attn.o_proj.weight", "F32", (hidden, heads * hd), rand(hidden, heads * hd))
        yield (p + "post_attention_layernorm.weight", "F32", (hidden,), rand(hidden))
        yield (p + "mlp.gate_proj.weight", "F32", (ffn, hidden), rand(ffn, hidden))
        yield (p + "mlp.up_proj.weight", "F32", (ffn, hidden), rand(ffn, hidden))
        yield (p + "mlp.down_proj.weight", "F32", (hidden, ffn), rand(hidden, ffn))
    yield ("model.norm.weight", "F32", (hidden,), rand(hidden))
    yield ("lm_head.weight", "F32", (vocab, hidden), rand(vocab, hidden))


def big_llama_hf_dir(out: Path, tokenizer_from: Path) -> Path:
    """Write the ~1.2 GB checkpoint (tokenizer files copied from another fixture dir)."""
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", list(big_llama_entries()))
    for name in ("tokenizer.model", "tokenizer_config.json"):
        (out / name).write_bytes((tokenizer_from / name).read_bytes())
    _write_json(
        out / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 6,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "vocab_size": 8192,
        },
    )
    return out
