"""Writing the GGUF file: metadata, vocab, then each tensor streamed through its encoding.

Pure Python (numpy + gguf): it never needs the compiled engine. Tensors are streamed: the GGUF
header and tensor table are written from the safetensors headers alone, then each tensor is read,
transformed and written before the next is touched, so memory stays near the largest tensor. The
output goes to a temporary file in the destination directory that is renamed at the end; a
failure leaves no partial output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from .._util import atomic_write, progress_bar
from .config import HParams, load_config
from .errors import ConvertError
from .plan import OUTTYPES, PlannedTensor, permute_qk, plan
from .tensors import TensorRef, bf16_to_f32, check_bf16_scale, open_checkpoint
from .vocab import write_vocab
from .vocab_reader import load_vocab


def _encode(item: PlannedTensor) -> np.ndarray:
    """Read, permute, shift and convert one tensor to the bytes GGUF stores for it."""
    import gguf

    raw = item.ref.read_raw()
    check_bf16_scale(item.ref, raw)
    if item.permute_heads:
        raw = permute_qk(raw, item.permute_heads)
    src = item.ref.dtype
    if item.qtype == src and src != "F64" and not item.shift:
        return np.ascontiguousarray(raw)  # same type: the stored bits, untouched
    f32 = bf16_to_f32(raw) if src == "BF16" else raw.astype(np.float32, copy=False)
    if item.shift:
        f32 = f32 + np.float32(item.shift)
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
    w.add_rope_dimension_count(hp.n_rot)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_vocab_size(hp.n_vocab)
    if hp.head_dim * hp.n_head != hp.n_embd or hp.arch == "gemma3":
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
    if hp.sliding_window is not None:
        w.add_sliding_window(hp.sliding_window)
    if hp.yarn is not None:
        import gguf

        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(hp.yarn.factor)
        w.add_rope_scaling_orig_ctx_len(hp.yarn.orig_ctx)
        # Raw key names: gguf releases before 2025 have no add_* for them.
        for key, value in (
            ("yarn_beta_fast", hp.yarn.beta_fast),
            ("yarn_beta_slow", hp.yarn.beta_slow),
            ("yarn_attn_factor", hp.yarn.attn_factor),
        ):
            if value is not None:
                w.add_float32(f"{hp.arch}.rope.scaling.{key}", value)
    if hp.phi3 is not None:
        w.add_rope_scaling_orig_ctx_len(hp.phi3.orig_ctx)
        if hp.phi3.longrope is not None:
            w.add_rope_scaling_attn_factors(hp.phi3.longrope.attn_factor)
    if hp.rope_scaling_factor is not None:
        import gguf

        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(hp.rope_scaling_factor)
    w.add_file_type(file_type)
    if file_type not in (0, 1, 32):
        w.add_quantization_version(2)


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

    hp = HParams.from_config(load_config(src))
    tensors = open_checkpoint(src)
    _refuse_overwriting_inputs(out, src, tensors)
    items, file_type = plan(hp, tensors, outtype)  # checks n_vocab against the embedding
    vocab = load_vocab(src, hp.n_vocab, vocab_pre)

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, hp.arch)
        try:
            # A directory name of non-UTF-8 bytes arrives with surrogate escapes: store '?'.
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
            total = sum(it.nbytes() for it in items)
            with progress_bar(total, "convert", progress, unit="B") as bar:
                for it in items:
                    data = _encode(it)
                    writer.write_tensor_data(data)
                    bar.set_postfix_str(it.gguf_name[:40], refresh=False)
                    bar.update(data.nbytes)
                    del data
        finally:
            writer.close()

    return atomic_write(out, write)
