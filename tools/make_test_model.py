#!/usr/bin/env python3
"""Write a random-weight GGUF model of any shape and weight type (for tests and benchmarks).

    python tools/make_test_model.py --type Q4_0 --out /tmp/tiny.gguf
    python tools/make_test_model.py --type Q4_K --layers 32 --embd 4096 --ff 11008 --heads 32 \\
        --heads-kv 32 --vocab 32000 --out /tmp/7b-q4k.gguf

The file is streamed: tensor infos are declared first, then each tensor is generated and written on
its own, so peak memory stays near the size of the largest single tensor.

Weights. 2-D matrices use the requested type; norms and biases use `norm_type` (F32 by default).
Matrices are ~N(0, sigma) with sigma = 1/sqrt(n_in) (2/sqrt(n_embd) for the embedding and output),
which keeps activations O(1) through the layers and the logits peaky enough for a stable argmax.
Types the `gguf` package can quantize (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1) are quantized from
Gaussian floats. The K-quants (which gguf cannot quantize), and the other block types in tensors
over 4M weights (quantizing those in numpy is too slow for 7B-sized benchmarks), get random block
bytes whose f16 scales are then overwritten; the block layouts relied on (ggml-common.h):

    Q8_0  34 B: f16 d @0, int8 qs[32]               w = d * q
    Q4_0  18 B: f16 d @0, qs[16]                    w = d * (q - 8),  q in [0, 15]
    Q4_1  20 B: f16 d @0, f16 m @2, qs[16]          w = d * q + m     (m = -7.5 d)
    Q5_0  22 B: f16 d @0, qh[4], qs[16]             w = d * (q - 16), q in [0, 31]
    Q5_1  24 B: f16 d @0, f16 m @2, qh[4], qs[16]   w = d * q + m     (m = -15.5 d)

    Q4_K 144 B: f16 d @0, f16 dmin @2, scales[12] @4 (8 six-bit scale/min pairs), qs[128] @16
                w = d * sc_j * q - dmin * m_j,  q in [0, 15]
    Q5_K 176 B: f16 d @0, f16 dmin @2, scales[12] @4, qh[32] @16, qs[128] @48
                w = d * sc_j * q - dmin * m_j,  q in [0, 31]
    Q6_K 210 B: ql[128] @0, qh[64] @128, int8 scales[16] @192, f16 d @208
                w = d * scale_j * (q - 32),     q in [0, 63]

Random scale/min bytes exercise every packed bit; dmin = d * mean(q) centres the weights (the 6-bit
scales and mins have the same distribution). Q6_K sub-block scales are drawn from [-64, 63] rather
than the full int8 range so that d stays a normal f16 at the weight sizes used here.

Tokenizer: a tiny valid gpt2-style byte-level BPE (the 256 GPT-2 byte symbols, merges building
English-ish words, then <s> and </s>), tokenizer.ggml.pre "default".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize, quantize

WEIGHT_TYPES = (
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q4_K",
    "Q5_K",
    "Q6_K",
)
NORM_TYPES = ("F32", "F16")
ARCHS = ("llama", "qwen2", "qwen3", "gemma3", "phi3")

# general.file_type (llama.cpp's LlamaFileType) for a model made of one weight type.
_FILE_TYPE = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q4_K": 15,
    "Q5_K": 17,
    "Q6_K": 18,
    "BF16": 32,
}

# Layout facts used to fill random blocks: byte offset of the f16 d, of the second f16 (m or dmin,
# None if absent) and the factor that makes it cancel the mean of the unsigned quant value.
_RANDOM_BLOCK = {
    "Q8_0": (0, None, 0.0),
    "Q4_0": (0, None, 0.0),
    "Q4_1": (0, 2, -7.5),
    "Q5_0": (0, None, 0.0),
    "Q5_1": (0, 2, -15.5),
    "Q4_K": (0, 2, 7.5),
    "Q5_K": (0, 2, 15.5),
    "Q6_K": (208, None, 0.0),
}
_KQUANTS = ("Q4_K", "Q5_K", "Q6_K")
_Q6K_SCALES = slice(192, 208)
# Above this many weights the block types also take the random-block path: gguf's numpy quantizer
# needs ~40 s per 7B-sized layer, random blocks ~1 s.
_QUANTIZE_MAX_ELEMS = 1 << 22
_F16_MIN_NORMAL = 2.0**-14
_CHUNK_ELEMS = 1 << 22  # rows are generated in chunks of about this many weights


def _gpt2_byte_symbols() -> list[str]:
    """GPT-2's byte -> printable unicode mapping, as a list indexed by byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def make_vocab(n_vocab: int) -> tuple[list[str], list[int], list[str], int, int]:
    """(tokens, token_types, merges, bos_id, eos_id) of a byte-level BPE with n_vocab tokens.

    Merges grow words letter by letter, breadth first, from "Ġ" (space) and the lowercase letters,
    so every merge joins two existing tokens into a new one, as BPE requires.
    """
    n_special = 2
    if n_vocab < 256 + n_special:
        raise ValueError(f"n_vocab must be >= {256 + n_special} (256 byte tokens + <s>, </s>)")
    n_merges = n_vocab - 256 - n_special
    tokens = _gpt2_byte_symbols()
    known = set(tokens)
    merges: list[str] = []
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    frontier = ["Ġ", *letters]
    while len(merges) < n_merges:
        nxt: list[str] = []
        for prefix in frontier:
            for ch in letters:
                if len(merges) == n_merges:
                    break
                word = prefix + ch
                if word in known:
                    continue
                merges.append(f"{prefix} {ch}")
                tokens.append(word)
                known.add(word)
                nxt.append(word)
        frontier = nxt
    tokens += ["<s>", "</s>"]
    types = [int(gguf.TokenType.NORMAL)] * (n_vocab - n_special)
    types += [int(gguf.TokenType.CONTROL)] * n_special
    return tokens, types, merges, n_vocab - 2, n_vocab - 1


def _tensor_plan(
    arch: str,
    wtype: str,
    norm_type: str,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_head_kv: int,
    n_vocab: int,
    tied: bool,
    rope_freqs: bool = False,
    n_rot: int = 0,
    rope_factors: bool = False,
) -> list[tuple[str, tuple[int, ...], str, float]]:
    """(name, numpy shape (out, in) or (n,), type, sigma) for every tensor, in file order.

    For 1-D tensors sigma is the noise around the centre (1 for norms, 0 for biases). phi3 stacks
    q, k and v in attn_qkv and gate and up in ffn_up (gate rows first), as llama.cpp stores them.
    """
    hd = n_embd // n_head
    kv = n_head_kv * hd
    io = 2.0 / np.sqrt(n_embd)
    plan: list[tuple[str, tuple[int, ...], str, float]] = [
        ("token_embd.weight", (n_vocab, n_embd), wtype, io)
    ]
    for i in range(n_layer):
        p = f"blk.{i}."
        plan.append((p + "attn_norm.weight", (n_embd,), norm_type, 0.1))
        if arch == "phi3":
            plan.append((p + "attn_qkv.weight", (n_embd + 2 * kv, n_embd), wtype, n_embd**-0.5))
        else:
            plan.append((p + "attn_q.weight", (n_embd, n_embd), wtype, n_embd**-0.5))
            plan.append((p + "attn_k.weight", (kv, n_embd), wtype, n_embd**-0.5))
            plan.append((p + "attn_v.weight", (kv, n_embd), wtype, n_embd**-0.5))
        if arch == "qwen2":
            plan.append((p + "attn_q.bias", (n_embd,), norm_type, 0.1))
            plan.append((p + "attn_k.bias", (kv,), norm_type, 0.1))
            plan.append((p + "attn_v.bias", (kv,), norm_type, 0.1))
        if arch in ("qwen3", "gemma3"):
            plan.append((p + "attn_q_norm.weight", (hd,), norm_type, 0.1))
            plan.append((p + "attn_k_norm.weight", (hd,), norm_type, 0.1))
        plan.append((p + "attn_output.weight", (n_embd, n_embd), wtype, n_embd**-0.5))
        if arch == "gemma3":
            plan.append((p + "post_attention_norm.weight", (n_embd,), norm_type, 0.1))
        plan.append((p + "ffn_norm.weight", (n_embd,), norm_type, 0.1))
        if arch == "phi3":
            plan.append((p + "ffn_up.weight", (2 * n_ff, n_embd), wtype, n_embd**-0.5))
        else:
            plan.append((p + "ffn_gate.weight", (n_ff, n_embd), wtype, n_embd**-0.5))
            plan.append((p + "ffn_up.weight", (n_ff, n_embd), wtype, n_embd**-0.5))
        plan.append((p + "ffn_down.weight", (n_embd, n_ff), wtype, n_ff**-0.5))
        if arch == "gemma3":
            plan.append((p + "post_ffw_norm.weight", (n_embd,), norm_type, 0.1))
    plan.append(("output_norm.weight", (n_embd,), norm_type, 0.1))
    if not tied:
        plan.append(("output.weight", (n_vocab, n_embd), wtype, io))
    # Last, so the other tensors' seeds match a model without them; see make_model.
    if rope_freqs:
        plan.append(("rope_freqs.weight", (n_rot // 2,), "F32", 0.0))
    if rope_factors:
        plan.append(("rope_factors_long.weight", (n_rot // 2,), "F32", 0.0))
        plan.append(("rope_factors_short.weight", (n_rot // 2,), "F32", 0.0))
    return plan


def _nbytes(shape: tuple[int, ...], qtype: QT) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    return n // block * size


_UNIT_STD: dict[str, float] = {}


def _random_blocks(rng: np.random.Generator, n_blocks: int, wtype: str, base: float) -> np.ndarray:
    """n_blocks random blocks (uint8, (n_blocks, block_bytes)) with d ~ base * U(1, 2)."""
    d_at, m_at, m_factor = _RANDOM_BLOCK[wtype]
    size = gguf.GGML_QUANT_SIZES[QT[wtype]][1]
    blocks = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    if wtype == "Q6_K":
        blocks[:, _Q6K_SCALES] = (
            rng.integers(-64, 64, size=(n_blocks, 16)).astype(np.int8).view(np.uint8)
        )
    d = (base * rng.uniform(1.0, 2.0, size=n_blocks)).astype(np.float16)
    blocks[:, d_at : d_at + 2] = d.reshape(-1, 1).view(np.uint8)
    if m_at is not None:
        m = (d.astype(np.float32) * m_factor).astype(np.float16)
        blocks[:, m_at : m_at + 2] = m.reshape(-1, 1).view(np.uint8)
    return blocks


def _random_base(wtype: str, sigma: float) -> float:
    """Block scale giving weights of std ~sigma, but never below the smallest normal f16."""
    if wtype not in _UNIT_STD:
        sample = _random_blocks(np.random.default_rng(12345), 512, wtype, 1.0)
        _UNIT_STD[wtype] = float(np.std(dequantize(sample, QT[wtype])))
    return max(sigma / _UNIT_STD[wtype], _F16_MIN_NORMAL)


def _tensor_bytes(
    rng: np.random.Generator, shape: tuple[int, ...], ttype: str, sigma: float, is_norm: bool
) -> np.ndarray:
    """The tensor's data as raw bytes (uint8, (rows, row_bytes)), generated in row chunks."""
    qtype = QT[ttype]
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    block, bsize = gguf.GGML_QUANT_SIZES[qtype]
    row_bytes = cols // block * bsize
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    step = max(1, _CHUNK_ELEMS // cols)
    random_blocks = ttype in _KQUANTS or (
        ttype in _RANDOM_BLOCK and rows * cols > _QUANTIZE_MAX_ELEMS
    )
    base = _random_base(ttype, sigma) if random_blocks else 0.0
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        if random_blocks:
            blk = _random_blocks(rng, (r1 - r0) * (cols // block), ttype, base)
            out[r0:r1] = blk.reshape(r1 - r0, row_bytes)
            continue
        x = rng.standard_normal((r1 - r0, cols), dtype=np.float32) * np.float32(sigma)
        if is_norm:
            x += np.float32(1.0)
        q = quantize(x, qtype)
        out[r0:r1] = np.ascontiguousarray(q).view(np.uint8).reshape(r1 - r0, row_bytes)
    return out


def _add_metadata(w: gguf.GGUFWriter, key: str, value: Any) -> None:
    """Add one extra metadata value, its GGUF type inferred from the Python type."""
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        if 0 <= value < 2**32:
            w.add_uint32(key, value)
        elif -(2**31) <= value < 0:
            w.add_int32(key, value)
        else:
            w.add_uint64(key, value) if value > 0 else w.add_int64(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    elif isinstance(value, (list, tuple)):
        w.add_array(key, list(value))
    else:
        raise TypeError(f"metadata {key!r}: unsupported value type {type(value).__name__}")


def _check_shape(wtype: str, n_embd: int, n_ff: int, n_head: int, n_head_kv: int) -> None:
    block = gguf.GGML_QUANT_SIZES[QT[wtype]][0]
    for name, dim in (("n_embd", n_embd), ("n_ff", n_ff)):
        if dim % block:
            raise ValueError(f"{wtype} needs {name} to be a multiple of {block}, got {dim}")
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    if (n_embd // n_head) % 2:
        raise ValueError("head_dim must be even for rope")


def make_model(
    path: str | Path,
    arch: str = "llama",
    wtype: str = "Q4_0",
    n_layer: int = 2,
    n_embd: int = 64,
    n_ff: int = 128,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_vocab: int = 288,
    n_ctx: int = 512,
    rope_base: float = 10000.0,
    tied: bool = False,
    seed: int = 0,
    extra_metadata: dict[str, Any] | None = None,
    norm_type: str = "F32",
    vocab_only: bool = False,
    rope_freqs: list[float] | None = None,
    sliding_window: int = 8,
    n_rot: int | None = None,
    rope_factors: tuple[list[float], list[float]] | None = None,
) -> Path:
    """Write a random-weight GGUF model (or, with vocab_only, only its tokenizer) to `path`.

    Deterministic for a given seed and arguments. K-quants need n_embd and n_ff to be multiples of
    256, the other block types multiples of 32. `rope_freqs` (head_dim/2 values) is stored as the
    rope_freqs.weight tensor of llama3-style rope scaling. `sliding_window` is gemma3's
    attention.sliding_window (its layers l % 6 != 5 see that many positions). `n_rot` is
    rope.dimension_count (default head_dim); `rope_factors` (long, short; n_rot/2 values each) are
    phi3's rope_factors_long/short.weight. Returns the path written.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}")
    if wtype not in WEIGHT_TYPES:
        raise ValueError(f"wtype must be one of {WEIGHT_TYPES}")
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm_type must be one of {NORM_TYPES}")
    _check_shape(wtype, n_embd, n_ff, n_head, n_head_kv)
    n_rot = n_embd // n_head if n_rot is None else n_rot
    if rope_freqs is not None and len(rope_freqs) != n_rot // 2:
        raise ValueError(f"rope_freqs needs n_rot/2 = {n_rot // 2} values")
    if rope_factors is not None and any(len(f) != n_rot // 2 for f in rope_factors):
        raise ValueError(f"rope_factors need n_rot/2 = {n_rot // 2} values each")
    path = Path(path)
    tokens, types, merges, bos, eos = make_vocab(n_vocab)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"ffnskip-test-{arch}-{wtype}")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(rope_base)
    w.add_rope_dimension_count(n_rot)
    w.add_layer_norm_rms_eps(1e-5 if arch == "llama" else 1e-6)
    if arch == "gemma3":
        w.add_sliding_window(sliding_window)
    w.add_vocab_size(n_vocab)
    w.add_file_type(_FILE_TYPE[wtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    for key, value in (extra_metadata or {}).items():
        _add_metadata(w, key, value)

    plan = (
        []
        if vocab_only
        else _tensor_plan(
            arch,
            wtype,
            norm_type,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            n_vocab,
            tied,
            rope_freqs is not None,
            n_rot,
            rope_factors is not None,
        )
    )
    for name, shape, ttype, _ in plan:
        qtype = QT[ttype]
        w.add_tensor_info(name, shape, np.dtype(np.float32), _nbytes(shape, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i, (name, shape, ttype, sigma) in enumerate(plan):
        if name == "rope_freqs.weight":
            w.write_tensor_data(np.asarray(rope_freqs, dtype=np.float32))
            continue
        if name.startswith("rope_factors_") and rope_factors is not None:
            long = name == "rope_factors_long.weight"
            w.write_tensor_data(np.asarray(rope_factors[0 if long else 1], dtype=np.float32))
            continue
        rng = np.random.default_rng([seed, i])
        is_norm = name.endswith("norm.weight")
        w.write_tensor_data(_tensor_bytes(rng, shape, ttype, sigma, is_norm))
    w.close()
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", choices=ARCHS, default="llama")
    ap.add_argument("--type", dest="wtype", choices=WEIGHT_TYPES, default="Q4_0")
    ap.add_argument("--norm-type", choices=NORM_TYPES, default="F32")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--ff", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--heads-kv", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=288)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sliding-window", type=int, default=8, help="gemma3's window")
    ap.add_argument("--tied", action="store_true", help="no output.weight (reuse token_embd)")
    ap.add_argument("--vocab-only", action="store_true", help="tokenizer metadata only")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    out = make_model(
        a.out,
        arch=a.arch,
        wtype=a.wtype,
        n_layer=a.layers,
        n_embd=a.embd,
        n_ff=a.ff,
        n_head=a.heads,
        n_head_kv=a.heads_kv,
        n_vocab=a.vocab,
        n_ctx=a.ctx,
        rope_base=a.rope_base,
        tied=a.tied,
        seed=a.seed,
        norm_type=a.norm_type,
        vocab_only=a.vocab_only,
        sliding_window=a.sliding_window,
    )
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
