"""Which output tensor comes from which checkpoint tensor, with what shape, type and layout."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Tuple, Union

import numpy as np

from .config import HParams, Llama3Rope
from .errors import ConvertError
from .tensors import TensorRef

# --outtype -> (GGML type name for matrices, general.file_type). "auto" keeps the source type.
OUTTYPES: Dict[str, Tuple[str, int]] = {
    "f32": ("F32", 0),
    "f16": ("F16", 1),
    "bf16": ("BF16", 32),
    "q8_0": ("Q8_0", 7),
    "q4_0": ("Q4_0", 2),
    "q4_1": ("Q4_1", 3),
}
_AUTO_FROM_SOURCE = {"F32": "f32", "F64": "f32", "F16": "f16", "BF16": "bf16"}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows (or a bias) from HF's rotate-half layout to GGUF llama's pair layout.

    HF puts each head's rotated pairs as (i, i + d/2); llama's rope rotates (2i, 2i + 1). Row
    j = h*d + half*(d/2) + i moves to h*d + 2i + half.
    """
    hd = w.shape[0] // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(rope: Llama3Rope, head_dim: int, base: float) -> np.ndarray:
    """Per rotated pair, the divisor of its RoPE angle under Llama 3.1 frequency scaling.

    llama.cpp stores these as the rope_freqs.weight tensor. Pairs whose wavelength is shorter than
    original_ctx / high_freq_factor keep their frequency; longer than original_ctx /
    low_freq_factor are slowed by `factor`; in between, 1/divisor is interpolated linearly in
    original_ctx / wavelength.
    """
    out = np.empty(head_dim // 2, dtype=np.float32)
    for i in range(head_dim // 2):
        wavelen = 2 * math.pi * base ** (2 * i / head_dim)
        if wavelen < rope.original_ctx / rope.high_freq_factor:
            out[i] = 1.0
        elif wavelen > rope.original_ctx / rope.low_freq_factor:
            out[i] = rope.factor
        else:
            t = (rope.original_ctx / wavelen - rope.low_freq_factor) / (
                rope.high_freq_factor - rope.low_freq_factor
            )
            out[i] = 1.0 / ((1 - t) / rope.factor + t)
    return out


@dataclass(frozen=True)
class ArrayRef:
    """A tensor the converter computes instead of reading it (rope_freqs.weight), always F32."""

    name: str
    data: np.ndarray
    dtype: str = "F32"

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(int(d) for d in self.data.shape)

    def read_raw(self) -> np.ndarray:
        return self.data


@dataclass
class PlannedTensor:
    """One output tensor: where it comes from and how it is written."""

    gguf_name: str
    ref: Union[TensorRef, ArrayRef]
    qtype: str  # GGML type name
    permute_heads: int = 0  # > 0: apply permute_qk with this many heads
    # Added to every value: gemma's RMSNorm scales by (1 + w), and llama.cpp's converter stores
    # the 1 + w (1.0 for gemma3's norm weights, else 0).
    shift: float = 0.0

    def nbytes(self) -> int:
        import gguf

        n = int(np.prod(self.ref.shape, dtype=np.int64))
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[self.qtype]]
        return n // block * size


def _layer_map(hp: HParams, i: int) -> Dict[str, Tuple[str, Tuple[int, ...], int]]:
    """HF name -> (GGUF name, expected HF shape, heads to permute by) for layer i."""
    e, q, kv, ff = hp.n_embd, hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim, hp.n_ff
    norm = hp.arch == "llama"
    p, b = f"model.layers.{i}.", f"blk.{i}."
    m = {
        p + "input_layernorm.weight": (b + "attn_norm.weight", (e,), 0),
        p + "self_attn.q_proj.weight": (b + "attn_q.weight", (q, e), hp.n_head if norm else 0),
        p + "self_attn.k_proj.weight": (b + "attn_k.weight", (kv, e), hp.n_head_kv if norm else 0),
        p + "self_attn.v_proj.weight": (b + "attn_v.weight", (kv, e), 0),
        p + "self_attn.o_proj.weight": (b + "attn_output.weight", (e, q), 0),
        p + "post_attention_layernorm.weight": (b + "ffn_norm.weight", (e,), 0),
        p + "mlp.gate_proj.weight": (b + "ffn_gate.weight", (ff, e), 0),
        p + "mlp.up_proj.weight": (b + "ffn_up.weight", (ff, e), 0),
        p + "mlp.down_proj.weight": (b + "ffn_down.weight", (e, ff), 0),
    }
    if hp.arch == "qwen2":
        m[p + "self_attn.q_proj.bias"] = (b + "attn_q.bias", (q,), 0)
        m[p + "self_attn.k_proj.bias"] = (b + "attn_k.bias", (kv,), 0)
        m[p + "self_attn.v_proj.bias"] = (b + "attn_v.bias", (kv,), 0)
    if hp.arch in ("qwen3", "gemma3"):
        m[p + "self_attn.q_norm.weight"] = (b + "attn_q_norm.weight", (hp.head_dim,), 0)
        m[p + "self_attn.k_norm.weight"] = (b + "attn_k_norm.weight", (hp.head_dim,), 0)
    if hp.arch == "phi3":  # q/k/v and gate/up stacked, stored as llama.cpp's converter does
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj"):
            del m[p + name + ".weight"]
        del m[p + "mlp.up_proj.weight"]  # gate_up_proj's name maps to ffn_up below
        m[p + "self_attn.qkv_proj.weight"] = (b + "attn_qkv.weight", (q + 2 * kv, e), 0)
        m[p + "mlp.gate_up_proj.weight"] = (b + "ffn_up.weight", (2 * ff, e), 0)
    if hp.arch == "gemma3":  # its post_attention_layernorm is on the attention output
        m[p + "post_attention_layernorm.weight"] = (b + "post_attention_norm.weight", (e,), 0)
        m[p + "pre_feedforward_layernorm.weight"] = (b + "ffn_norm.weight", (e,), 0)
        m[p + "post_feedforward_layernorm.weight"] = (b + "post_ffw_norm.weight", (e,), 0)
    return m


# Layer numbers are at most 10 digits (GGUF's block_count is a uint32); a longer digit run does
# not match and the tensor is reported as unexpected.
_LAYER_PREFIX = re.compile(r"model\.layers\.([0-9]{1,10})\.")


def _check_layer_count(hp: HParams, tensors: Dict[str, TensorRef]) -> None:
    """num_hidden_layers must match the layers present, numbered 0..n-1 without gaps: the plan
    has one entry per layer, so a config claiming 10**9 layers would otherwise exhaust memory
    before any tensor is looked at. Checked this way, n_layer <= the number of tensors."""
    present = {int(m.group(1)) for n in tensors if (m := _LAYER_PREFIX.match(n))}
    if len(present) != hp.n_layer or (present and max(present) != hp.n_layer - 1):
        numbered = f" numbered {min(present)}..{max(present)}" if present else ""
        raise ConvertError(
            f"config.json: num_hidden_layers is {hp.n_layer} but the checkpoint has tensors "
            f"for {len(present)} layer(s){numbered}"
        )


def plan(
    hp: HParams, tensors: Dict[str, TensorRef], outtype: str
) -> Tuple[List[PlannedTensor], int]:
    """Map, check and type every tensor; returns the items in file order and general.file_type."""
    _check_layer_count(hp, tensors)
    head = {"model.embed_tokens.weight": ("token_embd.weight", (hp.n_vocab, hp.n_embd), 0)}
    tail = {"model.norm.weight": ("output_norm.weight", (hp.n_embd,), 0)}
    has_head = "lm_head.weight" in tensors
    if has_head and not hp.tied:
        tail["lm_head.weight"] = ("output.weight", (hp.n_vocab, hp.n_embd), 0)
    order = [head] + [_layer_map(hp, i) for i in range(hp.n_layer)] + [tail]
    wanted = {k: v for m in order for k, v in m.items()}

    ignored = {"lm_head.weight"} if has_head and hp.tied else set()
    extra = [
        n for n in tensors if n not in wanted and n not in ignored and not n.endswith("inv_freq")
    ]
    if extra:
        raise ConvertError(
            f"unexpected tensor(s) for {hp.arch} with {hp.n_layer} layers: {sorted(extra)[:5]}"
        )
    missing = [n for n in wanted if n not in tensors]
    if missing:
        raise ConvertError(f"checkpoint is missing tensor(s): {missing[:5]}")

    if outtype == "auto":
        src = [tensors[n].dtype for n in wanted if len(tensors[n].shape) == 2]
        outtype = _AUTO_FROM_SOURCE[max(set(src), key=src.count)]
    matrix_type, file_type = OUTTYPES[outtype]

    import gguf

    items: List[PlannedTensor] = []
    for hf_name, (name, shape, heads) in wanted.items():
        ref = tensors[hf_name]
        if ref.shape != shape:
            raise ConvertError(
                f"shape mismatch: {hf_name} is {list(ref.shape)}, config.json implies {list(shape)}"
            )
        if len(shape) == 1:
            qtype = "F32"
        elif outtype == "auto":
            qtype = "F32" if ref.dtype == "F64" else ref.dtype
        else:
            qtype = matrix_type
            block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
            if shape[-1] % block:
                qtype = "F16"  # rows that do not fill whole quant blocks
        shift = 1.0 if hp.arch == "gemma3" and name.endswith("norm.weight") else 0.0
        items.append(PlannedTensor(name, ref, qtype, heads, shift))
    if hp.llama3_rope is not None:
        factors = llama3_rope_factors(hp.llama3_rope, hp.head_dim, hp.rope_theta)
        items.insert(0, PlannedTensor("rope_freqs.weight", ArrayRef("rope_freqs", factors), "F32"))
    longrope = hp.phi3.longrope if hp.phi3 is not None else None
    if longrope is not None:
        for kind, factors in (("long", longrope.long_factors), ("short", longrope.short_factors)):
            name = f"rope_factors_{kind}.weight"
            data = np.asarray(factors, dtype=np.float32)
            items.append(PlannedTensor(name, ArrayRef(name, data), "F32"))
    return items, file_type
