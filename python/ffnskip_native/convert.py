"""Convert a Hugging Face checkpoint (Llama / Mistral / Qwen2, safetensors) to a GGUF file.

    python tools/convert.py HF_DIR --outfile model.gguf --outtype q8_0
    ffnskip_native.convert.convert("HF_DIR", "model.gguf", outtype="f16")

Pure Python (numpy + gguf): it never needs the compiled engine. Tensors are streamed: the GGUF
header and tensor table are written from the safetensors headers alone, then each tensor is read,
transformed and written before the next is touched, so memory stays near the largest tensor. The
output goes to a temporary file in the destination directory that is renamed at the end; a
failure leaves no partial output.

What changes on the way:
- names: HF module paths -> GGUF names (token_embd, blk.N.attn_q, ...);
- llama/mistral q/k rows: HF stores them for rotate-half rope; GGUF llama files for rope on
  adjacent pairs, so each head's rows are re-interleaved (qwen2 keeps NEOX rope: untouched);
- precision: 1-D tensors (norms, biases) stay f32; matrices take --outtype;
- tied embeddings (tie_word_embeddings, or no lm_head): no output.weight.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .convert_fields import Fields
from .convert_io import (
    ConvertError,
    Progress,
    TensorRef,
    bf16_to_f32,
    check_bf16_scale,
    open_checkpoint,
)
from .convert_vocab import load_vocab, write_vocab

__all__ = ["ARCHITECTURES", "OUTTYPES", "ConvertError", "HParams", "convert", "main", "permute_qk"]

# HF `architectures` entry -> GGUF general.architecture.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}

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


@dataclass(frozen=True)
class HParams:
    """The config.json values the GGUF metadata and the shape checks need."""

    arch: str  # "llama" | "qwen2"
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool
    rope_scaling_factor: Optional[float]  # linear rope scaling, None when absent

    @staticmethod
    def from_config(cfg: Fields) -> HParams:
        """Validate config.json and extract hyper-parameters (ConvertError naming what is wrong).

        Each field is checked for type and range here; sizes are checked against the tensors
        actually present by _plan, before anything is allocated from them.
        """
        archs = cfg.get_str_list("architectures")
        known = [a for a in archs if a in ARCHITECTURES]
        if not known:
            raise ConvertError(
                f"unsupported architecture {', '.join(archs) or '(none given)'}: "
                f"supported are {', '.join(ARCHITECTURES)}"
            )
        arch = ARCHITECTURES[known[0]]

        n_embd, n_head = cfg.get_int("hidden_size"), cfg.get_int("num_attention_heads")
        head_dim = cfg.get_int("head_dim", n_embd // n_head)
        n_head_kv = cfg.get_int("num_key_value_heads", n_head)
        if n_head % n_head_kv:
            raise ConvertError(
                f"config.json: num_attention_heads {n_head} is not a multiple of "
                f"num_key_value_heads {n_head_kv}"
            )
        if head_dim == 0 or head_dim % 2:
            raise ConvertError(
                f"config.json: head dimension {head_dim} is not a positive even number"
            )
        scaling = cfg.get_obj("rope_scaling")
        factor: Optional[float] = None
        if scaling.obj:
            kind = scaling.get_str("rope_type", scaling.get_str("type", None))
            if kind not in ("linear", "default"):
                raise ConvertError(f"config.json: rope_scaling type {kind!r} is not supported")
            factor = scaling.get_float("factor", None, gt=0.0)
        if cfg.get_bool("mlp_bias", False) or (
            arch == "llama" and cfg.get_bool("attention_bias", False)
        ):
            raise ConvertError("config.json: llama with attention_bias / mlp_bias is not supported")
        return HParams(
            arch=arch,
            n_vocab=cfg.get_int("vocab_size"),
            n_embd=n_embd,
            n_layer=cfg.get_int("num_hidden_layers"),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            n_ff=cfg.get_int("intermediate_size"),
            n_ctx=cfg.get_int("max_position_embeddings", 2048),
            # The engine's own limits: rope base > 1, epsilon in (0, 1).
            rope_theta=cfg.get_float("rope_theta", 10000.0, gt=1.0),
            rms_eps=cfg.get_float("rms_norm_eps", 1e-6, gt=0.0, lt=1.0),
            tied=cfg.get_bool("tie_word_embeddings", False),
            rope_scaling_factor=factor,
        )


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows (or a bias) from HF's rotate-half layout to GGUF llama's pair layout.

    HF puts each head's rotated pairs as (i, i + d/2); llama's rope rotates (2i, 2i + 1). Row
    j = h*d + half*(d/2) + i moves to h*d + 2i + half.
    """
    hd = w.shape[0] // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class _Item:
    """One output tensor: where it comes from and how it is written."""

    gguf_name: str
    ref: TensorRef
    qtype: str  # GGML type name
    permute_heads: int = 0  # > 0: apply permute_qk with this many heads

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


def _plan(hp: HParams, tensors: Dict[str, TensorRef], outtype: str) -> Tuple[List[_Item], int]:
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

    items: List[_Item] = []
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
        items.append(_Item(name, ref, qtype, heads))
    return items, file_type


def _encode(item: _Item) -> np.ndarray:
    """Read, permute and convert one tensor to the bytes GGUF stores for it."""
    import gguf

    raw = item.ref.read_raw()
    check_bf16_scale(item.ref, raw)
    if item.permute_heads:
        raw = permute_qk(raw, item.permute_heads)
    src = item.ref.dtype
    if item.qtype == src and src != "F64":
        return np.ascontiguousarray(raw)  # same type: the stored bits, untouched
    f32 = bf16_to_f32(raw) if src == "BF16" else raw.astype(np.float32, copy=False)
    if item.qtype == "F32":
        return np.ascontiguousarray(f32)
    if item.qtype == "F16":
        return f32.astype(np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(f32), gguf.GGMLQuantizationType[item.qtype])


def _write_metadata(w: Any, hp: HParams, name: str, file_type: int) -> None:
    w.add_name(name)
    w.add_block_count(hp.n_layer)
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_head)
    w.add_head_count_kv(hp.n_head_kv)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_rope_dimension_count(hp.head_dim)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_vocab_size(hp.n_vocab)
    if hp.head_dim * hp.n_head != hp.n_embd:
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
    if hp.rope_scaling_factor is not None:
        import gguf

        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(hp.rope_scaling_factor)
    w.add_file_type(file_type)
    if file_type not in (0, 1, 32):
        w.add_quantization_version(2)


def _load_config(hf_dir: Path) -> Fields:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ConvertError(f"{hf_dir}: config.json not found (not a Hugging Face checkpoint dir?)")
    return Fields.load(path)


def _refuse_overwriting_inputs(out: Path, src: Path, tensors: Dict[str, TensorRef]) -> None:
    """The output replaces whatever is at `out` (a rename): it must not be one of the inputs.

    Inputs are the shards and every file of the checkpoint directory except earlier .gguf
    outputs (the default output lives there too). samefile compares device and inode, so an
    input reached through a symlink, a symlinked directory or a hard link is caught as well.
    """
    if out.is_dir():
        raise ConvertError(f"output {out} is a directory")
    if not out.exists():
        return  # nothing there to destroy (a dangling symlink is replaced, not followed)
    inputs = {p for p in src.iterdir() if p.suffix != ".gguf" and p.is_file()}
    inputs |= {ref.path for ref in tensors.values()}
    for path in sorted(inputs):
        if os.path.samefile(out, path):
            raise ConvertError(f"output {out} is the input file {path}: refusing to replace it")


def convert(
    hf_dir: str | os.PathLike[str],
    outfile: str | os.PathLike[str] | None = None,
    outtype: str = "auto",
    *,
    name: Optional[str] = None,
    vocab_pre: Optional[str] = None,
    progress: bool = False,
) -> Path:
    """Convert the checkpoint in hf_dir to GGUF; returns the output path.

    outtype: "auto" (keep the source precision), "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1".
    outfile defaults to HF_DIR/<dir name>-<outtype>.gguf. vocab_pre overrides the recognised
    pre-tokenizer name. Raises ConvertError (nothing is left at outfile on failure).
    """
    import gguf

    src = Path(hf_dir)
    if not src.is_dir():
        raise ConvertError(f"{src}: not a directory")
    if outtype != "auto" and outtype not in OUTTYPES:
        raise ConvertError(f"unknown outtype {outtype!r}: use auto, {', '.join(OUTTYPES)}")
    out = Path(outfile) if outfile is not None else src / f"{src.resolve().name}-{outtype}.gguf"
    if not out.parent.is_dir():
        raise ConvertError(f"output directory {out.parent} does not exist")

    hp = HParams.from_config(_load_config(src))
    tensors = open_checkpoint(src)
    _refuse_overwriting_inputs(out, src, tensors)
    items, file_type = _plan(hp, tensors, outtype)  # checks n_vocab against the embedding
    vocab = load_vocab(src, hp.n_vocab, vocab_pre)

    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = gguf.GGUFWriter(tmp, hp.arch)
    bar = Progress(sum(it.nbytes() for it in items), progress)
    try:
        # A directory name of non-UTF-8 bytes arrives with surrogate escapes: store '?' for them.
        title = (name or src.resolve().name).encode("utf-8", "replace").decode("utf-8")
        _write_metadata(writer, hp, title, file_type)
        write_vocab(writer, vocab)
        for it in items:
            writer.add_tensor_info(
                it.gguf_name,
                it.ref.shape,
                np.dtype(np.float32),
                it.nbytes(),
                raw_dtype=gguf.GGMLQuantizationType[it.qtype],
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for it in items:
            data = _encode(it)
            writer.write_tensor_data(data)
            bar.update(data.nbytes, it.gguf_name)
            del data
        writer.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; give it a normal file's mode
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="convert.py",
        description="Convert a Hugging Face Llama/Mistral/Qwen2 safetensors checkpoint to GGUF.",
    )
    ap.add_argument("hf_dir", help="checkpoint directory (config.json, *.safetensors, tokenizer)")
    ap.add_argument("--outfile", help="output .gguf path (default: HF_DIR/<name>-<outtype>.gguf)")
    ap.add_argument(
        "--outtype",
        default="auto",
        choices=["auto", *OUTTYPES],
        help="matrix weight type; auto keeps the source precision (default: auto)",
    )
    ap.add_argument("--name", help="general.name (default: the directory name)")
    ap.add_argument("--vocab-pre", help="override the recognised BPE pre-tokenizer name")
    ap.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: returns 0 on success, 1 with the message on stderr on failure."""
    args = _parser().parse_args(argv)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        out = convert(
            args.hf_dir,
            args.outfile,
            args.outtype,
            name=args.name,
            vocab_pre=args.vocab_pre,
            progress=progress,
        )
    except ConvertError as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permissions: the temporary file is already gone
        print(f"convert: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
