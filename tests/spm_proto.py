"""A SentencePiece model built from a GGUF SPM vocabulary, as the reference tokenizer.

GGUF keeps SentencePiece's pieces, scores and piece types (tokenizer.ggml.*, the type numbers
are SentencePiece's: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte). Written
back into a ModelProto with a BPE trainer spec, byte fallback and the identity normalizer (no
dummy prefix: tokenizer.ggml.add_space_prefix false, as Gemma's files say), `sentencepiece`
tokenizes with the file's own vocabulary. The proto is serialized by hand: the few fields used
here need no protobuf dependency.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import gguf

# sentencepiece_model.proto field numbers.
_MODEL_PIECES, _MODEL_TRAINER, _MODEL_NORMALIZER = 1, 2, 3
_PIECE_TEXT, _PIECE_SCORE, _PIECE_TYPE = 1, 2, 3
_TRAINER_MODEL_TYPE, _TRAINER_BYTE_FALLBACK = 3, 35
_TRAINER_UNK, _TRAINER_BOS, _TRAINER_EOS, _TRAINER_PAD = 40, 41, 42, 43
_NORM_NAME, _NORM_DUMMY_PREFIX, _NORM_REMOVE_SPACES, _NORM_ESCAPE_SPACES = 1, 3, 4, 5
_MODEL_TYPE_BPE = 2


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 values are encoded as 64-bit two's complement
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _int_field(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def _float_field(num: int, value: float) -> bytes:
    return _varint(num << 3 | 5) + struct.pack("<f", value)


def model_proto(path: str | Path) -> bytes:
    """The serialized ModelProto of the GGUF file's SPM vocabulary."""
    reader = gguf.GGUFReader(str(path))

    def field(key: str, default: Any = None) -> Any:
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    if field("tokenizer.ggml.model") != "llama":
        raise ValueError(f"{path}: not a SentencePiece (tokenizer.ggml.model = llama) vocabulary")
    if field("tokenizer.ggml.add_space_prefix", True):
        raise ValueError(f"{path}: only vocabularies without the dummy space prefix are handled")
    out = bytearray()
    for text, score, kind in zip(
        field("tokenizer.ggml.tokens"),
        field("tokenizer.ggml.scores"),
        field("tokenizer.ggml.token_type"),
    ):
        piece = _len_field(_PIECE_TEXT, text.encode())
        piece += _float_field(_PIECE_SCORE, float(score)) + _int_field(_PIECE_TYPE, int(kind))
        out += _len_field(_MODEL_PIECES, piece)
    trainer = _int_field(_TRAINER_MODEL_TYPE, _MODEL_TYPE_BPE) + _int_field(
        _TRAINER_BYTE_FALLBACK, 1
    )
    for num, key in (
        (_TRAINER_UNK, "unknown_token_id"),
        (_TRAINER_BOS, "bos_token_id"),
        (_TRAINER_EOS, "eos_token_id"),
        (_TRAINER_PAD, "padding_token_id"),
    ):
        trainer += _int_field(num, int(field(f"tokenizer.ggml.{key}", -1)))
    out += _len_field(_MODEL_TRAINER, trainer)
    normalizer = _len_field(_NORM_NAME, b"identity") + _int_field(_NORM_DUMMY_PREFIX, 0)
    normalizer += _int_field(_NORM_REMOVE_SPACES, 0) + _int_field(_NORM_ESCAPE_SPACES, 1)
    out += _len_field(_MODEL_NORMALIZER, normalizer)
    return bytes(out)


def sentencepiece_from_gguf(path: str | Path) -> Any:
    """A sentencepiece.SentencePieceProcessor over the GGUF file's vocabulary."""
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_proto=model_proto(path))
