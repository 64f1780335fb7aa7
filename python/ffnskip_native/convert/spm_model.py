"""tokenizer.model (SentencePiece, llama/mistral): the ModelProto is parsed here directly (a few
protobuf fields), giving pieces, scores, piece types and the trainer's special ids."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Iterator, List, Tuple

from .errors import ConvertError
from .vocab import BYTE, NORMAL, Vocab


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ConvertError("tokenizer.model: truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ConvertError("tokenizer.model: protobuf varint too long")


def _proto_fields(buf: bytes) -> Iterator[Tuple[int, Any]]:
    """(field number, value) pairs of one protobuf message: int for varint/fixed, bytes for LEN."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ConvertError(f"tokenizer.model: unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ConvertError("tokenizer.model: truncated protobuf message")
        yield num, val


def _int32(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _message(val: Any, what: str) -> bytes:
    """A length-delimited protobuf value (a nested message or a string)."""
    if not isinstance(val, bytes):
        raise ConvertError(f"tokenizer.model: {what} has the wrong protobuf wire type")
    return val


def _varint_value(val: Any, what: str) -> int:
    if not isinstance(val, int):
        raise ConvertError(f"tokenizer.model: {what} has the wrong protobuf wire type")
    return val


def load_sentencepiece(path: Path) -> Vocab:
    """Pieces, scores, types and special ids from a SentencePiece ModelProto."""
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise ConvertError(f"cannot read {path}: {e.strerror or e}") from e
    tokens: List[str] = []
    scores: List[float] = []
    types: List[int] = []
    ids = {"unk": 0, "bos": 1, "eos": 2, "pad": -1}  # TrainerSpec defaults
    add_dummy_prefix = True
    for num, val in _proto_fields(buf):
        if num == 1:  # SentencePiece {piece = 1, score = 2, type = 3}
            piece, score, ptype = "", 0.0, NORMAL
            for pn, pv in _proto_fields(_message(val, "a piece")):
                if pn == 1:
                    try:
                        piece = _message(pv, "a piece's text").decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise ConvertError(
                            f"tokenizer.model: piece {len(tokens)} is not UTF-8"
                        ) from e
                elif pn == 2:
                    if not isinstance(pv, bytes) or len(pv) != 4:
                        raise ConvertError(
                            f"tokenizer.model: piece {len(tokens)}'s score is not a float"
                        )
                    (score,) = struct.unpack("<f", pv)
                elif pn == 3:
                    ptype = _varint_value(pv, "a piece's type")
                    if not NORMAL <= ptype <= BYTE:
                        raise ConvertError(
                            f"tokenizer.model: piece {len(tokens)} has unknown type {ptype}"
                        )
            tokens.append(piece)
            scores.append(score)
            types.append(ptype)
        elif num == 2:  # TrainerSpec: unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43
            for tn, tv in _proto_fields(_message(val, "the trainer spec")):
                key = {40: "unk", 41: "bos", 42: "eos", 43: "pad"}.get(tn)
                if key is not None:
                    ids[key] = _int32(_varint_value(tv, f"{key}_id"))
        elif num == 3:  # NormalizerSpec: add_dummy_prefix = 3
            for nn, nv in _proto_fields(_message(val, "the normalizer spec")):
                if nn == 3:
                    add_dummy_prefix = bool(_varint_value(nv, "add_dummy_prefix"))
    if not tokens:
        raise ConvertError(f"{path}: no pieces (not a SentencePiece model?)")
    special = {k: v for k, v in ids.items() if 0 <= v < len(tokens)}
    return Vocab(
        model="llama",
        pre="default",
        tokens=tokens,
        types=types,
        scores=scores,
        special=special,
        add_space_prefix=add_dummy_prefix,
    )
